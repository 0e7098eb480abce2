"""Task heads: ``forward(z: [B, D]) -> [B, K]`` logits (K = 1 for binary and regression)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import Registry

__all__ = ["HEADS", "register_head", "create_head"]

HEADS = Registry("head")
register_head = HEADS.register


def create_head(name: str, **kwargs: Any) -> nn.Module:
    return HEADS.create(name, **kwargs)


@register_head("binary", loss="bce")
class BinaryHead(nn.Module):
    """One logit for a binary task."""

    n_outputs = 1

    def __init__(self, *, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, 1))

    def forward(self, z):
        return self.net(z)
