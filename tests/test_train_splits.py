"""Patient-level splits: stratified, grouped by site, k folds; no patient in two splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medmm.errors import ConfigError
from medmm.records import PatientRecord
from medmm.train.splits import assign_patient_splits, check_disjoint, cv_folds


def _records(n=120, seed=0, sites=6):
    rng = np.random.default_rng(seed)
    return [PatientRecord(patient_id=f"P{i:03d}", labels={"t": float(rng.random() < 0.3)},
                          meta={"site": f"s{i % sites}"}) for i in range(n)]


def test_assigned_splits_are_stratified_and_sized():
    recs = _records()
    split = assign_patient_splits(recs, fractions=(0.6, 0.2, 0.2), stratify="t", seed=1)
    assert set(split) == {r.patient_id for r in recs}
    sizes = Counter(split.values())
    assert sizes["train"] == pytest.approx(72, abs=3) and sizes["test"] == pytest.approx(24, abs=3)
    prev = {s: np.mean([r.labels["t"] for r in recs if split[r.patient_id] == s]) for s in sizes}
    overall = np.mean([r.labels["t"] for r in recs])
    assert all(abs(p - overall) < 0.06 for p in prev.values())
    assert assign_patient_splits(recs, stratify="t", seed=1) == split
    assert assign_patient_splits(recs, stratify="t", seed=2) != split


def test_grouped_splits_keep_each_site_in_one_split():
    recs = _records(sites=10)
    split = assign_patient_splits(recs, fractions=(0.6, 0.2, 0.2), stratify="t", group_by="site", seed=0)
    site_splits = {}
    for r in recs:
        site_splits.setdefault(r.meta["site"], set()).add(split[r.patient_id])
    assert all(len(s) == 1 for s in site_splits.values())
    assert set(split.values()) == {"train", "val", "test"}


def test_cv_folds_partition_the_patients():
    recs = _records(100)
    folds = cv_folds(recs, 5, stratify="t", seed=0)
    val = np.concatenate([v for _, v in folds])
    assert sorted(val.tolist()) == list(range(100))
    for tr, va in folds:
        assert not set(tr) & set(va)
    grouped = cv_folds(recs, 3, stratify="t", group_by="site", seed=0)
    for tr, va in grouped:
        assert not {recs[i].meta["site"] for i in tr} & {recs[i].meta["site"] for i in va}
    with pytest.raises(ConfigError):
        cv_folds(recs, 7, group_by="site")  # 6 sites cannot make 7 folds


def test_a_patient_in_two_splits_is_an_error():
    a = PatientRecord(patient_id="X", labels={})
    b = PatientRecord(patient_id="X", labels={})
    with pytest.raises(ConfigError, match="both"):
        check_disjoint({"train": [a], "test": [b]})
    with pytest.raises(ConfigError):
        assign_patient_splits([PatientRecord(patient_id="Y", labels={}, meta={})], group_by="site")
