"""Two-stage training (MedFuse's recipe): pretrain each unimodal encoder alone, then fuse.

Stage 1 trains, for every modality, its encoder and its auxiliary unimodal head on the
training patients that have that modality, with early stopping on the same patients of the
validation split. Each encoder thus stops at its own best epoch: a CNN that needs thirty
epochs is not cut short because the notes encoder overfits after five. Stage 2 then trains
the whole model (fusion, heads, and the encoders fine-tuned at a lower rate, or frozen).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..data import MultimodalDataset
from .trainer import TrainConfig, TrainResult, train

__all__ = ["UnimodalView", "pretrain_unimodal"]


class UnimodalView(nn.Module):
    """One modality's encoder and auxiliary head of a multimodal model, as a model of its own."""

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = model.encoders[modality]
        self.head = model.aux_heads[modality]

    def forward(self, values: dict[str, torch.Tensor], present: torch.Tensor, return_aux: bool = False):
        logits = self.head(self.encoder(values[self.modality], present[:, 0]))
        return (logits, {}) if return_aux else logits


def pretrain_unimodal(
    model: nn.Module,
    train_ds: MultimodalDataset,
    val_ds: MultimodalDataset | None,
    config: TrainConfig,
    *,
    callbacks: list[Any] = (),
    progress: bool = True,
) -> dict[str, TrainResult]:
    """Stage 1: fit every modality's encoder and auxiliary head alone (in place)."""
    if not hasattr(model, "aux_heads"):
        raise ValueError("two-stage training needs auxiliary unimodal heads (set aux_weight > 0)")
    results: dict[str, TrainResult] = {}
    for j, m in enumerate(model.modalities):
        tr = train_ds.subset(m)
        if len(tr) < 2:
            continue
        va = val_ds.subset(m) if val_ds is not None else None
        view = UnimodalView(model, m)
        cfg = replace(config, seed=config.seed + j)
        prefixed = [_Prefixed(cb, f"pretrain_{m}_") for cb in callbacks]
        results[m] = train(view, tr, va if va is not None and len(va) else None, cfg, callbacks=prefixed,
                           progress=progress)
    return results


class _Prefixed:
    def __init__(self, cb: Any, prefix: str) -> None:
        self.cb, self.prefix = cb, prefix

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.cb.on_epoch_end(epoch, {self.prefix + k: v for k, v in metrics.items()})
