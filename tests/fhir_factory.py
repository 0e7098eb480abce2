"""FHIR R4 test bundles built and validated with fhir.resources (R4B models)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def _model(resource: dict[str, Any]) -> dict[str, Any]:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource["resourceType"]).model_validate(resource).model_dump(mode="json")


def patient(pid: str, *, gender: str = "female", birth: str = "1960-05-01", name=("Ann", "Smith")) -> dict:
    return _model({"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth,
                   "name": [{"given": [name[0]], "family": name[1]}],
                   "telecom": [{"system": "phone", "value": "555-123-4567"}]})


def encounter(eid: str, pid: str, start: str, end: str | None = None, cls: str = "AMB") -> dict:
    return _model({"resourceType": "Encounter", "id": eid, "status": "finished",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
                   "subject": {"reference": f"Patient/{pid}"},
                   "period": {"start": start, **({"end": end} if end else {})}})


def condition(pid: str, code: str, display: str, onset: str, abatement: str | None = None) -> dict:
    return _model({"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
                   "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
                   "onsetDateTime": onset, **({"abatementDateTime": abatement} if abatement else {})})


def observation(pid: str, code: str, value: float | None, unit: str | None, time: str, *,
                category: str = "laboratory", display: str = "", components=None) -> dict:
    res: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": code, **({"display": display} if display else {})}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": time,
    }
    if value is not None:
        res["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    if components:
        res["component"] = [{"code": {"coding": [{"system": LOINC, "code": c}]},
                             "valueQuantity": {"value": v, "unit": u}} for c, v, u in components]
    return _model(res)


def medication(pid: str, code: str, display: str, authored: str) -> dict:
    return _model({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                   "subject": {"reference": f"Patient/{pid}"},
                   "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                             "code": code, "display": display}]},
                   "authoredOn": authored})


def document(pid: str, text: str, date: str) -> dict:
    return _model({"resourceType": "DocumentReference", "status": "current", "date": date,
                   "subject": {"reference": f"Patient/{pid}"},
                   "type": {"coding": [{"system": LOINC, "code": "34117-2", "display": "History and physical note"}]},
                   "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                               "data": base64.b64encode(text.encode()).decode()}}]})


def imaging_study(pid: str, started: str, modality: str = "CT") -> dict:
    return _model({"resourceType": "ImagingStudy", "status": "available", "started": started,
                   "subject": {"reference": f"Patient/{pid}"},
                   "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}],
                   "series": [{"uid": "1.2.3.4.5", "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                               "code": modality},
                               "instance": [{"uid": "1.2.3.4.5.6", "sopClass": {"code": "1.2.840.10008.5.1.4.1.1.2"}}]}]})


def patient_bundle(pid: str = "p1", *, index: str = "2024-06-01T12:00:00Z") -> dict:
    """A patient with events before and after ``2024-06-01T12:00:00Z``.

    Before: encounters, diabetes (active), asthma (abated before), lactate 2.0 -> 2.5,
    sodium 140, metformin, a CT, vitals, a note. After: lactate 9.9, a sepsis condition,
    an encounter, a note, vitals.
    """
    from fhir.resources.R4B.bundle import Bundle

    res = [
        patient(pid),
        encounter(f"{pid}-e1", pid, "2024-01-10T09:00:00Z", "2024-01-10T10:00:00Z"),
        encounter(f"{pid}-e2", pid, "2024-05-30T09:00:00Z", "2024-06-01T09:00:00Z", cls="IMP"),
        encounter(f"{pid}-e3", pid, "2024-06-10T09:00:00Z", cls="EMER"),  # after the index
        condition(pid, "44054006", "Diabetes mellitus type 2", "2015-03-01T00:00:00Z"),
        condition(pid, "195967001", "Asthma", "2010-01-01T00:00:00Z", abatement="2012-01-01T00:00:00Z"),
        condition(pid, "91302008", "Sepsis", "2024-06-05T00:00:00Z"),  # after the index
        condition(pid, "38341003", "Hypertension", "2020-01-01T00:00:00Z", abatement="2024-07-01T00:00:00Z"),
        observation(pid, "2524-7", 2.0, "mmol/L", "2024-05-30T10:00:00Z", display="Lactate"),
        observation(pid, "2524-7", 2.5, "mmol/L", "2024-06-01T08:00:00Z", display="Lactate"),
        observation(pid, "2524-7", 9.9, "mmol/L", "2024-06-02T08:00:00Z", display="Lactate"),  # after
        observation(pid, "2951-2", 140, "mmol/L", "2024-05-31T08:00:00Z", display="Sodium"),
        observation(pid, "2951-2", 120, "mmol/L", "2022-01-01T08:00:00Z", display="Sodium"),  # outside 365D
        observation(pid, "8867-4", 88, "/min", "2024-06-01T07:00:00Z", category="vital-signs"),
        observation(pid, "8310-5", 101.3, "[degF]", "2024-06-01T07:00:00Z", category="vital-signs"),
        observation(pid, "85354-9", None, None, "2024-06-01T07:00:00Z", category="vital-signs",
                    components=[("8480-6", 118, "mm[Hg]"), ("8462-4", 76, "mm[Hg]")]),
        observation(pid, "8867-4", 130, "/min", "2024-06-03T07:00:00Z", category="vital-signs"),  # after
        medication(pid, "860975", "metformin 500 MG", "2024-02-01T00:00:00Z"),
        medication(pid, "1049221", "piperacillin/tazobactam", "2024-06-05T00:00:00Z"),  # after
        imaging_study(pid, "2024-05-31T10:00:00Z"),
        document(pid, "HPI: Ann Smith reports no chest pain. IMPRESSION: No evidence of mass.",
                 "2024-05-31T12:00:00Z"),
        document(pid, "Septic shock, febrile.", "2024-06-05T12:00:00Z"),  # after
    ]
    return Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"fullUrl": f"urn:uuid:{pid}-{i}", "resource": r}
                                            for i, r in enumerate(res)]}).model_dump(mode="json")


def write_bundle(path: Path, bundle: dict) -> Path:
    path.write_text(json.dumps(bundle))
    return path
