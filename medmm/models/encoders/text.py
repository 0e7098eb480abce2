"""Text encoders: a bag-of-n-grams MLP, a Transformer over the fitted vocabulary, and an MLP over a
frozen pretrained sentence embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Encoder, register_encoder


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding ``[..., dim]`` of real-valued positions (Vaswani et al.)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1))
    ang = positions.float()[..., None] * freq
    out = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return nn.functional.pad(out, (0, dim - 2 * half))


class CLSTransformer(nn.Module):
    """A pre-norm Transformer over ``[n, L, D]`` tokens with a key padding mask, read out at a CLS
    token that is never masked (an all-padding sequence still gives a finite output)."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cls [n, D], tokens [n, L, D])``."""
        n = tokens.shape[0]
        x = torch.cat([self.cls.expand(n, -1, -1), tokens], dim=1)
        pad = torch.cat([torch.zeros((n, 1), dtype=torch.bool, device=valid.device), ~valid], dim=1)
        h = self.norm(self.encoder(x, src_key_padding_mask=pad))
        return h[:, 0], h[:, 1:]


@register_encoder("tfidf_mlp", modality="notes", kind="text", input="vector", example={"in_shape": (40,)})
class BagOfNgramsMLP(Encoder):
    """An MLP over a fitted TF-IDF bag of n-grams (the text baseline).

    ``in_features``: read only the first columns of the vector (the n-grams and findings; the
    full-vocabulary sparse part after them is the wide path's, see
    :meth:`~medmm.preprocess.text.TextPreprocessor.sparse_layout`)."""

    modality = "notes"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 128, dropout: float = 0.2,
                 in_features: int | None = None) -> None:
        super().__init__(out_dim)
        self.in_features = int(in_features) if in_features else int(in_shape[0])
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.in_features, hidden), nn.GELU(),
                                 nn.Linear(hidden, out_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, :self.in_features])


@register_encoder("text_transformer", modality="notes", kind="text", input="tokens", tokens=True,
                  example={"in_shape": (12,), "vocab_size": 30, "layers": 1, "heads": 2})
class TextTransformer(Encoder):
    """A Transformer encoder over token ids from :class:`~medmm.preprocess.tokens.TokenPreprocessor`
    (id 0 is padding, 1 unknown); learned token embeddings plus sinusoidal positions, read out at a
    CLS token. ``vocab_size`` comes from the fitted preprocessor (``encoder_kwargs``)."""

    modality = "notes"

    def __init__(self, *, in_shape: tuple[int, ...], vocab_size: int, out_dim: int = 64, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1, with_tokens: bool = False) -> None:
        super().__init__(out_dim)
        self.max_len = int(in_shape[0])
        self.embed = nn.Embedding(int(vocab_size), out_dim, padding_idx=0)
        self.register_buffer("positions", sinusoidal(torch.arange(self.max_len), out_dim), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.transformer = CLSTransformer(out_dim, heads, layers, dropout)

    def stages(self) -> list[nn.Module]:
        return [self.embed, *self.transformer.encoder.layers, self.transformer.norm]

    def encode_tokens(self, x):
        ids = x.long().clamp(0, self.embed.num_embeddings - 1)
        valid = ids > 0
        cls, tok = self.transformer(self.drop(self.embed(ids) + self.positions), valid)
        return cls, tok, valid

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_tokens(x)[0]


@register_encoder("sentence_mlp", modality="notes", kind="text", input="embedding", example={"in_shape": (384,)})
class SentenceEmbeddingMLP(Encoder):
    """A small MLP over a frozen pretrained sentence embedding (all-MiniLM-L6-v2, 384-d, computed
    once by :class:`~medmm.preprocess.tokens.SentenceEmbeddingPreprocessor`: frozen weights give
    the same embedding every epoch, so it is computed in preprocessing, not per step)."""

    modality = "notes"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__(out_dim)
        self.net = nn.Sequential(nn.LayerNorm(int(in_shape[0])), nn.Dropout(dropout), nn.Linear(int(in_shape[0]), hidden),
                                 nn.GELU(), nn.Linear(hidden, out_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
