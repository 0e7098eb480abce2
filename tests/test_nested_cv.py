"""Nested cross-validation: the scored outer fold never reaches early stopping or epoch selection;
grouped outer folds; external-site evaluation as one config line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medmm.config import load_config
from medmm.errors import ConfigError
from medmm.records import PatientRecord
from medmm.train.splits import assign_external_splits, nested_cv_folds


def _records(n=90, sites=("site_a", "site_b", "site_c", "site_d"), seed=0):
    rng = np.random.default_rng(seed)
    return [PatientRecord(patient_id=f"P{i:03d}", labels={"t": float(rng.random() < 0.35)},
                          meta={"site": sites[i % len(sites)]}) for i in range(n)]


def test_nested_folds_keep_train_val_and_scored_fold_apart():
    recs = _records()
    folds = nested_cv_folds(recs, 5, stratify="t", val_fraction=0.2, seed=3)
    scored = np.concatenate([f.test for f in folds])
    assert sorted(scored.tolist()) == list(range(len(recs)))  # each patient scored exactly once
    for f in folds:
        tr, va, te = set(f.train), set(f.val), set(f.test)
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == set(range(len(recs)))
        assert len(va) == pytest.approx(0.2 * (len(tr) + len(va)), abs=3)
        # the inner val part is stratified too: both classes are there to stop on
        assert {recs[i].labels["t"] for i in va} == {0.0, 1.0}
    again = nested_cv_folds(recs, 5, stratify="t", val_fraction=0.2, seed=3)
    assert all(np.array_equal(a.val, b.val) and np.array_equal(a.test, b.test) for a, b in zip(folds, again))


def test_outer_folds_grouped_by_site_score_each_site_with_a_model_that_never_saw_it():
    recs = _records()
    folds = nested_cv_folds(recs, 4, stratify="t", group_by="site", seed=0)
    for f in folds:
        test_sites = {recs[i].meta["site"] for i in f.test}
        seen = {recs[i].meta["site"] for i in f.development}
        assert len(test_sites) == 1 and not test_sites & seen
    with pytest.raises(ConfigError, match="cannot make 5 folds"):
        nested_cv_folds(recs, 5, group_by="site")


def test_external_site_split_holds_out_the_named_sites():
    recs = _records()
    which = assign_external_splits(recs, group_by="site", test_groups=["site_c"], fractions=(0.6, 0.2, 0.2),
                                   stratify="t", seed=0)
    test = {r.patient_id for r in recs if r.meta["site"] == "site_c"}
    assert {p for p, s in which.items() if s == "test"} == test
    dev = [s for p, s in which.items() if p not in test]
    assert dev.count("val") == pytest.approx(0.25 * len(dev), abs=3) and "test" not in dev
    with pytest.raises(ConfigError, match="site_x") as exc:
        assign_external_splits(recs, group_by="site", test_groups=["site_x"])
    assert "site_a" in exc.value.hint
    with pytest.raises(ConfigError, match="nothing is left"):
        assign_external_splits(recs, group_by="site", test_groups=["site_a", "site_b", "site_c", "site_d"])


def test_test_groups_is_one_config_line_and_needs_group_by(tmp_path):
    cfg = load_config({"cohort": {"manifest": "m.csv"}}, ["split.group_by=site", "split.test_groups=[site_c]"])
    assert cfg.split.test_groups == ["site_c"]
    with pytest.raises(ConfigError, match="test_groups"):
        load_config({"cohort": {"manifest": "m.csv"}}, ["split.test_groups=[site_c]"])


def test_nested_cv_never_scores_a_patient_used_for_early_stopping(tiny_cohort, tiny_loaded, tmp_path, monkeypatch):
    """Spy on the trainer: record which patients each fold's training and early stopping saw,
    and check the fold's scored (out-of-fold) patients against them."""
    import medmm.train.trainer as trainer
    from medmm.experiment import run_experiment

    seen: list[dict[str, set[str]]] = []
    real_train = trainer.train

    def spy(model, train_ds, val_ds, config, **kw):
        seen.append({"train": {it["id"] for it in train_ds.items},
                     "val": {it["id"] for it in val_ds.items} if val_ds is not None else set()})
        return real_train(model, train_ds, val_ds, config, **kw)

    monkeypatch.setattr(trainer, "train", spy)
    cfg = load_config({
        "cohort": {"manifest": str(tiny_cohort)}, "out_dir": str(tmp_path),
        "split": {"cv_folds": 3, "seed": 1},
        "model": {"dim": 8, "modalities": ["ehr"], "fusion": {"name": "concat"}},
        "train": {"epochs": 3, "batch_size": 8, "min_epochs": 1, "device": "cpu"},
        "evaluation": {"baseline_models": ["logistic_regression"], "n_boot": 200},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "log_model": False, "plots": False,
                     "experiment": "nested"}})
    res = run_experiment(config=cfg, cohort=tiny_loaded, progress=False)
    assert len(seen) == 4  # three folds, then the final model
    oof = pd.read_parquet(tmp_path / "cv_predictions.parquet")
    roles = pd.read_csv(tmp_path / "cv_folds.csv")
    for i in range(3):
        scored = set(oof[oof.fold == i].patient_id)
        assert scored, f"fold {i} scored nobody"
        assert seen[i]["val"], f"fold {i} had no inner validation part"
        assert not scored & seen[i]["val"], f"fold {i} scored patients it early-stopped on"
        assert not scored & seen[i]["train"]
        assert scored == set(roles[(roles.fold == i) & (roles.role == "test")].patient_id)
        assert seen[i]["val"] == set(roles[(roles.fold == i) & (roles.role == "val")].patient_id)
    dev = {r.patient_id for r in tiny_loaded.split("train")} | {r.patient_id for r in tiny_loaded.split("val")}
    assert set(oof.patient_id) == dev and len(oof) == len(dev)
    assert seen[3]["train"] == dev and not seen[3]["val"]  # final model: train+val, fixed epoch count
    # the baseline is scored on the same outer folds, and paired with the model fold by fold
    t = res.cv_metrics
    lr = t[(t.model == "logistic_regression") & t.fold.isin(["0", "1", "2"])]
    assert len(lr) == 3 * len(cfg.tasks)
    paired = t[(t.fold == "mean paired difference") & (t.model == "medmm - logistic_regression")]
    assert len(paired) > 0
    for _, row in paired.iterrows():
        m = t[(t.model == "medmm") & (t.task == row.task) & t.fold.isin(["0", "1", "2"])].auroc.to_numpy()
        b = t[(t.model == "logistic_regression") & (t.task == row.task) & t.fold.isin(["0", "1", "2"])].auroc.to_numpy()
        assert row.auroc == pytest.approx(np.nanmean(m - b))
    assert (tmp_path / "cv_baselines.csv").exists() and (tmp_path / "baselines.csv").exists()
