"""Request bodies to :class:`~medmm.records.PatientRecord` s (plain JSON or a FHIR Bundle), and the input errors."""

from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING, Any

from ...errors import MedmmError
from .schemas import ObservationIn, PatientIn

if TYPE_CHECKING:
    import pandas as pd

    from ...records import Missing, Notes, PatientRecord, Tabular, Vitals

_SIGNAL_CACHE: dict[str, str] = {}


def vitals_frame(obs: list[ObservationIn]) -> pd.DataFrame:
    """A long vitals frame from JSON observations, cleaned as :func:`medmm.io.vitals.clean_vitals`
    cleans a file (canonical names and units, physiological ranges, duplicates averaged) but in
    plain Python: a bad observation is a 422 naming its index instead of a dropped row."""
    import numpy as np
    import pandas as pd

    from ...io.vitals import SIGNALS, canonical_signal, convert_unit

    acc: dict[tuple[Any, str], list[float]] = {}
    units: dict[str, str] = {}
    for k, o in enumerate(obs):
        sig = _SIGNAL_CACHE.get(o.signal)
        if sig is None:
            sig = _SIGNAL_CACHE.setdefault(o.signal, canonical_signal(o.signal))
        if isinstance(o.value, bool) or isinstance(o.value, str):
            try:
                v = float(o.value) if not isinstance(o.value, bool) else None
            except ValueError:
                v = None
            if v is None:
                raise Unprocessable(f"vitals[{k}].value {o.value!r} is not a number")
        else:
            v = float(o.value)
        if not np.isfinite(v):
            raise Unprocessable(f"vitals[{k}].value is not finite")
        conv = convert_unit(sig, o.unit)
        if conv is None:
            raise Unprocessable(f"vitals[{k}].unit {o.unit!r} cannot be converted to {SIGNALS[sig][0]} for {sig}")
        v = float(conv(v))
        if sig in SIGNALS:
            lo, hi = SIGNALS[sig][2]
            if not lo <= v <= hi:
                raise Unprocessable(f"vitals[{k}]: {sig} {v:g} {SIGNALS[sig][0]} is physiologically impossible")
            units[sig] = SIGNALS[sig][0]
        else:
            units.setdefault(sig, o.unit or "")
        t = o.time
        if t.tzinfo is not None:
            t = t.astimezone(timezone.utc).replace(tzinfo=None)
        acc.setdefault((t, sig), []).append(v)
    rows = sorted(((t, sig, sum(v) / len(v)) for (t, sig), v in acc.items()), key=lambda r: (r[0], r[1]))
    frame = pd.DataFrame({"time": np.array([r[0] for r in rows], dtype="datetime64[ns]"),
                          "signal": [r[1] for r in rows], "value": np.array([r[2] for r in rows], dtype=float),
                          "unit": [units[r[1]] for r in rows]})
    return frame


def record_from_json(p: PatientIn) -> PatientRecord:
    import pandas as pd

    from ...records import Missing, Note, Notes, PatientRecord, Tabular, Vitals

    vitals: Vitals | Missing = Missing()
    last = None
    if p.vitals:
        df = vitals_frame(p.vitals)
        vitals = Vitals(df) if len(df) else Missing("empty")
        last = df["time"].iloc[-1] if len(df) else None
    notes: Notes | Missing = Missing()
    if p.notes:
        notes = Notes([Note(n.text, pd.Timestamp(n.time) if n.time else None, n.note_type) for n in p.notes])
    ehr: Tabular | Missing = Tabular(dict(p.ehr)) if p.ehr else Missing()
    index_time = p.index_time
    if index_time is not None:
        index_time = pd.Timestamp(index_time)
        if index_time.tzinfo is not None:
            index_time = index_time.tz_convert("UTC").tz_localize(None)
    else:
        index_time = last
    return PatientRecord(p.patient_id, notes=notes, vitals=vitals, ehr=ehr, index_time=index_time)


def problem_out(e: MedmmError) -> dict[str, Any]:
    loc: list[Any] = ["body"]
    if e.row is not None:
        loc += ["entry", e.row]
    if e.column:
        loc.append(e.column)
    return {"loc": loc, "msg": e.message, "hint": e.hint}


def record_from_fhir(doc: dict[str, Any]) -> tuple[PatientRecord, list[dict[str, Any]]]:
    """The record of a FHIR Bundle and the problems of the entries left out of it.

    Raises :class:`Unusable` when there are problems and nothing usable: a prediction from the
    prior alone would hide that every entry was refused.
    """
    from ...io.fhir import load_bundle
    from ...io.vitals import vitals_from_observations
    from ...records import Missing, Notes, PatientRecord, Vitals

    bundle = load_bundle(data=doc, only={"Observation", "DocumentReference"})
    problems = list(bundle.problems)
    df = vitals_from_observations(bundle.observations, problems=problems)
    if problems and not len(df) and not bundle.notes:
        raise Unusable([problem_out(e) for e in problems])
    pid = bundle.patient_id or "unknown"
    record = PatientRecord(pid, vitals=Vitals(df) if len(df) else Missing("empty"),
                           notes=Notes(bundle.notes) if bundle.notes else Missing(),
                           index_time=df["time"].max() if len(df) else None)
    return record, [problem_out(e) for e in problems]


class Unprocessable(Exception):
    pass


class Unusable(Exception):
    """No entry of the input could be used; ``problems`` says why, entry by entry."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems
