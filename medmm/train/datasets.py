"""A dataset whose images are read in DataLoader workers through the on-disk image cache.

:class:`~medmm.data.MultimodalDataset` preprocesses every record once, in the main process, and
holds the arrays in memory. :class:`CachedImageDataset` keeps only the small modalities in
memory; each image is read by ``__getitem__`` (so in the DataLoader's worker processes) from its
record's :class:`~medmm.records.ImageSource` through a :class:`~medmm.preprocess.cache.VolumeCache`
of deterministically preprocessed volumes (``.npy`` files opened with ``mmap``, shared by the
workers through the page cache), and, for a training dataset whose image preprocessor has
``augment`` set, augmented afterwards with a seed fixed by ``(seed, epoch, index)``, so that a
resumed run draws the same augmentations. Memory does not grow with the cohort: one batch of
volumes at a time.

:meth:`CachedImageDataset.prefill` fills the cache ahead of the first epoch in worker processes
(what ``medmm preprocess`` does for a whole manifest); an image that cannot be read there becomes
missing for that patient, with its error in the cohort's report. An image that turns unreadable
later (deleted between the passes) is treated as missing for that sample, with a warning, never
a crash in a worker.

A cohort whose preprocessed images are small (the demo's 16^3 volumes: 16 KB each) is read from
the cache thousands of times over a run (every epoch of every training stage), and each read
opens, maps and stats a file (~0.3 ms). :func:`keep_in_memory` lets the datasets of one run hold
their images in memory after the first read when all of them together fit a budget
(``preprocess.memory_mb``, 64 MB by default), all or nothing, so that a cohort too big for it streams exactly as
before and peak memory still does not grow with the cohort beyond the budget.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MedmmError
from ..forking import frozen_gc
from ..records import Missing, PatientRecord

__all__ = ["CachedImageDataset", "fill_image_cache", "keep_in_memory", "prefill_datasets", "ImageReadWarning"]


class ImageReadWarning(UserWarning):
    """An image could not be read while training; the sample was used without it."""


def _source_of(record: PatientRecord, modality: str = "image") -> Any:
    img = record.modality(modality)
    if isinstance(img, Missing):
        return None
    src = getattr(img, "source", None)
    return src if src is not None else img  # an in-memory image without a file


class CachedImageDataset(torch.utils.data.Dataset):
    """Records -> items like :class:`~medmm.data.MultimodalDataset`, with images read lazily
    through ``cache_dir`` from each record's image source."""

    def __init__(self, records: Any, preprocessor: Any, tasks: tuple[str, ...], *,
                 cache_dir: str | Path, training: bool = False, seed: int = 0,
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
        #: deterministic preprocessed images by ``(index, modality)`` once read, when
        #: :func:`keep_in_memory` found that the run's images fit its budget (None: stream them)
        self.memo: dict[tuple[int, str], np.ndarray] | None = None
        kinds = getattr(self.modalities, "kinds", None) or {m: m for m in self.modalities}
        #: the image modalities, read through the cache (a CT and a PET series, ...)
        self.image_modalities = tuple(m for m in self.modalities if kinds.get(m) == "image")
        others = tuple(m for m in self.modalities if m not in self.image_modalities)
        records = list(records)
        self.items = encode_records(records, preprocessor, progress=progress, modalities=others)
        for it, r in zip(self.items, records):
            it["image_sources"] = {m: _source_of(r, m) for m in self.image_modalities}
            for m in self.image_modalities:
                it["values"].pop(m, None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def cache(self):
        from ..preprocess.cache import VolumeCache

        if self._cache is None:  # opened lazily, once per worker process
            self._cache = VolumeCache(self.cache_dir)
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None, "memo": None if self.memo is None else {}}

    def __len__(self) -> int:
        return len(self.items)

    def prefill(self, *, workers: int = 0, report: Any = None, progress: bool = False) -> dict[str, int]:
        """Preprocess every image into the cache now (in ``workers`` processes); an image that
        cannot be read becomes missing here, its error added to ``report``. Returns counts."""
        return prefill_datasets([self], workers=workers, report=report, progress=progress)

    def image_bytes(self) -> int:
        """Bytes of this dataset's preprocessed images (float32) were they all in memory."""
        return sum(4 * int(np.prod(self.shapes[m])) for it in self.items for m in self.image_modalities
                   if it["image_sources"].get(m) is not None)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.item(i)

    def item(self, i: int, modalities: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Item ``i``; with ``modalities``, images of other modalities are not read (their values
        are None): a view that pretrains the notes encoder does not open the CT."""
        from ..preprocess.cache import augmented, preprocess_cached

        it = self.items[i]
        values = dict(it["values"])
        for j, m in enumerate(self.image_modalities):
            values[m] = None
            src = it["image_sources"].get(m)
            if src is not None and (modalities is None or m in modalities):
                key = [self.seed, self.epoch, i] if j == 0 else [self.seed, self.epoch, i, j]
                seed = int(np.random.SeedSequence(key).generate_state(1)[0])
                step = self.preprocessor.steps[m]
                try:
                    known = (it.get("image_keys") or {}).get(m)
                    kept = None if self.memo is None else self.memo.get((i, m))
                    hit = kept if kept is not None else (
                        self.cache.get(known, verify=False) if known is not None else None)
                    if hit is not None and kept is None and self.memo is not None \
                            and torch.utils.data.get_worker_info() is None:
                        # kept by the main process only: forked workers see its entries, and a
                        # worker's own copies would be lost with it (and multiply the memory)
                        self.memo[(i, m)] = hit = np.array(hit)
                    if hit is not None:  # the key the prefill pass found (and checksummed): one open
                        arr = augmented(hit, step, training=self.training, seed=seed)
                    elif hasattr(src, "read"):
                        # the prefill pass checked each entry's checksum: an epoch reads it once
                        arr = preprocess_cached(src, step, self.cache, training=self.training, seed=seed,
                                                verify=False)
                    else:  # an in-memory image: nothing to cache
                        arr = step.transform(src)
                        if self.training and getattr(step, "augment", False):
                            arr = step.augment_array(arr, seed=seed)
                    values[m] = np.asarray(arr, dtype=np.float32)
                except MedmmError as exc:
                    warnings.warn(f"patient {it['id']}: {m} not read, used without it: {exc}", ImageReadWarning,
                                  stacklevel=2)
        return {"values": values, "labels": it["labels"], "id": it["id"]}

    def collate(self, items: list[dict[str, Any]]):
        from ..data import collate

        return collate(items, self.modalities, self.shapes, self.tasks)


def prefill_datasets(datasets: list[CachedImageDataset], *, workers: int = 0, report: Any = None,
                     progress: bool = False) -> dict[str, int]:
    """:meth:`CachedImageDataset.prefill` for several datasets (the splits of one run, sharing a
    preprocessor and a cache) in one pass, so that one worker pool serves them all.

    Under ``torchrun`` or Ray Train every rank fills its share of the images (every
    ``world_size``-th from its rank) into the shared cache, and the ranks then exchange their
    results (one ``all_gather_object``, which is also the barrier), so every rank knows every
    image's status without scanning the cache again. ``computed`` counts this rank's work.
    """
    from .distributed import dist_info

    if not datasets:
        return {"images": 0, "failed": 0, "computed": 0}
    first = datasets[0]
    info = dist_info()
    counts = {"images": 0, "failed": 0, "computed": 0}
    for m in first.image_modalities:
        todo = [(ds, i, it["image_sources"][m]) for ds in datasets for i, it in enumerate(ds.items)
                if it["image_sources"].get(m) is not None and hasattr(it["image_sources"][m], "read")]
        sources = [s for _, _, s in todo]
        step = first.preprocessor.steps[m]
        if info.enabled:
            import torch.distributed as tdist

            mine: list[str | None] = []
            share = fill_image_cache(sources[info.rank::info.world_size], step, first.cache_dir, workers=workers,
                                     progress=progress, keys=mine)
            # statuses and keys of every rank's share: a rank's epochs read other ranks' patients too
            shares: list[Any] = [None] * info.world_size
            tdist.all_gather_object(shares, (share, mine))
            results: list[tuple[str, str]] = [None] * len(sources)  # type: ignore[list-item]
            keys: list[str | None] = [None] * len(sources)
            for rank, (part, part_keys) in enumerate(shares):
                results[rank::info.world_size] = part
                keys[rank::info.world_size] = part_keys
            counts["computed"] += sum(st == "computed" for st, _ in share)
        else:
            keys = []
            results = fill_image_cache(sources, step, first.cache_dir, workers=workers, progress=progress, keys=keys)
            counts["computed"] += sum(st == "computed" for st, _ in results)
        for (ds, i, _), (status, err), key in zip(todo, results, keys):
            if key is not None:  # the epochs open the entry by its key: no stat of the source's files per read
                ds.items[i].setdefault("image_keys", {})[m] = key
            if status == "error":
                counts["failed"] += 1
                ds.items[i]["image_sources"][m] = None
                if report is not None:
                    report.add("error", err, patient_id=ds.items[i]["id"], modality=m, column=f"{m}_path")
        counts["images"] += len(todo)
    return counts


def keep_in_memory(datasets: list[CachedImageDataset], budget_bytes: int) -> bool:
    """Let ``datasets`` (the splits of one run) hold their images in memory once read when all
    of them together fit ``budget_bytes``; otherwise (or with a budget of 0) they stream every
    read from the cache, so memory stays bounded by the budget whatever the cohort's size.
    Returns whether they keep them. The kept arrays are the cached deterministic volumes:
    augmentation is still drawn afresh on each read, so results do not change."""
    total = sum(ds.image_bytes() for ds in datasets)
    keep = 0 < total <= int(budget_bytes)
    for ds in datasets:
        ds.memo = {} if keep else None
    return keep


class _Filler:
    def __init__(self, preprocessor: Any, cache_dir: str) -> None:
        self.preprocessor, self.cache_dir = preprocessor, cache_dir
        self._cache = None

    @property
    def cache(self):
        from ..preprocess.cache import VolumeCache

        if self._cache is None:
            self._cache = VolumeCache(self.cache_dir)
        return self._cache

    def lookup(self, source: Any) -> tuple[tuple[str, str] | None, str | None]:
        """``(found, key)``: found is ``("hit", "")`` when the entry is there, ``("error", message)``
        when the source is gone, None when it must be computed; ``key`` the entry's key (None on an
        error). Reads no image."""
        from ..preprocess.cache import entry_key

        try:
            key = entry_key(source, self.preprocessor, self.cache)
        except MedmmError as exc:
            return ("error", str(exc)), None
        return (None if self.cache.get(key) is None else ("hit", "")), key

    def __call__(self, source: Any) -> tuple[str, str]:
        from ..preprocess.cache import preprocess_cached

        before = self.cache.misses
        try:
            preprocess_cached(source, self.preprocessor, self.cache)
        except MedmmError as exc:
            return "error", str(exc)
        return ("computed" if self.cache.misses > before else "hit"), ""


_FILLER: _Filler | None = None


def _init_filler(filler: _Filler) -> None:
    from ..forking import return_large_frees

    global _FILLER
    torch.set_num_threads(1)  # one process per core
    return_large_frees()  # the source volumes it frees go back to the OS, not into its heap
    _FILLER = filler


def _fill_one(source: Any) -> tuple[str, str]:
    return _FILLER(source)  # type: ignore[misc]


def fill_image_cache(sources: list[Any], preprocessor: Any, cache_dir: str | Path, *, workers: int = 0,
                     progress: bool = False, keys: list[str | None] | None = None) -> list[tuple[str, str]]:
    """Preprocess each image source into the cache at ``cache_dir``; ``(status, error)`` per
    source, status ``"hit"``, ``"computed"`` or ``"error"``. Entries already there are kept,
    so a killed run resumes where it stopped. ``keys``, when given, receives each source's entry
    key (None for an error), so that later reads need not stat the source files again.

    Hits are found in this process (a stat and a checksum, no image read), so only the images
    to compute go to the ``workers`` processes; the first of them is computed here before the
    pool forks, so that the workers inherit the readers' and transforms' imports instead of
    each paying them.
    """
    from tqdm.auto import tqdm

    filler = _Filler(preprocessor, str(cache_dir))
    out: list[tuple[str, str] | None] = [None] * len(sources)
    with tqdm(total=len(sources), desc="preprocess images", unit="img", disable=not progress) as bar:
        todo = []
        if keys is not None:
            keys[:] = [None] * len(sources)
        for i, s in enumerate(sources):
            found, key = filler.lookup(s)
            if keys is not None:
                keys[i] = key
            if found is None:
                todo.append(i)
            else:
                out[i] = found
                bar.update(1)
        if workers > 0 and len(todo) > 2:
            import multiprocessing as mp

            i = todo.pop(0)
            out[i] = filler(sources[i])
            bar.update(1)
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with frozen_gc(), ctx.Pool(min(workers, len(todo)), initializer=_init_filler, initargs=(filler,)) as pool:
                for i, res in zip(todo, pool.imap(_fill_one, [sources[i] for i in todo], chunksize=1)):
                    out[i] = res
                    bar.update(1)
        else:
            for i in todo:
                out[i] = filler(sources[i])
                bar.update(1)
    return out  # type: ignore[return-value]


def preprocess_row(row: dict[str, Any], *, base: str, preprocessor: Any, cache_dir: str) -> dict[str, str]:
    """One manifest row's image into the cache (for :func:`medmm.engines.map_rows`):
    ``{"status": "hit" | "computed" | "error" | "none", "error": message}``."""
    from ..cohort import ProblemReport, row_to_record

    rep = ProblemReport()
    rec = row_to_record(row, base=Path(base), report=rep, row_index=row.get("_row"), modalities=("image",))
    src = None if isinstance(rec.image, Missing) else rec.image.source
    if src is None:
        return {"status": "error" if rep.errors else "none", "error": "; ".join(p.message for p in rep.errors)}
    status, err = _Filler(preprocessor, cache_dir)(src)
    return {"status": status, "error": err}
