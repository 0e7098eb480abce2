"""A dataset whose images are read in DataLoader workers through the on-disk image cache.

:class:`~medmm.data.MultimodalDataset` preprocesses every record once, in the main process, and
holds the arrays in memory. :class:`CachedImageDataset` keeps only the small modalities in
memory; each image is read by ``__getitem__`` (so in the DataLoader's worker processes) through
a :class:`~medmm.preprocess.cache.VolumeCache` of deterministically preprocessed volumes
(``.npy`` files opened with ``mmap``, shared by the workers through the page cache), and, for a
training dataset whose image preprocessor has ``augment`` set, augmented afterwards with a
seed fixed by ``(seed, epoch, index)``, so that a resumed run draws the same augmentations.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..records import Missing, PatientRecord

__all__ = ["CachedImageDataset", "image_sources"]


def image_sources(manifest: str | Path) -> dict[str, str]:
    """``{patient_id: image path}`` from a manifest (paths resolved against its folder)."""
    from ..cohort import read_manifest

    manifest = Path(manifest)
    df = read_manifest(manifest)
    out = {}
    if "image_path" not in df.columns:
        return out
    for pid, p in zip(df["patient_id"].astype(str), df["image_path"]):
        if isinstance(p, str) and p.strip():
            q = Path(p)
            out[pid] = str(q if q.is_absolute() else (manifest.parent / q).resolve())
    return out


class CachedImageDataset(torch.utils.data.Dataset):
    """Records -> items like :class:`~medmm.data.MultimodalDataset`, with images read lazily
    through ``cache_dir``.

    ``sources`` maps a patient to the image path that its record was read from; a patient whose
    record has no image (missing or unreadable) stays without one.
    """

    def __init__(self, records: list[PatientRecord], preprocessor: Any, tasks: tuple[str, ...], *,
                 sources: dict[str, str], cache_dir: str | Path, training: bool = False, seed: int = 0,
                 progress: bool = False) -> None:
        from ..data import encode_records

        self.preprocessor = preprocessor
        self.tasks = tuple(tasks)
        self.modalities = tuple(preprocessor.modalities)
        self.shapes = preprocessor.output_shapes()
        self.cache_dir = str(cache_dir)
        self.training = training
        self.seed = int(seed)
        self.epoch = 0
        self._cache = None
        use_image = "image" in self.modalities
        light = [dataclasses.replace(r, image=Missing("deferred")) if use_image else r for r in records]
        self.items = encode_records(light, preprocessor, progress=progress)
        for it, r in zip(self.items, records):
            it["image_path"] = sources.get(r.patient_id) if use_image and r.present["image"] else None
            it["values"].pop("image", None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def cache(self):
        from ..preprocess.cache import VolumeCache

        if self._cache is None:  # opened lazily, once per worker process
            self._cache = VolumeCache(self.cache_dir)
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from ..preprocess.cache import preprocess_cached

        it = self.items[i]
        values = dict(it["values"])
        if "image" in self.modalities:
            values["image"] = None
            if it["image_path"]:
                seed = int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0])
                values["image"] = np.asarray(preprocess_cached(
                    it["image_path"], self.preprocessor.steps["image"], self.cache, training=self.training,
                    seed=seed), dtype=np.float32)
        return {"values": values, "labels": it["labels"], "id": it["id"]}

    def collate(self, items: list[dict[str, Any]]):
        from ..data import collate

        return collate(items, self.modalities, self.shapes, self.tasks)
