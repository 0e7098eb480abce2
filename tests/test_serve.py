"""The FastAPI service: auth, validation, size limits, predict (JSON and FHIR), monitor, metrics, OpenAPI."""

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

KEY = "test-key-123"


@pytest.fixture(scope="module")
def client(tiny_loaded):
    from fastapi.testclient import TestClient

    from medmm.deploy.app import create_app
    from medmm.deploy.runtime import Predictor
    from model_helpers import build_tiny_model

    model = build_tiny_model(tiny_loaded)
    pred = Predictor.from_model(model, runtime="eager", export_dir="unused")
    app = create_app(pred, api_keys=[KEY], max_body_bytes=20_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.model = model
        yield c


H = {"X-API-Key": KEY}
PATIENT = {
    "patient_id": "P1",
    "index_time": "2024-05-01T08:00:00",
    "vitals": [{"time": f"2024-05-01T0{h}:00:00", "signal": s, "value": v, "unit": u}
               for h in range(1, 8) for s, v, u in (("HR", 80 + h, "bpm"), ("spo2", 97, "%"), ("temperature", 98.6, "degF"))],
    "notes": [{"text": "Findings: a 2 cm enhancing mass. Impression: suspicious for malignancy."}],
    "ehr": {"age [years]": 64, "sex": "F", "lactate [mmol/L]": 2.1},
}


def test_no_key_no_data(client):
    assert client.post("/predict", json=PATIENT).status_code == 401
    assert client.post("/predict", json=PATIENT, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.post("/monitor/P1/observations", json=[]).status_code == 401
    assert client.get("/health").status_code == 200  # liveness holds no patient data


def test_predict_json_record_matches_the_model(client):
    from medmm.deploy.app import PatientIn
    from medmm.deploy.app.conversion import record_from_json

    r = client.post("/predict", json=PATIENT, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["probabilities"]) == {"tumor", "disease"}
    assert body["present"] == {"image": False, "notes": True, "vitals": True, "ehr": True}
    rec = record_from_json(PatientIn(**PATIENT))
    ref = client.model.predict_records([rec])[0]
    got = np.array([body["probabilities"][t] for t in client.model.tasks])
    assert np.abs(ref - got).max() < 1e-5
    # Fahrenheit was converted on the way in
    assert rec.vitals.frame.loc[rec.vitals.frame.signal == "temperature", "value"].iloc[0] == pytest.approx(37.0)


def test_predict_with_nothing_gives_the_prior(client):
    r = client.post("/predict", json={"patient_id": "empty"}, headers=H)
    assert r.status_code == 200 and not any(r.json()["present"].values())
    assert all(0 < p < 1 for p in r.json()["probabilities"].values())


def test_predict_fhir_bundle(client):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "F1"}},
        {"resource": {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/F1"},
                      "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                      "effectiveDateTime": "2024-05-01T07:00:00Z", "valueQuantity": {"value": 101, "unit": "/min"}}}]}
    r = client.post("/predict", json=bundle, headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["patient_id"] == "F1" and r.json()["present"]["vitals"] is True


@pytest.mark.parametrize("body", [
    {"patient_id": "x", "vitals": [{"time": "yesterday", "signal": "HR", "value": 80}]},
    {"patient_id": "x", "vitals": [{"time": "2024-01-01T00:00:00", "signal": "HR", "value": "fast"}]},
    {"patient_id": "x", "surprise": 1},
    {"resourceType": "Patient"},
    [1, 2, 3],
    {"patient_id": ""},
])
def test_bad_input_is_a_clear_4xx(client, body):
    r = client.post("/predict", json=body, headers=H)
    assert r.status_code == 422, r.text
    assert "detail" in r.json() and "Traceback" not in r.text


def test_not_json_and_too_large(client):
    r = client.post("/predict", content=b"{not json", headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    big = {"patient_id": "x", "notes": [{"text": "a" * 30_000}]}
    r = client.post("/predict", json=big, headers=H)
    assert r.status_code == 413


def test_chunked_upload_is_measured_as_it_arrives(client):
    import json

    def chunks(body: bytes, size: int = 4096):
        for i in range(0, len(body), size):
            yield body[i:i + size]

    hdr = {**H, "Content-Type": "application/json"}
    big = json.dumps({"patient_id": "x", "notes": [{"text": "a" * 30_000}]}).encode()
    r = client.post("/predict", content=chunks(big), headers=hdr)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    small = json.dumps(PATIENT).encode()
    r = client.post("/predict", content=chunks(small, 100), headers=hdr)  # under the limit: served as usual
    assert r.status_code == 200, r.text
    assert r.json()["patient_id"] == "P1"


def test_monitor_observations_alert_and_state(client):
    obs = [{"time": "2024-05-01T08:00:00", "signal": "resp_rate", "value": 16},
           {"time": "2024-05-01T08:00:00", "signal": "HR", "value": 75}]
    r = client.post("/monitor/M1/observations", json=obs, headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["alerts"] == [] and r.json()["state"]["news2"]["total"] == 0
    r = client.post("/monitor/M1/observations", headers=H,
                    json=[{"time": "2024-05-01T09:00:00", "signal": "resp_rate", "value": 27}])
    alerts = r.json()["alerts"]
    assert len(alerts) == 1 and alerts[0]["level"] >= 2
    assert any("resp_rate" in line for line in alerts[0]["explanation"])
    assert any("model risk" in line for line in alerts[0]["explanation"])
    assert client.get("/monitor/M1", headers=H).json()["news2"]["scores"]["resp_rate"] == 3
    assert client.get("/monitor/nobody", headers=H).status_code == 404
    bad = client.post("/monitor/M1/observations", headers=H,
                      json=[{"time": "2024-05-01T09:00:00", "signal": "spo2", "value": 150}])
    assert bad.status_code == 422 and "observation 0" in bad.json()["detail"]


def test_metrics_and_openapi(client):
    client.get("/health")
    text = client.get("/metrics", headers=H).text
    assert "medmm_requests_total" in text and 'endpoint="/predict"' in text
    assert "medmm_alerts_total" in text
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/monitor/{patient_id}/observations", "/health", "/metrics"} <= set(schema["paths"])
    assert "APIKeyHeader" in str(schema.get("components", {}).get("securitySchemes", {}))


def test_freeze_heap_moves_long_lived_objects_out_of_the_collector():
    import gc

    from medmm.deploy.app import freeze_heap

    before = gc.get_threshold()
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == 50_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _obs(value_quantity, t="2024-05-01T07:00:00Z", code="8867-4"):
    return {"resource": {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/F2"},
                         "category": [{"coding": [{"code": "vital-signs"}]}],
                         "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                         "effectiveDateTime": t, "valueQuantity": value_quantity}}


def test_fhir_bundle_with_nothing_usable_is_refused_with_its_problems(client):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "F2"}},
        _obs("x"), _obs({"value": "x", "unit": "/min"}), _obs({"value": 98, "unit": "lightyears"}, code="8310-5")]}
    r = client.post("/predict", json=bundle, headers=H)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert [d["loc"][:3] for d in detail] == [["body", "entry", 1], ["body", "entry", 2], ["body", "entry", 3]]
    assert "'x' is not a Quantity" in detail[0]["msg"] and detail[0]["loc"][3] == "Observation.valueQuantity"
    assert "not a number" in detail[1]["msg"] and "lightyears" in detail[2]["msg"]
    assert all(d["hint"] for d in detail) and "nothing to predict from" in r.json()["message"]


def test_fhir_bundle_partly_usable_carries_its_problems(client):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "F2"}},
        _obs({"value": 101, "unit": "/min"}), _obs("x", t="2024-05-01T07:05:00Z")]}
    r = client.post("/predict", json=bundle, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["present"]["vitals"] is True and set(body["probabilities"]) == {"tumor", "disease"}
    (p,) = body["problems"]
    assert p["loc"] == ["body", "entry", 2, "Observation.valueQuantity"] and "not a Quantity" in p["msg"]
    clean = client.post("/predict", json={**bundle, "entry": bundle["entry"][:2]}, headers=H).json()
    assert clean["problems"] == [] and clean["probabilities"] == body["probabilities"]
