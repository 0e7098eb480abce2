"""Task heads: ``forward(z: [B, D]) -> [B, n_outputs]`` logits, each with its own loss and output.

==============  ===========  ==================  ===============================================
kind            n_outputs    label columns       loss; ``predict``
==============  ===========  ==================  ===============================================
``binary``      1            1 (0/1)             BCE; sigmoid probability
``multiclass``  n_classes    1 (class 0..K-1)    cross-entropy; softmax probabilities
``multilabel``  n_labels     n_labels (0/1)      BCE per label; sigmoid per label
``regression``  1            1 (a number)        MSE (or Huber); the value
``survival``    1 or n_bins  2 (time, event)     Cox partial likelihood or discrete-time NLL
==============  ===========  ==================  ===============================================

Survival heads (``cox``, ``discrete_time``; ``survival`` picks by ``method``) live in
:mod:`medmm.models.survival`. Task options (``classes``, ``unit``, ``horizon``, ...) are declared
as in :mod:`medmm.tasks`; ``output_names(task)`` names a head's output columns.

``loss(logits, target, mask)`` returns ``(sum, count)`` over the known labels only (``mask``
false where a patient's label is missing), so an unlabelled patient adds nothing to the task.
A multi-label task reads one label column per label, named ``<task>.<label>`` (manifest columns
``label_<task>.<label>``), so each label may be missing on its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .registry import Registry

__all__ = ["HEADS", "register_head", "create_head", "Head", "BinaryHead", "MulticlassHead", "MultilabelHead",
           "RegressionHead"]

HEADS = Registry("head")
register_head = HEADS.register


def create_head(name: str, **kwargs: Any) -> "Head":
    """Build a registered head, e.g. ``create_head("multiclass", dim=64, n_classes=3)``."""
    return HEADS.create(name, **kwargs)


class Head(nn.Module):
    """Base class. ``project=False`` makes the head take logits as they come (decision-level fusion
    computes them itself)."""

    kind = ""
    n_outputs = 1

    def __init__(self, *, dim: int, dropout: float = 0.1, project: bool = True) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, self.n_outputs)) if project else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def label_columns(self, task: str) -> list[str]:
        """The batch label columns this head reads."""
        return [task]

    def output_names(self, task: str) -> list[str]:
        """A name per output column (``task``, or ``task.<class>`` / ``task.<label>``)."""
        return [task]

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask.to(logits.dtype)
        per = nn.functional.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
        return (per * m).sum(), m.sum()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_outputs": self.n_outputs}


@register_head("binary", loss="bce")
class BinaryHead(Head):
    """One logit for a binary task."""

    kind = "binary"


@register_head("multilabel", loss="bce")
class MultilabelHead(Head):
    """One logit per label (labels are not exclusive); ``labels`` names them, or ``n_labels`` counts
    them (named ``0``, ``1``, ...)."""

    kind = "multilabel"

    def __init__(self, *, dim: int, labels: list[str] | None = None, n_labels: int | None = None,
                 dropout: float = 0.1, project: bool = True) -> None:
        if labels is not None:
            self.labels = [str(x) for x in labels]
        elif n_labels:
            self.labels = [str(i) for i in range(int(n_labels))]
        else:
            raise ConfigError("a multilabel head needs labels or n_labels")
        self.n_outputs = len(self.labels)
        super().__init__(dim=dim, dropout=dropout, project=project)

    def label_columns(self, task: str) -> list[str]:
        return [f"{task}.{x}" for x in self.labels]

    def output_names(self, task: str) -> list[str]:
        return self.label_columns(task)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": self.labels}


@register_head("multiclass", loss="cross_entropy")
class MulticlassHead(Head):
    """``n_classes`` logits for exclusive classes; the label is the class index 0..K-1, and
    ``classes`` names them (default ``0``, ``1``, ...)."""

    kind = "multiclass"

    def __init__(self, *, dim: int, n_classes: int | None = None, classes: list[str] | None = None,
                 dropout: float = 0.1, label_smoothing: float = 0.0, project: bool = True) -> None:
        if classes is not None and n_classes is not None and int(n_classes) != len(classes):
            raise ConfigError(f"n_classes {n_classes} but {len(classes)} classes", hint="give one of the two")
        n_classes = len(classes) if classes is not None else n_classes
        if n_classes is None or int(n_classes) < 2:
            raise ConfigError(f"a multiclass head needs n_classes >= 2, got {n_classes}",
                              hint="give classes: [name0, name1, ...]")
        self.n_outputs = int(n_classes)
        self.classes = [str(c) for c in classes] if classes is not None else [str(k) for k in range(self.n_outputs)]
        self.label_smoothing = float(label_smoothing)
        super().__init__(dim=dim, dropout=dropout, project=project)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1)

    def output_names(self, task: str) -> list[str]:
        return [f"{task}.{c}" for c in self.classes]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classes": self.classes}

    def loss(self, logits, target, mask):
        m = mask[:, 0]
        y = target[:, 0].round().long().clamp(0, self.n_outputs - 1)
        per = nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=self.label_smoothing)
        mf = m.to(logits.dtype)
        return (per * mf).sum(), mf.sum()


@register_head("regression", loss="mse")
class RegressionHead(Head):
    """One output for a continuous target; ``loss`` is ``mse`` or ``huber``. Targets are best
    standardised beforehand (the loss is on the raw scale)."""

    kind = "regression"

    def __init__(self, *, dim: int, loss: str = "mse", unit: str | None = None, dropout: float = 0.1,
                 project: bool = True) -> None:
        if loss not in ("mse", "huber"):
            raise ConfigError(f"regression loss {loss!r} is not supported", hint="use 'mse' or 'huber'")
        self.loss_kind = loss
        self.unit = unit
        super().__init__(dim=dim, dropout=dropout, project=project)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "unit": self.unit}

    def loss(self, logits, target, mask):
        fn = nn.functional.mse_loss if self.loss_kind == "mse" else nn.functional.huber_loss
        m = mask.to(logits.dtype)
        per = fn(logits, torch.where(mask, target.to(logits.dtype), logits.detach()), reduction="none")
        return (per * m).sum(), m.sum()
