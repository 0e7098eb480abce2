"""FHIR R4 Bundles (one patient each, as Synthea writes them) to plain rows.

:func:`load_bundle` parses a Bundle with orjson and flattens the resources medmm uses
(Patient, Encounter, Condition, Observation, MedicationRequest, Procedure, DocumentReference,
ImagingStudy) into small dicts. Plain-JSON extraction is fast enough to stream thousands of
megabyte-sized bundles; ``validate=True`` additionally validates each used resource with
``fhir.resources`` (R4B models, which R4 documents satisfy), reporting validation errors by
field, at roughly a tenth of the speed (see ``benchmarks/bench_fhir.py``).

Nothing is raised for one bad entry: a resource of an unknown type, a missing field, a bad
timestamp or attachment is a problem (a :class:`~medmm.errors.ReadError` naming the file,
the entry index as ``row`` and the field as ``column``) and the rest of the bundle loads.
A file that is not JSON at all, or not a Bundle, raises :class:`~medmm.errors.ReadError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from ..errors import MedmmError, ReadError, SchemaError
from ..records import Note
from .common import parse_time, problem

__all__ = ["FhirBundle", "load_bundle", "ref_id", "notes_from_document_reference", "USED_TYPES", "is_fhir_type", "LOINC"]

LOINC = "http://loinc.org"
#: resource types medmm extracts; every other valid FHIR type is counted and skipped
USED_TYPES = frozenset({
    "Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Procedure",
    "DocumentReference", "ImagingStudy",
})

_TYPE_CACHE: dict[str, bool] = {}
_ZONED = re.compile(r"(?:Z|[+-]\d\d:\d\d)$")


def is_fhir_type(name: str) -> bool:
    """Whether ``name`` is a FHIR resource type (per ``fhir.resources``' R4B models)."""
    if name not in _TYPE_CACHE:
        from fhir.resources.R4B import get_fhir_model_class

        try:
            get_fhir_model_class(name)
            _TYPE_CACHE[name] = True
        except (ValueError, KeyError, AttributeError, ImportError):
            _TYPE_CACHE[name] = False
    return _TYPE_CACHE[name]


@dataclass
class FhirBundle:
    """The parts of one patient's FHIR Bundle that medmm uses, as plain rows.

    Times are naive UTC :class:`pandas.Timestamp` (or ``None``). ``row`` values in problems
    are 0-based indices into ``Bundle.entry``.
    """

    path: str
    patient_id: str | None = None
    patient: dict[str, Any] = field(default_factory=dict)
    encounters: list[dict[str, Any]] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    medications: list[dict[str, Any]] = field(default_factory=list)
    procedures: list[dict[str, Any]] = field(default_factory=list)
    imaging: list[dict[str, Any]] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    #: Encounter id -> the latest time of a resource recorded in it (Observation.encounter,
    #: DocumentReference.context.encounter): how long an encounter without an end ran
    encounter_activity: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[MedmmError] = field(default_factory=list)
    n_bytes: int = 0

    def __repr__(self) -> str:
        return (
            f"FhirBundle({self.patient_id!r}, encounters={len(self.encounters)}, "
            f"conditions={len(self.conditions)}, observations={len(self.observations)}, "
            f"medications={len(self.medications)}, notes={len(self.notes)}, "
            f"imaging={len(self.imaging)}, problems={len(self.problems)})"
        )


def _coding(cc: Any) -> tuple[str, str, str]:
    """(system, code, display) of a CodeableConcept's first coding (LOINC/SNOMED first)."""
    if not isinstance(cc, dict):
        return "", "", ""
    codings = [c for c in cc.get("coding") or [] if isinstance(c, dict)]
    if not codings:
        return "", "", str(cc.get("text") or "")
    c = codings[0]
    return str(c.get("system") or ""), str(c.get("code") or ""), str(c.get("display") or cc.get("text") or "")


def ref_id(ref: Any) -> str | None:
    """The id a FHIR Reference points at (``Patient/p1`` -> ``p1``, ``urn:uuid:x`` -> ``x``); ``None`` if it has none."""
    if not isinstance(ref, dict):
        return None
    r = ref.get("reference")
    if not isinstance(r, str):
        return None
    if r.startswith("urn:uuid:"):
        return r[9:]
    return r.rsplit("/", 1)[-1]


def _value(res: dict[str, Any]) -> tuple[Any, str, str]:
    """(value, unit, kind) of an Observation or component; kind is ``num``, ``cat`` or ``''``."""
    q = res.get("valueQuantity")
    if isinstance(q, dict) and q.get("value") is not None:
        unit = q.get("code") or q.get("unit") or ""
        # prefer the human unit when the UCUM code is an annotation like {beats}/min
        return q.get("value"), str(q.get("unit") or unit), "num"
    for key in ("valueInteger", "valueDecimal"):
        if res.get(key) is not None:
            return res[key], "", "num"
    if isinstance(res.get("valueCodeableConcept"), dict):
        _, code, display = _coding(res["valueCodeableConcept"])
        return display or code, "", "cat"
    for key in ("valueString", "valueBoolean"):
        if res.get(key) is not None:
            return res[key], "", "cat"
    return None, "", ""


class _Ctx:
    __slots__ = ("path", "problems")

    def __init__(self, path: str, problems: list[MedmmError]) -> None:
        self.path = path
        self.problems = problems

    def time(self, value: Any, row: int, column: str):
        t = parse_time(value, problems=self.problems, path=self.path, row=row, column=column)
        if t is not None and len(value) > 10 and not _ZONED.search(value):
            self.report(f"date-time {value!r} has no UTC offset (FHIR requires one); taken as UTC", row, column,
                        "write date-times with their offset, e.g. 2024-01-01T08:00:00+00:00")
        return t

    def report(self, message: str, row: int, column: str, hint: str) -> None:
        self.problems.append(problem(message, path=self.path, row=row, column=column, hint=hint))

    def missing(self, raw: Any, message: str, row: int, column: str, hint: str) -> None:
        """Report a missing value (an unparseable one was reported by :meth:`time` already)."""
        if raw is None or raw == "":
            self.report(message, row, column, hint)


def _patient(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    names: list[str] = []
    for n in res.get("name") or []:
        if isinstance(n, dict):
            names.extend(str(g) for g in n.get("given") or [])
            if n.get("family"):
                names.append(str(n["family"]))
            names.extend(str(p) for p in n.get("prefix") or [])
    if out.patient_id is not None and res.get("id") != out.patient_id:
        ctx.report(f"a second Patient ({res.get('id')!r}) in a one-patient bundle; ignored", i,
                   "Patient.id", "write one bundle per patient")
        return
    out.patient_id = str(res.get("id")) if res.get("id") is not None else None
    if out.patient_id is None:
        ctx.report("Patient has no id", i, "Patient.id", "give the Patient resource an id")
    out.patient = {
        "id": out.patient_id,
        "gender": res.get("gender"),
        "birth_date": ctx.time(res.get("birthDate"), i, "Patient.birthDate"),
        "deceased": ctx.time(res.get("deceasedDateTime"), i, "Patient.deceasedDateTime")
        if res.get("deceasedDateTime") else (True if res.get("deceasedBoolean") else None),
        "names": names,
        "identifiers": [str(x.get("value")) for x in res.get("identifier") or [] if isinstance(x, dict)
                        and x.get("value")],
        "phones": [str(t.get("value")) for t in res.get("telecom") or [] if isinstance(t, dict) and t.get("value")],
    }


def _encounter(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    period = res.get("period") or {}
    start = ctx.time(period.get("start"), i, "Encounter.period.start")
    cls = res.get("class")
    cls_code = cls.get("code") if isinstance(cls, dict) else None
    types = res.get("type") or [{}]
    _, code, display = _coding(types[0] if isinstance(types, list) and types else {})
    if start is None:
        ctx.missing(period.get("start"), "Encounter has no period.start; skipped", i, "Encounter.period.start",
                    "give the start time")
        return
    out.encounters.append({
        "id": res.get("id"), "start": start, "end": ctx.time(period.get("end"), i, "Encounter.period.end"),
        "class": cls_code or "", "code": code, "display": display,
    })


def _condition(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    system, code, display = _coding(res.get("code"))
    onset = res.get("onsetDateTime") or (res.get("onsetPeriod") or {}).get("start") or res.get("recordedDate")
    t = ctx.time(onset, i, "Condition.onsetDateTime")
    if not code:
        ctx.report("Condition has no code; skipped", i, "Condition.code", "code the condition (e.g. SNOMED CT)")
        return
    if t is None:
        ctx.missing(onset, "Condition has no onset or recorded date; skipped", i, "Condition.onsetDateTime",
                    "give onsetDateTime or recordedDate")
        return
    out.conditions.append({
        "time": t, "system": system, "code": code, "display": display,
        "end": ctx.time(res.get("abatementDateTime"), i, "Condition.abatementDateTime"),
        "id": res.get("id"), "entry": i,
    })


def _category(res: dict) -> str:
    for cat in res.get("category") or []:
        _, code, _ = _coding(cat)
        if code:
            return code
    return ""


def _activity(out: FhirBundle, ref: Any, t: Any) -> None:
    eid = ref_id(ref)
    if eid is not None and t is not None and (eid not in out.encounter_activity or t > out.encounter_activity[eid]):
        out.encounter_activity[eid] = t


def _check_quantity(res: dict, i: int, ctx: _Ctx, where: str) -> None:
    """Report a ``valueQuantity`` that is no Quantity (``"x"``) or has no value."""
    q = res.get("valueQuantity")
    if q is None:
        return
    if not isinstance(q, dict):
        ctx.report(f"valueQuantity {q!r} is not a Quantity; skipped", i, f"{where}.valueQuantity",
                   'give {"value": <number>, "unit": "..."}')
    elif q.get("value") is None:
        ctx.report("valueQuantity has no value; skipped", i, f"{where}.valueQuantity.value",
                   "give the numeric value (or leave valueQuantity out and give dataAbsentReason)")


def _observation(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    eff = (res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start")
           or res.get("effectiveInstant") or res.get("issued"))
    t = ctx.time(eff, i, "Observation.effectiveDateTime")
    if t is None:
        ctx.missing(eff, "Observation has no effective time; skipped", i, "Observation.effectiveDateTime",
                    "give effectiveDateTime")
        return
    _activity(out, res.get("encounter"), t)
    category = _category(res)
    system, code, display = _coding(res.get("code"))
    value, unit, kind = _value(res)
    _check_quantity(res, i, ctx, "Observation")
    if kind:
        if kind == "num" and not isinstance(value, (int, float)) or isinstance(value, bool) and kind == "num":
            ctx.report(f"value {value!r} is not a number; skipped", i, "Observation.valueQuantity.value",
                       "give a numeric value")
        else:
            out.observations.append({"time": t, "system": system, "code": code, "display": display,
                                     "value": value, "unit": unit, "kind": kind, "category": category,
                                     "entry": i, "field": "Observation", "id": res.get("id")})
    for k, comp in enumerate(res.get("component") or []):
        if not isinstance(comp, dict):
            continue
        csys, ccode, cdisp = _coding(comp.get("code"))
        cval, cunit, ckind = _value(comp)
        _check_quantity(comp, i, ctx, f"Observation.component[{k}]")
        if not ckind:
            continue
        if ckind == "num" and (not isinstance(cval, (int, float)) or isinstance(cval, bool)):
            ctx.report(f"value {cval!r} is not a number; skipped", i,
                       f"Observation.component[{k}].valueQuantity.value", "give a numeric value")
            continue
        out.observations.append({"time": t, "system": csys, "code": ccode, "display": cdisp, "value": cval,
                                 "unit": cunit, "kind": ckind, "category": category, "entry": i,
                                 "field": f"Observation.component[{k}]", "id": res.get("id")})


def _medication(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    if isinstance(res.get("medicationCodeableConcept"), dict):
        system, code, display = _coding(res["medicationCodeableConcept"])
    else:
        ref = res.get("medicationReference") or {}
        system, code, display = "", ref_id(ref) or "", str(ref.get("display") or "")
    t = ctx.time(res.get("authoredOn"), i, "MedicationRequest.authoredOn")
    if t is None:
        ctx.missing(res.get("authoredOn"), "MedicationRequest has no authoredOn; skipped", i,
                    "MedicationRequest.authoredOn", "give authoredOn")
        return
    out.medications.append({"time": t, "system": system, "code": code or display, "display": display,
                            "status": res.get("status") or "", "id": res.get("id"), "entry": i})


def _procedure(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    system, code, display = _coding(res.get("code"))
    when = res.get("performedDateTime") or (res.get("performedPeriod") or {}).get("start")
    t = ctx.time(when, i, "Procedure.performedDateTime")
    if t is not None and code:
        out.procedures.append({"time": t, "system": system, "code": code, "display": display,
                               "id": res.get("id"), "entry": i})


def _imaging(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    t = ctx.time(res.get("started"), i, "ImagingStudy.started")
    if t is None:
        ctx.missing(res.get("started"), "ImagingStudy has no started time; skipped", i, "ImagingStudy.started",
                    "give started")
        return
    modalities = set()
    n_inst = 0
    for s in res.get("series") or []:
        if isinstance(s, dict):
            m = s.get("modality") or {}
            modalities.add(str(m.get("code") or "") if isinstance(m, dict) else str(m))
            n_inst += len(s.get("instance") or [])
    out.imaging.append({"time": t, "uid": next((str(x.get("value")) for x in res.get("identifier") or []
                                                if isinstance(x, dict)), res.get("id")),
                        "modalities": "+".join(sorted(m for m in modalities if m)),
                        "n_series": len(res.get("series") or []), "n_instances": n_inst,
                        "id": res.get("id"), "entry": i})


def _docref(res: dict, i: int, ctx: _Ctx, out: FhirBundle) -> None:
    notes = notes_from_document_reference(res, path=ctx.path, row=i, problems=ctx.problems)
    out.notes.extend(notes)
    context = res.get("context")
    for ref in (context.get("encounter") or [] if isinstance(context, dict) else []):
        for n in notes:
            _activity(out, ref, n.time)


_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", re.I)


def notes_from_document_reference(
    resource: dict[str, Any],
    *,
    path: Any = None,
    row: int | None = None,
    problems: list[MedmmError],
) -> list[Note]:
    """The text notes of one FHIR R4 DocumentReference (``content[].attachment.data``, base64).

    The time is ``date`` (else ``context.period.start``); the type is ``type.text`` or its
    first coding's display. Attachments that are not text, cannot be base64-decoded or are not
    valid in their charset are reported in ``problems``.
    """
    where = f"DocumentReference/{resource.get('id', '?')}"
    context = resource.get("context") or {}
    if isinstance(context, list):  # R5: a list of references
        context = {}
    t = resource.get("date") or ((context.get("period") or {}).get("start"))
    time = parse_time(t, problems=problems, path=path, row=row, column=f"{where}.date")
    rtype = resource.get("type") or {}
    codings = rtype.get("coding") or [{}]
    note_type = rtype.get("text") or codings[0].get("display") or codings[0].get("code") or "note"
    out: list[Note] = []
    for k, content in enumerate(resource.get("content") or []):
        att = (content or {}).get("attachment") or {}
        field = f"{where}.content[{k}].attachment"
        ctype = att.get("contentType", "text/plain")
        if not ctype.lower().startswith("text/"):
            problems.append(problem(f"attachment is {ctype!r}, not text; skipped", path=path, row=row,
                                    column=f"{field}.contentType", hint="only text/* attachments are read"))
            continue
        data = att.get("data")
        if data is None:
            problems.append(problem("attachment has no inline data" + (f" (url {att['url']!r} not fetched)"
                                                                       if att.get("url") else ""),
                                    path=path, row=row, column=f"{field}.data",
                                    hint="inline the note as base64 in attachment.data"))
            continue
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            problems.append(problem(f"attachment data is not base64 ({exc})", path=path, row=row,
                                    column=f"{field}.data", hint="encode the note as base64"))
            continue
        m = _CHARSET.search(ctype)
        charset = m.group(1) if m else "utf-8"
        try:
            text = raw.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            problems.append(problem(f"attachment text is not valid {charset} ({exc})", path=path, row=row,
                                    column=f"{field}.data",
                                    hint="re-encode the note as UTF-8 or declare its charset in contentType"))
            continue
        if text.strip():
            out.append(Note(text=text.strip(), time=time, note_type=str(note_type)))
    return out


_HANDLERS = {
    "Patient": _patient,
    "Encounter": _encounter,
    "Condition": _condition,
    "Observation": _observation,
    "MedicationRequest": _medication,
    "Procedure": _procedure,
    "ImagingStudy": _imaging,
    "DocumentReference": _docref,
}


def _validate(res: dict, i: int, ctx: _Ctx) -> bool:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    cls = get_fhir_model_class(res["resourceType"])
    try:
        cls.model_validate(res)
        return True
    except ValidationError as exc:
        for err in exc.errors()[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()))
            ctx.report(f"invalid {res['resourceType']}: {err.get('msg')}", i, f"{res['resourceType']}.{loc}",
                       "fix the resource so that it validates against FHIR R4")
        return False


def load_bundle(
    path: str | Path | None = None,
    *,
    data: bytes | dict | None = None,
    only: set[str] | frozenset[str] | None = None,
    validate: bool = False,
) -> FhirBundle:
    """Parse one FHIR R4 Bundle (or a single resource) into a :class:`FhirBundle`.

    Parameters
    ----------
    path:
        A ``.json`` file (``data`` may give its bytes or parsed content instead).
    only:
        Extract only these resource types (others are counted and skipped).
    validate:
        Validate each used resource with ``fhir.resources``; an invalid one is reported by
        field and skipped.
    """
    import orjson

    where = str(path) if path is not None else "<bundle>"
    if data is None:
        try:
            data = Path(where).read_bytes()
        except OSError as exc:
            raise ReadError(f"cannot read file ({exc.strerror})", path=where, hint="check the path") from exc
    n_bytes = len(data) if isinstance(data, (bytes, bytearray)) else 0
    if isinstance(data, (bytes, bytearray, str)):
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ReadError(f"not valid JSON ({exc})", path=where,
                            hint="the file must be one FHIR JSON document (a Bundle)") from exc
    else:
        doc = data
    if not isinstance(doc, dict) or "resourceType" not in doc:
        raise SchemaError("not a FHIR resource (no 'resourceType')", path=where, column="resourceType",
                          hint="give a FHIR R4 Bundle in JSON")
    problems: list[MedmmError] = []
    ctx = _Ctx(where, problems)
    out = FhirBundle(path=where, problems=problems, n_bytes=n_bytes)
    if doc["resourceType"] == "Bundle":
        entries = doc.get("entry") or []
        if not isinstance(entries, list):
            raise SchemaError("Bundle.entry is not a list", path=where, column="Bundle.entry",
                              hint="give a FHIR R4 Bundle in JSON")
        resources: Iterator[Any] = ((e.get("resource") if isinstance(e, dict) else None) for e in entries)
    else:
        resources = iter([doc])
    counts: dict[str, int] = {}
    deferred: list[tuple[int, dict]] = []
    for i, res in enumerate(resources):
        if not isinstance(res, dict):
            ctx.report("entry has no resource object; skipped", i, "Bundle.entry.resource",
                       "every entry needs a 'resource'")
            continue
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):
            ctx.report("resource has no resourceType; skipped", i, "resourceType", "give the resourceType")
            continue
        counts[rtype] = counts.get(rtype, 0) + 1
        handler = _HANDLERS.get(rtype)
        if handler is None:
            if not is_fhir_type(rtype):
                ctx.report(f"unexpected resource type {rtype!r} (not a FHIR R4 resource); skipped", i,
                           "resourceType", f"medmm reads {sorted(USED_TYPES)}")
            continue
        if only is not None and rtype not in only and rtype != "Patient":
            continue
        if validate and not _validate(res, i, ctx):
            continue
        if rtype == "Patient":
            handler(res, i, ctx, out)
        else:
            deferred.append((i, res))
    for i, res in deferred:
        try:
            _HANDLERS[res["resourceType"]](res, i, ctx, out)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a field of an unexpected shape
            ctx.report(f"malformed {res['resourceType']} ({type(exc).__name__}: {exc}); skipped", i,
                       res["resourceType"], "check the resource against the FHIR R4 specification")
    out.counts = counts
    out.notes.sort(key=lambda n: (n.time is None, n.time))
    return out
