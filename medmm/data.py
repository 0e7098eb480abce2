"""Torch dataset and collate: records -> :class:`Batch` (values + presence mask)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .records import PatientRecord

__all__ = ["Batch", "MultimodalDataset", "collate", "encode_records"]


@dataclass
class Batch:
    """A batch: per-modality tensors (zeros where absent) and ``present: bool[B, M]``."""

    values: dict[str, torch.Tensor]
    present: torch.Tensor  # bool [B, M], columns in ``modalities`` order
    modalities: tuple[str, ...]
    labels: torch.Tensor | None = None  # float [B, T] (0 where unknown)
    label_mask: torch.Tensor | None = None  # bool [B, T]
    tasks: tuple[str, ...] = ()
    patient_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch({k: v.to(device, non_blocking=True) for k, v in self.values.items()}, mv(self.present),
                     self.modalities, mv(self.labels), mv(self.label_mask), self.tasks, self.patient_ids)

    def mask(self, modalities: tuple[str, ...] | list[str]) -> "Batch":
        """A copy in which ``modalities`` are marked absent."""
        present = self.present.clone()
        for m in modalities:
            present[:, self.modalities.index(m)] = False
        return Batch(self.values, present, self.modalities, self.labels, self.label_mask, self.tasks,
                     self.patient_ids)


def encode_records(records: Any, preprocessor: Any, *, progress: bool = False,
                   modalities: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Preprocess every record once: ``{"values": {m: array|None}, "labels": ..., "id": ...}``.

    ``records`` may be a list or a lazy :class:`~medmm.cohort.Cohort` (records are built and
    dropped 64 at a time); ``modalities`` limits the work to those (the others are ``None``).
    """
    from tqdm.auto import tqdm

    many = getattr(preprocessor, "transform_many", None)
    out = []
    chunk = 64 if many is not None else 1
    with tqdm(total=len(records), desc="preprocess", unit="pt", disable=not progress) as bar:
        for s in range(0, len(records), chunk):
            part = [records[i] for i in range(s, min(s + chunk, len(records)))]
            if many is not None:
                values = many(part, modalities=modalities) if modalities is not None else many(part)
            else:
                values = [preprocessor.transform(r) for r in part]
            out.extend({"values": v, "labels": dict(r.labels), "id": r.patient_id} for v, r in zip(values, part))
            bar.update(len(part))
    return out


class MultimodalDataset(torch.utils.data.Dataset):
    """Preprocessed records held in memory (the image cache makes re-reading cheap)."""

    def __init__(self, records: list[PatientRecord], preprocessor: Any, tasks: tuple[str, ...], *,
                 modalities: tuple[str, ...] | None = None, progress: bool = False) -> None:
        self.items = encode_records(records, preprocessor, progress=progress)
        self.tasks = tuple(tasks)
        self.modalities = tuple(modalities or preprocessor.modalities)
        self.shapes = preprocessor.output_shapes()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def collate(self, items: list[dict[str, Any]]) -> Batch:
        return collate(items, self.modalities, self.shapes, self.tasks)


def collate(items: list[dict[str, Any]], modalities: tuple[str, ...], shapes: dict[str, tuple[int, ...]],
            tasks: tuple[str, ...]) -> Batch:
    b = len(items)
    values: dict[str, torch.Tensor] = {}
    present = np.zeros((b, len(modalities)), dtype=bool)  # filled in numpy: element writes to tensors are slow
    for j, m in enumerate(modalities):
        arr = np.zeros((b, *shapes[m]), dtype=np.float32)
        for i, it in enumerate(items):
            v = it["values"].get(m)
            if v is not None:
                arr[i] = v
                present[i, j] = True
        values[m] = torch.from_numpy(arr)
    labels = np.zeros((b, len(tasks)), dtype=np.float32)
    lmask = np.zeros((b, len(tasks)), dtype=bool)
    for i, it in enumerate(items):
        for k, t in enumerate(tasks):
            y = it["labels"].get(t)
            if y is not None and not (isinstance(y, float) and np.isnan(y)):
                labels[i, k] = float(y)
                lmask[i, k] = True
    present, labels, lmask = torch.from_numpy(present), torch.from_numpy(labels), torch.from_numpy(lmask)
    return Batch(values, present, tuple(modalities), labels, lmask, tuple(tasks), [it["id"] for it in items])
