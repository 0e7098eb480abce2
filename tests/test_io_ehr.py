"""EHR: wide and long tables, FHIR bundles, index-time features and the leakage guard."""

from __future__ import annotations

import base64
import copy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medmm.errors import NotFittedError, ReadError
from medmm.io import read_modality
from medmm.io.ehr import (
    EventFeaturizer,
    event_features,
    events_from_bundle,
    load_events,
    read_ehr_fhir,
    read_ehr_long,
    read_ehr_wide,
    window_events,
)
from medmm.io.fhir import load_bundle
from medmm.problems import ProblemReport

sys.path.insert(0, str(Path(__file__).parent))
from fhir_factory import patient_bundle, write_bundle  # noqa: E402

INDEX = pd.Timestamp("2024-06-01T12:00:00")


def _events() -> pd.DataFrame:
    rows = [
        ("A", None, "static", "sex", "sex", "F", ""),
        ("A", None, "static", "birth_date", "birth_date", "1964-06-01", ""),
        ("A", "2024-05-01T00:00:00", "lab", "2524-7", "lactate", "1.5", "mmol/L"),
        ("A", "2024-06-01T12:00:00", "lab", "2524-7", "lactate", "2.5", "mmol/L"),  # exactly at index: in
        ("A", "2024-06-01T12:00:01", "lab", "2524-7", "lactate", "9.9", "mmol/L"),  # one second after: out
        ("A", "2022-01-01T00:00:00", "lab", "2951-2", "sodium", "120", "mmol/L"),  # outside the window
        ("A", "2010-01-01T00:00:00", "condition", "44054006", "diabetes", None, ""),  # old but active
        ("A", "2024-07-01T00:00:00", "condition", "91302008", "sepsis", None, ""),  # future
        ("A", "2024-03-01T00:00:00", "medication", "860975", "metformin", None, ""),
        ("A", "2024-05-01T00:00:00", "lab", "urine", "urine colour", "amber", ""),
        ("B", "2024-01-01T00:00:00", "lab", "2524-7", "lactate", "1.0", "mmol/L"),
    ]
    return pd.DataFrame(rows, columns=["patient_id", "time", "kind", "code", "name", "value", "unit"])


def test_window_events_is_the_leakage_guard():
    ev = _events()
    ev["time"] = pd.to_datetime(ev["time"])
    ev["end"] = pd.NaT
    ev.loc[6, "end"] = pd.Timestamp("2024-09-01")  # abatement after the index: not known then
    w = window_events(ev[ev["patient_id"] == "A"], INDEX, lookback="365D")
    assert (w["time"].dropna() <= INDEX).all()
    assert set(w["value"].dropna()) == {"F", "1964-06-01", "1.5", "2.5", "amber"}
    assert w.loc[6, "end"] is pd.NaT
    assert len(window_events(ev, INDEX, lookback=None)) == len(w) + 2  # + sodium 2022 + patient B
    with pytest.raises(ReadError, match="index time"):
        window_events(ev, None)


def test_features_never_see_the_future():
    """Randomly change everything dated after the index: the features do not move."""
    ev = _events()
    ev["time"] = pd.to_datetime(ev["time"])
    ev["end"] = pd.NaT
    a = ev[ev["patient_id"] == "A"]
    base = event_features(a, INDEX, numeric_stats=("last", "mean", "max", "count"))
    rng = np.random.default_rng(0)
    for _ in range(20):
        fut = a.copy()
        after = fut["time"] > INDEX
        fut.loc[after, "value"] = [str(x) for x in rng.normal(size=after.sum())]
        fut.loc[after, "code"] = rng.choice(["2524-7", "44054006", "new"], size=after.sum())
        extra = fut[after].assign(time=INDEX + pd.to_timedelta(rng.integers(1, 10**6, size=after.sum()), unit="s"))
        fut = pd.concat([fut, extra])
        got = event_features(fut, INDEX, numeric_stats=("last", "mean", "max", "count"))
        assert got.values == base.values
    v = base.values
    assert v["lab:2524-7"] == 2.5 and v["lab:2524-7__max"] == 2.5 and v["lab:2524-7__count"] == 2
    assert "lab:2951-2" not in v and v["lab:urine"] == "amber"
    assert v["condition:44054006"] == 1 and "condition:91302008" not in v
    assert v["age"] == pytest.approx(60.0, abs=0.01) and v["sex"] == "F"
    assert base.units["lab:2524-7"] == "mmol/L"


@pytest.mark.parametrize("suffix", [".events.csv", ".events.parquet"])
def test_long_table_roundtrip(tmp_path, suffix):
    ev = _events()
    p = tmp_path / f"ehr{suffix}"
    if suffix.endswith("csv"):
        ev.to_csv(p, index=False)
    else:
        ev.to_parquet(p)
    tab_found = ProblemReport()
    tab = read_modality("ehr", p, patient_id="A", index_time=INDEX, report=tab_found)
    assert tab.values["lab:2524-7"] == 2.5 and tab.values["medication:860975"] == 1
    assert tab_found.problems == []
    b = read_ehr_long(p, patient_id="B", index_time=INDEX)
    assert b.values["lab:2524-7"] == 1.0 and "sex" not in b.values
    with pytest.raises(ReadError, match="no event for patient"):
        read_ehr_long(p, patient_id="Z", index_time=INDEX)
    with pytest.raises(ReadError, match="index time"):
        read_ehr_long(p, patient_id="A")


def test_long_table_bad_rows_reported(tmp_path):
    ev = _events()
    ev.loc[2, "time"] = "last tuesday"
    ev.loc[8, "time"] = None  # an undated medication: cannot be placed before the index
    ev.loc[3, "time"] = "2024-06-01T13:00:00+02:00"  # zoned among naive: 11:00 UTC, in
    p = tmp_path / "ehr.events.csv"
    ev.to_csv(p, index=False)
    tab_found = ProblemReport()
    tab = read_ehr_long(p, patient_id="A", index_time=INDEX, report=tab_found)
    by = {(e.row, e.column): e.message for e in tab_found.problems}
    assert "not an ISO 8601" in by[(2, "time")] and "no time" in by[(8, "time")]
    assert tab.values["lab:2524-7"] == 2.5 and "medication:860975" not in tab.values
    assert len(load_events(p)) == len(ev) - 2
    with pytest.raises(ReadError):
        read_ehr_long(p, patient_id="A", index_time=INDEX, strict=True)


def test_wide_csv_and_parquet(tmp_path):
    df = pd.DataFrame({"patient_id": ["P1", "P2"], "age [years]": [60, 70], "sex": ["F", "M"],
                       "lactate [mmol/L]": [1.5, None]})
    df.to_csv(tmp_path / "ehr.csv", index=False)
    df.to_parquet(tmp_path / "ehr.parquet")
    for name in ("ehr.csv", "ehr.parquet"):
        tab = read_modality("ehr", tmp_path / name, patient_id="P2")
        assert tab.values == {"age": 70, "sex": "M", "lactate": None}
        assert tab.units == {"age": "years", "lactate": "mmol/L"}
    assert read_ehr_wide(tmp_path / "ehr.csv", patient_id="P1").values["lactate"] == 1.5


def test_fhir_bundle_features(tmp_path):
    p = write_bundle(tmp_path / "p1.json", patient_bundle("p1"))
    tab_found = ProblemReport()
    tab = read_modality("ehr", p, index_time=INDEX, report=tab_found)
    v = tab.values
    assert v["sex"] == "female" and v["age"] == pytest.approx(64.08, abs=0.01)
    assert v["lab:2524-7"] == 2.5 and v["lab:2951-2"] == 140.0  # 9.9 after, 120 outside the window
    assert v["condition:44054006"] == 1 and v["condition:38341003"] == 1  # abated only after the index
    assert "condition:195967001" not in v and "condition:91302008" not in v
    assert v["medication:860975"] == 1 and "medication:1049221" not in v
    assert v["n_encounter"] == 2 and v["n_imaging"] == 1
    assert tab.units["lab:2524-7"] == "mmol/L" and tab_found.problems == []
    # the same features when everything after the index is removed from the bundle
    b = patient_bundle("p1")
    events = events_from_bundle(load_bundle(data=b))
    past = events[(events["time"] <= INDEX) | events["time"].isna()]
    assert event_features(past, INDEX).values == v
    with pytest.raises(ReadError, match="index time"):
        read_ehr_fhir(p)


def test_fhir_validation_reports_fields(tmp_path):
    b = patient_bundle("p1")
    bad = copy.deepcopy(b)
    bad["entry"][9]["resource"]["valueQuantity"]["value"] = "high"  # lactate 2.5
    bad["entry"][1]["resource"]["period"]["start"] = "yesterday"
    bad["entry"].append({"resource": {"resourceType": "Spaceship", "id": "x"}})
    bad["entry"].append({"resource": {"resourceType": "Claim", "id": "c"}})  # valid type, unused: no problem
    bad["entry"].append({"fullUrl": "urn:uuid:nothing"})
    p = write_bundle(tmp_path / "bad.json", bad)
    fb = load_bundle(p)
    by = {(e.row, e.column): e.message for e in fb.problems}
    assert "not a number" in by[(9, "Observation.valueQuantity.value")]
    assert "not an ISO 8601" in by[(1, "Encounter.period.start")]
    assert "unexpected resource type 'Spaceship'" in by[(len(b["entry"]), "resourceType")]
    assert "no resource" in by[(len(b["entry"]) + 2, "Bundle.entry.resource")]
    assert len(fb.problems) == 4
    assert fb.counts["Claim"] == 1
    strict = load_bundle(p, validate=True)
    assert any(e.row == 9 and "valueQuantity.value" in e.column for e in strict.problems)
    tab_found = ProblemReport()
    tab = read_ehr_fhir(p, index_time=INDEX, report=tab_found)
    assert tab.values["lab:2524-7"] == 2.0 and len(tab_found.problems) == 4  # the rest still loads
    (tmp_path / "broken.json").write_text('{"resourceType": "Bundle", "entry": [')
    with pytest.raises(ReadError, match="not valid JSON") as ei:
        load_bundle(tmp_path / "broken.json")
    assert ei.value.path == str(tmp_path / "broken.json")


def test_event_featurizer_fitted_on_train_only():
    from medmm.preprocess.tabular import TabularPreprocessor

    rng = np.random.default_rng(1)
    patients = []
    for i in range(30):
        rows = [(f"P{i}", "2024-05-01", "lab", "2524-7", "lactate", str(rng.normal(2, 0.5)), "mmol/L")]
        if i % 2:
            rows.append((f"P{i}", "2020-01-01", "condition", "44054006", "diabetes", None, ""))
        if i == 3:
            rows.append((f"P{i}", "2020-01-01", "condition", "rare", "rare thing", None, ""))
        if i == 4:
            rows.append((f"P{i}", "2024-05-01", "lab", "rare-lab", "rare lab", "1", ""))
        df = pd.DataFrame(rows, columns=["patient_id", "time", "kind", "code", "name", "value", "unit"])
        df["time"] = pd.to_datetime(df["time"])
        df["end"] = pd.NaT
        patients.append((df, INDEX))
    with pytest.raises(NotFittedError):
        EventFeaturizer().transform(*patients[0])
    feat = EventFeaturizer(min_patients=3).fit(patients[:20])
    assert feat.vocabulary_["condition"] == ["condition:44054006"]
    assert feat.vocabulary_["numeric"] == ["lab:2524-7"]
    rows = [feat.transform(*p) for p in patients]
    assert all(set(r.values) == set(rows[0].values) for r in rows)
    assert rows[0].values["condition:44054006"] == 0 and rows[1].values["condition:44054006"] == 1
    assert "condition:rare" not in rows[3].values and "lab:rare-lab" not in rows[4].values
    pre = TabularPreprocessor(min_frequency=2).fit(rows[:20])
    x = pre.transform_many(rows[20:])
    assert x.shape[0] == 10 and np.isfinite(x).all()


def test_fhir_social_history_and_r5_style_docref(tmp_path):
    b = patient_bundle("p1")
    b["entry"].append({"resource": {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "social-history"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2", "display": "Tobacco smoking status"}]},
        "effectiveDateTime": "2024-01-01T00:00:00Z",
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "266919005",
                                             "display": "Never smoker"}]}}})
    b["entry"].append({"resource": {
        "resourceType": "DocumentReference", "status": "current", "context": [{"reference": "Encounter/x"}],
        "date": "2024-05-01T00:00:00Z",
        "content": [{"attachment": {"contentType": "text/plain",
                                    "data": base64.b64encode(b"R5-style context.").decode()}}]}})
    p = write_bundle(tmp_path / "b.json", b)
    tab_found = ProblemReport()
    tab = read_ehr_fhir(p, index_time=INDEX, report=tab_found)
    assert tab.values["observation:72166-2"] == "Never smoker" and tab_found.problems == []
    assert any(n.text == "R5-style context." for n in load_bundle(p).notes)
