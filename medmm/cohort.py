"""Cohort manifests: validation, loading into records, patient-level splits.

A manifest is one table (CSV or Parquet), one row per patient; its row schema is
``medmm/schemas/manifest.schema.json``. :func:`validate_manifest` reports every problem
with its row and column; :func:`load_cohort` reads every modality through the reader
registry, collects per-patient problems into a :class:`ProblemReport` instead of dying on
the first bad file (unless ``strict=True``), and turns a failed modality into
``Missing("read_error")``.

Modalities: the four defaults (``image``, ``notes``, ``vitals``, ``ehr``) need no declaration;
any other ``<name>_path`` column is a modality declared with its kind in the sidecar
``<manifest stem>.modalities.yaml`` (schema ``medmm/schemas/modalities.schema.json``) or in the
experiment config's ``modalities:`` section (:func:`modality_spec`). An undeclared ``*_path``
column is an error, never silently metadata.
"""

from __future__ import annotations

import difflib
import html
from pathlib import Path
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import schemas as _schemas
from .errors import ManifestError, MedmmError, ReadError
from .forking import frozen_gc
from .problems import Problem, ProblemReport
from .records import MODALITIES, Missing, ModalitySpec, PatientRecord
from .schemas import load_schema

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

__all__ = [
    "Problem",
    "ProblemReport",
    "Cohort",
    "split_indices",
    "hold_out",
    "read_image_or_missing",
    "read_manifest",
    "validate_manifest",
    "load_cohort",
    "row_to_record",
    "assign_splits",
    "fill_splits",
    "skipped_rows",
    "modality_spec",
    "sidecar_path",
    "SCHEMA_DIR",
]

#: the packaged JSON Schemas (manifest.schema.json and the others)
SCHEMA_DIR = Path(_schemas.__file__).parent

#: the split names a manifest may give; any other value (blank included) gets one assigned
SPLITS = ("train", "val", "test")

BASE_COLUMNS = ("patient_id", "split", "index_time", "site", "sex")

KNOWN_COLUMNS = (
    *BASE_COLUMNS,
    *(f"{m}_path" for m in MODALITIES),
    *(f"{m}_format" for m in MODALITIES),
)

SIDECAR_SUFFIXES = (".modalities.yaml", ".modalities.yml", ".modalities.json")


def known_columns(spec: Any = None) -> tuple[str, ...]:
    """The manifest columns medmm reads for the modalities of ``spec`` (default: the four)."""
    names = tuple(ModalitySpec.coerce(spec))
    return (*BASE_COLUMNS, *(f"{m}_path" for m in names), *(f"{m}_format" for m in names))


def sidecar_path(manifest: str | Path) -> Path | None:
    """The modality declarations next to ``manifest`` (``<stem>.modalities.yaml``), if any."""
    manifest = Path(manifest)
    stem = manifest.name.split(".")[0] if manifest.name else "manifest"
    for suffix in SIDECAR_SUFFIXES:
        cand = manifest.parent / f"{stem}{suffix}"
        if cand.is_file():
            return cand
    return None


def read_modality_declarations(path: str | Path) -> dict[str, str]:
    """``{name: kind}`` of a modality declaration file (YAML or JSON), checked against
    ``medmm/schemas/modalities.schema.json``."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read the modality declarations: {exc}", path=path,
                            hint="write YAML such as `modalities: {pet: image, labs: table}`") from exc
    return check_modality_declarations(doc, source=path)


def check_modality_declarations(doc: Any, *, source: Any = None) -> dict[str, str]:
    """``{name: kind}`` of a declaration document (``{"modalities": {...}}`` or the mapping itself)."""
    import jsonschema

    if isinstance(doc, dict) and "modalities" not in doc and "tasks" not in doc:
        doc = {"modalities": doc}
    validator = jsonschema.Draft202012Validator(load_schema("modalities.schema.json"))
    err = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        raise ManifestError(f"modality declarations: {where}: {err.message}", path=source,
                            hint="declare each modality as `name: kind` with kind one of image, text, series, table "
                                 "(see medmm/schemas/modalities.schema.json)")
    return {str(k): (v["kind"] if isinstance(v, dict) else v) for k, v in (doc.get("modalities") or {}).items()}


def modality_spec(manifest: str | Path | None = None, declared: Any = None) -> ModalitySpec:
    """The modalities of a cohort: the four defaults, then those declared in the manifest's
    sidecar (:func:`sidecar_path`), then ``declared`` (an experiment config's ``modalities:``
    section, a mapping ``name -> kind``); a later declaration of a name overrides its kind."""
    spec = ModalitySpec()
    side = sidecar_path(manifest) if manifest is not None else None
    if side is not None:
        spec = spec.merged(read_modality_declarations(side))
    if declared:
        spec = spec.merged(declared if isinstance(declared, ModalitySpec)
                           else check_modality_declarations(dict(declared)))
    return spec


def read_manifest(path: str | Path):
    """Read a manifest table (CSV or Parquet) as strings, with labels as numbers."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ManifestError("manifest does not exist", path=path, hint="check the path")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:
        raise ManifestError(
            f"cannot read the manifest table ({type(exc).__name__}: {exc})",
            path=path,
            hint="give a CSV with a header row, or a Parquet file",
        ) from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _cell(v: Any) -> Any:
    """A table cell with pandas' missing markers (NaN, NA, NaT) as ``None``."""
    import pandas as pd

    try:
        return None if v is None or pd.isna(v) else v
    except (TypeError, ValueError):  # list-like cells: not a missing marker
        return v


def _label(v: Any) -> float | None:
    """A label cell as a record holds it: a number, or ``None`` when blank or not a number."""
    v = _cell(v)
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None  # reported by validation


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def validate_manifest(path: str | Path, *, check_files: bool = True, frame: Any = None,
                      modalities: Any = None) -> ProblemReport:
    """Check a manifest against its schema and the files it names; report every problem.

    ``modalities`` is the cohort's :class:`~medmm.records.ModalitySpec` (default: the four
    defaults and the sidecar's declarations, :func:`modality_spec`). A ``<name>_path`` or
    ``<name>_format`` column of an undeclared modality is an error saying how to declare it."""
    import jsonschema
    import pandas as pd

    from .io import infer_format

    path = Path(path)
    report = ProblemReport(source=str(path))
    try:
        spec = modalities if isinstance(modalities, ModalitySpec) else modality_spec(path, modalities)
    except MedmmError as exc:
        report.add_error(exc)
        return report
    df = read_manifest(path) if frame is None else frame  # ``frame``: the table, already read
    base = path.parent
    cols = list(df.columns)
    known = known_columns(spec)
    if "patient_id" not in cols:
        close = difflib.get_close_matches("patient_id", cols, n=1, cutoff=0.6)
        report.add("error", "required column 'patient_id' is missing"
                   + (f"; did you mean to name {close[0]!r} 'patient_id'?" if close else ""), column="patient_id")
        return report
    label_cols = [c for c in cols if c.startswith("label_")]
    for c in cols:
        if c in known or c.startswith("label_"):
            continue
        close = difflib.get_close_matches(c, known, n=1, cutoff=0.8)
        if c.endswith(("_path", "_format")) and not close:
            name = c.rsplit("_", 1)[0]
            side = sidecar_path(path)
            report.add("error", f"column {c!r} names a modality {name!r} that is not declared, so its files would "
                       f"never be read. Declare it with its kind (image, text, series or table) in "
                       f"{(side or path.parent / (path.name.split('.')[0] + '.modalities.yaml')).name} "
                       f"(`modalities: {{{name}: image}}`) or the experiment config's `modalities:` section, or "
                       f"rename the column if it is patient metadata", column=c)
        elif close:
            report.add("error", f"unknown column {c!r}: did you mean {close[0]!r}? Rename it, or the column is "
                       "treated as patient metadata and its files are never read", column=c)
    if not label_cols:
        report.add("warning", "no 'label_*' column: the cohort can be scored but not trained or evaluated")

    validator = jsonschema.Draft202012Validator(
        load_schema("manifest.schema.json"), format_checker=jsonschema.FormatChecker()
    )
    seen: dict[str, int] = {}
    for i, raw in enumerate(df.to_dict(orient="records")):
        row = {k: _cell(v) for k, v in raw.items()}
        pid = row.get("patient_id")
        # labels are numbers in the schema; CSV cells arrive as strings
        for c in label_cols:
            if row.get(c) is not None:
                try:
                    row[c] = float(row[c])
                except (TypeError, ValueError):
                    pass
        for err in validator.iter_errors(row):
            col = err.path[0] if err.path else None
            expected = err.schema.get("description") or err.validator_value
            report.add("error", f"bad value {err.instance!r}: {err.message} (expected {expected})"
                       if col else err.message, row=i, column=col, patient_id=pid)
        if pid is not None:
            if pid in seen:
                report.add("error", f"duplicate patient_id (first at row {seen[pid]})", row=i,
                           column="patient_id", patient_id=pid)
            seen.setdefault(pid, i)
        for c in label_cols:
            v = row.get(c)
            if isinstance(v, float) and not float(v).is_integer():
                report.add("warning", f"label {v} is not 0/1; it is treated as a regression target",
                           row=i, column=c, patient_id=pid)
        if row.get("index_time") is not None:
            try:
                pd.Timestamp(row["index_time"])
            except (ValueError, TypeError):
                report.add("error", f"index_time {row['index_time']!r} is not an ISO 8601 time",
                           row=i, column="index_time", patient_id=pid)
        if not check_files:
            continue
        for m in spec:
            value = row.get(f"{m}_path")
            if not value:
                continue
            target = _resolve(base, str(value))
            if not target.exists():
                report.add("error", f"{m} file {str(target)!r} does not exist (paths are relative to the "
                           "manifest's folder)", row=i, column=f"{m}_path", path=str(target),
                           patient_id=pid, modality=m)
                continue
            if not row.get(f"{m}_format"):
                try:
                    infer_format(spec.kind(m), target, name=m)
                except MedmmError as exc:
                    report.add_error(exc, row=i, column=f"{m}_path", patient_id=pid, modality=m)
    return report


def split_indices(
    strata: Any,
    groups: Any,
    *,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> tuple[Any, Any, Any]:
    """Positions of the train, val and test parts: stratified by ``strata`` and grouped by
    ``groups`` (a group never straddles two parts), with scikit-learn's
    ``StratifiedGroupKFold``. The one split implementation of medmm: manifests without a
    split column and ``split.mode: assign`` both draw through it."""
    import numpy as np

    strata = np.asarray(strata)
    groups = np.asarray(groups, dtype=object)
    idx = np.arange(len(strata))
    f_train, f_val, f_test = fractions
    rest, test = hold_out(idx, strata, groups, f_test, seed)
    train, val = hold_out(rest, strata, groups, f_val / max(f_train + f_val, 1e-12), seed + 1)
    return train, val, test


def hold_out(idx: Any, y: Any, groups: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Split the indices ``idx`` into ``(rest, held)`` with about ``fraction`` held out, stratified by
    ``y[idx]`` and grouped by ``groups[idx]`` (a group is never on both sides; sklearn's
    ``StratifiedGroupKFold``, one fold held). A stratum too small to stratify falls back to grouped only;
    fewer than two groups hold nothing out."""
    import warnings

    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    if fraction <= 0 or len(idx) == 0:
        return idx, idx[:0]
    n_splits = max(2, int(round(1.0 / fraction)))
    n_groups = len(set(groups[idx].tolist()))
    if n_groups < 2:
        return idx, idx[:0]
    n_splits = min(n_splits, n_groups)  # a tiny cohort: hold out one group
    strata = y[idx]
    if np.unique(strata, return_counts=True)[1].max() < n_splits:
        strata = np.zeros(len(idx), dtype=int)  # too few per stratum to stratify: grouped only
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a stratum smaller than n_splits is fine here
        warnings.simplefilter("ignore", UserWarning)
        rest, held = next(cv.split(np.zeros(len(idx)), strata, groups[idx]))
    return idx[rest], idx[held]


def label_strata(labels: Sequence[Any]) -> "np.ndarray":
    """Strata of a label list: 0/1 by the label (>= 0.5), -1 when unknown."""
    import numpy as np

    out = []
    for y in labels:
        out.append(-1 if y is None or (isinstance(y, float) and np.isnan(y)) else int(float(y) >= 0.5))
    return np.asarray(out, dtype=int)


def assign_splits(
    patient_ids: list[str],
    labels: Sequence[float | None] | None = None,
    *,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, str]:
    """Patient-level train/val/test split, stratified by ``labels`` when given
    (:func:`split_indices` with one group per patient)."""
    import numpy as np

    ids = list(dict.fromkeys(patient_ids))
    by_id = dict(zip(patient_ids, labels)) if labels is not None else {}
    strata = label_strata([by_id.get(i) for i in ids]) if labels is not None else np.zeros(len(ids), dtype=int)
    parts = split_indices(strata, np.asarray(ids, dtype=object), fractions=fractions, seed=seed)
    out: dict[str, str] = {}
    for name, sel in zip(("train", "val", "test"), parts):
        for k in sel:
            out[str(ids[k])] = name
    return out


def skipped_rows(report: ProblemReport) -> set[int]:
    """Rows (positions) of a manifest that :func:`load_cohort` skips: those whose
    ``patient_id`` is in error (missing, malformed, a duplicate) in ``report``."""
    return {p.row for p in report.errors if p.column == "patient_id" and p.row is not None}


def fill_splits(frame: "pd.DataFrame", *, seed: int = 0, skip_rows: Iterable[int] = ()) -> int:
    """Give every row of a manifest table without a valid split one, in place; the number given.

    The rows whose ``split`` is not one of ``train``/``val``/``test`` (blank included) are
    split 60/20/20 by :func:`assign_splits`, stratified on the first ``label_*`` column (as
    records read it) and seeded by ``seed``. Rows at the positions in ``skip_rows`` (see
    :func:`skipped_rows`) take no part and keep their value. :func:`load_cohort` and
    :mod:`medmm.evaluate` both split through here, so training and evaluation agree.
    """

    if "split" not in frame.columns:
        frame["split"] = None
    if "patient_id" not in frame.columns:
        return 0
    todo = ~frame["split"].isin(SPLITS).to_numpy(dtype=bool)
    skip = [i for i in skip_rows if 0 <= i < len(frame)]
    todo[skip] = False
    if not todo.any():
        return 0
    label_cols = [c for c in frame.columns if str(c).startswith("label_")]
    ids = [str(_cell(v)) for v in frame["patient_id"].to_numpy()[todo]]
    labels = [_label(v) for v in frame[label_cols[0]].to_numpy()[todo]] if label_cols else None
    splits = assign_splits(ids, labels, seed=seed)
    col = frame["split"].to_numpy(dtype=object, copy=True)
    col[todo] = [splits[i] for i in ids]
    frame["split"] = col
    return int(todo.sum())


#: how many times a manifest was validated by :meth:`Cohort.from_manifest` (tests count it)
VALIDATIONS = {"count": 0}


class Cohort:
    """A cohort: a manifest parsed and validated once, whose records are built on access.

    ``len(cohort)``, ``cohort[i]`` (a :class:`PatientRecord`), ``cohort[a:b]``,
    ``cohort.split("train")`` (a view) and iteration build each record from its manifest row
    when asked: notes, vitals and EHR files are read then, images stay on disk behind a proxy
    (see :class:`~medmm.records.Image`), so memory does not grow with the cohort. ``iter(workers=N)``
    builds records in N processes. Problems found while building records go into ``report``
    (once each, however often a record is built). ``records`` materialises every record (small:
    no pixels) and keeps the list.

    A cohort made of records already in memory (``Cohort.from_records``) behaves the same.
    """

    def __init__(self, rows: list[dict[str, Any]] | None, report: ProblemReport, manifest: Path | None = None, *,
                 modalities: Any = None, strict: bool = False, frame: Any = None,
                 records: list[PatientRecord] | None = None, index: list[int] | None = None,
                 _shared: dict[str, Any] | None = None) -> None:
        self.report = report
        self.manifest = manifest
        if modalities is None and records:
            from .records import spec_of_records

            modalities = spec_of_records(records)
        #: the modalities records are built with (a :class:`~medmm.records.ModalitySpec`)
        self.modalities = ModalitySpec.coerce(modalities)
        self.strict = strict
        self.frame = frame
        self._rows = rows
        self._all_records = records
        n = len(records) if records is not None else len(rows or [])
        self._index = list(range(n)) if index is None else list(index)
        self._shared = _shared if _shared is not None else {"cache": {}, "seen": set()}

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_manifest(cls, manifest: str | Path, *, strict: bool = False, modalities: Any = None,
                      declare: Any = None, split_seed: int = 0, progress: bool = True,
                      tasks: Any = None) -> "Cohort":
        """Read and validate ``manifest`` once; records are built later, on access.

        The cohort's modalities are the defaults plus the sidecar's and ``declare``'s
        declarations (:func:`modality_spec`); ``modalities`` (names, or a
        :class:`~medmm.records.ModalitySpec` such as a model's, which also declares) limits the
        records to those."""
        from .tasks import encode_class_labels, merge_task_declarations, read_task_declarations

        manifest = Path(manifest)
        df = read_manifest(manifest)
        declared_tasks = merge_task_declarations(read_task_declarations(sidecar_path(manifest)), tasks)
        df = encode_class_labels(df, declared_tasks, source=manifest)  # class names -> indices
        extra = modalities if isinstance(modalities, (ModalitySpec, dict)) else None
        declared = modality_spec(manifest, declare)
        if extra is not None:
            declared = declared.merged(extra)
        spec = declared if modalities is None else declared.subset(list(modalities))
        report = validate_manifest(manifest, check_files=False, frame=df, modalities=declared)
        VALIDATIONS["count"] += 1
        structural = [p for p in report.errors if p.row is None]
        if structural:
            raise ManifestError(
                "; ".join(p.message for p in structural), path=manifest,
                hint="fix the manifest's columns (see medmm/schemas/manifest.schema.json)",
            )
        if strict and report.errors:
            p = report.errors[0]
            raise ManifestError(p.message, path=manifest, row=p.row, column=p.column)
        bad_rows = skipped_rows(report)
        label_cols = [c for c in df.columns if c.startswith("label_")]
        assigned = fill_splits(df, seed=split_seed, skip_rows=bad_rows)
        if assigned:
            first = label_cols[0][len("label_"):] if label_cols else None
            report.add("warning", f"{assigned} patient(s) had no split; assigned train/val/test 60/20/20 "
                       f"stratified on {first!r} with seed {split_seed}")
        if bad_rows:
            df = df.drop(index=df.index[sorted(bad_rows)])
        rows = []
        for i, raw in zip(df.index.tolist(), df.to_dict(orient="records")):
            row = {k: _cell(v) for k, v in raw.items()}
            row["_row"] = int(i)
            rows.append(row)
        cohort = cls(rows, report, manifest, modalities=spec, strict=strict, frame=df)
        cohort._shared["tasks"] = declared_tasks
        return cohort

    @classmethod
    def from_records(cls, records: list[PatientRecord], report: ProblemReport | None = None,
                     manifest: Path | None = None) -> "Cohort":
        """A cohort of records already in memory."""
        return cls(None, report if report is not None else ProblemReport(), manifest, records=list(records))

    def _view(self, index: list[int]) -> "Cohort":
        return Cohort(self._rows, self.report, self.manifest, modalities=self.modalities, strict=self.strict,
                      frame=self.frame, records=self._all_records, index=index, _shared=self._shared)

    # -------------------------------------------------------------------- records

    def _build(self, k: int) -> PatientRecord:
        """The record of row ``k`` (a position in the full cohort)."""
        if self._all_records is not None:
            return self._all_records[k]
        cached = self._shared["cache"].get(k)
        if cached is not None:
            return cached
        rec, problems = self._builder()(k)
        self._note(problems)
        return rec

    def _builder(self, check_images: bool = False) -> "_RowBuilder":
        return _RowBuilder(self._rows, self.manifest, self.modalities, self.strict, check_images)

    def record_and_problems(self, i: int) -> tuple[PatientRecord, list[Problem]]:
        """The ``i``-th record and the problems found building it, leaving ``report`` alone
        (what a worker process returns to the cohort that owns the report)."""
        k = self._index[i]
        if self._all_records is not None:
            return self._all_records[k], []
        return self._builder()(k)

    def _note(self, problems: list[Problem]) -> None:
        seen = self._shared["seen"]
        for prob in problems:
            key = (prob.row, prob.column, prob.patient_id, prob.message)
            if key not in seen:
                seen.add(key)
                self.report.problems.append(prob)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self._view(self._index[i])
        return self._build(self._index[i])

    def __iter__(self) -> Iterator[PatientRecord]:
        return self.iter()

    def iter(self, *, workers: int = 0, progress: bool = False, chunksize: int = 8,
             check_images: bool = False) -> Iterator[PatientRecord]:
        """The records in order; ``workers`` > 0 builds them in that many processes.
        ``check_images`` also reads each image once (voxels dropped, header kept), an unreadable
        one becoming ``Missing("read_error")`` with its problem in the report."""
        from tqdm.auto import tqdm

        bar = tqdm(total=len(self), desc="records", unit="pt", disable=not progress)
        try:
            if workers <= 0 or self._all_records is not None or len(self) < 2:
                for k in self._index:
                    rec = self._build(k)
                    if check_images:
                        read_image_or_missing(rec, self.report)
                    yield rec
                    bar.update(1)
                return
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with frozen_gc(), ctx.Pool(workers, initializer=_init_builder, initargs=(self._builder(check_images),)) as pool:
                for rec, problems in pool.imap(_build_row, self._index, chunksize=chunksize):
                    self._note(problems)
                    yield rec
                    bar.update(1)
        finally:
            bar.close()

    def build_records(self, *, workers: int = 0, progress: bool = False) -> list[PatientRecord]:
        """:attr:`records`, the ones not built yet built in ``workers`` processes (notes, vitals
        and EHR read there; images stay on disk). The same records, order and report for any
        ``workers``."""
        cache = self._shared["cache"]
        if self._all_records is None and workers > 0:
            todo = [k for k in dict.fromkeys(self._index) if k not in cache]
            for k, rec in zip(todo, self._view(todo).iter(workers=workers, progress=progress,
                                                          chunksize=max(1, min(16, len(todo) // (4 * workers))))):
                cache[k] = rec
        return self.records

    @property
    def records(self) -> list[PatientRecord]:
        """Every record, built once and kept (images stay on disk)."""
        cache = self._shared["cache"]
        if self._all_records is None:
            for k in self._index:
                if k not in cache:
                    cache[k] = self._build(k)
            return [cache[k] for k in self._index]
        return [self._all_records[k] for k in self._index]

    def sources(self, modality: str = "image") -> list[tuple[str, Any]]:
        """``(patient_id, ImageSource)`` of each patient with a ``modality`` file, without
        building records (no notes, vitals or EHR read, no image header opened). A file that
        does not exist or whose format is unknown is an error in :attr:`report` instead."""
        from .io import get_reader, infer_format
        from .records import ImageSource

        base = self.manifest.parent if self.manifest else Path(".")
        out = []
        for row in self.rows:
            value = row.get(f"{modality}_path")
            if not value:
                continue
            pid, path = str(row["patient_id"]), _resolve(base, str(value))
            try:
                if not path.exists():
                    raise ReadError(f"{modality} file does not exist", path=path,
                                    hint="check the path in the manifest (relative paths are resolved against "
                                    "the manifest's folder)")
                fmt = row.get(f"{modality}_format") or infer_format("image", path, name=modality)
                get_reader("image", fmt)
            except MedmmError as exc:
                if self.strict:
                    raise
                self._note([Problem("error", str(exc), row=row.get("_row"), column=f"{modality}_path",
                                    path=exc.path, patient_id=pid, modality=modality)])
                continue
            out.append((pid, ImageSource.of(path.resolve(), fmt)))
        return out

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The validated manifest rows of this view (cells cleaned, split filled, ``_row`` the
        manifest position): what a worker needs to build each record with :func:`row_to_record`."""
        if self._rows is None:
            raise TypeError("a cohort of in-memory records has no manifest rows")
        return [self._rows[k] for k in self._index]

    @property
    def patient_ids(self) -> list[str]:
        if self._all_records is not None:
            return [self._all_records[k].patient_id for k in self._index]
        return [str(self._rows[k]["patient_id"]) for k in self._index]  # type: ignore[index]

    @property
    def splits(self) -> list[str | None]:
        """The split of each patient, in order."""
        if self._all_records is not None:
            return [self._all_records[k].split for k in self._index]
        return [row.get("split") if row.get("split") in SPLITS else None for row in self.rows]

    def split(self, name: str) -> "Cohort":
        """The patients of one split (a view: nothing is read)."""
        return self._view([k for k, s in zip(self._index, self.splits) if s == name])

    def subset(self, positions: "Iterable[int] | np.ndarray") -> "Cohort":
        """The patients at ``positions`` (positions in this cohort) as a view."""
        return self._view([self._index[int(i)] for i in positions])

    def __add__(self, other: "Cohort") -> "Cohort":
        if not isinstance(other, Cohort) or other._shared is not self._shared:
            return NotImplemented
        return self._view(self._index + other._index)

    def labels(self, task: str) -> list[float | None]:
        """The ``task`` label of each patient (parsed once, with the manifest)."""
        if self._all_records is not None:
            return [self._all_records[k].labels.get(task) for k in self._index]
        return [_label(self._rows[k].get(f"label_{task}")) for k in self._index]  # type: ignore[index]

    @property
    def declared_tasks(self) -> dict[str, Any]:
        """The task types the manifest's sidecar (and ``from_manifest(tasks=...)``) declare."""
        return dict(self._shared.get("tasks") or {})

    @property
    def tasks(self) -> list[str]:
        declared = self.declared_tasks
        if self._all_records is not None:
            keys = {t for k in self._index for t in self._all_records[k].labels}
        else:
            cols = self.frame.columns if self.frame is not None else []
            keys = {c[len("label_"):] for c in cols if str(c).startswith("label_")}
        if declared:  # the declared tasks, then the label columns none of them reads
            from .tasks import task_specs

            used = {c for spec in task_specs(declared).values() for c in spec.label_columns()}
            return [*declared, *sorted(keys - used - set(declared))]
        return sorted(keys)

    def check(self, *, read_images: bool = True, workers: int = 0, progress: bool = False) -> ProblemReport:
        """Build every record and read every image once (voxels not kept), so that every
        unreadable file is in the report; returns the report."""
        for _ in self.iter(workers=workers, progress=progress,
                           check_images=read_images and bool(self.modalities.of_kind("image"))):
            pass
        return self.report

    def available_modalities(self) -> ModalitySpec:
        """The modalities this cohort has: a ``<name>_path`` column with at least one non-empty
        cell (for in-memory records: present in at least one), in declaration order."""
        if self._all_records is not None:
            have = {m for k in self._index for m, p in self._all_records[k].present.items() if p}
        else:
            have = {m for m in self.modalities if any(self._rows[k].get(f"{m}_path") for k in self._index)}  # type: ignore[index]
        return self.modalities.subset([m for m in self.modalities if m in have])

    def summary(self):
        """One row per split: patients, per-modality presence and label prevalence."""
        import pandas as pd

        recs_all = self.records
        rows = []
        for split in sorted({str(r.split) for r in recs_all}):
            recs = [r for r in recs_all if str(r.split) == split]
            row: dict[str, Any] = {"split": split, "patients": len(recs)}
            for m in self.available_modalities() or self.modalities:
                row[f"{m} present"] = sum(r.present.get(m, False) for r in recs)
            for t in self.tasks:
                ys = [r.labels.get(t) for r in recs if r.labels.get(t) is not None]
                row[f"{t} prevalence"] = round(sum(ys) / len(ys), 3) if ys else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return f"Cohort({len(self)} patients, {len(self.report.errors)} error(s))"

    def _repr_html_(self) -> str:
        from collections import Counter

        patterns = Counter(r.pattern for r in self.records)
        pat_rows = "".join(f"<tr><td style='text-align:left'>{html.escape(p)}</td><td>{n}</td></tr>"
                           for p, n in patterns.most_common())
        report = self.report._repr_html_() if self.report.problems else "<p>No problems found.</p>"
        return (
            f"<div style='font-family:sans-serif;font-size:13px'><b>Cohort</b> "
            f"{html.escape(str(self.manifest or ''))}: {len(self)} patients, "
            f"tasks: {html.escape(', '.join(self.tasks) or 'none')}, "
            f"<span style='color:{'#a33' if self.report.errors else '#2a8a2a'}'>{len(self.report.errors)} error(s)"
            f"</span>, {len(self.report.warnings)} warning(s)"
            + self.summary().to_html(index=False, border=0)
            + f"<details><summary>presence patterns ({len(patterns)})</summary><table><tr><th>pattern</th>"
            f"<th>patients</th></tr>{pat_rows}</table></details>"
            + f"<details{' open' if self.report.errors else ''}><summary>problem report "
            f"({len(self.report.problems)})</summary>{report}</details></div>"
        )


def row_to_record(
    raw: dict[str, Any],
    *,
    base: Path = Path("."),
    report: ProblemReport | None = None,
    row_index: int | None = None,
    strict: bool = False,
    modalities: Any = None,
) -> PatientRecord:
    """One manifest row to a :class:`PatientRecord`, reading its files through the registry.

    ``modalities`` (a :class:`~medmm.records.ModalitySpec`, names of default modalities, or
    ``None`` for the four defaults) are the record's modalities; each is read by its kind's reader.

    A modality that fails to read becomes ``Missing("read_error")`` and its error is added to
    ``report`` (or raised when ``strict`` or when there is no report).
    """
    import pandas as pd

    from .io import lazy_image, read_modality

    row = {k: _cell(v) for k, v in raw.items()}
    pid = str(row["patient_id"])
    labels = {c[len("label_"):]: _label(row[c]) for c in row if c.startswith("label_")}
    try:
        index_time = pd.Timestamp(row["index_time"]) if row.get("index_time") else None
    except (ValueError, TypeError):
        index_time = None
    spec = ModalitySpec.coerce(modalities)
    values: dict[str, Any] = {m: Missing("not_acquired") for m in spec}
    rec = PatientRecord(
        patient_id=pid,
        labels=labels,
        split=row.get("split") if row.get("split") in SPLITS else None,
        index_time=index_time,
        meta={k: v for k, v in row.items() if k not in ("patient_id", "split", "index_time", "_row")
              and not k.startswith("label_") and not k.endswith("_path") and not k.endswith("_format")},
        modalities=values,
    )
    for m in spec:
        value = row.get(f"{m}_path")
        if not value:
            continue
        kind = spec.kind(m)
        try:
            if kind == "image":  # voxels stay on disk until used
                value = lazy_image(_resolve(base, str(value)), row.get(f"{m}_format"), name=m)
            else:  # a reader reports the rows it left out (a bad row, an unknown code) into `found`
                found = ProblemReport()
                value = read_modality(
                    kind, _resolve(base, str(value)), row.get(f"{m}_format"), name=m, patient_id=pid,
                    index_time=index_time, report=found,
                )
                if report is not None:
                    report.extend(p.located(row=row_index, column=f"{m}_path", patient_id=pid, modality=m)
                                  for p in found)
            rec.modalities[m] = value
        except MedmmError as exc:
            if strict:
                raise
            if report is not None:
                report.add_error(exc, row=row_index, column=f"{m}_path", patient_id=pid, modality=m)
            rec.modalities[m] = Missing("read_error", str(exc))
    return rec


def read_image_or_missing(record: PatientRecord, report: ProblemReport | None = None) -> PatientRecord:
    """Read each of ``record``'s images once (voxels not kept) to check it; an unreadable one
    becomes ``Missing("read_error")`` with its error in ``report``. Returns the record."""
    from .records import Image

    for m, img in list(record.modalities.items()):
        if not isinstance(img, Image) or img.in_memory:
            continue
        try:
            img.loaded()
        except MedmmError as exc:
            if report is not None:
                report.add_error(exc, patient_id=record.patient_id, modality=m, column=f"{m}_path")
            record.modalities[m] = Missing("read_error", str(exc))
    return record


class _RowBuilder:
    """Manifest rows -> records in a worker process."""

    def __init__(self, rows: list[dict[str, Any]] | None, manifest: Path | None, modalities: Any,
                 strict: bool, check_images: bool = False) -> None:
        self.rows, self.manifest, self.modalities, self.strict = rows, manifest, modalities, strict
        self.check_images = check_images

    def __call__(self, k: int) -> tuple[PatientRecord, list[Problem]]:
        local = ProblemReport()
        row = self.rows[k]  # type: ignore[index]
        rec = row_to_record(row, base=self.manifest.parent if self.manifest else Path("."), report=local,
                            row_index=row.get("_row"), strict=self.strict, modalities=self.modalities)
        if self.check_images:
            read_image_or_missing(rec, local)
            for prob in local.problems:
                prob.row = row.get("_row") if prob.row is None else prob.row
        return rec, local.problems


_BUILDER: _RowBuilder | None = None


def _init_builder(builder: _RowBuilder) -> None:
    global _BUILDER
    _BUILDER = builder


def _build_row(k: int) -> tuple[PatientRecord, list[Problem]]:
    return _BUILDER(k)  # type: ignore[misc]


def load_cohort(
    manifest: str | Path,
    *,
    strict: bool = False,
    progress: bool = True,
    modalities: Any = None,
    split_seed: int = 0,
    declare: Any = None,
    tasks: Any = None,
) -> Cohort:
    """The :class:`Cohort` of a manifest (:meth:`Cohort.from_manifest`).

    The manifest is validated once; records are built on access, their images read on
    demand. Patients without a split are assigned one (stratified on the first label, seeded
    by ``split_seed``). A modality that cannot be read becomes ``Missing("read_error")`` and
    its error goes into ``cohort.report``; with ``strict=True`` the first problem raises.
    ``declare`` adds modality declarations (``{name: kind}``) to the sidecar's; ``tasks`` task
    declarations (a ``model.tasks`` mapping) to the sidecar's ``tasks:``, so that class names map.
    """
    return Cohort.from_manifest(manifest, strict=strict, modalities=modalities, split_seed=split_seed,
                                progress=progress, declare=declare, tasks=tasks)
