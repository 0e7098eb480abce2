"""Drift tests: detect a shift, stay quiet on resamples of the same data."""

import numpy as np
import pandas as pd
import pytest

from medmm.deploy.drift import DriftFeatures, drift_report, extract_features, mmd_test, psi


def synthetic_features(rng, n, *, shift=0.0, notes_missing=0.2, emb_shift=0.0):
    ids = [f"p{i}" for i in range(n)]
    present = pd.DataFrame({"image": rng.random(n) > 0.2, "notes": rng.random(n) > notes_missing,
                            "vitals": np.ones(n, bool), "ehr": np.ones(n, bool)}, index=ids)
    tab = pd.DataFrame({"age": rng.normal(60, 10, n), "sex": rng.choice(["F", "M"], n)}, index=ids)
    vit = pd.DataFrame({"spo2_mean": rng.normal(97, 1, n) * (1 - shift) + shift * rng.normal(0.97, 0.01, n)}, index=ids)
    img_ids = [i for i, p in zip(ids, present["image"]) if p]
    img = pd.DataFrame({"intensity_mean": rng.normal(40 + 60 * emb_shift, 20, len(img_ids))}, index=img_ids)
    note_ids = [i for i, p in zip(ids, present["notes"]) if p]
    notes = pd.DataFrame({"note_chars": rng.normal(800, 100, len(note_ids))}, index=note_ids)
    emb = {"image": rng.normal(emb_shift, 1, (len(img_ids), 8))}
    probs = rng.beta(2, 5, (n, 1))
    labels = (rng.random((n, 1)) < probs).astype(float)
    return DriftFeatures(present, tab, vit, img, notes, emb, probs, labels, ("disease",))


def test_unshifted_resamples_rarely_alarm():
    rng = np.random.default_rng(0)
    alarms = 0
    for _ in range(20):
        rep = drift_report(synthetic_features(rng, 120), synthetic_features(rng, 120), n_permutations=50,
                           seed=int(rng.integers(1000)))
        alarms += rep.drifted
    assert alarms <= 3  # expected <= 1 at alpha 0.05 (Bonferroni is conservative)


@pytest.mark.parametrize("kind,modality", [("unit", "vitals"), ("missing", "missingness"), ("image", "image")])
def test_shifts_are_detected_in_their_modality(kind, modality):
    rng = np.random.default_rng(1)
    ref = synthetic_features(rng, 150)
    cur = synthetic_features(rng, 150, shift=1.0 if kind == "unit" else 0.0,
                             notes_missing=0.5 if kind == "missing" else 0.2, emb_shift=0.8 if kind == "image" else 0.0)
    rep = drift_report(ref, cur, n_permutations=100)
    assert rep.modalities[modality], rep.table
    assert rep.drifted
    others = {m for m, d in rep.modalities.items() if d} - {modality}
    assert others == set()  # nothing unrelated alarms
    d = rep.to_dict()
    assert d["bonferroni_threshold"] == pytest.approx(0.05 / rep.table["p_value"].notna().sum())


def test_calibration_drift_once_labels_arrive():
    rng = np.random.default_rng(2)
    ref = synthetic_features(rng, 300)
    cur = synthetic_features(rng, 300)
    cur.labels = (rng.random((300, 1)) < np.clip(cur.probs + 0.25, 0, 1)).astype(float)  # outcomes got commoner
    rep = drift_report(ref, cur, n_permutations=20)
    assert rep.modalities["calibration"]
    assert not rep.modalities["prediction"]  # the model's outputs did not move, the world did


def test_psi_and_mmd_basics():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 2000)
    assert psi(a, rng.normal(0, 1, 2000)) < 0.02 < 0.25 < psi(a, rng.normal(1, 1, 2000))
    x = rng.normal(0, 1, (60, 4))
    _, p_same = mmd_test(x, rng.normal(0, 1, (60, 4)), n_permutations=100)
    _, p_diff = mmd_test(x, rng.normal(0.8, 1, (60, 4)), n_permutations=100)
    assert p_same > 0.05 and p_diff < 0.02


def test_extract_features_from_records(tiny_loaded):
    recs = tiny_loaded.records
    f = extract_features(recs)
    assert len(f.present) == len(recs)
    assert len(f.image_stats) == int(f.present["image"].sum())
    assert {"intensity_mean", "intensity_p95"} <= set(f.image_stats.columns)
    assert any(c.endswith("_mean") for c in f.vitals.columns)
    sub = f.subset(np.arange(10))
    assert len(sub.present) == 10 and set(sub.tabular.index) <= set(sub.present.index)


def _declared_records(rng, n, *, labs_shift=0.0):
    from medmm.records import Missing, Note, Notes, PatientRecord, Tabular

    recs = []
    for i in range(n):
        mods = {"demo": Tabular({"age": float(rng.normal(60, 10)), "sex": str(rng.choice(["F", "M"]))}),
                "labs": Tabular({"crp": float(rng.lognormal(1.0 + labs_shift, 0.5)), "wbc": float(rng.normal(7, 2))}),
                "reports": Notes([Note("CT chest: no acute findings. " * int(rng.integers(1, 6)))])
                if rng.random() > 0.3 else Missing()}
        recs.append(PatientRecord(f"p{i}", modalities=mods))
    return recs


def test_drift_covers_declared_modalities_by_kind():
    """A cohort with two tables and a text modality under their own names: each is tested by its
    kind, and a shift in one table alarms there only."""
    rng = np.random.default_rng(0)
    ref = extract_features(_declared_records(rng, 150))
    assert list(ref.present.columns) == ["demo", "labs", "reports"]
    assert set(ref.stats) == {"demo", "labs", "reports"} and "note_chars" in ref.stats["reports"].columns
    assert len(ref.stats["reports"]) == int(ref.present["reports"].sum()) < 150
    cur = extract_features(_declared_records(rng, 150, labs_shift=0.8))
    rep = drift_report(ref, cur, n_permutations=50)
    assert rep.modalities["labs"] and not rep.modalities["demo"] and not rep.modalities["reports"]
    crp = rep.table[(rep.table.modality == "labs") & (rep.table.feature == "crp")].iloc[0]
    assert crp.alarm and crp.test == "ks"
    quiet = drift_report(ref, extract_features(_declared_records(rng, 150)), n_permutations=50)
    assert not quiet.drifted, quiet.table[quiet.table.alarm]
