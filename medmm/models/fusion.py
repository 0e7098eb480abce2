"""Fusion modules: ``forward(features: dict[modality -> [B, D]], present: bool[B, M]) -> [B, D]``.

=================  ================================================================================
``concat``         early fusion: concatenated features, a learned embedding for each absent one
``attention``      soft fusion: a Transformer over modality tokens, key padding mask, CLS read-out
``gated``          gated multimodal units: a softmax gate over the present modalities' projections
``late``           decision level: one head per modality, their logits combined over the present
                   modalities with learned weights (returns logits, ``[B, n_outputs]``)
``cross_attention``  token level: each modality's token sequence attends to the others' at every
                   layer (image patches to note words, ...); takes ``tokens`` as well
=================  ================================================================================

Registry metadata: ``output`` is ``"features"`` (``[B, D]``, task heads follow) or ``"logits"``;
``tokens=True`` when the module needs the encoders' token sequences
(``forward(features, present, tokens={m: (tokens [B, L, D], valid bool[B, L])})``). Every
module gives a finite output for a row with no modality (a learned prior).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .registry import Registry

__all__ = ["FUSIONS", "register_fusion", "create_fusion", "AttentionFusion", "ConcatFusion", "GatedFusion",
           "LateFusion", "CrossAttentionFusion"]

FUSIONS = Registry("fusion")
register_fusion = FUSIONS.register


def create_fusion(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered fusion module, e.g. ``create_fusion("attention", modalities=..., dim=64)``."""
    return FUSIONS.create(name, **kwargs)


@register_fusion("attention", output="features")
class AttentionFusion(nn.Module):
    """Soft fusion: a Transformer over modality tokens plus a CLS token.

    Absent modalities are removed by the key padding mask; the CLS token is never masked, so
    a row with every modality missing still gets a finite output (a learned prior).

    ``readout="cls+sum"`` (the default) reads out the CLS token's output plus the sum of the
    present tokens' outputs (Deep Sets pooling); ``"cls"`` the CLS token alone. Attention
    weights sum to one, so a CLS read-out cannot tell one piece of evidence from two that agree;
    the sum can, and evidence from independent modalities adds up. On the synthetic cohort
    with half of every modality missing (``benchmarks/bench_missing.py``, 3 seeds) the sum
    read-out raised the tumour AUROC from 0.743 to 0.762 (concat 0.756).
    """

    READOUTS = ("cls", "cls+sum")

    def __init__(self, *, modalities: tuple[str, ...], dim: int = 64, heads: int = 4, layers: int = 1,
                 dropout: float = 0.1, readout: str = "cls+sum") -> None:
        super().__init__()
        if readout not in self.READOUTS:
            raise ConfigError(f"attention fusion readout must be one of {self.READOUTS}, got {readout!r}",
                              column="model.fusion.readout")
        self.readout = readout
        self.modalities = tuple(modalities)
        self.dim = dim
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack([features[m] for m in self.modalities], dim=1) + self.type_embedding
        b = tokens.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1)
        pad = torch.cat([torch.zeros((b, 1), dtype=torch.bool, device=present.device), ~present], dim=1)
        y = self.encoder(x, src_key_padding_mask=pad)
        if self.readout == "cls":
            return self.norm(y[:, 0])
        return self.norm(y[:, 0] + (y[:, 1:] * present[..., None].to(y.dtype)).sum(dim=1))


@register_fusion("concat", output="features")
class ConcatFusion(nn.Module):
    """Early fusion: concatenate modality features, a learned embedding standing in for each absent one."""

    def __init__(self, *, modalities: tuple[str, ...], dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.dim = dim
        self.missing = nn.Parameter(torch.zeros(len(self.modalities), dim))
        self.net = nn.Sequential(nn.Linear(len(self.modalities) * dim, dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim, dim))

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        parts = []
        for j, m in enumerate(self.modalities):
            keep = present[:, j : j + 1].to(features[m].dtype)
            parts.append(features[m] * keep + self.missing[j] * (1 - keep))
        return self.net(torch.cat(parts, dim=1))


def _masked_softmax(scores: torch.Tensor, present: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Softmax over the present columns of ``scores [B, M(, K)]`` with an always-present prior
    column appended (its weight goes to a learned prior): rows with nothing present stay finite."""
    if scores.dim() == 3:
        present = present[..., None].expand_as(scores)
    full = torch.cat([scores.masked_fill(~present, float("-inf")), prior.expand(*scores.shape[:1], 1, *scores.shape[2:])],
                     dim=1)
    return torch.softmax(full, dim=1)


@register_fusion("gated", output="features")
class GatedFusion(nn.Module):
    """Gated multimodal units (Arevalo et al. 2017) for any number of modalities: each modality is
    projected, ``h_m = tanh(W_m x_m)``, and a gate computed from all features weighs the present
    ones, ``z = sum_m g_m h_m`` with ``g = softmax`` over the present modalities (and a learned
    prior, which takes the whole weight when nothing is present)."""

    def __init__(self, *, modalities: tuple[str, ...], dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.dim = dim
        m = len(self.modalities)
        self.proj = nn.ModuleList([nn.Linear(dim, dim) for _ in range(m)])
        self.gate = nn.Linear(m * dim, m)
        self.prior_score = nn.Parameter(torch.zeros(1, 1))
        self.prior = nn.Parameter(torch.zeros(dim))
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout), nn.Linear(dim, dim))

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        xs = [features[m] * present[:, j : j + 1].to(features[m].dtype) for j, m in enumerate(self.modalities)]
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.proj, xs)] + [self.prior.expand_as(xs[0])], dim=1)
        g = _masked_softmax(self.gate(torch.cat(xs, dim=1)), present, self.prior_score)
        return self.out((g[..., None] * h).sum(1))


@register_fusion("late", output="logits")
class LateFusion(nn.Module):
    """Decision-level fusion: one linear head per modality, the logits combined over the present
    modalities by learned weights (a softmax over present modalities, per output), plus a learned
    bias; a row with nothing present gets the bias (the prior)."""

    def __init__(self, *, modalities: tuple[str, ...], dim: int = 64, n_outputs: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.dim = dim
        self.n_outputs = int(n_outputs)
        self.heads = nn.ModuleList([nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, self.n_outputs))
                                    for _ in self.modalities])
        self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities), self.n_outputs))
        self.bias = nn.Parameter(torch.zeros(self.n_outputs))
        self.scale = nn.Parameter(torch.ones(self.n_outputs))

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([h(features[m]) for h, m in zip(self.heads, self.modalities)], dim=1)  # [B, M, K]
        w = torch.softmax(self.weight_logits[None].masked_fill(~present[..., None], float("-inf")), dim=1)
        w = torch.nan_to_num(w, nan=0.0)  # no modality present: every weight 0
        # the weights average the present modalities' logits; ``scale`` lets evidence add up
        n = present.sum(1, keepdim=True).clamp_min(1).to(logits.dtype)
        return self.bias + self.scale * n * (w * logits).sum(1)


class _CrossLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_pad: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(self.norm_q(q), self.norm_kv(kv), self.norm_kv(kv), key_padding_mask=kv_pad, need_weights=False)
        q = q + a
        return q + self.ff(self.norm_ff(q))


@register_fusion("cross_attention", output="features", tokens=True)
class CrossAttentionFusion(nn.Module):
    """Multi-layer token-level fusion: at every layer each modality's tokens attend to the tokens of
    the other present modalities (image patches to note words and vital-sign steps, ...), then the
    modalities' CLS-pooled states are fused by attention over the present ones.

    A learned null token is always among the keys, so a modality alone (or a row with nothing
    present) still attends to something and stays finite. ``pairs`` limits who attends to whom,
    e.g. ``[("image", "notes")]``: image tokens attend to note tokens; by default every modality
    attends to all the others.
    """

    def __init__(self, *, modalities: tuple[str, ...], dim: int = 64, heads: int = 4, layers: int = 2,
                 dropout: float = 0.1, max_tokens: int = 128, pairs: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.dim = dim
        self.max_tokens = int(max_tokens)
        self.pairs = {m: [k for k in self.modalities if k != m] for m in self.modalities} if pairs is None else {
            m: [k for (q, k) in pairs if q == m] for m in self.modalities}
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.null = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList([_CrossLayer(dim, heads, dropout) for _ in range(layers)])
        self.readout = AttentionFusion(modalities=self.modalities, dim=dim, heads=heads, layers=1, dropout=dropout)

    def _pool(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        w = valid.to(x.dtype)[..., None]
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor,
                tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        if tokens is None:  # no token sequences: each modality's feature is its only token
            tokens = {m: (features[m][:, None], present[:, j : j + 1]) for j, m in enumerate(self.modalities)}
        seq, valid = {}, {}
        for j, m in enumerate(self.modalities):
            t, v = tokens[m]
            t, v = t[:, : self.max_tokens], v[:, : self.max_tokens] & present[:, j : j + 1]
            seq[m] = t + self.type_embedding[j]
            valid[m] = v
        b = present.shape[0]
        null = self.null.expand(b, -1, -1)
        always = torch.zeros((b, 1), dtype=torch.bool, device=present.device)
        for layer in self.layers:
            new = {}
            for m in self.modalities:
                others = self.pairs[m]
                kv = torch.cat([null] + [seq[k] for k in others], dim=1)
                pad = torch.cat([always] + [~valid[k] for k in others], dim=1)
                new[m] = layer(seq[m], kv, pad)
            seq = new
        pooled = {m: self._pool(seq[m], valid[m]) for m in self.modalities}
        return self.readout(pooled, present)
