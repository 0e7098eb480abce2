"""Batch scoring of a cohort with bounded memory.

The manifest is read as a table (one small row per patient) and its records are loaded,
preprocessed and scored one batch at a time; only the per-patient predictions are kept, and
they are appended to a Parquet file as they come. Peak memory is one batch of volumes,
whatever the cohort's size. Optionally every batch is also scored with each subset of the
model's modalities kept (the others masked), for the robustness analysis.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..records import MODALITIES, Missing, PatientRecord

__all__ = ["ScoredCohort", "score_cohort", "iter_record_batches", "modality_subsets", "subset_name",
           "record_metadata", "AGE_BANDS"]

#: (upper bound exclusive, label) of the age bands used for subgroups
AGE_BANDS = ((50, "<50"), (65, "50-64"), (80, "65-79"), (float("inf"), "80+"))
_AGE_KEY = re.compile(r"^age(\b|_|\s|$)", re.I)


def subset_name(mods) -> str:
    mods = [m for m in MODALITIES if m in set(mods)]
    return "+".join(mods) if mods else "none"


def modality_subsets(modalities: tuple[str, ...], *, include_empty: bool = True) -> list[tuple[str, ...]]:
    """Every subset of ``modalities``, smallest first (the empty one first when included)."""
    out = []
    for r in range(0 if include_empty else 1, len(modalities) + 1):
        out.extend(itertools.combinations(modalities, r))
    return out


def age_band(age: Any) -> str:
    try:
        a = float(age)
    except (TypeError, ValueError):
        return "unknown"
    if np.isnan(a):
        return "unknown"
    return next(label for hi, label in AGE_BANDS if a < hi)


def record_metadata(r: PatientRecord) -> dict[str, str]:
    """Subgroup columns of one record: every manifest metadata column, ``age_band`` (from a
    manifest or EHR ``age`` column) and ``scanner_manufacturer`` (from the image header)."""
    out = {str(k): ("unknown" if v is None else str(v)) for k, v in r.meta.items() if not str(k).startswith("_")}
    age = next((v for k, v in r.meta.items() if _AGE_KEY.match(str(k))), None)
    if age is None and not isinstance(r.ehr, Missing):
        age = next((v for k, v in getattr(r.ehr, "values", {}).items() if _AGE_KEY.match(str(k))), None)
    if "sex" not in out and not isinstance(r.ehr, Missing):
        sex = getattr(r.ehr, "values", {}).get("sex")
        if sex is not None:
            out["sex"] = str(sex)
    out["age_band"] = age_band(age)
    manu = None if isinstance(r.image, Missing) else (getattr(r.image, "meta", {}) or {}).get("Manufacturer")
    out["scanner_manufacturer"] = str(manu).strip() if manu else "unknown"
    return out


def manifest_with_splits(manifest: str | Path, *, split_seed: int = 0):
    """The manifest table with every patient's split, as :func:`~medmm.cohort.load_cohort`
    gives it: the rows it skips (a missing or duplicate ``patient_id``) are left out, and rows
    without a valid split get one from the same :func:`~medmm.cohort.fill_splits`."""
    from ..cohort import fill_splits, read_manifest, skipped_rows, validate_manifest

    df = read_manifest(manifest)
    skip: set[int] = set()
    if "patient_id" in df.columns:
        skip = skipped_rows(validate_manifest(manifest, check_files=False, frame=df))
    fill_splits(df, seed=split_seed, skip_rows=skip)
    return df.drop(index=df.index[sorted(skip)]) if skip else df


def iter_record_batches(manifest: str | Path, *, batch_size: int = 64, split: str | None = None,
                        modalities: tuple[str, ...] = MODALITIES, report: Any = None,
                        frame: Any = None) -> Iterator[list[PatientRecord]]:
    """Records of a manifest, ``batch_size`` at a time (read errors go to ``report``).

    ``split`` keeps the rows of that split (``None`` or ``'all'``: every row); patients
    without a split get the one :func:`~medmm.cohort.load_cohort` would assign. ``frame``:
    the manifest's table from :func:`manifest_with_splits`, when the caller has it already.
    """
    from ..cohort import row_to_record

    manifest = Path(manifest)
    df = manifest_with_splits(manifest) if frame is None else frame
    if split not in (None, "all"):
        df = df[df["split"] == split]
    rows = df.to_dict(orient="records")
    index = df.index.tolist()
    for s in range(0, len(rows), batch_size):
        yield [row_to_record(raw, base=manifest.parent, report=report, row_index=int(i), modalities=modalities)
               for raw, i in zip(rows[s:s + batch_size], index[s:s + batch_size])]


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


def _entry(r: PatientRecord, preprocessor: Any) -> dict[str, Any]:
    """What scoring keeps of a record: its preprocessed values, labels and table row."""
    return {"values": preprocessor.transform(r), "labels": dict(r.labels), "id": r.patient_id,
            "row": {"patient_id": r.patient_id, "split": str(r.split), "pattern": r.pattern, **record_metadata(r)}}


def _as_list(batch: list) -> list:
    return batch


class _ManifestRows:
    """Manifest rows -> (scoring entry, problems), for a DataLoader's worker processes."""

    def __init__(self, manifest: Path, rows: list[dict], index: list[int], preprocessor: Any,
                 modalities: tuple[str, ...]) -> None:
        self.manifest, self.rows, self.index = manifest, rows, index
        self.preprocessor, self.modalities = preprocessor, modalities

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], list]:
        from ..cohort import ProblemReport, row_to_record

        rep = ProblemReport()
        r = row_to_record(self.rows[i], base=self.manifest.parent, report=rep, row_index=int(self.index[i]),
                          modalities=self.modalities)
        return _entry(r, self.preprocessor), rep.problems


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
    processes (a torch DataLoader) while the model scores. Only binary tasks are evaluated
    (a column per task). ``engine='ray'`` scores a manifest on a Ray cluster at ``address``
    (:mod:`medmm.engines`); the predictions are the same.
    """
    import time

    from ..engines import check_engine

    if check_engine(engine) == "ray":
        from ..engines.ray_engine import score_manifest

        return score_manifest(model, cohort, split=split, batch_size=batch_size, subsets=subsets, out=out,
                              progress=progress, device=device, report=report, cache_encoders=cache_encoders,
                              address=address)

    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from ..train.trainer import resolve_device

    t0 = time.perf_counter()
    dev = resolve_device(device)
    model = model.to(dev).eval()
    mods, tasks, cols, shapes, subset_list = _setup(model, subsets)
    pre = model.preprocessor
    if isinstance(cohort, (str, Path)):
        df = manifest_with_splits(cohort)
        if split not in (None, "all"):
            df = df[df["split"] == split]
        total = len(df)
        if num_workers > 0:
            ds = _ManifestRows(Path(cohort), df.to_dict(orient="records"), df.index.tolist(), pre, mods)
            loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                                                 collate_fn=_as_list, shuffle=False)

            def entry_batches():
                for b in loader:
                    for _, problems in b:
                        if report is not None:
                            report.problems.extend(problems)
                    yield [e for e, _ in b]
        else:
            def entry_batches():
                for recs in iter_record_batches(cohort, batch_size=batch_size, modalities=mods, report=report,
                                                frame=df):
                    yield [_entry(r, pre) for r in recs]
    else:
        records = list(getattr(cohort, "records", cohort))
        if split not in (None, "all"):
            records = [r for r in records if r.split == split]
        total = len(records)

        def entry_batches():
            for s in range(0, len(records), batch_size):
                yield [_entry(r, pre) for r in records[s:s + batch_size]]

    frames: list[Any] = []
    masked: dict[str, list[np.ndarray]] = {subset_name(s): [] for s in subset_list}
    writer = _ParquetAppender(out)
    bar = tqdm(total=total, desc="score", unit="pt", disable=not progress)
    try:
        with torch.inference_mode():
            for items in entry_batches():
                rows, m = _score_batch(model, items, mods=mods, shapes=shapes, subset_list=subset_list, tasks=tasks,
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
    return _scored(frames, masked, tasks, mods, time.perf_counter() - t0, out)


def _setup(model: Any, subsets: bool | list[tuple[str, ...]]) -> tuple[tuple[str, ...], tuple[str, ...], list[int],
                                                                     dict, list[tuple[str, ...]]]:
    """What scoring needs of a model: modalities, binary tasks, their output columns, input
    shapes and the modality subsets to score."""
    mods = tuple(model.modalities)
    columns = list(getattr(model, "output_columns", model.tasks))
    tasks = tuple(t for t in model.tasks if t in columns)
    cols = [columns.index(t) for t in tasks]
    shapes = model.preprocessor.output_shapes()
    if subsets is True:
        subset_list = modality_subsets(mods)
    elif subsets:
        subset_list = [tuple(s) for s in subsets]
    else:
        subset_list = []
    return mods, tasks, cols, shapes, subset_list


class _ParquetAppender:
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


def _score_batch(model: Any, items: list[dict[str, Any]], *, mods: tuple[str, ...], shapes: dict, subset_list: list,
                 tasks: tuple[str, ...], cols: list[int], device: Any,
                 cache_encoders: bool = True) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Score one batch of :func:`_entry` items: its table rows and ``{subset name: probs [B, T]}``.

    Every engine scores through this, so results do not depend on where it runs.
    """
    import contextlib

    import torch

    from ..data import collate

    batch = collate(items, mods, shapes, ()).to(device)
    probs = _proba(model, batch.values, batch.present).float().cpu().numpy()[:, cols]
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
    return rows, masked


def _scored(frames: list[Any], masked: dict[str, list[np.ndarray]], tasks: tuple[str, ...], mods: tuple[str, ...],
            seconds: float, out: str | Path | None) -> ScoredCohort:
    """The :class:`ScoredCohort` of per-batch tables and masked scores, in cohort order."""
    import pandas as pd

    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["patient_id", "split", "pattern", *[c for t in tasks for c in (f"label_{t}", f"prob_{t}")]])
    # metadata columns may differ between batches (a column only some rows have)
    meta_cols = [c for c in preds.columns if c not in ("patient_id", "split", "pattern")
                 and not c.startswith(("label_", "prob_"))]
    for c in meta_cols:
        preds[c] = preds[c].fillna("unknown").astype(str)
    return ScoredCohort(preds, tasks, mods, {k: np.concatenate(v) if v else np.zeros((0, len(tasks)))
                                             for k, v in masked.items()},
                        seconds, Path(out) if out is not None else None)
