"""Task types declared in the manifest's sidecar, class names in label columns, and label checks
that run before training (the experiment and ``medmm validate``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _ehr_cohort(tmp_path, n=40, seed=0, grade=None, extra=None, sidecar=None):
    """A small EHR-only cohort: the grade follows a CEA-like marker, death follows the grade."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    cea = rng.lognormal(1.0, 0.8, n)
    g = np.digitize(np.log(cea), [0.6, 1.4])
    pd.DataFrame({"patient_id": ids, "age [years]": rng.integers(40, 85, n), "cea [ng/mL]": np.round(cea, 3),
                  "sodium [mmol/L]": np.round(rng.normal(139, 3, n), 1)}).to_csv(tmp_path / "ehr.csv", index=False)
    names = np.array(["G1", "G2", "G3"])
    time = np.round(rng.exponential(2000 / np.exp(g), n), 1)
    man = pd.DataFrame({"patient_id": ids, "split": np.array(["train", "train", "val", "test"])[np.arange(n) % 4],
                        "ehr_path": "ehr.csv", "label_grade": names[g] if grade is None else grade,
                        "label_death.time": np.minimum(time, 1825.0), "label_death.event": (time <= 1825).astype(int)})
    for k, v in (extra or {}).items():
        man[k] = v
    path = tmp_path / "manifest.csv"
    man.to_csv(path, index=False)
    if sidecar is not None:
        (tmp_path / "manifest.modalities.yaml").write_text(sidecar)
    return path, g


SIDECAR = """\
tasks:
  grade: {kind: multiclass, classes: [G1, G2, G3]}
  death: {kind: survival, horizon: 1825, horizons: [365, 1095]}
"""


def test_sidecar_declares_tasks_and_class_names_map_to_indices(tmp_path):
    from medmm.cohort import load_cohort

    path, g = _ehr_cohort(tmp_path, sidecar=SIDECAR)
    cohort = load_cohort(path, progress=False)
    assert cohort.declared_tasks["grade"]["classes"] == ["G1", "G2", "G3"]
    assert cohort.tasks == ["grade", "death"]  # the declared tasks, not the raw label columns
    assert cohort.labels("grade") == [float(x) for x in g]
    assert [r.labels["grade"] for r in cohort.split("test").records] == [float(x) for x in g[3::4]]
    assert not [p for p in cohort.report.errors if p.column == "label_grade"]


def test_unknown_class_names_row_column_value_and_classes(tmp_path):
    from medmm.cohort import load_cohort
    from medmm.errors import ManifestError

    grades = ["G1", "G2", "G3", "G1"] * 10
    grades[6] = "G4"
    path, _ = _ehr_cohort(tmp_path, grade=grades, sidecar=SIDECAR)
    with pytest.raises(ManifestError) as err:
        load_cohort(path, progress=False)
    e = err.value
    assert e.row == 6 and e.column == "label_grade" and "'G4'" in e.message and "P006" in e.message
    assert "['G1', 'G2', 'G3']" in e.hint


def test_numeric_class_names_are_read_as_names_and_config_wins(tmp_path):
    from medmm.cohort import load_cohort
    from medmm.tasks import TaskSpec, merge_task_declarations

    spec = TaskSpec.from_config("stage", {"kind": "multiclass", "classes": [1, 2, 3]})
    assert [spec.class_index(v) for v in ("1", "3", "3.0", 0, "4")] == [0, 2, 2, None, None]
    idx = TaskSpec.from_config("g", {"kind": "multiclass", "classes": ["lo", "hi"]})
    assert [idx.class_index(v) for v in ("hi", "1", "1.0", "2", "0.5")] == [1, 1, 1, None, None]
    merged = merge_task_declarations({"grade": "regression", "death": {"kind": "survival"}},
                                     {"grade": {"kind": "multiclass", "classes": ["G1", "G2", "G3"]}})
    assert merged["grade"]["kind"] == "multiclass" and merged["death"] == {"kind": "survival"}
    assert merge_task_declarations({"a": "regression"}, None, ["a", "b"]) == {"a": "regression", "b": "binary"}
    path, g = _ehr_cohort(tmp_path)  # no sidecar: the config's declaration maps the names
    cohort = load_cohort(path, progress=False, tasks={"grade": {"kind": "multiclass", "classes": ["G1", "G2", "G3"]}})
    assert cohort.labels("grade") == [float(x) for x in g]


def test_sidecar_tasks_are_checked_against_the_schema(tmp_path):
    from medmm.cohort import load_cohort
    from medmm.errors import ManifestError

    path, _ = _ehr_cohort(tmp_path, sidecar="tasks:\n  grade: {kind: multiclass}\n")
    with pytest.raises(ManifestError, match="needs its classes"):
        load_cohort(path, progress=False)
    from medmm.cohort import check_modality_declarations

    assert check_modality_declarations({"tasks": {"grade": "regression"}}) == {}  # a tasks-only sidecar


def test_validate_checks_labels_against_declared_tasks(tmp_path, capsys):
    from medmm.cli import main

    n = 40
    marker = np.round(np.linspace(1, 9, n), 2).astype(object)
    marker[5] = "high"
    time = np.linspace(10, 1800, n)
    time[9] = -4.0
    path, _ = _ehr_cohort(tmp_path, extra={"label_marker": marker, "label_death.time": time},
                          sidecar=SIDECAR + "  marker: {kind: regression, unit: ng/mL}\n")
    assert main(["validate", str(path), "--json"]) == 1
    lines = [__import__("json").loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    hits = {(p.get("row"), p.get("column")) for p in lines if p["severity"] == "error"}
    assert (5, "label_marker") in hits and (9, "label_death.time") in hits
    assert not any(p.get("column") == "label_grade" for p in lines if p["severity"] == "error")  # names are fine
    clean, _ = _ehr_cohort(tmp_path / "clean" if (tmp_path / "clean").mkdir() is None else tmp_path, sidecar=SIDECAR)
    assert main(["validate", str(clean)]) == 0


def test_experiment_refuses_bad_labels_before_training(tmp_path):
    from medmm.config import load_config
    from medmm.errors import ManifestError
    from medmm.experiment import run_experiment

    time = np.linspace(10, 1800, 40)
    time[3] = -1.0
    path, _ = _ehr_cohort(tmp_path, extra={"label_death.time": time}, sidecar=SIDECAR)
    cfg = load_config({"cohort": {"manifest": str(path)}, "out_dir": str(tmp_path / "run"),
                       "model": {"modalities": ["ehr"], "dim": 8},
                       "train": {"epochs": 1, "device": "cpu"},
                       "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "log_model": False}})
    with pytest.raises(ManifestError) as err:
        run_experiment(config=cfg, progress=False)
    assert "label_death.time" in str(err.value) and "row 3" in str(err.value) and "negative" in str(err.value)
    assert not (tmp_path / "mlflow.db").exists()  # nothing was tracked or trained


def test_experiment_trains_the_manifest_declared_tasks_with_class_names(tmp_path):
    from medmm.config import load_config
    from medmm.experiment import run_experiment

    path, _ = _ehr_cohort(tmp_path, n=80, sidecar=SIDECAR)
    cfg = load_config({"cohort": {"manifest": str(path), "audit": False}, "out_dir": str(tmp_path / "run"),
                       "model": {"modalities": ["ehr"], "dim": 8, "fusion": {"name": "concat"}},
                       "train": {"epochs": 3, "batch_size": 32, "min_epochs": 1, "device": "cpu"},
                       "evaluation": {"n_boot": 100},
                       "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "log_model": False,
                                    "plots": False}})
    res = run_experiment(config=cfg, progress=False)
    assert res.model.heads["grade"].kind == "multiclass" and res.model.heads["death"].kind == "survival"
    base = pd.read_csv(tmp_path / "run" / "baselines.csv")  # the training run's report has each type's baseline
    rows = base.set_index(["task", "metric"])
    assert {("grade", "auroc_macro"), ("death", "harrell_c")} <= set(rows.index)
    for key in (("grade", "auroc_macro"), ("death", "harrell_c")):
        r = rows.loc[key]
        assert 0 <= r["value_baseline"] <= 1 and r["fitted_on"] == 60  # train + val: the held-out 20 are scored
    p = res.predictions
    assert set(p["pred_grade"]) <= {"G1", "G2", "G3"} and {"prob_grade.G1", "risk_death@365"} <= set(p.columns)
    assert np.isfinite(res.history[-1]["val_loss"])  # every head's loss counts in model selection
    assert {"val_loss_grade", "val_loss_death"} <= set(res.history[-1])
    typed = pd.read_csv(tmp_path / "run" / "typed_metrics.csv")
    assert {"auroc_macro", "harrell_c"} <= set(typed["metric"])
    assert len(p) == 20 and 0 <= res.typed.metrics["death"]["harrell_c"][0] <= 1


def test_balanced_sampler_and_pos_weight_know_the_task_kinds():
    from types import SimpleNamespace

    from medmm.errors import ConfigError
    from medmm.models.losses import balanced_sample_weights, build_criterion

    ys = [0, 0, 0, 0, 0, 0, 1, 1, 2, None]
    ds = SimpleNamespace(tasks=("grade", "death.time", "death.event", "tumor"),
                         items=[{"labels": {"grade": y, "death.time": 100.0 * (i + 1), "death.event": i % 2,
                                            "tumor": float(i < 3)}} for i, y in enumerate(ys)])
    kinds = {"grade": "multiclass", "death.time": "survival", "death.event": "survival", "tumor": "binary"}
    w = balanced_sample_weights(ds, "grade", kinds=kinds)
    by_class = {c: sum(w[i] for i, y in enumerate(ys) if y == c) for c in (0, 1, 2)}
    assert by_class[0] == pytest.approx(by_class[1]) == pytest.approx(by_class[2])  # three classes, not y >= 0.5
    with pytest.raises(ConfigError, match="is a survival task"):
        balanced_sample_weights(ds, "death.event", kinds=kinds)
    assert balanced_sample_weights(ds, None, kinds=kinds) == pytest.approx(w)  # the first classed task
    cfg = SimpleNamespace(loss="bce", pos_weight="auto", focal_gamma=2.0, focal_alpha=None)
    crit = build_criterion(cfg, ds, kinds=kinds)
    assert crit.pos_weight.tolist() == pytest.approx([1.0, 1.0, 1.0, 7 / 3])  # only the binary column is weighted
    assert set(crit.prevalence) == {"tumor"}
    with pytest.raises(ConfigError, match="one per binary task"):
        build_criterion(SimpleNamespace(**{**vars(cfg), "pos_weight": [2.0, 3.0]}), ds, kinds=kinds)
    assert build_criterion(SimpleNamespace(**{**vars(cfg), "pos_weight": [4.0]}), ds,
                           kinds=kinds).pos_weight.tolist() == [1.0, 1.0, 1.0, 4.0]
