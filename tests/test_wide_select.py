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
