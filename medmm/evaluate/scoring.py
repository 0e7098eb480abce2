"""Batch scoring of a cohort with bounded memory.

The manifest is read as a table (one small row per patient) and its records are loaded,
preprocessed and scored one batch at a time; only the per-patient predictions are kept, and
they are appended to a Parquet file as they come. Peak memory is one batch of volumes,
whatever the cohort's size. Optionally every batch is also scored with each subset of the
model's modalities kept (the others masked), for the robustness analysis.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..records import Image, Missing, PatientRecord
from ..records import subset_name as _subset_name
from .subgroups import AGE_BANDS, age_band, record_metadata  # re-exported: subgroup columns of a record

__all__ = ["ScoredCohort", "score_cohort", "register_scorer", "get_scorer", "iter_record_batches", "modality_subsets", "subset_name",
           "record_metadata", "AGE_BANDS", "age_band", "record_entry", "scoring_setup", "score_batch", "collect_scored",
           "ParquetAppender"]



def subset_name(mods) -> str:
    """Canonical name of a set of modalities (:func:`medmm.records.subset_name`): the default
    names in their order, then others alphabetically; ``'none'`` when empty."""
    return _subset_name(mods)


def modality_subsets(modalities: tuple[str, ...], *, include_empty: bool = True) -> list[tuple[str, ...]]:
    """Every subset of ``modalities``, smallest first (the empty one first when included)."""
    out = []
    for r in range(0 if include_empty else 1, len(modalities) + 1):
        out.extend(itertools.combinations(modalities, r))
    return out


#: engine name -> its scorer (``"module:function"`` or a callable), the same signature as
#: :func:`score_cohort` less ``engine`` and ``num_workers``. Engines sit above evaluation
#: (DESIGN.md's floors) and plug in here, as readers plug into :mod:`medmm.io`.
_SCORERS: dict[str, Any] = {"ray": "medmm.engines.ray_engine:score_manifest"}


def register_scorer(engine: str, scorer: Any) -> None:
    """Make ``score_cohort(..., engine=engine)`` call ``scorer`` (a callable or ``"module:function"``)."""
    _SCORERS[str(engine)] = scorer


def get_scorer(engine: str) -> Any:
    """The scorer of ``engine`` (imported on first use)."""
    import importlib

    from ..errors import ConfigError

    target = _SCORERS.get(engine)
    if target is None:
        raise ConfigError(f"unknown engine {engine!r}", column="engine",
                          hint=f"use one of {', '.join(['local', *sorted(_SCORERS)])}")
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = _SCORERS[engine] = getattr(importlib.import_module(module), name)
    return target


def iter_record_batches(cohort: Any, *, batch_size: int = 64, split: str | None = None,
                        modalities: Any = None) -> Iterator[list[PatientRecord]]:
    """Records of a cohort (a manifest path or a :class:`~medmm.cohort.Cohort`), ``batch_size``
    at a time; read errors go to the cohort's report.

    ``split`` keeps the patients of that split (``None`` or ``'all'``: every one); patients
    without a split get the one :meth:`~medmm.cohort.Cohort.from_manifest` assigns.
    """
    from ..cohort import Cohort

    if not isinstance(cohort, Cohort):
        cohort = Cohort.from_manifest(cohort, modalities=modalities, progress=False)
    if split not in (None, "all"):
        cohort = cohort.split(split)
    for s in range(0, len(cohort), batch_size):
        yield list(cohort[s:s + batch_size])


@dataclass
class ScoredCohort:
    """Per-patient predictions, and per masked subset when asked for."""

    predictions: Any  # DataFrame: patient_id, split, pattern, <metadata>, label_<t>, prob_<t>
    tasks: tuple[str, ...]
    modalities: tuple[str, ...]
    masked: dict[str, np.ndarray] = field(default_factory=dict)  # subset name -> probs [N, T]
    seconds: float = 0.0
    path: Path | None = None


class _EncoderCache:
    """Run each encoder once per batch on every present row, then answer the masked calls.

    Encoders are row-wise and give zeros on absent rows (the encoder contract of
    :mod:`medmm.models.encoders`), so the output for a subset of the present rows is the
    full output with the other rows zeroed. Used as a context manager around the masked
    forward passes; the encoders' own methods are restored on exit.
    """

    def __init__(self, model: Any, values: dict[str, Any], present: Any) -> None:
        self.model, self.values, self.present = model, values, present

    def __enter__(self) -> "_EncoderCache":
        self.patched = []
        for j, m in enumerate(self.model.modalities):
            enc = self.model.encoders[m]
            x, full = self.values[m], self.present[:, j]
            cache: dict[str, Any] = {}

            def forward(x_, mask, _enc=enc, _x=x, _full=full, _c=cache):
                if "pooled" not in _c:
                    _c["pooled"] = type(_enc).forward(_enc, _x, _full)
                return _c["pooled"] * mask[:, None].to(_c["pooled"].dtype)

            def forward_tokens(x_, mask, _enc=enc, _x=x, _full=full, _c=cache):
                if "tokens" not in _c:
                    _c["tokens"] = type(_enc).forward_tokens(_enc, _x, _full)
                z, tok, valid = _c["tokens"]
                mk = mask.to(z.dtype)
                return z * mk[:, None], tok * mk.view(-1, *([1] * (tok.dim() - 1))), valid & mask[:, None]

            enc.forward = forward
            if hasattr(type(enc), "forward_tokens"):
                enc.forward_tokens = forward_tokens
            self.patched.append(enc)
        return self

    def __exit__(self, *exc: Any) -> None:
        for enc in self.patched:
            for name in ("forward", "forward_tokens"):
                enc.__dict__.pop(name, None)


def _proba(model: Any, values: dict[str, Any], present: Any):
    if hasattr(model, "predict_proba"):
        return model.predict_proba(values, present)
    import torch

    return torch.sigmoid(model(values, present))


def record_entry(r: PatientRecord, preprocessor: Any, problems: list | None = None) -> dict[str, Any]:
    """What scoring keeps of a record: its preprocessed values, labels and table row.

    An image that cannot be read now (it changed after validation) is scored as missing, its
    error appended to ``problems``."""
    from ..cohort import Problem
    from ..errors import MedmmError

    images = [m for m in getattr(preprocessor, "modalities", ()) if isinstance(r.modality(m), Image)]
    for _ in range(len(images) + 1):
        try:
            values = preprocessor.transform(r)  # first: a lazy image's header is kept for the metadata below
            break
        except MedmmError as exc:
            bad = _unreadable_image(r, images, exc)
            if bad is None:
                raise
            if problems is not None:
                problems.append(Problem("error", str(exc), column=f"{bad}_path", path=str(exc.path or ""),
                                        patient_id=r.patient_id, modality=bad))
            r.modalities[bad] = Missing("read_error", str(exc))
            images.remove(bad)
    return {"values": values, "labels": dict(r.labels), "id": r.patient_id,
            "row": {"patient_id": r.patient_id, "split": str(r.split), "pattern": r.pattern, **record_metadata(r)}}


def _unreadable_image(r: PatientRecord, images: list[str], exc: Any) -> str | None:
    """Which of the record's images failed to read (``exc`` names its file), else ``None``."""
    from pathlib import Path as _P

    for m in images:
        img = r.modality(m)
        src = getattr(img, "source", None)
        if src is not None and exc.path is not None and _P(str(exc.path)).resolve() == _P(src.path).resolve():
            return m
    for m in images:  # no file named: the first image that does not read
        try:
            r.modality(m).loaded()
        except Exception:  # noqa: BLE001 - any failure marks it
            return m
    return None


def _as_list(batch: list) -> list:
    return batch


def _reader_init(worker_id: int) -> None:
    from ..forking import return_large_frees

    return_large_frees()  # the volumes a reader frees go back to the OS, not into its heap


class _CohortEntries:
    """A cohort's patients -> (scoring entry, problems), for a DataLoader's worker processes."""

    def __init__(self, cohort: Any, preprocessor: Any) -> None:
        self.cohort, self.preprocessor = cohort, preprocessor

    def __len__(self) -> int:
        return len(self.cohort)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], list]:
        r, problems = self.cohort.record_and_problems(i)
        return record_entry(r, self.preprocessor, problems), problems


def score_cohort(
    model: Any,
    cohort: Any,
    *,
    split: str | None = "test",
    batch_size: int = 64,
    subsets: bool | list[tuple[str, ...]] = False,
    out: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
    report: Any = None,
    cache_encoders: bool = True,
    num_workers: int = 0,
    engine: str = "local",
    address: str | None = None,
) -> ScoredCohort:
    """Score every patient of ``cohort`` (a manifest path, a :class:`~medmm.cohort.Cohort` or
    a list of records) with ``model``, ``batch_size`` patients at a time.

    ``subsets=True`` also scores each subset of the model's modalities (the others masked);
    ``out`` names a Parquet file the predictions are streamed to. ``cache_encoders`` runs
    each encoder once per batch for all the masked passes (see :class:`_EncoderCache`).
    ``num_workers`` > 0 reads and preprocesses a manifest's patients in that many worker
    processes (a torch DataLoader) while the model scores. Binary tasks get a column each; the
    others their :func:`~medmm.evaluate.task_metrics.typed_columns` (class probabilities, values,
    risk scores and risks) from the same pass. ``engine='ray'`` scores a manifest on a Ray cluster
    at ``address`` (:mod:`medmm.engines`); the predictions are the same.
    """
    import time

    if engine != "local":
        return get_scorer(engine)(model, cohort, split=split, batch_size=batch_size, subsets=subsets, out=out,
                                  progress=progress, device=device, report=report, cache_encoders=cache_encoders,
                                  address=address)

    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from ..train.trainer import resolve_device

    t0 = time.perf_counter()
    dev = resolve_device(device)
    model = model.to(dev).eval()
    mods, tasks, cols, shapes, subset_list = scoring_setup(model, subsets)
    pre = model.preprocessor
    if getattr(model, "modalities", None) is not None and model.modalities.of_kind("image"):
        from ..forking import return_large_frees

        # the image encoder's activations of each batch go back to the OS when freed rather than
        # fragmenting this process's heap (medmm evaluate at 1,600 patients: tree peak 2,053 -> 1,755 MB)
        return_large_frees()
    from ..cohort import Cohort

    if isinstance(cohort, (str, Path)):
        cohort = Cohort.from_manifest(cohort, modalities=mods, progress=False)
    elif not isinstance(cohort, Cohort):
        cohort = Cohort.from_records(list(cohort))
    if report is not None and report is not cohort.report:
        report.problems.extend(cohort.report.problems)  # the manifest's own problems
    if split not in (None, "all"):
        cohort = cohort.split(split)
    total = len(cohort)
    if num_workers > 0 and total > 1:
        loader = torch.utils.data.DataLoader(_CohortEntries(cohort, pre), batch_size=batch_size,
                                             num_workers=num_workers, collate_fn=_as_list, shuffle=False,
                                             worker_init_fn=_reader_init)

        def entry_batches():
            from ..forking import frozen_gc

            with frozen_gc():  # the workers fork here: keep the parent's heap shared with them
                batches = iter(loader)
            for b in batches:
                for _, problems in b:
                    cohort._note(problems)
                    if report is not None and report is not cohort.report:
                        report.problems.extend(problems)
                yield [e for e, _ in b]
    else:
        def entry_batches():
            for s in range(0, total, batch_size):
                n_before = len(cohort.report.problems)
                problems: list = []
                items = [record_entry(r, pre, problems) for r in cohort[s:s + batch_size]]
                cohort._note(problems)
                if report is not None and report is not cohort.report:
                    report.problems.extend(cohort.report.problems[n_before:])
                yield items

    frames: list[Any] = []
    masked: dict[str, list[np.ndarray]] = {subset_name(s): [] for s in subset_list}
    writer = ParquetAppender(out)
    bar = tqdm(total=total, desc="score", unit="pt", disable=not progress)
    try:
        with torch.inference_mode():
            for items in entry_batches():
                rows, m = score_batch(model, items, mods=mods, shapes=shapes, subset_list=subset_list, tasks=tasks,
                                       cols=cols, device=dev, cache_encoders=cache_encoders)
                for k, v in m.items():
                    masked[k].append(v)
                frame = pd.DataFrame(rows)
                frames.append(frame)
                writer.add(frame)
                bar.update(len(items))
    finally:
        bar.close()
        writer.close()
    return collect_scored(frames, masked, tasks, mods, time.perf_counter() - t0, out)


def scoring_setup(model: Any, subsets: bool | list[tuple[str, ...]]) -> tuple[tuple[str, ...], tuple[str, ...], list[int],
                                                                     dict, list[tuple[str, ...]]]:
    """What scoring needs of a model: modalities, binary tasks, their output columns, input
    shapes and the modality subsets to score."""
    mods = tuple(model.modalities)
    columns = list(getattr(model, "output_columns", model.tasks))
    heads = getattr(model, "heads", None)  # other kinds: medmm.evaluate.task_metrics
    tasks = tuple(t for t in model.tasks if t in columns and (heads is None or heads[t].kind == "binary"))
    cols = [columns.index(t) for t in tasks]
    shapes = model.preprocessor.output_shapes()
    if subsets is True:
        subset_list = modality_subsets(mods)
    elif subsets:
        subset_list = [tuple(s) for s in subsets]
    else:
        subset_list = []
    return mods, tasks, cols, shapes, subset_list


class ParquetAppender:
    """Append per-batch prediction tables to one Parquet file (the first batch's columns)."""

    def __init__(self, out: str | Path | None) -> None:
        self.out, self.writer = out, None

    def add(self, frame: Any) -> None:
        if self.out is None:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            Path(self.out).parent.mkdir(parents=True, exist_ok=True)
            self.columns = list(frame.columns)
            self.schema = pa.Table.from_pandas(frame, preserve_index=False).schema
            self.writer = pq.ParquetWriter(str(self.out), self.schema)
        part = frame.reindex(columns=self.columns, fill_value="unknown")
        self.writer.write_table(pa.Table.from_pandas(part, schema=self.schema, preserve_index=False))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def score_batch(model: Any, items: list[dict[str, Any]], *, mods: tuple[str, ...], shapes: dict, subset_list: list,
                 tasks: tuple[str, ...], cols: list[int], device: Any,
                 cache_encoders: bool = True) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Score one batch of :func:`record_entry` items: its table rows and ``{subset name: probs [B, T]}``.

    Every engine scores through this, so results do not depend on where it runs.
    """
    import contextlib

    import torch

    from ..data import collate

    batch = collate(items, mods, shapes, ()).to(device)
    full = _proba(model, batch.values, batch.present).float().cpu().numpy()
    probs = full[:, cols]
    masked: dict[str, np.ndarray] = {}
    if subset_list:
        ctx = _EncoderCache(model, batch.values, batch.present) if cache_encoders else contextlib.nullcontext()
        with ctx:
            for s in subset_list:
                keep = torch.tensor([m in s for m in mods], device=device)
                pm = _proba(model, batch.values, batch.present & keep[None, :]).float().cpu().numpy()
                masked[subset_name(s)] = pm[:, cols]
    rows = []
    for it, pr in zip(items, probs):
        row = dict(it["row"])
        for k, t in enumerate(tasks):
            y = it["labels"].get(t)
            row[f"label_{t}"] = np.nan if y is None else float(y)
            row[f"prob_{t}"] = float(pr[k])
        rows.append(row)
    heads = getattr(model, "heads", None)
    if heads is not None and any(heads[t].kind != "binary" for t in model.tasks):
        from .task_metrics import record_label, typed_columns  # every task type's columns, same pass

        labels = [it["labels"] for it in items]
        typed, _ = typed_columns(model, full, lambda key: record_label(labels, key), curves=False)
        for i, row in enumerate(rows):
            row.update({k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in typed.items()})
    return rows, masked


def collect_scored(frames: list[Any], masked: dict[str, list[np.ndarray]], tasks: tuple[str, ...],
                   mods: tuple[str, ...], seconds: float, out: str | Path | None) -> ScoredCohort:
    """The :class:`ScoredCohort` of per-batch tables and masked scores, in cohort order."""
    import pandas as pd

    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["patient_id", "split", "pattern", *[c for t in tasks for c in (f"label_{t}", f"prob_{t}")]])
    # metadata columns may differ between batches (a column only some rows have)
    meta_cols = [c for c in preds.columns if c not in ("patient_id", "split", "pattern")
                 and not c.startswith(("label_", "prob_", "pred_", "value_", "risk_"))
                 and preds[c].dtype == object]  # typed tasks' numeric columns (time_t, event_t) stay numbers
    for c in meta_cols:
        preds[c] = preds[c].fillna("unknown").astype(str)
    return ScoredCohort(preds, tasks, mods, {k: np.concatenate(v) if v else np.zeros((0, len(tasks)))
                                             for k, v in masked.items()},
                        seconds, Path(out) if out is not None else None)
