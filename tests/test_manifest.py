"""Manifest validation and cohort loading with bad input."""

import shutil

import pandas as pd
import pytest

from medmm.cohort import assign_splits, load_cohort, validate_manifest
from medmm.errors import ManifestError, MedmmError
from medmm.records import Missing


def _copy(tiny_cohort, tmp_path):
    dst = tmp_path / "cohort"
    shutil.copytree(tiny_cohort.parent, dst)
    return dst / "manifest.csv"


def test_good_manifest_has_no_problem(tiny_cohort):
    report = validate_manifest(tiny_cohort)
    assert report.ok, str(report)
    assert len(report.errors) == 0


def test_every_problem_is_reported_with_row_and_column(tiny_cohort, tmp_path):
    path = _copy(tiny_cohort, tmp_path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    img_row = int((df["image_path"] != "").to_numpy().argmax())
    df.loc[img_row, "image_path"] = "images/NOPE"  # missing file
    df.loc[1, "label_tumor"] = "yes"  # bad value
    df.loc[2, "split"] = "training"  # not in the enum
    df.loc[3, "patient_id"] = df.loc[4, "patient_id"]  # duplicate
    df.loc[5, "index_time"] = "yesterday"
    df = df.rename(columns={"vitals_path": "vital_path"})  # misspelt column
    df.to_csv(path, index=False)

    report = validate_manifest(path)
    assert not report.ok
    found = {(p.row, p.column) for p in report.errors}
    assert (img_row, "image_path") in found
    assert (1, "label_tumor") in found
    assert (2, "split") in found
    assert (4, "patient_id") in found
    assert (5, "index_time") in found
    misspelt = [p for p in report.errors if p.column == "vital_path"]
    assert misspelt and "vitals_path" in misspelt[0].message
    text = str(report)
    assert "NOPE" in text and "did you mean" in text


def test_missing_patient_id_column_is_structural(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("patient,label_tumor\nA,1\n")
    report = validate_manifest(p)
    assert not report.ok and "patient_id" in report.errors[0].message
    with pytest.raises(ManifestError, match="patient_id"):
        load_cohort(p, progress=False)


def test_unreadable_manifest_raises_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        validate_manifest(tmp_path / "absent.csv")


def test_load_cohort_collects_read_errors_and_goes_on(tiny_cohort, tmp_path):
    path = _copy(tiny_cohort, tmp_path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    v_row = int((df["vitals_path"] != "").to_numpy().argmax())
    vit = path.parent / df.loc[v_row, "vitals_path"]
    vit.write_text("time,signal,value,unit\n2024-01-01T00:00:00,heart_rate,fast,bpm\n")
    n_row = int((df["notes_path"] != "").to_numpy().argmax())
    (path.parent / df.loc[n_row, "notes_path"]).write_bytes(b"caf\xe9 au lait")

    cohort = load_cohort(path, progress=False)
    records, report = cohort.records, cohort.report  # records are built (files read) on access
    assert len(records) == len(df)  # nobody is dropped
    by_id = {r.patient_id: r for r in records}
    bad_v = by_id[df.loc[v_row, "patient_id"]]
    assert isinstance(bad_v.vitals, Missing) and bad_v.vitals.reason == "read_error"
    assert isinstance(by_id[df.loc[n_row, "patient_id"]].notes, Missing)
    msgs = [str(p) for p in report.errors]
    assert any("'fast' is not a number" in m for m in msgs), msgs
    assert any("UTF-8" in m for m in msgs), msgs
    assert {p.modality for p in report.errors} == {"vitals", "notes"}
    with pytest.raises(MedmmError, match="UTF-8|not a number"):
        load_cohort(path, progress=False, strict=True).records  # strict: the first bad file raises when read


def test_loaded_records_match_the_manifest(tiny_cohort, tiny_loaded):
    df = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    assert len(tiny_loaded) == len(df)
    for rec, (_, row) in zip(tiny_loaded.records, df.iterrows()):
        assert rec.patient_id == row["patient_id"]
        assert rec.split == row["split"]
        assert rec.labels["tumor"] == float(row["label_tumor"])
        for m in ("image", "notes", "vitals", "ehr"):
            assert rec.present[m] == (row[f"{m}_path"] != "")
    assert tiny_loaded.report.ok
    summary = tiny_loaded.summary()
    assert summary["patients"].sum() == len(df)


def test_assign_splits_is_patient_level_stratified_and_seeded():
    ids = [f"P{i}" for i in range(100)]
    labels = [i % 2 for i in range(100)]
    a = assign_splits(ids, labels, seed=3)
    assert a == assign_splits(ids, labels, seed=3)
    assert a != assign_splits(ids, labels, seed=4)
    assert set(a) == set(ids)
    train = [i for i in ids if a[i] == "train"]
    assert len(train) == 60
    assert sum(labels[int(i[1:])] for i in train) == 30
