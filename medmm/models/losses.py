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

Class imbalance
---------------
A patient whose label for a task is unknown contributes nothing to that task. The
criterion is built from the training split's label prevalence (:func:`build_criterion`) and
describes itself (:meth:`MaskedLoss.describe`) so that what was used is recorded in the run.

Losses
------
``bce``            plain binary cross-entropy (optionally with ``pos_weight``);
``weighted_bce``   class-weighted BCE: each class weighted ``N / (2 N_class)`` per task
                   (scikit-learn's ``class_weight="balanced"``);
``focal``          sigmoid focal loss (Lin et al. 2017), ``gamma`` and optional ``alpha``.

``pos_weight`` may be a number, one number per task, or ``"auto"``: ``N_neg / N_pos`` per task
from the training prevalence (as in ``torch.nn.BCEWithLogitsLoss(pos_weight=...)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..modelspec import LOSSES

__all__ = ["LossWeighting", "LOSS_WEIGHTINGS", "task_losses", "multitask_loss", "global_batch_means", "MaskedLoss", "LOSSES", "label_counts",
           "build_criterion", "balanced_sample_weights"]

LOSS_WEIGHTINGS = ("fixed", "uncertainty")


class LossWeighting(nn.Module):
    """Combine per-task mean losses ``[T]`` with their label counts ``[T]`` into one scalar."""

    weights: torch.Tensor  # buffer
    log_vars: nn.Parameter  # with kind="uncertainty"

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
    :class:`MaskedLoss`) replaces BCE for binary tasks when given.
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


def global_batch_means(pairs: list[tuple[torch.Tensor, torch.Tensor]], sum_counts: Any
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-task ``(means, counts)`` of this process's share of a data-parallel batch, made its
    share of the **global** batch's means.

    Under ``DistributedDataParallel`` each process computes its loss on its own rows and the
    gradients are averaged over the ``W`` processes. A masked mean (labels known, a modality
    present) divides by this process's count, so the average of the processes' means weighs a
    process with few known labels as much as one with many: not the gradient of the mean over the
    global batch that a single process would take (on the demo-like tiny cohort, 1.4 % of the
    weights moved the other way after one step). ``sum_counts(t)`` returns ``(t summed over
    the processes, W)``; each task's mean becomes ``S_r W / N`` (``S_r`` this process's sum,
    ``N`` the global count) with count ``N``, so that both loss weightings, averaged over the
    processes, give the global batch's loss. One collective call for all pairs."""
    counts = torch.stack([c for _, c in pairs]).detach().clone()
    total, world = sum_counts(counts)
    out = []
    for (mean, count), n in zip(pairs, total):
        n = n.to(mean.dtype)
        out.append((torch.where(n > 0, mean * count * world / n.clamp_min(1.0), mean * 0), n))
    return out


def multitask_loss(model: nn.Module, batch: Any, criterion: Any = None, *, sum_counts: Any = None) -> torch.Tensor:
    """The training loss of a :class:`~medmm.models.multimodal.MultimodalModel` (possibly wrapped in
    ``DistributedDataParallel``): weighted task losses plus the auxiliary unimodal heads' losses,
    plus the L2 penalty of the wide (linear) paths. ``sum_counts`` (data-parallel training: a
    function summing a tensor over the processes, see :func:`global_batch_means`) makes each
    process's masked means its share of the global batch's."""
    core: Any = getattr(model, "module", model)  # the model inside a DistributedDataParallel wrapper
    missing = [c for cols in core.label_columns.values() for c in cols if c not in batch.tasks]
    if missing:
        raise ConfigError(f"the batch has no label column for {missing}",
                          hint="build the dataset with tasks=model.label_columns_flat")
    logits, aux = model(batch.values, batch.present, return_aux=True)
    pairs = [task_losses(core, logits, batch, criterion=criterion)]
    pairs += [task_losses(core, lg, batch, rows, criterion) for lg, rows in aux.values()]
    if sum_counts is not None:
        pairs = global_batch_means(pairs, sum_counts)
    loss = core.loss_weighting(*pairs[0])
    if len(pairs) > 1:
        parts = [core.loss_weighting(*p) for p in pairs[1:]]
        loss = loss + core.config.aux_weight * sum(parts) / len(parts)
    if len(getattr(core, "wide", ())):
        loss = loss + core.wide_penalty()
    return loss


def label_counts(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-task ``(n_positive, n_negative)`` over the known labels of a dataset."""
    tasks = dataset.tasks
    pos = np.zeros(len(tasks))
    neg = np.zeros(len(tasks))
    for it in dataset.items:
        for k, t in enumerate(tasks):
            y = it["labels"].get(t)
            if y is None or (isinstance(y, float) and np.isnan(y)):
                continue
            if float(y) >= 0.5:
                pos[k] += 1
            else:
                neg[k] += 1
    return pos, neg


class MaskedLoss:
    """``loss(logits, batch, rows=None)``: the mean loss over known (patient, task) labels.

    ``rows`` (``bool[B]``) restricts the loss to some patients (auxiliary unimodal heads
    use the rows where their modality is present).
    """

    def __init__(self, kind: str = "bce", *, pos_weight: Any = None, class_weight: Any = None,
                 gamma: float = 2.0, alpha: float | None = None) -> None:
        if kind not in LOSSES:
            raise ConfigError(f"unknown loss {kind!r}", column="loss", hint=f"use one of {LOSSES}")
        self.kind = kind
        #: per-task training prevalence, set by :func:`build_criterion`
        self.prevalence: dict[str, float] = {}
        self.pos_weight = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        self.class_weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.gamma = float(gamma)
        self.alpha = alpha

    def __call__(self, logits: torch.Tensor, batch: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        y = batch.labels.to(logits.dtype)
        mask = batch.label_mask.to(logits.dtype)
        if rows is not None:
            mask = mask * rows.to(logits.dtype)[:, None]
        pw = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none", pos_weight=pw)
        if self.kind == "focal":
            p = torch.sigmoid(logits)
            p_t = p * y + (1 - p) * (1 - y)
            loss = loss * (1 - p_t).pow(self.gamma)
            if self.alpha is not None:
                loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        if self.class_weight is not None:
            cw = self.class_weight.to(logits.device)  # [T, 2]: weight of negatives, positives
            loss = loss * (y * cw[:, 1] + (1 - y) * cw[:, 0])
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)

    def describe(self) -> dict[str, Any]:
        """What is used, for the run's params."""
        d: dict[str, Any] = {"loss": self.kind}
        if self.pos_weight is not None:
            d["pos_weight"] = [round(float(v), 4) for v in self.pos_weight.reshape(-1)]
        if self.class_weight is not None:
            d["class_weight"] = [[round(float(a), 4) for a in row] for row in self.class_weight]
        if self.kind == "focal":
            d["focal_gamma"] = self.gamma
            d["focal_alpha"] = self.alpha
        return d


def build_criterion(config: Any, train_ds: Any, *, kinds: dict[str, str] | None = None) -> MaskedLoss:
    """The loss named by ``config.loss`` with weights from ``train_ds``'s prevalence. ``kinds``
    (label column -> head kind) limits the 0/1 weights to the binary tasks' columns: a list of
    ``pos_weight`` numbers is one per binary task, the other columns weigh 1."""
    tasks = tuple(train_ds.tasks)
    binary = np.array([dict(kinds or {}).get(t, "binary") == "binary" for t in tasks])
    pos, neg = label_counts(train_ds)
    pos, neg = np.where(binary, pos, 0.0), np.where(binary, neg, 0.0)
    pos_weight = getattr(config, "pos_weight", None)
    if isinstance(pos_weight, str):
        if pos_weight != "auto":
            raise ConfigError(f"pos_weight {pos_weight!r} is not understood", column="pos_weight",
                              hint="use 'auto', a number, or one number per task")
        pos_weight = np.where(binary, neg / np.maximum(pos, 1.0), 1.0)
    elif pos_weight is not None:
        given = np.asarray(pos_weight, dtype=float).reshape(-1)
        if given.size not in (1, int(binary.sum())) and not binary.all():
            raise ConfigError(f"pos_weight gives {given.size} numbers for {int(binary.sum())} binary task(s)",
                              column="pos_weight", hint=f"give one per binary task {[t for t, b in zip(tasks, binary) if b]}")
        pos_weight = np.ones(len(tasks))
        pos_weight[binary] = np.broadcast_to(given, (int(binary.sum()),)) if binary.any() else []
    class_weight = None
    if config.loss == "weighted_bce":
        n = pos + neg
        class_weight = np.stack([n / (2 * np.maximum(neg, 1.0)), n / (2 * np.maximum(pos, 1.0))], axis=1)
    crit = MaskedLoss(config.loss, pos_weight=pos_weight, class_weight=class_weight,
                      gamma=getattr(config, "focal_gamma", 2.0), alpha=getattr(config, "focal_alpha", None))
    crit.prevalence = {t: (float(pos[k] / (pos[k] + neg[k])) if pos[k] + neg[k] else float("nan"))
                       for k, t in enumerate(tasks) if binary[k]}
    return crit


def balanced_sample_weights(dataset: Any, task: str | None = None, *, kinds: dict[str, str] | None = None
                            ) -> np.ndarray:
    """Per-patient sampling weights that make each class of ``task`` (default: the first binary
    or multiclass task) equally likely; patients without that label get the mean weight.
    ``kinds`` (task -> head kind) refuses a regression, survival or multilabel task, which has
    no classes to balance."""
    tasks = tuple(dataset.tasks)
    kinds = dict(kinds or {})
    classed = [t for t in tasks if kinds.get(t, "binary") in ("binary", "multiclass")]
    task = task or (classed[0] if classed else tasks[0])
    kind = kinds.get(task, "binary")
    if kind not in ("binary", "multiclass"):
        raise ConfigError(f"sampler 'balanced' needs a binary or multiclass balance_task; {task!r} is a {kind} task",
                          column="balance_task",
                          hint=f"set balance_task to one of {classed}" if classed else "use sampler: shuffle")
    if task not in tasks:
        raise ConfigError(f"balance_task {task!r} is not a task", column="balance_task", hint=f"use one of {tasks}")
    ys = np.asarray([np.nan if (y := it["labels"].get(task)) is None else float(y) for it in dataset.items], dtype=float)
    known = ~np.isnan(ys)
    w = np.ones(len(ys))
    groups = [ys >= 0.5, ys < 0.5] if kind == "binary" else [ys == c for c in np.unique(ys[known])]
    for g in groups:
        sel = known & g
        if sel.any():
            w[sel] = 1.0 / sel.sum()
    if known.any() and (~known).any():
        w[~known] = w[known].mean()
    return w / w.sum()
