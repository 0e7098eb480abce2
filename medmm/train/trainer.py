"""The training loop: AdamW, masked multi-task BCE, validation each epoch, early stopping.

The trainer knows nothing of MLflow: it reports each epoch to ``callbacks`` (objects with
``on_epoch_end(epoch, metrics)``), which the tracking layer provides.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..data import Batch, MultimodalDataset
from ..errors import ConfigError

__all__ = ["TrainConfig", "TrainResult", "train", "seed_everything", "predict_dataset", "resolve_device"]


@dataclass
class TrainConfig:
    """Optimisation settings."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 10
    min_epochs: int = 15
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"
    monitor: str = "val_loss"
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch_size and lr must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    seconds: float


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def masked_bce(logits: torch.Tensor, batch: Batch, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over the (patient, task) pairs whose label is known (and whose row is in ``rows``)."""
    mask = batch.label_mask.to(logits.dtype)
    if rows is not None:
        mask = mask * rows.to(logits.dtype)[:, None]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def training_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Fused loss plus, when the model has them, its auxiliary unimodal heads' losses."""
    out = model(batch.values, batch.present, return_aux=True)
    logits, aux = out if isinstance(out, tuple) else (out, {})
    loss = masked_bce(logits, batch)
    if aux:
        weight = getattr(getattr(model, "config", None), "aux_weight", 0.0)
        loss = loss + weight * sum(masked_bce(lg, batch, rows) for lg, rows in aux.values()) / len(aux)
    return loss


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, ds: MultimodalDataset, *, batch_size: int = 128,
                    device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, labels, label mask and presence mask for a whole dataset."""
    device = device or next(model.parameters()).device
    model.eval()
    probs, labels, lmask, present = [], [], [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=ds.collate)
    for batch in loader:
        b = batch.to(device)
        probs.append(torch.sigmoid(model(b.values, b.present)).float().cpu().numpy())
        labels.append(batch.labels.numpy())
        lmask.append(batch.label_mask.numpy())
        present.append(batch.present.numpy())
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(lmask), np.concatenate(present)


def _val_metrics(model, ds, tasks, device) -> dict[str, float]:
    from ..evaluate.metrics import auroc

    p, y, m, _ = predict_dataset(model, ds, device=device)
    out: dict[str, float] = {}
    losses = []
    for k, t in enumerate(tasks):
        sel = m[:, k]
        out[f"val_auroc_{t}"] = auroc(y[sel, k], p[sel, k])
        pk = np.clip(p[sel, k], 1e-7, 1 - 1e-7)
        losses.append(float(-np.mean(y[sel, k] * np.log(pk) + (1 - y[sel, k]) * np.log(1 - pk))) if sel.any() else np.nan)
    aucs = [out[f"val_auroc_{t}"] for t in tasks]
    out["val_auroc_mean"] = float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")
    out["val_loss"] = float(np.nanmean(losses))
    return out


def train(
    model: torch.nn.Module,
    train_ds: MultimodalDataset,
    val_ds: MultimodalDataset | None,
    config: TrainConfig,
    *,
    callbacks: list[Any] = (),
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch."""
    from tqdm.auto import tqdm

    seed_everything(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    tasks = train_ds.tasks
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    gen = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=config.batch_size, shuffle=True,
                                         collate_fn=train_ds.collate, generator=gen, drop_last=len(train_ds) > config.batch_size)
    higher = config.monitor != "val_loss"
    best = (-np.inf if higher else np.inf, -1, None)
    history: list[dict[str, float]] = []
    steps = 0
    t0 = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in loader:
            b = batch.to(device)
            loss = training_loss(model, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
            steps += 1
            if config.max_steps and steps >= config.max_steps:
                break
        sched.step()
        metrics = {"train_loss": total / max(count, 1), "lr": opt.param_groups[0]["lr"]}
        if val_ds is not None and len(val_ds):
            metrics.update(_val_metrics(model, val_ds, tasks, device))
        history.append({"epoch": epoch, **metrics})
        for cb in callbacks:
            cb.on_epoch_end(epoch, metrics)
        score = metrics.get(config.monitor, -metrics["train_loss"] if higher else metrics["train_loss"])
        improved = (score > best[0]) if higher else (score < best[0])
        if improved or best[2] is None:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        bar.set_postfix({k: round(v, 3) for k, v in metrics.items() if k in ("train_loss", config.monitor)})
        if config.max_steps and steps >= config.max_steps:
            break
        if epoch + 1 >= config.min_epochs and epoch - best[1] >= config.patience:
            break
    bar.close()
    model.load_state_dict(best[2])
    return TrainResult(best_epoch=best[1], best_score=float(best[0]), history=history,
                       seconds=time.perf_counter() - t0)
