"""Wide path alone vs wide-and-deep, chosen on the validation split (ModelConfig.wide_select)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.records import Missing, ModalitySpec, PatientRecord, Tabular


def _labs(n: int, seed: int, truth: str) -> list[PatientRecord]:
    """A lab panel as a hospital exports it: units in the names, a few values not recorded."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    if truth == "linear":
        z = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2]
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    else:  # an interaction no linear model sees: the sign of creatinine x lactate
        y = (x[:, 0] * x[:, 1] > 0).astype(float)
    names = ["creatinine [mg/dL]", "lactate [mmol/L]", "crp [mg/L]", "sodium [mmol/L]", "age [years]"]
    gaps = rng.random(x.shape) < 0.05
    return [PatientRecord(f"P{i:04d}", modalities={"labs": Tabular({c: None if gaps[i, j] else float(x[i, j])
                                                                    for j, c in enumerate(names)})},
                          labels={"y": y[i]}) for i in range(n)]


def _fit(recs, *, epochs: int = 20, wide_select: bool = True, seed: int = 0):
    from medmm.data import MultimodalDataset
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    n = len(recs)
    tr, va = recs[: int(0.6 * n)], recs[int(0.6 * n): int(0.8 * n)]
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=ModalitySpec({"labs": "table"}), dim=16,
                      wide_select=wide_select)
    pre = build_preprocessor(cfg).fit(tr)
    torch.manual_seed(seed)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    res = train(model, MultimodalDataset(tr, pre, ("y",)), MultimodalDataset(va, pre, ("y",)),
                TrainConfig(epochs=epochs, min_epochs=5, patience=5, device="cpu", seed=seed), progress=False)
    return model, pre, res, tr, va


def test_linear_truth_keeps_the_logistic_regression_it_refits(tmp_path):
    from sklearn.linear_model import LogisticRegression

    recs = _labs(300, 0, "linear")
    model, pre, res, tr, va = _fit(recs)
    chosen = res.loss_info["wide_or_deep"]
    assert chosen["chosen"] == "wide" and not bool(model.deep_on), chosen
    # the deep part is no better than one standard error of the paired difference
    assert chosen["val_loss_wide_and_deep"] >= chosen["val_loss_wide"] - chosen["val_loss_diff_se"]
    # the model is now scikit-learn's L2 logistic regression on the featurised rows
    # (C chosen on the validation rows, then refitted on training + validation rows)
    X = np.stack([pre.transform(r)["labs"] for r in tr + va])
    y = np.array([r.labels["y"] for r in tr + va])
    ref = LogisticRegression(C=chosen["wide_C"]["y"], max_iter=5000, tol=1e-6).fit(X, y)
    y = y[:len(tr)]  # the prior is the training split's
    test = recs[240:]
    Xt = np.stack([pre.transform(r)["labs"] for r in test])
    np.testing.assert_allclose(model.predict_records(test)[:, 0], ref.predict_proba(Xt)[:, 1], atol=1e-3)
    # a patient without labs gets the training prior, not a logistic regression on zeros
    blank = PatientRecord("X1", modalities={"labs": Missing("not_collected")}, labels={})
    assert model.predict_records([blank])[0, 0] == pytest.approx(y.mean(), abs=1e-4)
    # the unimodal path (Shapley, the assistant) is the same logistic regression
    xs = torch.tensor(Xt[:4])
    with torch.no_grad():
        uni = torch.sigmoid(model.unimodal_logits("labs", xs, torch.ones(4, dtype=torch.bool)))[:, 0].numpy()
    np.testing.assert_allclose(uni, ref.predict_proba(Xt[:4])[:, 1], atol=1e-3)
    # the switch travels with the bundle
    again = type(model).load(model.save(tmp_path / "m"))
    assert not bool(again.deep_on) and not again.deep_enabled  # the Python switch follows the loaded buffer
    np.testing.assert_allclose(again.predict_records(test), model.predict_records(test), atol=1e-6)


def test_an_interaction_keeps_the_deep_part():
    recs = _labs(700, 1, "xor")
    model, pre, res, tr, va = _fit(recs, epochs=30)
    chosen = res.loss_info["wide_or_deep"]
    assert chosen["chosen"] == "wide+deep" and bool(model.deep_on), chosen
    assert chosen["val_loss_wide"] > 0.6  # the logistic regression is at chance on the sign of a product
    assert chosen["val_loss_wide_and_deep"] < chosen["val_loss_wide"] - 0.1


def test_selection_off_or_not_applicable_leaves_the_model_alone():
    from medmm.models import ModelConfig, MultimodalModel

    recs = _labs(120, 2, "linear")
    model, _, res, _, _ = _fit(recs, epochs=2, wide_select=False)
    assert "wide_or_deep" not in res.loss_info and bool(model.deep_on)
    # two modalities: no wide-only candidate (each modality's evidence must stay)
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=ModalitySpec({"labs": "table", "notes": "text"}), dim=8)
    two = MultimodalModel(cfg, {"labs": (5,), "notes": (7,)})
    assert not two.wide_select_applies()
    # a multiclass head: not a binary logistic regression
    cfg = ModelConfig(tasks={"grade": {"kind": "multiclass", "n_classes": 3}}, modalities=ModalitySpec({"labs": "table"}))
    assert not MultimodalModel(cfg, {"labs": (5,)}).wide_select_applies()


def test_weights_saved_before_the_switch_load_with_the_deep_part_on():
    from medmm.models import ModelConfig, MultimodalModel

    cfg = ModelConfig(tasks={"y": "binary"}, modalities=ModalitySpec({"labs": "table"}), dim=8)
    model = MultimodalModel(cfg, {"labs": (5,)})
    model.deep_on.fill_(False)
    old = {k: v for k, v in MultimodalModel(cfg, {"labs": (5,)}).state_dict().items()
           if k not in ("deep_on", "wide_prior")}
    model.load_state_dict(old)
    assert bool(model.deep_on) and float(model.wide_prior.abs().sum()) == 0.0


def test_sparse_wide_rows_are_the_full_tfidf_rows():
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.records import Note, Notes

    rng = np.random.default_rng(3)
    words = ["troponin", "stent", "echocardiogram", "fracture", "cast", "arthroscopy", "aspirin", "edema",
             "hypertension", "nausea", "syncope", "murmur"]
    recs = [PatientRecord(f"N{i}", notes=Notes([Note("HISTORY OF PRESENT ILLNESS:, "
                                                     + " ".join(rng.choice(words, 6)) + ".")]),
                          labels={"y": float(i % 2)}) for i in range(40)]
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=("notes",))
    pre = build_preprocessor(cfg).fit(recs)
    step = pre.steps["notes"]
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    x = torch.tensor(np.stack([pre.transform(r)["notes"] for r in recs[:6]]))
    rows = model.wide["notes"].rows(x).toarray()
    full = step.wide_vectorizer_.transform([r.notes.text for r in recs[:6]]).toarray()
    n_vocab = full.shape[1]
    np.testing.assert_allclose(rows[:, :n_vocab], full, atol=1e-6)
    found = x[:, step.n_features_:step.sparse_layout()["dense"]].numpy()
    np.testing.assert_allclose(rows[:, n_vocab:], found, atol=1e-6)


def _two_modalities(n: int, seed: int) -> list[PatientRecord]:
    """Labs that drive task ``a`` linearly and carry nothing on ``b``; notes whose one finding sentence
    (possibly negated) carries ``b``, among template sentences and incidental words that carry nothing;
    half of them flattened onto one line as transcription exports are (some in capitals); some
    patients without notes, as in a real export."""
    from medmm.records import Note, Notes

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    a = (rng.random(n) < 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.5 * x[:, 1])))).astype(float)
    b = (rng.random(n) < 0.4).astype(float)
    filler = ["bowel loops unremarkable", "kidneys enhance symmetrically", "no free fluid", "gallbladder normal",
              "mild degenerative change", "spleen normal size", "liver contour smooth", "aorta calibre normal"]
    recs = []
    for i in range(n):
        cue = rng.random() < 0.7  # the finding agrees with the label 70 % of the time
        finding = ("A solid mass is seen in the pancreas." if (b[i] > 0) == cue
                   else "No evidence of mass in the pancreas.")
        body = " ".join(str(s).capitalize() + "." for s in rng.choice(filler, 3, replace=False)) + " " + finding
        if rng.random() < 0.5:  # a transcription service's export: one line, sections run together with ".,"
            text = f"FINDINGS:,{body.upper() if rng.random() < 0.3 else body}., IMPRESSION:,See above."
        else:
            text = "FINDINGS:\n" + body + "\nIMPRESSION:\nSee above."
        notes = Missing("not_collected") if rng.random() < 0.15 else Notes([Note(text)])
        recs.append(PatientRecord(f"P{i:04d}", modalities={
            "labs": Tabular({f"lab{j}": float(x[i, j]) for j in range(4)}), "notes": notes},
            labels={"a": a[i], "b": b[i]}))
    return recs


def test_auto_wide_l2_is_chosen_per_path_and_task_on_the_validation_split():
    from medmm.data import MultimodalDataset
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.models.wide import WIDE_CS, fit_logistic_path

    recs = _two_modalities(400, 5)
    tr, va = recs[:240], recs[240:320]
    spec = ModalitySpec({"labs": "table", "notes": "text"})
    cfg = ModelConfig(tasks={"a": "binary", "b": "binary"}, modalities=spec, dim=8, wide_l2="auto",
                      task_weights={"a": 1.0, "b": 2.0})
    pre = build_preprocessor(cfg).fit(tr)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    before = {m: model.wide_layer(m).l2.clone() for m in model.wide}
    chosen = model.tune_wide_l2(MultimodalDataset(tr, pre, model.label_columns_flat),
                                MultimodalDataset(va, pre, model.label_columns_flat))
    assert set(chosen) == {"labs", "notes"} and all(set(v) == {"a", "b"} for v in chosen.values())
    for m in ("labs", "notes"):
        wide = model.wide_layer(m)
        have_tr = [r for r in tr if r.present[m]]
        have_va = [r for r in va if r.present[m]]
        X = wide.rows(torch.tensor(np.stack([pre.transform(r)[m] for r in have_tr])))
        Xv = wide.rows(torch.tensor(np.stack([pre.transform(r)[m] for r in have_va])))
        for t, w in (("a", 1.0), ("b", 2.0)):
            got = chosen[m][t]
            # the C scikit-learn's logistic regression validates best on the same rows
            ref = fit_logistic_path(X, np.array([r.labels[t] for r in have_tr]), Xv, np.array([r.labels[t] for r in have_va]))
            assert got["C"] == ref.C and got["C"] in WIDE_CS and got["n"] == len(have_tr)
            # ... turned into the penalty with the same optimum inside the model's loss
            want = w * (1 / len(tr) + cfg.aux_weight / (2 * len(have_tr))) / (2 * ref.C)
            k = model.output_slices[t].start
            assert float(wide.l2[k]) == pytest.approx(want, rel=1e-6)
            assert float(wide.l2[k]) != pytest.approx(float(before[m][k]))
    # the evidence decides: labs carry a, not b (b's weights shrink harder); notes the reverse
    assert chosen["labs"]["b"]["C"] < chosen["labs"]["a"]["C"]
    assert chosen["notes"]["a"]["C"] < chosen["notes"]["b"]["C"]
    # the penalty is each output's own: a's labs weights cost what a's strength says
    wide = model.wide_layer("labs")
    with torch.no_grad():
        wide.raw.fill_(1.0 / wide.lr_scale)
    per_row = wide.raw.shape[1]
    assert float(wide.penalty().detach()) == pytest.approx(per_row * float(wide.l2.sum()), rel=1e-5)


def test_auto_wide_l2_runs_in_training_and_bad_values_are_refused():
    from medmm.data import MultimodalDataset
    from medmm.errors import ConfigError
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    recs = _two_modalities(160, 6)
    tr, va = recs[:100], recs[100:140]
    spec = ModalitySpec({"labs": "table", "notes": "text"})
    cfg = ModelConfig(tasks={"a": "binary", "b": "binary"}, modalities=spec, dim=8, wide_l2="auto")
    pre = build_preprocessor(cfg).fit(tr)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    cols = model.label_columns_flat
    res = train(model, MultimodalDataset(tr, pre, cols), MultimodalDataset(va, pre, cols),
                TrainConfig(epochs=2, min_epochs=1, patience=2, device="cpu", seed=0), progress=False)
    assert set(res.loss_info["wide_l2"]) == {"labs", "notes"}
    assert float(model.wide_layer("notes").l2[model.output_slices["b"].start]) == pytest.approx(
        res.loss_info["wide_l2"]["notes"]["b"]["l2"])
    # a fixed strength is not tuned
    fixed = MultimodalModel(ModelConfig(tasks={"a": "binary"}, modalities=spec, dim=8, wide_l2=1e-3),
                            pre.output_shapes(), pre)
    res = train(fixed, MultimodalDataset(tr, pre, ("a",)), MultimodalDataset(va, pre, ("a",)),
                TrainConfig(epochs=1, min_epochs=1, device="cpu", seed=0), progress=False)
    assert "wide_l2" not in res.loss_info and float(fixed.wide_layer("labs").l2[0]) == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="wide_l2"):
        ModelConfig(tasks={"a": "binary"}, modalities=spec, wide_l2="cv")


def test_cox_losses_are_each_event_s_negative_log_partial_likelihood_term():
    """Checked against the definition term by term, with tied event times (Breslow: tied
    patients are in each other's risk sets) and censored patients in the risk sets only."""
    from medmm.models.wide import cox_losses

    rng = np.random.default_rng(0)
    time = rng.integers(1, 12, size=40).astype(float)  # many ties
    event = rng.random(40) < 0.6
    eta = rng.normal(size=40)
    want = [-(eta[i] - np.log(np.exp(eta[time >= time[i]]).sum())) for i in np.argsort(-time, kind="stable") if event[i]]
    got = cox_losses(eta, time, event)
    np.testing.assert_allclose(np.sort(got), np.sort(want), rtol=1e-10)
    np.testing.assert_allclose(np.sort(cox_losses(eta + 3.0, time, event)), np.sort(want), rtol=1e-10)  # shift-free
    assert cox_losses(eta, time, np.zeros(40, bool)).size == 0


def _surv_labs(n: int, seed: int) -> list[PatientRecord]:
    """Follow-up of a lab panel: the hazard is log-linear in three labs, with random censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    z = 1.0 * x[:, 0] - 0.7 * x[:, 1] + 0.4 * x[:, 2]
    t_event = 100.0 * rng.exponential(size=n) / np.exp(z)
    t_cens = rng.exponential(150.0, size=n)
    time, event = np.round(np.minimum(t_event, t_cens), 1), (t_event <= t_cens).astype(float)
    names = ["creatinine [mg/dL]", "lactate [mmol/L]", "crp [mg/L]", "sodium [mmol/L]", "age [years]"]
    return [PatientRecord(f"P{i:04d}", modalities={"labs": Tabular({c: float(x[i, j]) for j, c in enumerate(names)})},
                          labels={"death.time": float(time[i]), "death.event": event[i]}) for i in range(n)]


def test_a_log_linear_hazard_keeps_the_ridge_cox_model_it_refits(tmp_path):
    """A Cox task on one table: where the hazard is log-linear the wide path alone, refitted as
    scikit-survival's ridge Cox model, is kept (the deep part trained with mini-batch partial
    likelihoods and early stopping on a small validation split had been 0.05 of Harrell's C short
    of a Cox model on WHAS500: benchmarks/bench_survival.py --pipeline)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from medmm.data import MultimodalDataset
    from medmm.evaluate.task_metrics import survival_metrics
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    recs = _surv_labs(400, 3)
    tr, va, test = recs[:240], recs[240:320], recs[320:]
    cfg = ModelConfig(tasks={"death": {"kind": "survival", "method": "cox"}},
                      modalities=ModalitySpec({"labs": "table"}), dim=16)
    pre = build_preprocessor(cfg).fit(tr)
    torch.manual_seed(0)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    assert model.wide_select_applies()
    cols = model.label_columns_flat
    res = train(model, MultimodalDataset(tr, pre, cols), MultimodalDataset(va, pre, cols),
                TrainConfig(epochs=8, min_epochs=3, patience=3, device="cpu", seed=0), progress=False)
    chosen = res.loss_info["wide_or_deep"]
    assert chosen["chosen"] == "wide" and not bool(model.deep_on), chosen
    assert chosen["val_loss_wide_and_deep"] >= chosen["val_loss_wide"] - chosen["val_loss_diff_se"]
    alpha = chosen["wide_cox_alpha"]["death"]
    # the model's log hazard is scikit-survival's ridge Cox model on the featurised rows (the
    # column set chosen with alpha: all, or the table on its own scale) at the chosen alpha,
    # refitted on training + validation rows
    blocks = pre.steps["labs"].column_blocks()
    assert chosen["wide_cox_columns"]["death"] in ("all", "own_scale")
    cols = (np.arange(pre.steps["labs"].n_features_) if chosen["wide_cox_columns"]["death"] == "all" else
            np.sort(np.concatenate([blocks["indicator"], blocks["categorical"], blocks["raw"]])))
    X = np.stack([pre.transform(r)["labs"] for r in tr + va])[:, cols]
    y = np.array([(bool(r.labels["death.event"]), r.labels["death.time"]) for r in tr + va],
                 dtype=[("event", bool), ("time", float)])
    ref = CoxPHSurvivalAnalysis(alpha=alpha, ties="efron", n_iter=200).fit(X, y)
    Xt = np.stack([pre.transform(r)["labs"] for r in test])[:, cols]
    got = model.predict_records(test)[:, 0]
    np.testing.assert_allclose(got - got.mean(), ref.predict(Xt) - ref.predict(Xt).mean(), atol=1e-3)
    t = np.array([r.labels["death.time"] for r in test])
    e = np.array([r.labels["death.event"] for r in test]) > 0.5
    c = survival_metrics(t, e, got)["harrell_c"]
    assert c == pytest.approx(survival_metrics(t, e, ref.predict(Xt))["harrell_c"], abs=1e-9) and c > 0.7
    # Breslow's baseline is fitted on the wide path's log hazards: absolute risks come out
    assert bool(model.head("death").baseline_fitted)


def test_the_cox_path_penalty_is_cross_validated_and_shrinks_noise():
    from medmm.models.wide import COX_ALPHAS, cox_losses, fit_cox_path

    rng = np.random.default_rng(5)
    n = 160
    X = rng.normal(size=(n, 12))
    t_ev = rng.exponential(size=n) / np.exp(1.2 * X[:, 0] - 0.8 * X[:, 1])
    time, event = np.minimum(t_ev, 1.5), t_ev <= 1.5
    fit = fit_cox_path(X[:120], time[:120], event[:120], X[120:], time[120:], event[120:])
    assert set(fit.tried) == set(COX_ALPHAS)
    assert fit.alpha == min(fit.tried, key=lambda a: (fit.tried[a], -a))  # the cross-validated best
    assert fit.coef[0] > 0.5 and fit.coef[1] < -0.3 and np.abs(fit.coef[2:]).max() < 0.5
    assert fit.val_loss == pytest.approx(np.mean(cox_losses(X[120:] @ fit.coef, time[120:], event[120:])))
    # labels unrelated to the table: the strongest penalties win, the log hazards shrink to ~0
    noise = fit_cox_path(X[:120], rng.permutation(time)[:120], event[:120], X[120:], time[120:], event[120:])
    assert noise.alpha >= 10 and np.abs(noise.coef).max() < np.abs(fit.coef).max() / 3
    # no event among the validation rows: nothing to choose with
    assert fit_cox_path(X[:120], time[:120], event[:120], X[120:], time[120:], np.zeros(40, bool)) is None


def test_the_cox_path_chooses_between_column_sets_on_the_same_folds():
    """A table's row holds each numeric column twice (normal scores and its own scale): the
    wide-only Cox model chooses the column set with its alpha by cross-validation; the columns
    left out get no weight, in the fit and in the refit on training + validation rows."""
    from medmm.models.wide import cox_losses, fit_cox_path, refit_cox_path

    rng = np.random.default_rng(11)
    n = 200
    signal = rng.normal(size=(n, 2))
    noise = rng.normal(size=(n, 10))
    X = np.hstack([noise, signal])  # columns 10, 11 carry the hazard
    t_ev = rng.exponential(size=n) / np.exp(1.0 * signal[:, 0] - 0.7 * signal[:, 1])
    time, event = np.minimum(t_ev, 1.5), t_ev <= 1.5
    sets = {"all": None, "signal": np.array([10, 11]), "noise": np.arange(10)}
    fit = fit_cox_path(X[:150], time[:150], event[:150], X[150:], time[150:], event[150:], column_sets=sets)
    assert set(fit.sets_tried) == {"all", "signal", "noise"}
    assert fit.columns_name == min(fit.sets_tried, key=fit.sets_tried.get) == "signal"
    assert fit.sets_tried["noise"] > fit.sets_tried["signal"]
    assert fit.tried[fit.alpha] == pytest.approx(fit.sets_tried["signal"])
    assert np.all(fit.coef[:10] == 0) and fit.coef[10] > 0.4 and fit.coef[11] < -0.2
    assert fit.val_loss == pytest.approx(np.mean(cox_losses(X[150:] @ fit.coef, time[150:], event[150:])))
    refit = refit_cox_path(fit, X[:150], time[:150], event[:150], X[150:], time[150:], event[150:])
    assert refit.columns_name == "signal" and np.all(refit.coef[:10] == 0)
    assert not np.allclose(refit.coef[10:], fit.coef[10:])  # refitted on the validation rows too
    # without sets: all columns, as before
    plain = fit_cox_path(X[:150], time[:150], event[:150], X[150:], time[150:], event[150:])
    assert plain.columns_name == "all" and plain.columns is None and set(plain.sets_tried) == {"all"}
