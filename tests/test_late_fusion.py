"""After training, on the validation split: calibrated late fusion (ModelConfig.late_fusion) and the
selection of the unimodal residuals (ModelConfig.residual_select)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.records import Missing, ModalitySpec, PatientRecord, Tabular


def _cohort(n: int, seed: int, noise_panel: bool = False) -> list[PatientRecord]:
    """Two lab panels, each with its own evidence on ``y`` (conditionally independent), each
    missing for some patients as in a real export; with ``noise_panel`` a third (urinalysis) that
    carries nothing on ``y``."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    a = rng.normal(size=(n, 3)) + 1.2 * y[:, None] * np.array([1.0, 0.5, 0.0])
    b = rng.normal(size=(n, 3)) + 1.0 * y[:, None] * np.array([0.0, 0.8, 0.8])
    u = rng.normal(size=(n, 8))
    recs = []
    for i in range(n):
        # as a LIS export: units in the column names, a cell now and then not resulted
        chem = {c: None if rng.random() < 0.05 else float(a[i, j])
                for j, c in enumerate(("sodium [mmol/L]", "creatinine [umol/L]", "crp [mg/L]"))}
        blood = {c: None if rng.random() < 0.05 else float(b[i, j])
                 for j, c in enumerate(("wbc [10^9/L]", "hb [g/dL]", "plt [10^9/L]"))}
        mods = {"chem": Tabular(chem) if rng.random() > 0.2 else Missing("not_collected"),
                "blood": Tabular(blood) if rng.random() > 0.2 else Missing("not_collected")}
        if noise_panel:
            mods["urine"] = Tabular({f"ua{j}": float(u[i, j]) for j in range(8)})
        recs.append(PatientRecord(f"P{i:04d}", modalities=mods, labels={"y": y[i]}))
    return recs


def _trained(late: bool, seed: int = 0, noise_panel: bool = False, residual_select: bool = False):
    from medmm.data import MultimodalDataset
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    recs = _cohort(600, seed, noise_panel)
    tr, va, te = recs[:300], recs[300:450], recs[450:]
    kinds = {"chem": "table", "blood": "table", **({"urine": "table"} if noise_panel else {})}
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=ModalitySpec(kinds), dim=8,
                      late_fusion=late, residual_select=residual_select)
    pre = build_preprocessor(cfg).fit(tr)
    torch.manual_seed(seed)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    res = train(model, MultimodalDataset(tr, pre, ("y",)), MultimodalDataset(va, pre, ("y",)),
                TrainConfig(epochs=6, min_epochs=3, patience=3, device="cpu", seed=seed), progress=False)
    return model, pre, res, va, te


def _features(model, pre, recs):
    """[fused logit, unimodal logits where present, presence] with the calibration off."""
    from medmm.data import collate, encode_records

    batch = collate(encode_records(recs, pre), model.modalities, pre.output_shapes(), ())
    on, coef, bias = model.late_on.clone(), model.late_coef.clone(), model.late_bias.clone()
    model.reset_late_fusion()
    model.eval()
    with torch.no_grad():
        logits, aux = model(batch.values, batch.present, return_aux=True)
    model.late_on.copy_(on)
    model.late_coef.copy_(coef)
    model.late_bias.copy_(bias)
    model.late_enabled = bool(on.any())
    p = batch.present.numpy().astype(float)
    uni = np.stack([aux[m][0][:, 0].numpy() * p[:, j] for j, m in enumerate(model.modalities)], 1)
    return np.column_stack([logits[:, 0].numpy(), uni, p]), batch


def test_a_miscalibrated_path_is_reweighted_and_the_stack_is_the_logistic_regression_it_fitted(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from medmm.data import MultimodalDataset

    model, pre, res, va, te = _trained(late=True)
    assert "late_fusion" in res.loss_info  # the trainer ran it (kept or not, it says why)
    info = res.loss_info["late_fusion"]["y"]
    assert {"kept", "val_loss_model", "val_loss_stacked_cv", "diff_se"} <= set(info)
    # spoil one path: its unimodal logit 10x too confident; the fused output inherits the error
    with torch.no_grad():
        model.aux_heads["chem"].weight.mul_(10.0)
        model.aux_heads["chem"].bias.mul_(10.0)
    model.reset_late_fusion()
    spoiled_val = _features(model, pre, va)[0][:, 0]
    fitted = model.fit_late_fusion(MultimodalDataset(va, pre, ("y",)))
    got = fitted["y"]
    assert got["kept"], got
    assert got["val_loss_stacked_cv"] < got["val_loss_model"] - got["diff_se"]
    # the spoiled path's weight undoes (much of) the 10x: the fused logit and the path together
    w = got["weights"]
    assert w["fused"] + w["chem"] < 0.6 * (w["fused"] + w["blood"]), w
    # the model's output is scikit-learn's logistic regression on the same features, at the chosen C
    Xv, _ = _features(model, pre, va)
    yv = np.array([r.labels["y"] for r in va])
    np.testing.assert_allclose(Xv[:, 0], spoiled_val, atol=1e-5)
    ref = LogisticRegression(C=got["C"], max_iter=5000).fit(Xv, yv)
    Xt, batch = _features(model, pre, te)
    with torch.no_grad():
        out = model(batch.values, batch.present)[:, 0].numpy()
    np.testing.assert_allclose(out, ref.decision_function(Xt), atol=2e-3)
    # ... and it is better on new patients than the spoiled fused output
    from sklearn.metrics import log_loss

    yt = np.array([r.labels["y"] for r in te])
    assert log_loss(yt, 1 / (1 + np.exp(-out))) < log_loss(yt, 1 / (1 + np.exp(-Xt[:, 0])))
    # a patient without either panel gets the stack's presence terms, as every other pattern
    blank = PatientRecord("X", modalities={"chem": Missing(), "blood": Missing()}, labels={})
    assert model.predict_records([blank])[0, 0] == pytest.approx(
        1 / (1 + np.exp(-ref.decision_function(_features(model, pre, [blank])[0])[0])), abs=1e-3)
    # the calibration travels with the bundle; weights saved before it existed load with it off
    again = type(model).load(model.save(tmp_path / "m"))
    assert again.late_enabled
    np.testing.assert_allclose(again.predict_records(te), model.predict_records(te), atol=1e-6)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("late_")}
    fresh = type(model)(model.config, pre.output_shapes(), pre)
    fresh.load_state_dict(old)
    assert not fresh.late_enabled and not bool(fresh.late_on.any())


def test_late_fusion_is_off_by_default_and_not_for_one_modality():
    from medmm.models import ModelConfig, MultimodalModel

    model, pre, res, va, te = _trained(late=False)
    assert "late_fusion" not in res.loss_info and not model.late_enabled
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=ModalitySpec({"chem": "table"}), dim=8, late_fusion=True)
    assert not MultimodalModel(cfg, {"chem": (3,)}).late_fusion_applies()
    two = ModalitySpec({"chem": "table", "blood": "table"})
    # without the unimodal residual path there is nothing to stack or gate
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=two, dim=8, late_fusion=True, unimodal_residual=False,
                      aux_weight=0.0)
    assert not MultimodalModel(cfg, {"chem": (3,), "blood": (3,)}).late_fusion_applies()
    # a regression task alone: no binary output to calibrate
    cfg = ModelConfig(tasks={"hb": "regression"}, modalities=two, dim=8, late_fusion=True)
    assert not MultimodalModel(cfg, {"chem": (3,), "blood": (3,)}).late_fusion_applies()


def test_a_path_without_evidence_is_dropped_from_the_fused_logit_and_the_others_stay(tmp_path):
    from medmm.data import collate, encode_records

    model, pre, res, va, te = _trained(late=False, noise_panel=True, residual_select=True)
    got = res.loss_info["residual_select"]["y"]
    assert got["dropped"] == ["urine"], got
    # dropping an informative panel would cost validation log loss: each was tried and kept
    assert all(v[0] > 0 for m, v in got["val_loss_change_if_dropped"].items() if m != "urine"), got
    j = list(model.modalities).index("urine")
    assert float(model.uni_gate[j, 0]) == 0.0 and float(model.uni_gate.sum()) == len(model.modalities) - 1
    # the output is the fused logit without that path's residual
    batch = collate(encode_records(te, pre), model.modalities, pre.output_shapes(), ())
    model.eval()
    with torch.no_grad():
        gated = model(batch.values, batch.present)[:, 0]
        uni = model.unimodal_logits("urine", batch.values["urine"], batch.present[:, j])[:, 0]
        model.uni_gate.fill_(1.0)
        full = model(batch.values, batch.present)[:, 0]
        model.uni_gate[j, 0] = 0.0
    torch.testing.assert_close(gated, full - uni, atol=1e-5, rtol=0)
    # the gate travels with the bundle
    again = type(model).load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(again.predict_records(te), model.predict_records(te), atol=1e-6)
    # a late fusion fitted afterwards keeps the selection and stacks the gated residuals
    from medmm.data import MultimodalDataset

    model.fit_late_fusion(MultimodalDataset(va, pre, ("y",)), margin_se=-np.inf)
    assert float(model.uni_gate[j, 0]) == 0.0 and model.late_enabled
    with torch.no_grad():
        late_out = model(batch.values, batch.present)[:, 0]
        p = batch.present.float()
        unis = [model.unimodal_logits(m, batch.values[m], batch.present[:, i])[:, 0] * p[:, i] * model.uni_gate[i, 0]
                for i, m in enumerate(model.modalities)]
        feats = torch.stack([gated, *unis, *p.T], 1)
    torch.testing.assert_close(late_out, feats @ model.late_coef[0] + model.late_bias[0], atol=1e-4, rtol=0)
    # off by default
    model2, _, res2, _, _ = _trained(late=False, noise_panel=True)
    assert "residual_select" not in res2.loss_info and float(model2.uni_gate.min()) == 1.0


def test_a_weak_path_with_its_own_evidence_is_not_dropped(monkeypatch):
    """The loss rule alone on a small validation split can drop a weak but real path (it did on
    the demo: EHR from the disease score); a path whose own validation AUROC is more than one
    standard error above chance is never a candidate, the urinalysis noise still is."""
    from medmm.metrics import auroc_with_se

    model, *_ = _trained(False, noise_panel=True)
    assert list(model.modalities) == ["chem", "blood", "urine"]
    rng = np.random.default_rng(11)
    n = 80
    y = (rng.random(n) < 0.4).astype(float)
    s = 2 * y - 1
    U = np.stack([1.5 * s + rng.normal(0, 1.0, n),    # chem: strong
                  0.15 * s + rng.normal(0, 0.5, n),   # blood: weak (own AUROC 0.73), noisy
                  rng.normal(0, 0.3, n)], -1)[:, None, :]  # urine: noise
    F = U.sum(-1) - 0.4
    P, Y, K = np.ones((n, 3)), y[:, None], np.ones((n, 1), dtype=bool)
    monkeypatch.setattr(model, "_validation_outputs", lambda ds: (F, U, P, Y, K))
    a, se = auroc_with_se(y, U[:, 0, 1])
    assert a - 0.5 > se  # the weak path shows evidence of its own
    loss_only = model.select_unimodal_paths([0], signal_se=None)
    assert loss_only["y"]["dropped"] == ["urine", "blood"]  # what the loss rule alone does here
    res = model.select_unimodal_paths([0])
    assert res["y"]["dropped"] == ["urine"]
    assert model.uni_gate[:, 0].tolist() == [1.0, 1.0, 0.0]
    assert res["y"]["own_val_auroc"]["blood"][0] == pytest.approx(a, abs=1e-4)


def test_auroc_standard_error_is_delong_s():
    from sklearn.metrics import roc_auc_score

    from medmm.metrics import auroc_with_se

    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(float)
    score = np.round(y + rng.normal(0, 1.0, 200), 1)  # rounded: ties count one half
    a, se = auroc_with_se(y, score)
    assert a == pytest.approx(roc_auc_score(y, score))
    pos, neg = score[y > 0], score[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # DeLong's kernel, directly
    v10, v01 = psi.mean(1), psi.mean(0)
    assert se == pytest.approx(np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)))
    boots = [roc_auc_score(y[i], score[i]) for i in (rng.integers(0, 200, 200) for _ in range(400))]
    assert abs(np.std(boots) - se) < 0.2 * se  # the bootstrap agrees
    assert auroc_with_se(np.zeros(5), np.arange(5.0)) == (0.5, float("inf"))
