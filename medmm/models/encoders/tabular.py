"""Tabular EHR encoders over the featurised row of :class:`~medmm.preprocess.tabular.TabularPreprocessor`."""

from __future__ import annotations

import torch
from torch import nn

from .base import Encoder, register_encoder
from .text import CLSTransformer


@register_encoder("mlp", modality="ehr", kind="table", input="vector", example={"in_shape": (12,)})
class TabularMLP(Encoder):
    """An MLP over the featurised EHR row."""

    modality = "ehr"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__(out_dim)
        self.net = nn.Sequential(nn.Linear(int(in_shape[0]), hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("ft_transformer", modality="ehr", kind="table", input="vector", tokens=True,
                  example={"in_shape": (12,), "dim": 16, "layers": 1, "heads": 2})
class FTTransformer(Encoder):
    """FT-Transformer (Gorishniy et al. 2021): a feature tokenizer turns each input column ``x_j``
    into the token ``x_j w_j + b_j``; a Transformer over the feature tokens, read out at CLS. Its
    tokens are the features (one-hot columns and missing indicators included)."""

    modality = "ehr"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, dim: int = 32, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1, with_tokens: bool = False) -> None:
        super().__init__(out_dim)
        f = int(in_shape[0])
        self.weight = nn.Parameter(torch.randn(f, dim) / dim**0.5)
        self.bias = nn.Parameter(torch.zeros(f, dim))
        self.transformer = CLSTransformer(dim, heads, layers, dropout)
        self.proj = nn.Linear(dim, out_dim)

    def stages(self) -> list[nn.Module]:
        return [nn.ParameterList([self.weight, self.bias]), *self.transformer.encoder.layers, self.proj]

    def encode_tokens(self, x):
        tok = x[..., None] * self.weight + self.bias
        cls, h = self.transformer(tok, torch.ones(tok.shape[:2], dtype=torch.bool, device=x.device))
        return self.proj(cls), self.proj(h), torch.ones(h.shape[:2], dtype=torch.bool, device=x.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_tokens(x)[0]
