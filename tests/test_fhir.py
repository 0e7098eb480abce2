"""`medmm fhir import`: FHIR bundles (built with fhir.resources) to a medmm cohort."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import medmm.schemas

from medmm.cli import main
from medmm.io import read_modality
from medmm.io.fhir_cohort import ImportConfig, import_fhir_cohort

sys.path.insert(0, str(Path(__file__).parent))
from fhir_factory import condition, encounter, patient, patient_bundle, write_bundle  # noqa: E402


def _folder(tmp_path: Path, n: int = 4) -> Path:
    src = tmp_path / "bundles"
    (src / "sub").mkdir(parents=True)
    for i in range(n):
        b = patient_bundle(f"p{i}")
        if i == 2:  # sepsis before the index time: prevalent, label left empty
            b["entry"].append({"resource": condition(f"p{i}", "91302008", "Sepsis", "2023-01-01T00:00:00Z")})
        write_bundle(src / ("sub" if i % 2 else "") / f"p{i}.json", b)
    (src / "broken.json").write_text('{"resourceType": "Bundle", "entry": [')
    (src / "no_patient.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": encounter("e", "x", "2024-01-01T00:00:00Z")}]}))
    dup = patient_bundle("p0")
    write_bundle(src / "zz_duplicate.json", dup)
    odd = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": patient("odd")},
        {"resource": {**encounter("odd-e", "odd", "2024-03-01T10:00:00Z"),
                      "period": {"start": "2024-03-01T10:00:00"}}},  # naive among zoned (invalid FHIR)
        {"resource": encounter("odd-e2", "odd", "2024-03-02T10:00:00Z")},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "category": [{"coding": [{"code": "vital-signs"}]}],
                      "code": {"coding": [{"system": "http://loinc.org", "code": "12345-6"}]},
                      "effectiveDateTime": "2024-03-02T09:00:00Z", "valueQuantity": {"value": 3, "unit": "1"}}},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "category": [{"coding": [{"code": "vital-signs"}]}],
                      "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                      "effectiveDateTime": "2024-03-02T09:00:00Z", "valueQuantity": {"value": 37, "unit": "lightyears"}}},
        {"resource": {"resourceType": "Unicorn"}},
    ]}
    write_bundle(src / "odd.json", odd)
    return src


def test_import_cohort(tmp_path):
    src = _folder(tmp_path)
    out = tmp_path / "cohort"
    cfg = ImportConfig(index_time="2024-06-01T12:00:00Z", labels={"sepsis": ["91302008"]}, horizon="120D",
                       min_patients=2, scrub_phi=True, split_fractions=(1.0, 0.0, 0.0))
    res = import_fhir_cohort(src, out, cfg, workers=1)
    assert res.n_files == 8 and res.n_patients == 5 and res.n_failed == 3
    m = pd.read_csv(out / "manifest.csv", dtype={"patient_id": str})
    assert list(m.columns) == ["patient_id", "split", "index_time", "site", "sex", "image_path", "notes_path",
                               "vitals_path", "ehr_path", "label_sepsis"]
    assert sorted(m["patient_id"]) == ["odd", "p0", "p1", "p2", "p3"]
    assert set(m["split"]) <= {"train", "val", "test"} and (m["sex"] == "F").all()
    lab = dict(zip(m["patient_id"], m["label_sepsis"]))
    # every p* has sepsis on 2024-06-05 (within 120 days of the index); p2 had it before: prevalent
    assert lab["p0"] == 1 and lab["p1"] == 1 and lab["p3"] == 1 and pd.isna(lab["p2"]) and lab["odd"] == 0
    # problem report: file and field of each problem, rest still loaded
    prob = pd.read_csv(out / "problems.csv")
    assert {"patient_id", "file", "row", "column", "message", "hint"} <= set(prob.columns)
    msgs = " | ".join(prob["message"])
    for text in ("not valid JSON", "no Patient resource", "already imported", "has no UTC offset",
                 "unknown LOINC code '12345-6'", "cannot be converted", "unexpected resource type 'Unicorn'"):
        assert text in msgs, text
    assert set(prob.loc[prob["message"].str.contains("Unicorn"), "file"]) == {"odd.json"}
    report = json.loads((out / "import_report.json").read_text())
    assert report["patients"] == 5 and report["problems"] == len(prob)

    # per-patient files read back through the registry, with the index time applied
    row = m.set_index("patient_id").loc["p0"]
    idx = pd.Timestamp(row["index_time"])
    notes = read_modality("notes", out / row["notes_path"], patient_id="p0", index_time=idx)
    assert len(notes) == 1 and "No evidence of mass" in notes.notes[0].text
    assert "Ann" not in notes.notes[0].text and "Smith" not in notes.notes[0].text  # scrubbed
    vit = read_modality("vitals", out / row["vitals_path"], index_time=idx)
    assert set(vit.signals) == {"heart_rate", "temperature", "sbp", "dbp"} and vit.frame["value"].max() < 130
    ehr = read_modality("ehr", out / row["ehr_path"], patient_id="p0")
    assert ehr.values["lab:2524-7"] == 2.5 and ehr.values["condition:44054006"] == 1
    assert ehr.values["medication:1049221"] == 0 if "medication:1049221" in ehr.values else True
    assert ehr.units["lab:2524-7"] == "mmol/L"
    ev = read_modality("ehr", out / "events" / "p0.events.csv", patient_id="p0", index_time=idx)
    assert ev.values["lab:2524-7"] == 2.5


def test_imported_cohort_loads(tmp_path):
    from medmm.cohort import load_cohort

    src = _folder(tmp_path, n=3)
    out = tmp_path / "cohort"
    import_fhir_cohort(src, out, ImportConfig(labels={"sepsis": ["91302008"]}), workers=1)
    cohort = load_cohort(out / "manifest.csv")
    records = cohort.records
    assert len(records) == 4
    rec = next(r for r in records if r.patient_id == "p0")
    assert rec.present == {"image": False, "notes": True, "vitals": True, "ehr": True}
    assert rec.index_time == pd.Timestamp("2024-06-10T09:00:00")  # the last encounter is open, nothing in it: its start
    assert all(n.time <= rec.index_time for n in rec.notes.notes)


def test_cli_fhir_import(tmp_path, capsys):
    src = _folder(tmp_path, n=2)
    out = tmp_path / "cli_cohort"
    rc = main(["fhir", "import", str(src), str(out), "--label", "sepsis=91302008", "--workers", "2", "--quiet",
               "--index-time", "last-encounter-end", "--site", "synthea"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "3 patient(s) from 6 bundle(s)" in text and "problems.csv" in text
    m = pd.read_csv(out / "manifest.csv")
    assert (m["site"] == "synthea").all()
    assert main(["fhir", "import", str(tmp_path / "nowhere"), str(out)]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert main(["fhir", "import", str(src), str(out), "--label", "oops"]) == 1


def test_index_time_csv_and_validation(tmp_path):
    src = _folder(tmp_path, n=2)
    times = tmp_path / "index.csv"
    pd.DataFrame({"patient_id": ["p0", "p1"], "index_time": ["2024-05-31T00:00:00", "2024-06-01T12:00:00"]}).to_csv(
        times, index=False)
    out = tmp_path / "c"
    res = import_fhir_cohort(src, out, ImportConfig(index_time=str(times), validate=True, min_patients=1,
                                                        split_fractions=(1.0, 0.0, 0.0)), workers=1)
    m = pd.read_csv(out / "manifest.csv").set_index("patient_id")
    assert m.loc["p0", "index_time"] == "2024-05-31T00:00:00"
    assert "odd" not in m.index  # no entry in the CSV: skipped and reported
    ehr = pd.read_csv(out / "ehr.csv").set_index("patient_id")
    assert ehr.loc["p0", "lab:2524-7 [mmol/L]"] == 2.0  # the 2.5 of 2024-06-01 is after p0's index
    assert res.n_patients == 2
    prob = pd.read_csv(out / "problems.csv")
    assert prob["message"].str.contains("no index time").any()
    assert prob["message"].str.contains("invalid Encounter").any()  # naive period.start, by fhir.resources


def test_outputs_follow_their_schemas(tmp_path):
    import jsonschema

    schemas = Path(medmm.schemas.__file__).parent
    src = _folder(tmp_path, n=1)
    out = tmp_path / "c"
    import_fhir_cohort(src, out, ImportConfig(), workers=1)
    notes_schema = json.loads((schemas / "notes_table.schema.json").read_text())
    for line in (out / "notes" / "p0.jsonl").read_text().splitlines():
        jsonschema.validate(json.loads(line), notes_schema, format_checker=jsonschema.FormatChecker())
    ev_schema = json.loads((schemas / "ehr_events.schema.json").read_text())
    ev = pd.read_csv(out / "events" / "p0.events.csv", dtype=str, keep_default_na=False)
    for row in ev.to_dict("records"):
        jsonschema.validate({k: (v or None) for k, v in row.items()}, ev_schema)
    vit_schema = json.loads((schemas / "vitals_long.schema.json").read_text())
    for row in pd.read_csv(out / "vitals" / "p0.csv").to_dict("records"):
        jsonschema.validate(row, vit_schema)


def test_mixed_lab_units_across_patients_reported(tmp_path):
    from fhir_factory import observation

    src = tmp_path / "b"
    src.mkdir()
    for i, unit in enumerate(["mmol/L", "mmol/L", "mg/dL"]):
        b = patient_bundle(f"q{i}")
        b["entry"].append({"resource": observation(f"q{i}", "2339-0", 5.0, unit, "2024-05-01T00:00:00Z")})
        write_bundle(src / f"q{i}.json", b)
    out = tmp_path / "c"
    import_fhir_cohort(src, out, ImportConfig(index_time="2024-06-01T12:00:00Z", min_patients=1,
                                              split_fractions=(1.0, 0.0, 0.0)), workers=1)
    prob = pd.read_csv(out / "problems.csv")
    (msg,) = prob.loc[prob["column"] == "lab:2339-0", "message"]
    assert "mmol/L: 2" in msg and "mg/dL: 1" in msg
    assert "lab:2339-0 [mmol/L]" in pd.read_csv(out / "ehr.csv").columns
    assert json.loads((out / "import_report.json").read_text())["problems"] == len(prob)


def _synthea_bundle(pid: str, start: str, *, end: str | None, note_at: str) -> dict:
    """Synthea's habit: the encounter's note is stamped a fraction of a second after it starts."""
    from fhir_factory import document, observation

    eid = f"{pid}-enc"
    doc = document(pid, "Chief complaint: cough.,ASSESSMENT:, Acute bronchitis. No fever.", note_at)
    doc["context"] = {"encounter": [{"reference": f"urn:uuid:{eid}"}]}
    hr = observation(pid, "8867-4", 92, "/min", start, category="vital-signs")
    hr["encounter"] = {"reference": f"urn:uuid:{eid}"}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{pid}", "resource": patient(pid)},
        {"fullUrl": f"urn:uuid:{pid}-old", "resource": encounter(f"{pid}-old", pid, "2018-01-02T10:00:00-05:00",
                                                                 "2018-01-02T10:15:00-05:00")},
        {"fullUrl": f"urn:uuid:{eid}", "resource": encounter(eid, pid, start, end)},
        {"fullUrl": f"urn:uuid:{pid}-hr", "resource": hr},
        {"fullUrl": f"urn:uuid:{pid}-doc", "resource": doc}]}


def test_index_encounter_notes_are_kept_and_guard_drops_reported(tmp_path):
    src = tmp_path / "synthea"
    src.mkdir()
    for i in range(3):
        write_bundle(src / f"s{i}.json", _synthea_bundle(f"s{i}", f"2019-02-1{i}T23:38:55-05:00",
                                                         end=f"2019-02-1{i}T23:53:55-05:00",
                                                         note_at=f"2019-02-1{i}T23:38:55.433-05:00"))
    # an encounter still open: it ends at the last resource recorded in it (the note, 20 min in)
    write_bundle(src / "open.json", _synthea_bundle("open", "2019-03-01T08:00:00+00:00", end=None,
                                                    note_at="2019-03-01T08:20:00+00:00"))
    out = tmp_path / "default"
    import_fhir_cohort(src, out, ImportConfig(min_patients=1), workers=1)
    m = pd.read_csv(out / "manifest.csv").set_index("patient_id")
    assert m.loc["s0", "index_time"] == "2019-02-11T04:53:55"  # the end of the index encounter, UTC
    assert m.loc["open", "index_time"] == "2019-03-01T08:20:00"
    for pid in m.index:
        notes = read_modality("notes", out / m.loc[pid, "notes_path"], patient_id=pid,
                              index_time=pd.Timestamp(m.loc[pid, "index_time"]))
        assert len(notes) == 1 and "Acute bronchitis" in notes.notes[0].text
    prob = pd.read_csv(out / "problems.csv")
    assert not (prob["kind"] == "LeakageGuard").any()
    assert json.loads((out / "import_report.json").read_text())["leakage_guard"]["notes"] == 0

    # at the start of the index encounter its note is after the index time: dropped, and said so per patient
    out = tmp_path / "start"
    import_fhir_cohort(src, out, ImportConfig(index_time="last-encounter-start", min_patients=1), workers=1)
    prob = pd.read_csv(out / "problems.csv")
    guard = prob[prob["kind"] == "LeakageGuard"].set_index("patient_id")
    assert sorted(guard.index) == ["open", "s0", "s1", "s2"]
    assert guard.loc["s1", "column"] == "index_time"
    assert guard.loc["s1", "message"].startswith("leakage guard: 1 note(s), 0 vital-sign value(s) and 0 EHR")
    assert "1 of the notes written during the index encounter" in guard.loc["s1", "message"]
    assert "last-encounter-end" in guard.loc["s1", "hint"]
    report = json.loads((out / "import_report.json").read_text())["leakage_guard"]
    assert report["patients_losing_index_notes"] == 4 and report["notes"] == 4 and report["vitals"] == 0
    m = pd.read_csv(out / "manifest.csv").set_index("patient_id")
    with pytest.raises(Exception, match="no usable note"):
        read_modality("notes", out / m.loc["s1", "notes_path"], patient_id="s1",
                      index_time=pd.Timestamp(m.loc["s1", "index_time"]))


def test_guard_counts_later_data_under_a_fixed_index_time(tmp_path):
    src = tmp_path / "b"
    src.mkdir()
    write_bundle(src / "p0.json", patient_bundle("p0"))
    out = tmp_path / "c"
    import_fhir_cohort(src, out, ImportConfig(index_time="2024-06-01T12:00:00Z", min_patients=1), workers=1)
    prob = pd.read_csv(out / "problems.csv")
    (msg,) = prob.loc[prob["kind"] == "LeakageGuard", "message"]
    # after the index: one note, one heart rate, and lactate 9.9, sepsis, piperacillin, encounter e3
    assert msg.startswith("leakage guard: 1 note(s), 1 vital-sign value(s) and ")
    assert "index encounter" not in msg


def test_survival_pair_from_a_synthea_like_bundle(tmp_path):
    from fhir_factory import patient_bundle, write_bundle

    from medmm.errors import ReadError
    from medmm.io.fhir import load_bundle
    from medmm.io.fhir_cohort import survival_pair

    index = "2024-05-30T09:00:00Z"  # the index encounter's start
    alive = load_bundle(write_bundle(tmp_path / "alive.json", patient_bundle("p1")))
    t, e = survival_pair(alive, index)
    assert e == 0 and t == pytest.approx((pd.Timestamp("2024-06-10T09:00:00") - pd.Timestamp("2024-05-30T09:00:00"))
                                         / pd.Timedelta(days=1))  # censored at the last encounter (e3's start)
    b = patient_bundle("p2")
    b["entry"][0]["resource"]["deceasedDateTime"] = "2024-08-29T09:00:00Z"
    dead = load_bundle(write_bundle(tmp_path / "dead.json", b))
    assert survival_pair(dead, index) == (pytest.approx(91.0), 1)
    assert survival_pair(dead, index, horizon_days=30) == (30.0, 0)  # after the horizon: censored there
    b["entry"][0]["resource"].pop("deceasedDateTime")
    b["entry"][0]["resource"]["deceasedBoolean"] = True
    undated = load_bundle(write_bundle(tmp_path / "undated.json", b))
    assert survival_pair(undated, index)[1] == 0  # a death without a date is never an early event
    b["entry"][0]["resource"].pop("deceasedBoolean")
    b["entry"][0]["resource"]["deceasedDateTime"] = "2024-01-01T00:00:00Z"
    with pytest.raises(ReadError, match="before the index time"):
        survival_pair(load_bundle(write_bundle(tmp_path / "early.json", b)), index)
    assert survival_pair(alive, "2030-01-01T00:00:00Z") == (None, None)  # nothing after the index


def test_import_writes_a_survival_label_declared_in_the_sidecar(tmp_path):
    """--survival: time/event columns from deceasedDateTime or the last contact, censored at the
    horizon, a death before the index time reported (no label), and the task declared so that the
    cohort reads it as a survival task."""
    from fhir_factory import patient_bundle, write_bundle

    from medmm.cohort import load_cohort
    from medmm.tasks import read_task_declarations

    src = tmp_path / "b"
    src.mkdir()
    index = "2024-05-30T09:00:00Z"
    for pid, deceased in (("p0", None), ("p1", "2024-08-29T09:00:00Z"), ("p2", "2030-01-01T00:00:00Z"),
                          ("p3", "2024-01-01T00:00:00Z")):
        b = patient_bundle(pid)
        if deceased:
            b["entry"][0]["resource"]["deceasedDateTime"] = deceased
        write_bundle(src / f"{pid}.json", b)
    out = tmp_path / "c"
    import_fhir_cohort(src, out, ImportConfig(index_time=index, min_patients=1, survival="death",
                                              survival_horizon="365D"), workers=1)
    m = pd.read_csv(out / "manifest.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert m.loc["p0", "label_death.event"] == 0 and m.loc["p0", "label_death.time"] == pytest.approx(11.0)
    assert m.loc["p1", "label_death.event"] == 1 and m.loc["p1", "label_death.time"] == pytest.approx(91.0)
    assert m.loc["p2", "label_death.event"] == 0 and m.loc["p2", "label_death.time"] == 365.0  # censored at horizon
    assert pd.isna(m.loc["p3", "label_death.time"]) and pd.isna(m.loc["p3", "label_death.event"])
    prob = pd.read_csv(out / "problems.csv", dtype={"patient_id": str})
    assert prob.loc[prob["patient_id"] == "p3", "message"].str.contains("before the index time").any()
    spec = read_task_declarations(out / "manifest.modalities.yaml")["death"]
    assert spec["kind"] == "survival" and spec["horizon"] == 365.0
    cohort = load_cohort(out / "manifest.csv", progress=False)
    assert cohort.declared_tasks["death"]["kind"] == "survival" and "death" in cohort.tasks


def test_a_bad_survival_horizon_is_refused_before_any_bundle_is_read(tmp_path):
    from fhir_factory import patient_bundle, write_bundle

    from medmm.errors import ReadError

    src = tmp_path / "b"
    src.mkdir()
    write_bundle(src / "p0.json", patient_bundle("p0"))
    with pytest.raises(ReadError, match="survival_horizon 'five years' is not a duration"):
        import_fhir_cohort(src, tmp_path / "c", ImportConfig(survival="death", survival_horizon="five years"),
                           workers=1)
    assert not (tmp_path / "c" / "manifest.csv").exists()
