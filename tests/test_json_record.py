"""JSON / FHIR documents -> PatientRecord in medmm.io.json_record (the service and the assistant go through it)."""

import pickle

import pandas as pd
import pytest

from medmm.errors import SchemaError, UnusableInputError
from medmm.io.json_record import record_from_bundle, record_from_fhir, record_from_json
from medmm.records import Missing

# a bedside export as a monitor gateway flattens it: vendor signal names, mixed units, a zoned clock,
# the same HR charted twice in one minute, a note typed in by a nurse with a local offset
DOC = {
    "patient_id": "P7",
    "vitals": [
        {"time": "2024-05-01T07:00:00+02:00", "signal": "HR", "value": 88, "unit": "bpm"},
        {"time": "2024-05-01T07:00:00+02:00", "signal": "Heart Rate", "value": 92, "unit": "/min"},
        {"time": "2024-05-01T07:00:00+02:00", "signal": "Temp", "value": 101.3, "unit": "degF"},
        {"time": "2024-05-01T06:30:00Z", "signal": "SpO2", "value": "95", "unit": "%"},
    ],
    "notes": [{"text": "Pt c/o SOB overnight.\nPlan: CXR.", "time": "2024-05-01T09:15:00+02:00", "note_type": "nursing"}],
    "ehr": {"age [years]": 71, "sex": "M", "lactate [mmol/L]": None},
}


def test_a_json_patient_becomes_a_clean_record():
    rec = record_from_json(DOC)
    f = rec.vitals.frame
    assert list(f.columns) == ["time", "signal", "value", "unit"]
    assert f["time"].dt.tz is None and f["time"].iloc[0] == pd.Timestamp("2024-05-01T05:00:00")
    hr = f[f.signal == "heart_rate"]
    assert len(hr) == 1 and hr["value"].iloc[0] == pytest.approx(90.0)  # two charts at one time: averaged
    assert f.loc[f.signal == "temperature", "value"].iloc[0] == pytest.approx(38.5, abs=0.01)
    assert rec.index_time == pd.Timestamp("2024-05-01T06:30:00")  # the last observation, in UTC
    (note,) = rec.notes.notes
    assert note.time == pd.Timestamp("2024-05-01T07:15:00") and note.note_type == "nursing"
    assert rec.ehr.values["age [years]"] == 71
    assert isinstance(record_from_json({"patient_id": "E"}).vitals, Missing)


@pytest.mark.parametrize("doc, column, words", [
    ({"patient_id": "x", "vitals": [{"time": "2024-01-01T00:00", "signal": "HR", "value": 70},
                                    {"time": "2024-01-01T00:05", "signal": "HR", "value": "fast"}]},
     "vitals[1].value", "not a number"),
    ({"patient_id": "x", "vitals": [{"time": "2024-01-01T00:00", "signal": "temperature", "value": 37, "unit": "mmHg"}]},
     "vitals[0].unit", "cannot be converted"),
    ({"patient_id": "x", "vitals": [{"time": "yesterday-ish", "signal": "HR", "value": 70}]}, "vitals[0].time", "not a time"),
    ({"patient_id": "x", "vitals": [{"signal": "HR", "value": 70}]}, "vitals[0].time", "without time"),
    ({"patient_id": "x", "notes": [{"text": "  "}]}, "notes[0].text", "without text"),
    ({"patient_id": "x", "ehr": {"labs": [1, 2]}}, "ehr.labs", "not a number"),
    ({"patient_id": "", "notes": []}, "patient_id", "non-empty"),
    ({"patient_id": "x", "vitls": []}, "patient", "unknown field"),
])
def test_bad_documents_name_the_field(doc, column, words):
    with pytest.raises(SchemaError) as err:
        record_from_json(doc, source="request 12")
    assert err.value.column == column and words in err.value.message
    assert err.value.hint and "request 12" in str(err.value)


def _obs(i, value_quantity, t="2024-05-01T07:00:00Z", code="8867-4"):
    return {"resource": {"resourceType": "Observation", "id": f"o{i}", "status": "final",
                         "subject": {"reference": "Patient/F2"}, "category": [{"coding": [{"code": "vital-signs"}]}],
                         "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                         "effectiveDateTime": t, "valueQuantity": value_quantity}}


def _bundle(*entries):
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "id": "F2"}}, *entries]}


def test_a_fhir_bundle_gives_its_record_and_the_problems_of_entries_left_out():
    doc = _bundle(_obs(1, {"value": 101, "unit": "/min"}), _obs(2, "x", t="2024-05-01T07:05:00Z"),
                  _obs(3, {"value": 99.5, "unit": "[degF]"}, t="2024-05-01T08:00:00+01:00", code="8310-5"))
    rec, problems = record_from_fhir(doc)
    assert rec.patient_id == "F2" and rec.index_time == pd.Timestamp("2024-05-01T07:00:00")
    assert sorted(rec.vitals.frame["signal"]) == ["heart_rate", "temperature"]
    (p,) = problems
    assert p.row == 2 and p.column == "Observation.valueQuantity"


def test_a_bundle_with_nothing_usable_is_refused_with_every_problem():
    doc = _bundle(_obs(1, "x"), _obs(2, {"value": 98, "unit": "lightyears"}, code="8310-5"))
    with pytest.raises(UnusableInputError) as err:
        record_from_fhir(doc)
    assert [p.row for p in err.value.problems] == [1, 2]
    again = pickle.loads(pickle.dumps(err.value))
    assert [p.row for p in again.problems] == [1, 2] and again.message == err.value.message


def test_an_index_time_cuts_later_observations_and_notes():
    from medmm.io.fhir import load_bundle

    note = {"resource": {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": "Patient/F2"},
                         "date": "2024-05-01T09:00:00Z",
                         "content": [{"attachment": {"contentType": "text/plain", "data": "UGxhbjogd2F0Y2gu"}}]}}
    doc = _bundle(_obs(1, {"value": 101, "unit": "/min"}), _obs(2, {"value": 120, "unit": "/min"}, t="2024-05-01T08:30:00Z"),
                  note)
    bundle = load_bundle(data=doc)
    full = record_from_bundle(bundle)
    assert len(full.vitals.frame) == 2 and len(full.notes.notes) == 1
    cut = record_from_bundle(bundle, index_time="2024-05-01T10:00:00+02:00")
    assert cut.index_time == pd.Timestamp("2024-05-01T08:00:00")
    assert list(cut.vitals.frame["value"]) == [101.0] and isinstance(cut.notes, Missing)


def test_the_service_keeps_its_422_messages():
    pytest.importorskip("fastapi")
    from medmm.deploy.app import PatientIn
    from medmm.deploy.app.conversion import Unprocessable, Unusable
    from medmm.deploy.app.conversion import record_from_fhir as service_fhir
    from medmm.deploy.app.conversion import record_from_json as service_json

    body = PatientIn(patient_id="x", vitals=[{"time": "2024-01-01T00:00:00", "signal": "HR", "value": "fast"}])
    with pytest.raises(Unprocessable, match=r"^vitals\[0\]\.value: value 'fast' of heart_rate is not a number\. Fix: "):
        service_json(body)
    with pytest.raises(Unusable) as err:
        service_fhir(_bundle(_obs(1, "x")))
    (p,) = err.value.problems
    assert p["loc"] == ["body", "entry", 1, "Observation.valueQuantity"] and p["hint"]
