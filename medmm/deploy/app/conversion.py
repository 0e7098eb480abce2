"""Request bodies to :class:`~medmm.records.PatientRecord` s (plain JSON or a FHIR Bundle), and the input errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import MedmmError
from .schemas import ObservationIn, PatientIn

if TYPE_CHECKING:
    import pandas as pd

    from ...records import Missing, Notes, PatientRecord, Tabular, Vitals



def vitals_frame(obs: list[ObservationIn]) -> pd.DataFrame:
    """A long vitals frame from JSON observations, each checked by
    :func:`medmm.io.vitals.validate_observation` (the rules :func:`~medmm.io.vitals.clean_vitals`
    applies to a file and the monitor to a stream): a bad observation is a 422 naming its index
    and field instead of a dropped row; duplicates at one time are averaged as in a file."""
    import numpy as np
    import pandas as pd

    from ...errors import SchemaError
    from ...io.vitals import validate_observation

    acc: dict[tuple[Any, str], list[float]] = {}
    units: dict[str, str] = {}
    for k, o in enumerate(obs):
        try:
            ob = validate_observation(o.signal, o.value, o.unit, time=o.time)
        except SchemaError as exc:
            raise Unprocessable(f"vitals[{k}].{exc.column or 'value'}: {exc}") from None
        units.setdefault(ob.signal, ob.unit)
        acc.setdefault((ob.time, ob.signal), []).append(ob.value)
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
