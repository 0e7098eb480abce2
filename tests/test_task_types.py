"""Every clinical task type end to end: declared, validated, trained, evaluated, exported and served."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

TASKS = {
    "grade": {"kind": "multiclass", "classes": ["none", "low", "high"]},
    "death": {"kind": "survival", "method": "cox", "horizon": 1825, "horizons": [365, 1095]},
    "death_dt": {"kind": "survival", "method": "discrete", "time": "death.time", "event": "death.event",
                 "horizon": 1825, "horizons": [365, 1095], "n_bins": 8},
    "marker": {"kind": "regression", "unit": "ng/mL"},
}


# ------------------------------------------------------------------ declaration and validation
def test_task_specs_from_config_and_their_errors():
    from medmm.errors import ConfigError
    from medmm.tasks import task_specs

    specs = task_specs(TASKS)
    assert specs["grade"].classes == ("none", "low", "high")
    assert specs["death"].manifest_columns() == ["label_death.time", "label_death.event"]
    assert specs["death_dt"].label_columns() == ["death.time", "death.event"]
    assert specs["marker"].unit == "ng/mL"
    with pytest.raises(ConfigError, match="needs its classes"):
        task_specs({"g": "multiclass"})
    with pytest.raises(ConfigError, match="needs a horizon"):
        task_specs({"s": {"kind": "survival", "method": "discrete"}})
    with pytest.raises(ConfigError, match="no option"):
        task_specs({"r": {"kind": "regression", "classes": [1]}})


def test_config_checks_declared_tasks():
    from medmm.config import load_config
    from medmm.errors import ConfigError

    cfg = load_config({"cohort": {"manifest": "m.csv"}, "model": {"tasks": TASKS}})
    assert cfg.model_config_for(()).task_spec("grade")[0] == "multiclass"
    with pytest.raises(ConfigError, match="horizons"):
        load_config({"cohort": {"manifest": "m.csv"},
                     "model": {"tasks": {"s": {"kind": "survival", "horizon": 10, "horizons": [20]}}}})


def test_label_validation_names_row_column_and_fix():
    from medmm.tasks import validate_task_labels

    frame = pd.DataFrame({
        "patient_id": ["a", "b", "c", "d"],
        "label_grade": ["0", "high", "5", None],
        "label_death.time": [100.0, -3.0, None, None],
        "label_death.event": [1, 2, 1, None],
        "label_marker": [1.5, 2.0, np.inf, None],
    })
    rep = validate_task_labels(frame, {k: v for k, v in TASKS.items() if k != "death_dt"})
    msgs = [(p.row, p.column, p.message) for p in rep.errors]
    assert not any(r == 1 and c == "label_grade" for r, c, m in msgs)  # a class name is a valid label
    assert any(r == 2 and c == "label_grade" and "'5' is not a class" in m and "'high'" in m for r, c, m in msgs)
    assert any(r == 1 and c == "label_death.time" and "negative" in m for r, c, m in msgs)
    assert any(r == 1 and c == "label_death.event" and "event indicator" in m for r, c, m in msgs)
    assert any(r == 2 and "only one of" in m for r, c, m in msgs)  # time missing, event given
    assert any(r == 2 and c == "label_marker" for r, c, m in msgs)
    assert not any(r in (0, 3) for r, c, m in msgs)  # valid and fully unknown rows pass
    missing = validate_task_labels(frame.drop(columns=["label_death.event"]), {"death": TASKS["death"]})
    assert any("needs the column 'label_death.event'" in p.message for p in missing.errors)


# ------------------------------------------------------------------ censoring
def test_censored_before_horizon_never_counts_as_an_event():
    from medmm.models import create_head
    from medmm.tasks import TaskSpec

    spec = TaskSpec.from_config("d", {"kind": "survival", "horizon": 10})
    t, e = spec.censor([3, 12, 12, 5], [0, 1, 0, 1])
    assert t.tolist() == [3, 10, 10, 5] and e.tolist() == [0, 0, 0, 1]
    head = create_head("survival", dim=4, method="discrete", horizon=10.0, n_bins=5)
    logits = torch.zeros(3, 5, requires_grad=True)
    target = torch.tensor([[3.0, 0.0], [3.0, 1.0], [12.0, 1.0]])  # censored at 3, event at 3, event after horizon
    s, n = head.loss(logits, target, torch.ones(3, 2, dtype=torch.bool))
    s.backward()
    g = logits.grad
    assert n == 3
    assert (g[0, 1:] == 0).all() and g[0, 0] > 0  # censored at 3: survived [0, 2) only, never a failure
    assert g[1, 1] < 0 and (g[1, 2:] == 0).all()  # event in [2, 4): the hazard there is pushed up
    assert (g[2] > 0).all()  # an event after the horizon is a survivor of every interval
    cox = create_head("cox", dim=4, horizon=10.0)
    lg = torch.zeros(2, 1, requires_grad=True)
    s, n = cox.loss(lg, torch.tensor([[2.0, 0.0], [15.0, 1.0]]), torch.ones(2, 2, dtype=torch.bool))
    assert float(n) == 0.0  # no event left once the late one is censored at the horizon


# ------------------------------------------------------------------ metrics against the reference libraries
def test_metrics_equal_the_reference_libraries():
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score
    from sksurv.metrics import brier_score, concordance_index_censored, concordance_index_ipcw, integrated_brier_score
    from sksurv.util import Surv

    from medmm.evaluate.task_metrics import multiclass_metrics, regression_metrics, survival_metrics

    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 4, n)
    p = rng.dirichlet(np.ones(4), n)
    p[np.arange(n), y] += 0.4
    p /= p.sum(1, keepdims=True)
    m = multiclass_metrics(y, p)
    assert m["auroc_macro"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
    f = rng.normal(size=n)
    yr = f + rng.normal(size=n)
    r = regression_metrics(yr, f)
    assert r["mae"] == pytest.approx(mean_absolute_error(yr, f)) and r["r2"] == pytest.approx(r2_score(yr, f))
    x = rng.normal(size=n)
    t_ev = rng.exponential(np.exp(-x))
    c = rng.exponential(1.5, n)
    time, ev = np.minimum(t_ev, c), (t_ev <= c).astype(float)
    grid = np.linspace(0.05, 1.5, 30)
    surv = np.exp(-np.outer(np.exp(x), grid))
    risk = 1 - surv[:, [9, 19]]
    hs = grid[[9, 19]]
    s = survival_metrics(time, ev, x, horizons=hs, risk=risk, grid=grid, survival_grid=surv)
    st = Surv.from_arrays(ev > 0.5, time)
    assert s["harrell_c"] == pytest.approx(concordance_index_censored(ev > 0.5, time, x)[0])
    assert s["uno_c"] == pytest.approx(concordance_index_ipcw(st, st, x, tau=hs[-1])[0])
    assert s[f"brier@{hs[0]:g}"] == pytest.approx(brier_score(st, st, surv[:, [9]], [hs[0]])[1][0])
    ok = grid < time.max()
    assert s["ibs"] == pytest.approx(integrated_brier_score(st, st, surv[:, ok], grid[ok]))
    assert s[f"observed_risk@{hs[1]:g}"] == pytest.approx(s[f"predicted_risk@{hs[1]:g}"], abs=0.05)  # calibrated


# ------------------------------------------------------------------ end to end on a tiny cohort
@pytest.fixture(scope="module")
def outcome_cohort(tmp_path_factory):
    from medmm.synth import generate_cohort

    out = tmp_path_factory.mktemp("outcomes")
    path = generate_cohort(out, n_patients=60, seed=3, image_size=16, progress=False, outcomes=True)
    man = pd.read_csv(path)
    truth = pd.read_csv(out / "truth.csv")
    man["label_marker"] = np.round(np.exp(0.9 + 0.45 * truth["z_cea"].to_numpy()), 3)  # what the EHR's CEA shows
    man.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(outcome_cohort, tmp_path_factory):
    from medmm.cohort import load_cohort
    from medmm.data import MultimodalDataset
    from medmm.models import ModelConfig, build_preprocessor, create_model
    from medmm.tasks import check_task_labels
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    check_task_labels(pd.read_csv(outcome_cohort), TASKS, source=str(outcome_cohort))
    cohort = load_cohort(outcome_cohort, progress=False)
    cfg = ModelConfig(tasks=TASKS, modalities=("notes", "ehr"), dim=16, fusion={"name": "concat"},
                      encoders={"notes": {"name": "tfidf_mlp", "hidden": 16}, "ehr": {"name": "mlp", "hidden": 8}})
    train_recs = cohort.split("train")
    pre = build_preprocessor(cfg).fit(train_recs)
    torch.manual_seed(0)
    model = create_model(cfg, pre)
    cols = model.label_columns_flat
    tr = MultimodalDataset(train_recs, pre, cols)
    va = MultimodalDataset(cohort.split("val"), pre, cols)
    res = train(model, tr, va, TrainConfig(epochs=4, batch_size=16, device="cpu", monitor="last"), progress=False)
    assert np.isfinite(res.history[-1]["train_loss"])
    assert "val_cindex_death" in res.history[-1] and "val_auroc_grade" in res.history[-1]
    folder = model.save(tmp_path_factory.mktemp("model") / "model")
    return model, folder, cohort


def test_trained_model_outputs_every_type(trained):
    from medmm import load_model
    from medmm.models.outputs import task_outputs

    model, folder, cohort = trained
    assert bool(model.heads["death"].baseline_fitted)
    assert model.output_columns[:3] == ("grade.none", "grade.low", "grade.high")
    again = load_model(folder)
    recs = cohort.split("test").records
    a, b = model.predict_records(recs), again.predict_records(recs)
    assert np.allclose(a, b, atol=1e-6)  # the Cox baseline travelled with the bundle
    out = task_outputs(again, b)
    assert np.allclose(out["prob_grade.none"] + out["prob_grade.low"] + out["prob_grade.high"], 1, atol=1e-5)
    for t in ("death", "death_dt"):
        r365, r1095 = out[f"risk_{t}@365"], out[f"risk_{t}@1095"]
        assert ((r365 >= 0) & (r1095 <= 1) & (r1095 >= r365 - 1e-6)).all()  # risk grows with the horizon
    assert np.isfinite(out["value_marker"]).all()


def test_evaluate_report_pyfunc_predict_serve(trained, outcome_cohort, tmp_path):
    from fastapi.testclient import TestClient

    from medmm.commands.predict import predict_manifest
    from medmm.deploy.app import create_app
    from medmm.deploy.runtime import Predictor
    from medmm.evaluate import evaluate_cohort
    from medmm.evaluate.task_metrics import evaluate_typed
    from medmm.train.pyfunc import MedmmPyfuncModel, output_spec

    model, folder, cohort = trained
    typed = evaluate_typed(model, cohort, split="test", n_boot=30, min_subgroup=5)
    m = typed.metrics
    assert 0 <= m["grade"]["auroc_macro"][0] <= 1 and m["grade"]["auroc_macro"][1] <= m["grade"]["auroc_macro"][0]
    assert {"harrell_c", "uno_c", "auc@365", "brier@365", "ibs"} <= set(m["death"])  # ibs from the survival curves
    assert 0 < m["death"]["ibs"][0] < 0.3 and m["death"]["ibs"][1] <= m["death"]["ibs"][0] <= m["death"]["ibs"][2]
    assert {"mae", "rmse", "r2", "calibration_in_the_large"} <= set(m["marker"])
    assert typed.tables["grade"]["confusion"].to_numpy().sum() == m["grade"]["n"][0]
    assert set(typed.tables["death"]["by_group"]["column"]) >= {"pattern"}
    res = evaluate_cohort(model, cohort, split="test", n_boot=30, robustness=False, out=tmp_path / "ev",
                          progress=False, audit=False)
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "grade (multiclass" in html and "death (survival" in html and "marker (regression" in html
    assert (tmp_path / "ev" / "typed_metrics.csv").exists() and (tmp_path / "ev" / "figures" / "death_survival.png").exists()
    assert set(res.tasks) == set()  # no binary task: the binary path evaluates nothing, the typed one everything

    spec = dict(output_spec(folder))
    assert spec["pred_grade"] == "string" and spec["risk_death@365"] == "double" and "value_marker" in spec
    py = MedmmPyfuncModel()
    py.load_context(type("C", (), {"artifacts": {"medmm_model": str(folder)}})())
    man = pd.read_csv(outcome_cohort, dtype=str, keep_default_na=False)
    for c in ("notes_path", "ehr_path", "image_path", "vitals_path"):
        man[c] = [str(outcome_cohort.parent / v) if v else v for v in man[c]]
    table = py.predict(None, man.head(5))
    assert list(table.columns)[:1] == ["patient_id"] and set(spec) <= set(table.columns)

    df, _ = predict_manifest(model, outcome_cohort)
    assert {"label_death.time", "label_grade", "prob_grade.high", "risk_score_death", "value_marker"} <= set(df.columns)

    pred = Predictor.from_model(model, runtime="eager", export_dir="unused")
    with TestClient(create_app(pred, api_keys=["k"])) as c:
        r = c.post("/predict", json={"patient_id": "X", "ehr": {"age [years]": 70, "cea [ng/mL]": 9.0}},
                   headers={"X-API-Key": "k"})
    assert r.status_code == 200, r.text
    o = r.json()["outputs"]
    assert o["grade"]["predicted_class"] in ("none", "low", "high")
    assert o["marker"]["unit"] == "ng/mL" and set(o["death"]["risk"]) == {"365", "1095"}


def test_health_monitor_uses_survival_risk(trained):
    from medmm.deploy.runtime import Predictor
    from medmm.errors import ConfigError
    from medmm.monitor.health import HealthMonitor, MonitorConfig

    model = trained[0]
    pred = Predictor.from_model(model, runtime="eager", export_dir="unused")
    mon = HealthMonitor(pred, MonitorConfig(model_task="death"))
    assert mon._risk_column == "risk_death@365"
    with pytest.raises(ConfigError, match="no risk output"):
        HealthMonitor(pred, MonitorConfig(model_task="marker"))


def test_synth_outcomes_have_an_oracle(outcome_cohort):
    from medmm.synth.outcomes import compare_typed_to_oracle

    man = pd.read_csv(outcome_cohort)
    assert set(man["label_grade"]) <= {0, 1, 2} and set(man["label_death.event"]) <= {0, 1}
    assert (man["label_death.time"] <= 1825).all() and 0 < man["label_death.event"].mean() < 1
    orc = pd.read_csv(outcome_cohort.parent / "outcomes_oracle.csv")
    full = orc[orc.subset == "image+notes+vitals+ehr"]
    g = full[full.task == "grade"].pivot(index="patient_id", columns="output", values="score")
    assert np.allclose(g.sum(axis=1), 1.0)
    # the oracle is a perfect-information posterior: it beats a constant on its own data
    preds = pd.DataFrame({"patient_id": g.index, "pattern": "image+notes+vitals+ehr"})
    lab = man.set_index("patient_id").loc[g.index]
    preds["label_grade"] = lab["label_grade"].to_numpy()
    for c in ("none", "low", "high"):
        preds[f"prob_grade.{c}"] = g[c].to_numpy()
    preds["time_death"], preds["event_death"] = lab["label_death.time"].to_numpy(), lab["label_death.event"].to_numpy()
    r = full[full.output == "risk@1825"].set_index("patient_id").loc[g.index, "score"]
    preds["risk_score_death"] = r.to_numpy()
    res = compare_typed_to_oracle(preds, outcome_cohort.parent / "outcomes_oracle.csv")
    assert res["grade"]["auroc_macro"] == pytest.approx(res["grade"]["oracle_auroc_macro"])
    assert res["grade"]["oracle_auroc_macro"] > 0.8 and res["death"]["oracle_harrell_c"] > 0.6
    shuffled = preds.copy()  # the comparison must see a worse model as worse
    perm = np.random.default_rng(0).permutation(len(shuffled))
    for c in ("none", "low", "high"):
        shuffled[f"prob_grade.{c}"] = preds[f"prob_grade.{c}"].to_numpy()[perm]
    worse = compare_typed_to_oracle(shuffled, outcome_cohort.parent / "outcomes_oracle.csv")
    assert worse["grade"]["auroc_macro"] < worse["grade"]["oracle_auroc_macro"] - 0.1


# ------------------------------------------------------------------ one scoring pass, every engine
def test_evaluation_scores_the_cohort_once(trained, monkeypatch):
    from medmm.evaluate import evaluate_cohort, task_metrics
    from medmm.evaluate.task_metrics import evaluate_typed

    model, folder, cohort = trained
    calls = {"forward": 0}
    inner = type(model).forward

    def counting(self, *a, **k):
        calls["forward"] += 1
        return inner(self, *a, **k)

    monkeypatch.setattr(type(model), "forward", counting)
    monkeypatch.setattr(task_metrics, "typed_predictions",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("scored a second time")))
    res = evaluate_cohort(model, cohort, split="test", calibration_split=None, n_boot=20, robustness=False,
                          progress=False, audit=False, baselines=False, batch_size=64)
    n_test = len(cohort.split("test"))
    assert calls["forward"] == -(-n_test // 64)  # one forward pass per batch, for every task type
    monkeypatch.undo()
    again = evaluate_typed(model, cohort, split="test", n_boot=20, min_subgroup=5)  # scores itself
    for t, m in res.typed.metrics.items():
        for k in ("auroc_macro", "harrell_c", "mae", "ibs"):
            if k in m:
                assert m[k][0] == pytest.approx(again.metrics[t][k][0], abs=1e-5), (t, k)
    for t in ("death", "death_dt"):  # the survival curves come from the table: the discrete head's whole curve
        assert np.allclose(res.typed.curves[t]["survival"], again.curves[t]["survival"], atol=1e-5), t


def test_ray_engine_predicts_typed_outputs(trained, outcome_cohort):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    from ray.cluster_utils import Cluster

    from medmm.commands.predict import predict_manifest, predict_manifest_engine

    model = trained[0]
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 120 * 2**20})
    try:
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
        got, _ = predict_manifest_engine(model, outcome_cohort, batch_size=32, engine="ray", address=c.address)
    finally:
        ray.shutdown()
        c.shutdown()
    local, _ = predict_manifest(model, outcome_cohort)
    assert {"pred_grade", "prob_grade.high", "risk_score_death", "risk_death@365", "risk_death_dt@1095",
            "value_marker", "time_death", "event_death", "label_grade"} <= set(got.columns)
    got, local = got.set_index("patient_id").sort_index(), local.set_index("patient_id").sort_index()
    for c_ in ("prob_grade.high", "risk_score_death", "risk_death@365", "risk_death_dt@1095", "value_marker"):
        assert np.allclose(got[c_].to_numpy(float), local[c_].to_numpy(float), atol=1e-5), c_
    assert (got["pred_grade"] == local["pred_grade"]).all()
    assert (got["time_death"] <= 1825).all()  # censored at the horizon


def test_tuned_baselines_work_where_features_outnumber_events():
    """A featurised multimodal row has hundreds of columns; the tuned baselines pick their penalty by
    cross-validation and find the few informative ones (the plain Cox PH cannot converge there)."""
    from sksurv.metrics import concordance_index_censored
    from sklearn.metrics import roc_auc_score

    from medmm.evaluate.task_metrics import typed_baseline

    rng = np.random.default_rng(3)
    n, p = 240, 300
    X = rng.normal(size=(n, p))
    X[rng.random((n, p)) < 0.05] = np.nan  # absent lab values
    lp = 0.9 * np.nan_to_num(X[:, 0]) - 0.7 * np.nan_to_num(X[:, 1])
    t_event = rng.exponential(1000 * np.exp(-lp))
    t_cens = rng.exponential(1500, n)
    time, event = np.minimum(t_event, t_cens), t_event <= t_cens
    tr, te = slice(0, 160), slice(160, None)
    risk = typed_baseline("survival", X[tr], (time[tr], event[tr]), X[te], tune=True)
    c = concordance_index_censored(event[te], time[te], risk["risk_score"])[0]
    c_true = concordance_index_censored(event[te], time[te], lp[te])[0]
    assert c > 0.62 and c > c_true - 0.08
    assert float(risk["alpha"]) > 0

    y = np.digitize(lp + rng.normal(scale=0.5, size=n), [-0.5, 0.5])
    prob = typed_baseline("multiclass", X[tr], y[tr], X[te], tune=True)["prob"]
    assert prob.shape == (80, 3) and np.allclose(prob.sum(1), 1)
    plain = typed_baseline("multiclass", X[tr], y[tr], X[te])["prob"]
    auc, auc_plain = (roc_auc_score(y[te], q, multi_class="ovr") for q in (prob, plain))
    assert auc > 0.6 and auc >= auc_plain - 0.01, (auc, auc_plain)


def test_typed_baselines_beside_the_model_in_every_output(trained, tmp_path, monkeypatch):
    """Multinomial LR, ridge and Cox PH fitted on the training split's featurised inputs, scored on the
    evaluated patients, beside the model with a paired bootstrap CI; the same values as the reference
    libraries on the same split; nothing fitted on an evaluated patient."""
    from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
    from sksurv.metrics import concordance_index_censored

    from medmm.evaluate import baselines as bl
    from medmm.evaluate import evaluate_cohort
    from medmm.evaluate.task_metrics import typed_baseline
    from medmm.tasks import TaskSpec

    model, folder, cohort = trained
    seen: list[list[str]] = []
    real = bl.featurize

    def spy(records, *a, **k):
        records = list(records)
        seen.append([r.patient_id for r in records])
        return real(records, *a, **k)

    monkeypatch.setattr(bl, "featurize", spy)
    res = evaluate_cohort(model, cohort, split="test", n_boot=200, robustness=False, out=tmp_path / "ev",
                          progress=False, audit=False, calibration_split=None)
    ref = res.reference_models
    assert set(zip(ref.task, ref.metric)) == {("grade", "auroc_macro"), ("marker", "mae"), ("marker", "r2"),
                                             ("death", "harrell_c"), ("death_dt", "harrell_c")}
    # fitted on the training split only, scored on exactly the evaluated patients
    train_recs, test_recs = cohort.split("train").records, cohort.split("test").records
    fit_ids, scored_ids = set(seen[0]), set(seen[1])
    assert fit_ids == {r.patient_id for r in train_recs}
    assert not fit_ids & set(res.typed.predictions.patient_id)
    assert scored_ids == set(res.typed.predictions.patient_id) == {r.patient_id for r in test_recs}

    keys = ["grade", "marker", "death.time", "death.event"]
    ftr, fte = real(train_recs, model.preprocessor, keys), real(test_recs, model.preprocessor, keys)
    row = ref.set_index(["task", "metric"])
    # multiclass: macro one-vs-rest AUROC over the classes present (scikit-learn per class)
    r = row.loc[("grade", "auroc_macro")]
    y = ftr.labels["grade"]
    k = ~np.isnan(y)
    assert r.fitted_on == k.sum() and r.baseline in ("multinomial_lr", "multinomial_lr_cv")
    prob = typed_baseline("multiclass", ftr.X[k], y[k].astype(int), fte.X,
                          tune=r.baseline == "multinomial_lr_cv")["prob"]
    yt = fte.labels["grade"]
    kt = ~np.isnan(yt)
    expected = np.mean([roc_auc_score(yt[kt] == c, prob[kt, c]) for c in np.unique(yt[kt]).astype(int)])
    assert r.value_baseline == pytest.approx(expected)
    assert r.value_medmm == pytest.approx(res.typed.metrics["grade"]["auroc_macro"][0])
    # regression: ridge, MAE and R^2
    y = ftr.labels["marker"]
    k = ~np.isnan(y)
    value = typed_baseline("regression", ftr.X[k], y[k], fte.X)["value"]
    yt = fte.labels["marker"]
    kt = ~np.isnan(yt)
    assert row.loc[("marker", "mae")].value_baseline == pytest.approx(mean_absolute_error(yt[kt], value[kt]))
    assert row.loc[("marker", "r2")].value_baseline == pytest.approx(r2_score(yt[kt], value[kt]))
    assert row.loc[("marker", "mae")].value_medmm == pytest.approx(res.typed.metrics["marker"]["mae"][0])
    # survival: Cox on labels censored at the horizon, Harrell's C by scikit-survival
    spec = TaskSpec.from_config("death", TASKS["death"])
    t, e = ftr.labels["death.time"], ftr.labels["death.event"]
    k = ~(np.isnan(t) | np.isnan(e))
    tc, ec = spec.censor(t[k], e[k])
    r = row.loc[("death", "harrell_c")]
    assert r.baseline in ("cox_ph", "coxnet_cv") and r.fitted_on == k.sum()
    risk = typed_baseline("survival", ftr.X[k], (tc, ec > 0.5), fte.X, tune=r.baseline == "coxnet_cv")["risk_score"]
    tt, et = spec.censor(fte.labels["death.time"], fte.labels["death.event"])
    kt = ~(np.isnan(fte.labels["death.time"]) | np.isnan(fte.labels["death.event"]))
    assert r.value_baseline == pytest.approx(concordance_index_censored(et[kt] > 0.5, tt[kt], risk[kt])[0])
    assert r.value_medmm == pytest.approx(res.typed.metrics["death"]["harrell_c"][0])
    assert r.n_positive == int((et[kt] > 0.5).sum())
    # paired intervals contain the difference; the verdict reads the metric's direction
    assert (ref.low <= ref.difference).all() and (ref.difference <= ref.high).all() and (ref.low < ref.high).all()
    assert np.allclose(ref.difference, ref.value_medmm - ref.value_baseline)
    mae = row.loc[("marker", "mae")]
    assert mae.verdict == ("medmm better" if mae.high < 0 else "ridge_cv better" if mae.low > 0
                           else "no clear difference")
    # saved, logged and reported where the binary baselines go
    saved = pd.read_csv(tmp_path / "ev" / "reference_models.csv")
    assert len(saved) == 5 and set(saved.metric) == {"auroc_macro", "mae", "r2", "harrell_c"}
    logged = res.reference_metrics()
    assert logged[f"eval_harrell_c_diff_death_{r.baseline}_low"] == pytest.approx(r.low)
    assert logged["eval_mae_marker_ridge_cv"] == pytest.approx(mae.value_baseline)
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "better than logistic regression" in html and "Harrell" in html and "ridge_cv" in html
    # evaluating the training split would flatter the baselines: skipped with a warning, as for binary tasks
    res2 = evaluate_cohort(model, cohort, split="train", n_boot=10, robustness=False, progress=False, audit=False,
                           calibration_split=None)
    assert res2.reference_models is None and any("baselines skipped" in w for w in res2.warnings)


def test_typed_comparison_reads_each_metrics_direction():
    """A lower MAE is better, a higher C-index is better; a copy of the model is no different."""
    from medmm.evaluate.baselines import compare_typed_with_baselines
    from medmm.tasks import TaskSpec

    rng = np.random.default_rng(1)
    n = 300
    ids = [f"p{i}" for i in range(n)]
    y = rng.normal(size=n)
    x = rng.normal(size=n)
    t_ev = rng.exponential(np.exp(-x))
    t_c = rng.exponential(1.5, n)
    model = pd.DataFrame({"patient_id": ids, "label_m": y, "value_m": y + rng.normal(scale=0.2, size=n),
                          "time_s": np.minimum(t_ev, t_c), "event_s": (t_ev <= t_c).astype(float), "risk_score_s": x})
    model.loc[3, "label_m"] = np.nan  # an unknown label: left out
    worse = pd.DataFrame({"patient_id": ids[::-1], "value_m": (y + rng.normal(scale=1.0, size=n))[::-1],
                          "risk_score_s": rng.normal(size=n)[::-1]})  # row order does not matter
    specs = {"m": TaskSpec.from_config("m", {"kind": "regression"}), "s": TaskSpec.from_config("s", "survival")}
    fits = {"m": {"baseline": "ridge_cv", "n_fit": 10}, "s": {"baseline": "cox_ph", "n_fit": 10}}
    tab = compare_typed_with_baselines(model, worse, specs, fits, n_boot=200).set_index(["task", "metric"])
    assert tab.loc[("m", "mae"), "n"] == n - 1
    assert tab.loc[("m", "mae"), "high"] < 0 and tab.loc[("m", "mae"), "verdict"] == "medmm better"
    assert tab.loc[("m", "r2"), "low"] > 0 and tab.loc[("m", "r2"), "verdict"] == "medmm better"
    assert tab.loc[("s", "harrell_c"), "low"] > 0 and tab.loc[("s", "harrell_c"), "verdict"] == "medmm better"
    assert (tab.low <= tab.difference).all() and (tab.difference <= tab.high).all()
    copy = compare_typed_with_baselines(model, model[["patient_id", "value_m", "risk_score_s"]], specs, fits, n_boot=50)
    assert (copy.difference == 0).all() and (copy.low == 0).all() and (copy.high == 0).all()
    assert set(copy.verdict) == {"no clear difference"}
