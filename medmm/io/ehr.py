"""Tabular EHR: wide tables, long event tables and FHIR R4 Bundles, featurised at an index time.

Layouts:

* **wide** (:func:`read_ehr_wide`): one row per patient, ``patient_id`` + feature columns whose
  headers may carry units (``'lactate [mmol/L]'``); CSV or Parquet.
* **long / event** (:func:`read_ehr_long`): one row per event, :data:`EVENT_COLUMNS`
  (``patient_id, time, kind, code, name, value, unit``); CSV or Parquet.
* **FHIR** (:func:`read_ehr_fhir`): a patient's Bundle (Patient, Encounter, Condition,
  laboratory Observation, MedicationRequest, Procedure, ImagingStudy), turned into events by
  :func:`events_from_bundle`.

Events become one :class:`~medmm.records.Tabular` row with :func:`event_features` (or the
fitted :class:`EventFeaturizer`), relative to the patient's index time. **Leakage guard**:
every event passes through :func:`window_events`, which keeps only events dated at or
before the index time (and inside the look-back window); undated events enter only when
their kind is ``static`` (demographics). Nothing else reads the event table.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MedmmError, ReadError
from ..problems import ProblemReport, report_problems
from ..records import Tabular
from .common import naive_utc, parse_times, problem, to_timestamp

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "read_ehr_wide",
    "parse_header",
    "read_ehr_long",
    "read_ehr_fhir",
    "load_events",
    "events_from_bundle",
    "window_events",
    "event_features",
    "EventFeaturizer",
    "EVENT_COLUMNS",
    "PLACEHOLDER_TOKENS",
    "is_placeholder",
]

#: columns of a long (event) EHR table
EVENT_COLUMNS = ("patient_id", "time", "kind", "code", "name", "value", "unit")
#: kinds whose presence (not value) is the feature
FLAG_KINDS = ("condition", "medication", "procedure")
#: Observation category -> event kind (vital signs go to the vitals modality)
OBSERVATION_KINDS = {"laboratory": "lab", "social-history": "observation", "survey": "observation",
                     "exam": "observation"}
#: kinds whose values become features
VALUE_KINDS = ("lab", "numeric", "vital", "observation")
#: kinds counted in the window
COUNT_KINDS = ("encounter", "condition", "medication", "procedure", "imaging", "lab")

#: text a numeric export writes for "no value" (compared stripped and case-folded)
PLACEHOLDER_TOKENS = frozenset({"?", "??", "???", "-", "--", "---", ".", "..", "na", "n/a", "n.a.", "nan", "null",
                                "none", "missing", "unknown", "unk", "not done", "nd", "n.d.", "#n/a", "#na",
                                "#value!", "#div/0!", "(null)", "<na>", "empty", "blank"})
#: the placeholders that never name a category (``-`` may mean a negative dipstick, ``unknown`` a level)
ALWAYS_MISSING_TOKENS = frozenset({"?", "??", "???", "#n/a", "#na", "#value!", "#div/0!", "(null)", "<na>"})


def is_placeholder(value: Any, *, numeric: bool = True) -> bool:
    """Whether ``value`` is text an export writes for "no value" (``?``, ``n/a``, ``-`` ...);
    with ``numeric=False`` only the tokens that never name a category count."""
    if not isinstance(value, str):
        return False
    v = value.strip().casefold()
    return v in (PLACEHOLDER_TOKENS if numeric else ALWAYS_MISSING_TOKENS) or (numeric and v == "")


_UNIT = re.compile(r"^\s*(?P<name>.*?)\s*\[(?P<unit>[^\]]*)\]\s*$")


def parse_header(column: str) -> tuple[str, str]:
    """Split a column header ``'name [unit]'`` into ``(name, unit)`` (unit ``''`` if none)."""
    m = _UNIT.match(column)
    return (m["name"], m["unit"]) if m else (column.strip(), "")


@lru_cache(maxsize=8)
def _load_table(path: str, mtime: float):
    import pandas as pd

    if path.lower().endswith(".parquet"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types
            raise ReadError(f"not a readable Parquet file ({exc})", path=path, hint="check the file") from exc
        if "patient_id" in df.columns:
            df["patient_id"] = df["patient_id"].astype(str)
    else:
        try:
            df = pd.read_csv(path, dtype={"patient_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ReadError(f"not a readable CSV ({exc})", path=path, hint="check the file") from exc
    if "patient_id" not in df.columns:
        raise ReadError(
            f"no 'patient_id' column; found {list(df.columns)}",
            path=path,
            hint="a wide EHR table needs one row per patient keyed by 'patient_id'",
        )
    dup = df["patient_id"].duplicated()
    if dup.any():
        raise ReadError(
            f"patient {df['patient_id'][dup].iloc[0]!r} has several rows",
            path=path,
            row=int(dup.idxmax()),
            column="patient_id",
            hint="keep one row per patient (aggregate events first)",
        )
    df, tokens = _placeholders_to_missing(df)
    out = df.set_index("patient_id")
    out.attrs["missing_tokens"] = tokens
    return out


def _placeholders_to_missing(df: "pd.DataFrame") -> tuple["pd.DataFrame", dict[str, dict[str, str]]]:
    """Read placeholder text (``?``, ``-``, ``n/a``, ``missing`` ...) as missing.

    In a column whose other values are all numbers every placeholder of
    :data:`PLACEHOLDER_TOKENS` becomes missing and the column numeric (left as
    text, ``?`` would turn a numeric column into categories); in a text column only the tokens
    that never name a category (``?``, ``#N/A``) do. Returns the table and
    ``{column: {patient_id: token}}`` of what was replaced, which the audit reports.
    """
    import pandas as pd

    tokens: dict[str, dict[str, str]] = {}
    for col in df.columns:
        if col == "patient_id" or not (pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col])):
            continue
        s = df[col]
        present = s.notna()
        texts = s[present].astype(str)
        numeric_like = pd.to_numeric(texts.str.strip(), errors="coerce").notna()
        loose = texts.map(is_placeholder)
        if numeric_like.any() and (numeric_like | loose).all():
            hit = loose
            df[col] = pd.to_numeric(texts.str.strip().where(~loose), errors="coerce").reindex(df.index)
        else:
            hit = texts.map(lambda v: is_placeholder(v, numeric=False))
            if hit.any():
                df[col] = s.astype(object).where(~hit.reindex(df.index, fill_value=False))
        if hit.any():
            idx = hit[hit].index
            tokens[str(col)] = {str(df.at[i, "patient_id"]): str(texts[i]).strip() for i in idx}
    return df, tokens


def read_ehr_wide(path: str | Path, *, patient_id: str, **_: Any) -> Tabular:
    """Read one patient's row of a wide EHR table (CSV or Parquet); headers may carry units as
    ``name [unit]``."""
    import pandas as pd

    p = Path(path)
    table = _load_table(str(p.resolve()), p.stat().st_mtime)
    if patient_id not in table.index:
        raise ReadError(
            f"no row for patient {patient_id!r}",
            path=path,
            column="patient_id",
            hint="add the patient's row or leave the manifest's ehr_path empty",
        )
    row = table.loc[patient_id]
    values: dict[str, Any] = {}
    units: dict[str, str] = {}
    for col, v in row.items():
        name, unit = parse_header(str(col))
        values[name] = None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
        if unit:
            units[name] = unit
    tab = Tabular(values=values, units=units)
    replaced = {parse_header(c)[0]: by_pid[patient_id]
                for c, by_pid in table.attrs.get("missing_tokens", {}).items() if patient_id in by_pid}
    if replaced:  # placeholders read as missing: the audit reports them per column
        tab.missing_tokens = replaced  # type: ignore[attr-defined]
    return tab


# --------------------------------------------------------------------------- events


def _empty_events() -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({
        "patient_id": pd.Series(dtype=object), "time": pd.Series(dtype="datetime64[ns]"),
        "kind": pd.Series(dtype=object), "code": pd.Series(dtype=object), "name": pd.Series(dtype=object),
        "value": pd.Series(dtype=object), "unit": pd.Series(dtype=object), "end": pd.Series(dtype="datetime64[ns]"),
    })


def window_events(
    events: "pd.DataFrame",
    index_time: Any,
    *,
    lookback: Any = "365D",
    lookback_exempt: tuple[str, ...] = ("condition", "static"),
) -> "pd.DataFrame":
    """The events a feature at ``index_time`` may use (the leakage guard).

    Keeps events dated at or before ``index_time`` and, unless their kind is in
    ``lookback_exempt``, after ``index_time - lookback``. Undated events are kept only when
    their kind is ``static``. An ``end`` (e.g. a condition's abatement) after the index time is
    blanked, since it was not known then.
    """
    import pandas as pd

    cutoff = to_timestamp(index_time)
    if cutoff is None:
        raise ReadError("an index time is needed to build EHR features", column="index_time",
                        hint="give the patient's index_time (the prediction time)")
    t = events["time"]
    static = (events["kind"] == "static") & t.isna()
    keep = t.notna() & (t <= cutoff)
    if lookback is not None:
        start = cutoff - pd.Timedelta(lookback)
        keep &= (t > start) | events["kind"].isin(lookback_exempt)
    out = events[keep | static].copy()
    if "end" in out.columns:
        out.loc[out["end"] > cutoff, "end"] = pd.NaT
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if v == v else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _feature_name(kind: str, code: Any, name: Any) -> str:
    code = "" if code is None or code != code else str(code)
    return f"{kind}:{code or name}"


def event_features(
    events: "pd.DataFrame",
    index_time: Any,
    *,
    lookback: Any = "365D",
    numeric_stats: tuple[str, ...] = ("last",),
    vocabulary: dict[str, list[str]] | None = None,
) -> Tabular:
    """One feature row from a patient's events at ``index_time`` (see :func:`window_events`).

    Features: static values (``age`` in years at the index time from ``birth_date``, ``sex``
    ...); per lab/numeric code the ``numeric_stats`` of its values in the window
    (``last``, ``mean``, ``min``, ``max``, ``count``; categorical results: ``last``);
    ``condition:<code>`` (active: onset before the index time, not abated by then),
    ``medication:<code>`` and ``procedure:<code>`` flags; ``n_<kind>`` counts in the window.
    With a ``vocabulary`` (from :class:`EventFeaturizer`), flags of listed codes are 0 when
    absent and unlisted codes are left out, so every row has the same columns.
    """

    cutoff = to_timestamp(index_time)
    ev = window_events(events, cutoff, lookback=lookback)
    values: dict[str, Any] = {}
    units: dict[str, str] = {}
    for r in ev[ev["kind"] == "static"].itertuples(index=False):
        key = str(r.name or r.code)
        if key == "birth_date":
            birth = to_timestamp(r.value)
            if birth is not None:
                values["age"] = round((cutoff - birth).days / 365.25, 2)
                units["age"] = "years"
        else:
            values[key] = r.value
    numeric = ev[ev["kind"].isin(VALUE_KINDS)]
    if len(numeric):
        numeric = numeric.sort_values("time", kind="stable")
        for (kind, code), g in numeric.groupby(["kind", "code"], sort=True):
            base = _feature_name(kind, code, None)
            nums = [x for x in (_num(v) for v in g["value"]) if x is not None]
            unit = next((u for u in g["unit"] if isinstance(u, str) and u), "")
            if not nums:  # categorical result
                values[base] = g["value"].iloc[-1]
                continue
            stats = {"last": nums[-1], "mean": sum(nums) / len(nums), "min": min(nums), "max": max(nums),
                     "count": float(len(nums))}
            for s in numeric_stats:
                key = base if s == "last" else f"{base}__{s}"
                values[key] = stats[s]
                if unit and s != "count":
                    units[key] = unit
    vocab = vocabulary or {}
    for kind in FLAG_KINDS:
        rows = ev[ev["kind"] == kind]
        if kind == "condition" and "end" in rows.columns:
            rows = rows[rows["end"].isna()]  # abated before the index time: not active
        present = {_feature_name(kind, c, n) for c, n in zip(rows["code"], rows["name"])}
        if kind in vocab:
            for key in vocab[kind]:
                values[key] = 1 if key in present else 0
        else:
            for key in sorted(present):
                values[key] = 1
    for kind in COUNT_KINDS:
        values[f"n_{kind}"] = int((ev["kind"] == kind).sum())
    if vocabulary is not None and "numeric" in vocab:
        for key in vocab["numeric"]:
            values.setdefault(key, None)
        for key in [k for k in values if ":" in k and k.split(":", 1)[0] in VALUE_KINDS]:
            if key.split("__")[0] not in vocab["numeric"]:
                values.pop(key)
                units.pop(key, None)
    return Tabular(values=values, units=units)


class EventFeaturizer:
    """Event features with a vocabulary fitted on training patients only.

    ``fit`` keeps the condition / medication / procedure codes and lab codes seen in at least
    ``min_patients`` training patients (before their index times); ``transform`` gives every
    patient the same columns (absent flags 0, absent labs ``None``), ready for
    :class:`medmm.preprocess.tabular.TabularPreprocessor`.
    """

    def __init__(self, *, lookback: Any = "365D", min_patients: int = 5,
                 numeric_stats: tuple[str, ...] = ("last",)) -> None:
        self.lookback = lookback
        self.min_patients = min_patients
        self.numeric_stats = numeric_stats

    def fit(self, patients: list[tuple["pd.DataFrame", Any]]) -> "EventFeaturizer":
        """Learn the vocabulary from ``(events, index_time)`` pairs of training patients."""
        from collections import Counter

        seen: dict[str, Counter] = {k: Counter() for k in (*FLAG_KINDS, "numeric")}
        for events, index_time in patients:
            row = event_features(events, index_time, lookback=self.lookback, numeric_stats=("last",))
            for key in row.values:
                kind = key.split(":", 1)[0] if ":" in key else ""
                if kind in FLAG_KINDS:
                    seen[kind][key] += 1
                elif kind in VALUE_KINDS:
                    seen["numeric"][key] += 1
        self.vocabulary_ = {k: sorted(key for key, n in c.items() if n >= self.min_patients)
                            for k, c in seen.items()}
        return self

    def transform(self, events: "pd.DataFrame", index_time: Any) -> Tabular:
        from ..errors import NotFittedError

        if not hasattr(self, "vocabulary_"):
            raise NotFittedError("EventFeaturizer is not fitted", hint="call fit() on training patients first")
        return event_features(events, index_time, lookback=self.lookback, numeric_stats=self.numeric_stats,
                              vocabulary=self.vocabulary_)


def load_events(path: str | Path, *, strict: bool = False, report: ProblemReport | None = None) -> "pd.DataFrame":
    """Load a whole long EHR event table (CSV or Parquet). Rows left out (no time, a bad
    time) go to ``report`` as problems; ``strict=True`` raises the first instead."""
    df, pairs = _events_and_problems(path)
    report_problems([e for _, e in pairs], report, strict=strict)
    return df


def _events_and_problems(path: str | Path) -> tuple["pd.DataFrame", list[tuple[str | None, MedmmError]]]:
    """The event table and its problems as ``(patient_id or None, error)`` pairs (cached by mtime)."""
    p = Path(path)
    return _load_events_cached(str(p.resolve()), p.stat().st_mtime)


@lru_cache(maxsize=8)
def _load_events_cached(path: str, mtime: float) -> tuple["pd.DataFrame", list[tuple[str | None, MedmmError]]]:
    import pandas as pd

    try:
        if path.lower().endswith(".parquet"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=object, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReadError(f"not a readable table ({exc})", path=path, hint="check the file") from exc
    except Exception as exc:  # pyarrow
        raise ReadError(f"not a readable Parquet file ({exc})", path=path, hint="check the file") from exc
    required = ("patient_id", "time", "value")
    missing = [c for c in required if c not in df.columns]
    if missing or not ({"code", "name"} & set(df.columns)):
        raise ReadError(
            f"missing column(s) {missing or ['code or name']}; found {list(df.columns)}",
            path=path,
            hint=f"a long EHR table needs the columns {list(EVENT_COLUMNS)} (kind, unit optional)",
        )
    for col, default in (("kind", "numeric"), ("code", None), ("name", None), ("unit", "")):
        if col not in df.columns:
            df[col] = default
    df["patient_id"] = df["patient_id"].astype(str)
    df["code"] = df["code"].where(df["code"].notna(), df["name"])
    df["kind"] = df["kind"].fillna("numeric").astype(str)
    problems: list[tuple[str | None, MedmmError]] = []
    tprob: list[MedmmError] = []
    if pd.api.types.is_datetime64_any_dtype(df["time"]):
        df["time"] = naive_utc(df["time"]).astype("datetime64[ns]")
    else:
        df["time"] = parse_times(df["time"], problems=tprob, path=path, column="time")
    pid = dict(zip(df.index, df["patient_id"]))
    problems.extend((pid.get(e.row), e) for e in tprob)
    bad_time = {e.row for e in tprob if "naive" not in e.message}
    undated = df["time"].isna() & (df["kind"] != "static")
    for i in df.index[undated.to_numpy()]:
        if int(i) in bad_time:
            continue
        problems.append((pid[i], problem("event has no time; left out (it cannot be placed before the index "
                                         "time)", path=path, row=int(i), column="time",
                                         hint="date every event, or give demographics the kind 'static'")))
    df = df[~undated]
    df["end"] = pd.NaT
    # '?' / 'n/a' as a lab value is a missing value, not a categorical result
    held = df["kind"].isin(VALUE_KINDS) & df["value"].map(is_placeholder) & df["value"].notna()
    tokens = [(str(p), _feature_name(k, c, n), str(v).strip())
              for p, k, c, n, v in zip(df["patient_id"][held], df["kind"][held], df["code"][held], df["name"][held],
                                       df["value"][held])]
    if held.any():
        df["value"] = df["value"].astype(object).where(~held, None)
    out = df[[*EVENT_COLUMNS, "end"]].copy()
    out.attrs["missing_tokens"] = tokens
    return out, problems


def read_ehr_long(
    path: str | Path,
    *,
    patient_id: str,
    index_time: Any = None,
    lookback: Any = "365D",
    numeric_stats: tuple[str, ...] = ("last",),
    strict: bool = False,
    report: ProblemReport | None = None,
    **_: Any,
) -> Tabular:
    """One patient's features at ``index_time`` from a long EHR event table (CSV/Parquet).

    ``kind`` values: ``static`` (undated demographics; ``birth_date`` gives ``age``), ``lab`` /
    ``numeric`` (values), ``condition`` / ``medication`` / ``procedure`` (flags), ``encounter``,
    ``imaging`` (counts). Problems of the patient's rows (and of rows with no patient) go to
    ``report``; ``strict=True`` raises the first of the file's instead.
    """
    df, pairs = _events_and_problems(path)
    if strict:
        if pairs:
            raise pairs[0][1]
    pid = str(patient_id)
    problems = [e for p, e in pairs if p is None or p == pid]
    rows = df[df["patient_id"] == pid]
    if rows.empty:
        raise ReadError(f"no event for patient {patient_id!r}", path=path, column="patient_id",
                        hint="add the patient's events or leave the manifest's ehr_path empty")
    if index_time is None:
        raise ReadError("an index time is needed to build EHR features from events", path=path,
                        column="index_time", hint="set the manifest's index_time for this patient")
    tab = event_features(rows, index_time, lookback=lookback, numeric_stats=numeric_stats)
    report_problems(problems, report)
    replaced = {feature: token for p, feature, token in df.attrs.get("missing_tokens", ()) if p == pid}
    if replaced:  # placeholders read as missing: the audit reports them per feature
        tab.missing_tokens = replaced  # type: ignore[attr-defined]
    return tab


# --------------------------------------------------------------------------- FHIR


def events_from_bundle(bundle: Any) -> "pd.DataFrame":
    """The EHR events of a :class:`~medmm.io.fhir.FhirBundle` as a long frame.

    Laboratory Observations become ``lab`` events keyed by LOINC, social-history / survey /
    exam Observations (smoking status ...) ``observation`` events; vital signs are left to
    :mod:`medmm.io.vitals`.
    """
    import pandas as pd

    pid = bundle.patient_id
    rows: list[tuple] = []
    pat = bundle.patient or {}
    if pat.get("gender"):
        rows.append((pid, None, "static", "sex", "sex", str(pat["gender"]), "", None))
    if pat.get("birth_date") is not None:
        rows.append((pid, None, "static", "birth_date", "birth_date", pat["birth_date"], "", None))
    for e in bundle.encounters:
        rows.append((pid, e["start"], "encounter", e["class"] or e["code"], e["display"], None, "", e["end"]))
    for c in bundle.conditions:
        rows.append((pid, c["time"], "condition", c["code"], c["display"], None, "", c["end"]))
    for o in bundle.observations:
        kind = OBSERVATION_KINDS.get(o["category"])
        if kind:
            rows.append((pid, o["time"], kind, o["code"], o["display"], o["value"], o["unit"], None))
    for m in bundle.medications:
        rows.append((pid, m["time"], "medication", m["code"], m["display"], None, "", None))
    for pr in bundle.procedures:
        rows.append((pid, pr["time"], "procedure", pr["code"], pr["display"], None, "", None))
    for im in bundle.imaging:
        rows.append((pid, im["time"], "imaging", im["modalities"], im["uid"], float(im["n_instances"]), "", None))
    if not rows:
        return _empty_events()
    df = pd.DataFrame(rows, columns=[*EVENT_COLUMNS, "end"])
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[ns]")
    df["end"] = pd.to_datetime(df["end"]).astype("datetime64[ns]")
    return df


def read_ehr_fhir(
    path: str | Path,
    *,
    index_time: Any = None,
    lookback: Any = "365D",
    numeric_stats: tuple[str, ...] = ("last",),
    validate: bool = False,
    strict: bool = False,
    report: ProblemReport | None = None,
    **_: Any,
) -> Tabular:
    """One patient's EHR features at ``index_time`` from a FHIR R4 Bundle (JSON); entries left
    out go to ``report`` (``strict=True`` raises the first)."""
    from .fhir import load_bundle

    if index_time is None:
        raise ReadError("an index time is needed to build EHR features", path=path, column="index_time",
                        hint="set the manifest's index_time for this patient")
    bundle = load_bundle(path, validate=validate)
    if strict and bundle.problems:
        raise bundle.problems[0]
    tab = event_features(events_from_bundle(bundle), index_time, lookback=lookback, numeric_stats=numeric_stats)
    report_problems(bundle.problems, report)
    return tab
