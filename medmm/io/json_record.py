"""A :class:`~medmm.records.PatientRecord` from one patient's JSON document or FHIR R4 Bundle.

The service's ``/predict`` bodies, the assistant's bundles and anything else that receives a
patient as a document rather than as files go through here, so a document becomes the same record
wherever it arrives:

- :func:`record_from_json`: medmm's plain JSON patient (``patient_id``, ``index_time``, ``vitals``
  as observations, ``notes``, ``ehr`` as one row); every observation is checked by
  :func:`medmm.io.vitals.validate_observation`, so a bad one is an error naming its index and field.
- :func:`record_from_bundle` / :func:`record_from_fhir`: vital-sign Observations and
  DocumentReferences of a FHIR Bundle (or a single Observation); unusable entries are reported, and
  a document with problems and nothing usable is refused with :class:`~medmm.errors.UnusableInputError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MedmmError, SchemaError, UnusableInputError
from .common import to_timestamp

if TYPE_CHECKING:
    import pandas as pd

    from ..records import PatientRecord
    from .fhir import FhirBundle

__all__ = ["record_from_json", "record_from_bundle", "record_from_fhir", "vitals_from_json", "JSON_FIELDS"]

#: the fields of a JSON patient document
JSON_FIELDS = ("patient_id", "index_time", "vitals", "notes", "ehr")
_OBSERVATION_FIELDS = ("time", "signal", "value", "unit")
_NOTE_FIELDS = ("text", "time", "note_type")


def _fields(item: Any, allowed: Sequence[str], where: str, source: str) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise SchemaError(f"expected an object, got {type(item).__name__}", path=source, column=where,
                          hint=f"give an object with the fields {list(allowed)}")
    extra = sorted(set(item) - set(allowed))
    if extra:
        raise SchemaError(f"unknown field(s) {extra}", path=source, column=where, hint=f"the fields are {list(allowed)}")
    return item


def _list(value: Any, where: str, source: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise SchemaError(f"expected a list, got {type(value).__name__}", path=source, column=where,
                          hint="give a JSON array (or leave the field out)")
    return list(value)


def vitals_from_json(observations: Sequence[Mapping[str, Any]], *, source: str = "<json>") -> pd.DataFrame:
    """A long vitals frame (``time, signal, value, unit``; canonical signals and units, naive UTC,
    sorted) from JSON observations ``{"time", "signal", "value", "unit"}``.

    Each observation is checked by :func:`~medmm.io.vitals.validate_observation` (the rules
    :func:`~medmm.io.vitals.clean_vitals` applies to a file and the monitor to a stream): a bad one
    raises :class:`~medmm.errors.SchemaError` with ``column`` ``vitals[<index>].<field>`` instead of
    being dropped; duplicates at one time are averaged as in a file.
    """
    import numpy as np
    import pandas as pd

    from .vitals import validate_observation

    acc: dict[tuple[Any, str], list[float]] = {}
    units: dict[str, str] = {}
    for k, o in enumerate(observations):
        o = _fields(o, _OBSERVATION_FIELDS, f"vitals[{k}]", source)
        missing = [f for f in ("time", "signal", "value") if o.get(f) is None]
        if missing:
            raise SchemaError(f"observation without {', '.join(missing)}", path=source, column=f"vitals[{k}].{missing[0]}",
                              hint="give time, signal and value (unit optional)")
        try:
            ob = validate_observation(o["signal"], o["value"], o.get("unit"), time=o["time"])
        except SchemaError as exc:
            raise SchemaError(exc.message, path=source, column=f"vitals[{k}].{exc.column or 'value'}", hint=exc.hint) from None
        units.setdefault(ob.signal, ob.unit)
        acc.setdefault((ob.time, ob.signal), []).append(ob.value)
    rows = sorted(((t, sig, sum(v) / len(v)) for (t, sig), v in acc.items()), key=lambda r: (r[0], r[1]))
    return pd.DataFrame({"time": np.array([r[0] for r in rows], dtype="datetime64[ns]"),
                         "signal": [r[1] for r in rows], "value": np.array([r[2] for r in rows], dtype=float),
                         "unit": [units[r[1]] for r in rows]})


def _time(value: Any, where: str, source: str) -> pd.Timestamp | None:
    try:
        return to_timestamp(value)
    except (ValueError, TypeError):
        raise SchemaError(f"{value!r} is not a time", path=source, column=where, hint="give an ISO 8601 time") from None


def record_from_json(doc: Mapping[str, Any], *, source: str = "<json>") -> PatientRecord:
    """The record of one JSON patient document (any subset of ``vitals``, ``notes``, ``ehr``; an
    absent modality is :class:`~medmm.records.Missing`). ``index_time`` defaults to the last
    observation; every time is made naive UTC.

    Raises :class:`~medmm.errors.SchemaError` naming the field (``vitals[3].unit``, ``notes[0].text``).
    """
    from ..records import Missing, Note, Notes, PatientRecord, Tabular, Vitals

    doc = _fields(doc, JSON_FIELDS, "patient", source)
    pid = doc.get("patient_id")
    if not isinstance(pid, str) or not pid:
        raise SchemaError(f"patient_id {pid!r} is not a non-empty string", path=source, column="patient_id",
                          hint="give the patient's id")
    vitals: Vitals | Missing = Missing()
    last = None
    observations = _list(doc.get("vitals"), "vitals", source)
    if observations:
        df = vitals_from_json(observations, source=source)
        vitals = Vitals(df) if len(df) else Missing("empty")
        last = df["time"].iloc[-1] if len(df) else None
    notes: Notes | Missing = Missing()
    items = []
    for k, n in enumerate(_list(doc.get("notes"), "notes", source)):
        n = _fields(n, _NOTE_FIELDS, f"notes[{k}]", source)
        if not isinstance(n.get("text"), str) or not n["text"].strip():
            raise SchemaError("a note without text", path=source, column=f"notes[{k}].text", hint="give the note's text")
        items.append(Note(n["text"], _time(n.get("time"), f"notes[{k}].time", source), str(n.get("note_type") or "note")))
    if items:
        notes = Notes(items)
    ehr: Tabular | Missing = Missing()
    row = doc.get("ehr")
    if row:
        if not isinstance(row, Mapping):
            raise SchemaError(f"expected an object, got {type(row).__name__}", path=source, column="ehr",
                              hint="give the EHR row as {feature: value}")
        bad = [k for k, v in row.items() if v is not None and not isinstance(v, (int, float, str, bool))]
        if bad:
            raise SchemaError(f"EHR value of {bad[0]!r} is not a number, string or boolean", path=source,
                              column=f"ehr.{bad[0]}", hint="give one scalar per feature")
        ehr = Tabular(dict(row))
    index_time = _time(doc.get("index_time"), "index_time", source)
    return PatientRecord(pid, notes=notes, vitals=vitals, ehr=ehr, index_time=index_time if index_time is not None else last)


def record_from_bundle(bundle: FhirBundle, *, index_time: Any = None, problems: list[MedmmError] | None = None,
                       patient_id: str | None = None) -> PatientRecord:
    """The record of a parsed FHIR Bundle: its vital-sign Observations (by LOINC code) and its notes.

    ``index_time`` is the prediction time: when given, observations and notes after it are left
    out; by default it is the last vital sign. Unusable observations are appended to ``problems``.
    """
    from ..records import Missing, Notes, PatientRecord, Vitals
    from .vitals import vitals_from_observations

    df = vitals_from_observations(bundle.observations, path=bundle.path,
                                  problems=problems if problems is not None else [])
    df = df[["time", "signal", "value", "unit"]]
    notes = list(bundle.notes)
    when = _time(index_time, "index_time", bundle.path)
    if when is not None:
        df = df[df["time"] <= when].reset_index(drop=True)
        notes = [n for n in notes if n.time is None or n.time <= when]
    elif len(df):
        when = df["time"].max()
    return PatientRecord(patient_id or bundle.patient_id or "unknown",
                         vitals=Vitals(df) if len(df) else Missing("empty" if bundle.observations else "not_acquired"),
                         notes=Notes(notes) if notes else Missing(), index_time=when)


def record_from_fhir(doc: Mapping[str, Any] | bytes, *, index_time: Any = None) -> tuple[PatientRecord, list[MedmmError]]:
    """The record of a FHIR Bundle (or a single Observation / DocumentReference) and the problems of
    the entries left out of it (each names its ``Bundle.entry`` index as ``row``).

    Raises :class:`~medmm.errors.UnusableInputError` when there are problems and nothing usable:
    a prediction from the prior alone would hide that every entry was refused.
    """
    from .fhir import load_bundle

    bundle = load_bundle(data=doc if isinstance(doc, bytes) else dict(doc), only={"Observation", "DocumentReference"})
    problems = list(bundle.problems)
    record = record_from_bundle(bundle, index_time=index_time, problems=problems)
    if problems and not record.vitals and not record.notes:
        raise UnusableInputError(f"no usable vital sign or note in the bundle ({len(problems)} problem(s))",
                                 path=bundle.path, problems=problems,
                                 hint="fix the entries listed in .problems")
    return record, problems
