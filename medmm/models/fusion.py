"""Fusion modules: ``forward(features: dict[modality -> [B, D]], present: bool[B, M]) -> [B, D]``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import Registry

__all__ = ["FUSIONS", "register_fusion", "create_fusion", "AttentionFusion", "ConcatFusion"]

FUSIONS = Registry("fusion")
register_fusion = FUSIONS.register


def create_fusion(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered fusion module, e.g. ``create_fusion("attention", modalities=..., dim=64)``."""
    return FUSIONS.create(name, **kwargs)


@register_fusion("attention")
class AttentionFusion(nn.Module):
    """Soft fusion: a Transformer over modality tokens plus a CLS token.

    Absent modalities are removed by the key padding mask; the CLS token is never masked, so
    a row with every modality missing still gets a finite output (a learned prior).
    """

    def __init__(self, *, modalities: tuple[str, ...], dim: int = 64, heads: int = 4, layers: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
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
        return self.norm(self.encoder(x, src_key_padding_mask=pad)[:, 0])


@register_fusion("concat")
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
