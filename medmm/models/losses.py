"""Multi-task training loss: one loss per task from its head, combined by fixed or learned weights.

``fixed`` (the default): ``sum_t w_t S_t / sum_t N_t``, where ``S_t`` sums task ``t``'s loss over
the patients whose label is known and ``N_t`` counts them; with every ``w_t = 1`` this is the
mean over all known (patient, label) pairs, the walking skeleton's loss.

``uncertainty``: homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018),
``sum_t exp(-s_t) L_t + s_t`` with ``L_t = S_t / N_t`` and ``s_t = log sigma_t^2`` learned (one
parameter per task, initialised at 0). Tasks with no known label in the batch add nothing, not
even their ``s_t`` term.

The auxiliary unimodal heads' loss is the same combination on each modality's present rows,
averaged over modalities and scaled by ``ModelConfig.aux_weight``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..train.distributed import unwrap

__all__ = ["LossWeighting", "LOSS_WEIGHTINGS", "task_losses", "multitask_loss"]

LOSS_WEIGHTINGS = ("fixed", "uncertainty")


class LossWeighting(nn.Module):
    """Combine per-task mean losses ``[T]`` with their label counts ``[T]`` into one scalar."""

    def __init__(self, tasks: tuple[str, ...], *, kind: str = "fixed", weights: dict[str, float] | None = None) -> None:
        super().__init__()
        if kind not in LOSS_WEIGHTINGS:
            raise ConfigError(f"loss_weighting {kind!r} is not supported", column="loss_weighting",
                              hint=f"use one of {LOSS_WEIGHTINGS}")
        unknown = sorted(set(weights or {}) - set(tasks))
        if unknown:
            raise ConfigError(f"task_weights name unknown tasks {unknown}", column="task_weights",
                              hint=f"tasks are {list(tasks)}")
        self.kind = kind
        self.tasks = tuple(tasks)
        self.register_buffer("weights", torch.tensor([float((weights or {}).get(t, 1.0)) for t in tasks]))
        if kind == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(len(tasks)))

    def forward(self, means: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        known = counts > 0
        if self.kind == "fixed":
            return (self.weights * means * counts).sum() / counts.sum().clamp_min(1.0)
        s = self.log_vars
        terms = self.weights * (torch.exp(-s) * means + s)
        return torch.where(known, terms, torch.zeros_like(terms)).sum()

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"loss_weighting": self.kind, "task_weights": dict(zip(self.tasks, self.weights.tolist()))}
        if self.kind == "uncertainty":
            d["task_log_variance"] = dict(zip(self.tasks, [round(float(v), 4) for v in self.log_vars.detach()]))
        return d


def _aligned_binary(model: Any, logits: torch.Tensor, batch: Any) -> torch.Tensor:
    """Logits laid out like ``batch.labels`` (binary tasks' columns filled, others 0)."""
    out = logits.new_zeros(batch.labels.shape)
    for t in model.tasks:
        if model.heads[t].kind == "binary":
            out[:, batch.tasks.index(t)] = logits[:, model.output_slices[t]][:, 0]
    return out


def task_losses(model: Any, logits: torch.Tensor, batch: Any, rows: torch.Tensor | None = None,
                criterion: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task mean loss ``[T]`` and label count ``[T]`` over the known labels (of ``rows``).

    ``criterion(logits, batch, rows)`` (the trainer's class-imbalance loss, e.g.
    :class:`medmm.train.losses.MaskedLoss`) replaces BCE for binary tasks when given.
    """
    means, counts = [], []
    aligned = None
    for t in model.tasks:
        head = model.heads[t]
        cols = [batch.tasks.index(c) for c in model.label_columns[t]]
        mask = batch.label_mask[:, cols]
        if rows is not None:
            mask = mask & rows[:, None]
        n = mask.sum().to(logits.dtype)
        if criterion is not None and head.kind == "binary":
            if aligned is None:
                aligned = _aligned_binary(model, logits, batch)
            only = torch.zeros_like(batch.label_mask)
            only[:, cols] = mask
            sub = type(batch)(batch.values, batch.present, batch.modalities, batch.labels, only, batch.tasks)
            mean = criterion(aligned, sub)
        else:
            s, n = head.loss(logits[:, model.output_slices[t]], batch.labels[:, cols], mask)
            mean = s / n.clamp_min(1.0)
        means.append(mean)
        counts.append(n)
    return torch.stack(means), torch.stack(counts)


def multitask_loss(model: nn.Module, batch: Any, criterion: Any = None) -> torch.Tensor:
    """The training loss of a :class:`~medmm.models.multimodal.MultimodalModel` (possibly wrapped in
    ``DistributedDataParallel``): weighted task losses plus the auxiliary unimodal heads' losses,
    plus the L2 penalty of the wide (linear) paths."""
    core = unwrap(model)
    missing = [c for cols in core.label_columns.values() for c in cols if c not in batch.tasks]
    if missing:
        raise ConfigError(f"the batch has no label column for {missing}",
                          hint="build the dataset with tasks=model.label_columns_flat")
    logits, aux = model(batch.values, batch.present, return_aux=True)
    loss = core.loss_weighting(*task_losses(core, logits, batch, criterion=criterion))
    if aux:
        parts = [core.loss_weighting(*task_losses(core, lg, batch, rows, criterion)) for lg, rows in aux.values()]
        loss = loss + core.config.aux_weight * sum(parts) / len(parts)
    if len(getattr(core, "wide", ())):
        loss = loss + core.wide_penalty()
    return loss
