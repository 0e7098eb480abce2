"""Metrics, bootstrap CIs, DeLong, calibration, subgroups and Shapley values (no model needed)."""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from medmm.evaluate.bootstrap import OperatingPoints, bootstrap_metrics, metric_arrays
from medmm.evaluate.calibration import IsotonicCalibration, TaskCalibrator, TemperatureScaling
from medmm.evaluate.compare import compare_predictions, delong_test
from medmm.evaluate.metrics import choose_thresholds, expected_calibration_error
from medmm.evaluate.robustness import shapley_values
from medmm.evaluate.scoring import ScoredCohort, age_band, subset_name
from medmm.evaluate.subgroups import SmallSubgroupWarning, subgroup_metrics


def _data(n=400, seed=0, shift=1.5, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    p = 1 / (1 + np.exp(-(shift * y + rng.normal(size=n) - 1)))
    return y, (np.round(p, 1) if ties else p)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_match_sklearn(ties):
    y, p = _data(ties=ties)
    w = np.random.default_rng(1).integers(0, 4, len(y)).astype(np.float32)
    m = metric_arrays(np.vstack([np.ones_like(w), w]), y, p)
    assert m["auroc"][0] == pytest.approx(roc_auc_score(y, p))
    assert m["auroc"][1] == pytest.approx(roc_auc_score(y, p, sample_weight=w))
    assert m["auprc"][0] == pytest.approx(average_precision_score(y, p))
    assert m["auprc"][1] == pytest.approx(average_precision_score(y, p, sample_weight=w))
    assert m["brier"][0] == pytest.approx(brier_score_loss(y, p), rel=1e-5)
    assert m["ece"][0] == pytest.approx(expected_calibration_error(y, p), rel=1e-5)


def test_operating_points_match_brute_force():
    y, p = _data(300, seed=3)
    ops = OperatingPoints(fixed=0.4, target_sensitivity=0.8)
    m = metric_arrays(np.ones((1, len(y)), np.float32), y, p, ops=ops)
    pred = p >= 0.4
    tp, fp = np.sum(pred & (y == 1)), np.sum(pred & (y == 0))
    fn, tn = np.sum(~pred & (y == 1)), np.sum(~pred & (y == 0))
    assert m["threshold_0.4.sensitivity"][0] == pytest.approx(tp / (tp + fn))
    assert m["threshold_0.4.specificity"][0] == pytest.approx(tn / (tn + fp))
    assert m["threshold_0.4.ppv"][0] == pytest.approx(tp / (tp + fp))
    assert m["threshold_0.4.npv"][0] == pytest.approx(tn / (tn + fn))
    assert m["threshold_0.4.f1"][0] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # Youden: the best sens + spec - 1 over every candidate threshold
    j = [np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1 for t in np.unique(p)]
    got = m["youden.sensitivity"][0] + m["youden.specificity"][0] - 1
    assert got == pytest.approx(max(j))
    # target sensitivity: reached, and by the highest such threshold
    t = m["sensitivity_0.8.threshold"][0]
    assert np.mean(p[y == 1] >= t) >= 0.8
    assert np.mean(p[y == 1] >= np.min(p[p > t])) < 0.8
    assert choose_thresholds(y, p, target_sensitivity=0.8)["youden"] == m["youden.threshold"][0]


def test_bootstrap_cis_are_seeded_contain_the_estimate_and_shrink_with_n():
    y, p = _data(200)
    a = bootstrap_metrics(y, p, n_boot=300, seed=5)
    b = bootstrap_metrics(y, p, n_boot=300, seed=5)
    assert a["auroc"] == b["auroc"]
    for k in ("auroc", "auprc", "brier", "ece", "youden.sensitivity"):
        est, lo, hi = a[k]
        assert lo <= est <= hi and lo < hi
    y4, p4 = _data(3200, seed=1)
    big = bootstrap_metrics(y4, p4, n_boot=300, seed=5)
    width = lambda r: r["auroc"][2] - r["auroc"][1]  # noqa: E731
    assert width(big) < 0.5 * width(a)  # 16x the patients: about a quarter of the width
    assert a["calibration"]["n"].sum() == len(y)


def test_unknown_labels_are_dropped_and_one_class_gives_nan():
    y, p = _data(100)
    y2 = y.copy()
    y2[:10] = np.nan
    r = bootstrap_metrics(y2, p, n_boot=20)
    assert r["n"] == 90
    assert r["auroc"][0] == pytest.approx(roc_auc_score(y[10:], p[10:]))
    r1 = bootstrap_metrics(np.ones(20), p[:20], n_boot=20)
    assert np.isnan(r1["auroc"][0])


def _delong_brute(y, p1, p2):
    """DeLong's variance from its definition (O(mn) structural components)."""
    y = y.astype(bool)

    def comps(p):
        x, z = p[y], p[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    a1, v10_1, v01_1 = comps(p1)
    a2, v10_2, v01_2 = comps(p2)
    s10 = np.cov(np.vstack([v10_1, v10_2]))
    s01 = np.cov(np.vstack([v01_1, v01_2]))
    s = s10 / y.sum() + s01 / (~y).sum()
    return a1 - a2, np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])


def test_delong_matches_its_definition_and_detects_a_real_difference():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(float)
    good = y * 1.5 + rng.normal(size=300)
    weak = y * 0.3 + rng.normal(size=300)
    d = delong_test(y, good, np.round(weak, 1))
    diff, se = _delong_brute(y, good, np.round(weak, 1))
    assert d["difference"] == pytest.approx(diff)
    assert d["se"] == pytest.approx(se)
    assert d["auroc_1"] == pytest.approx(roc_auc_score(y, good))
    assert d["p_value"] < 1e-4 and d["low"] > 0
    same = delong_test(y, good, good)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_paired_bootstrap_comparison():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.4).astype(float)
    good = 1 / (1 + np.exp(-(y * 2 + rng.normal(size=300) - 1)))
    weak = 1 / (1 + np.exp(-(y * 0.5 + rng.normal(size=300) - 1)))
    df = compare_predictions(y, good, weak, n_boot=300)
    row = df[(df.metric == "auprc")].iloc[0]
    assert row["difference"] > 0 and row["low"] > 0 and row["p_value"] < 0.05
    assert set(df.method) == {"DeLong", "paired bootstrap"}
    same = compare_predictions(y, good, good, n_boot=100)
    assert np.allclose(same["difference"].dropna(), 0)


def test_temperature_scaling_recovers_the_temperature_and_isotonic_improves_ece(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(float)
    over = 1 / (1 + np.exp(-2.5 * z))  # overconfident by a factor 2.5
    ts = TemperatureScaling().fit(y[:2000], over[:2000])
    assert ts.temperature_ == pytest.approx(2.5, rel=0.15)
    after = ts.transform(over[2000:])
    assert expected_calibration_error(y[2000:], after) < 0.5 * expected_calibration_error(y[2000:], over[2000:])
    iso = IsotonicCalibration().fit(y[:2000], over[:2000])
    assert expected_calibration_error(y[2000:], iso.transform(over[2000:])) < expected_calibration_error(y[2000:], over[2000:])
    val = pd.DataFrame({"label_a": y[:2000], "prob_a": over[:2000]})
    cal = TaskCalibrator(method="isotonic").fit(val, ["a"])
    path = cal.save(tmp_path / "calibration.json")
    back = TaskCalibrator.load(path)
    test = pd.DataFrame({"label_a": y[2000:], "prob_a": over[2000:]})
    assert np.allclose(back.transform(test)["prob_a"], cal.transform(test)["prob_a"])
    assert np.allclose(back.apply(over[2000:, None], ["a"])[:, 0], iso.transform(over[2000:]))


def test_subgroups_flag_and_warn_small_groups():
    y, p = _data(200, seed=4)
    df = pd.DataFrame({"label_t": y, "prob_t": p, "site": ["a"] * 190 + ["b"] * 10, "sex": ["F", "M"] * 100})
    with pytest.warns(SmallSubgroupWarning, match="site=b"):
        sub = subgroup_metrics(df, ["t"], by=["site", "sex"], n_boot=50)
    assert set(sub.column) == {"site", "sex"}
    small = sub[(sub.column == "site") & (sub.group == "b")].iloc[0]
    assert small.too_small and small.n == 10
    big = sub[(sub.column == "site") & (sub.group == "a")].iloc[0]
    assert not big.too_small
    assert big.auroc == pytest.approx(roc_auc_score(y[:190], p[:190]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subgroup_metrics(df, ["t"], by=["sex"], n_boot=20)


def test_age_bands():
    assert [age_band(a) for a in (30, 50, 64.9, 65, 80, None, "x")] == ["<50", "50-64", "50-64", "65-79", "80+",
                                                                         "unknown", "unknown"]


def test_shapley_over_modalities_on_a_known_game():
    """Only 'image' and 'ehr' carry signal, additively in logit space: their Shapley values
    are the whole gain, notes and vitals get none, and the values add up (efficiency)."""
    rng = np.random.default_rng(0)
    n = 600
    mods = ("image", "notes", "vitals", "ehr")
    y = (rng.random(n) < 0.5).astype(float)
    ev = {"image": 1.5 * (2 * y - 1) + rng.normal(size=n), "ehr": 0.8 * (2 * y - 1) + rng.normal(size=n)}
    masked = {}
    for r in range(5):
        for s in combinations(mods, r):
            logit = sum((ev[m] for m in s if m in ev), np.zeros(n))
            masked[subset_name(s)] = (1 / (1 + np.exp(-logit)))[:, None]
    preds = pd.DataFrame({"patient_id": [str(i) for i in range(n)], "pattern": "image+notes+vitals+ehr",
                          "label_t": y, "prob_t": masked["image+notes+vitals+ehr"][:, 0]})
    sh = shapley_values(ScoredCohort(preds, ("t",), mods, masked)).set_index("modality")
    total = roc_auc_score(y, preds.prob_t) - 0.5
    assert sh.shapley_auroc.sum() == pytest.approx(total)
    assert sh.loc["notes", "shapley_auroc"] == pytest.approx(0) and sh.loc["vitals", "mean_abs_logit_shapley"] == 0
    assert sh.loc["image", "shapley_auroc"] > sh.loc["ehr", "shapley_auroc"] > 0
    # additive game: a patient's logit Shapley value is exactly its modality's evidence
    assert sh.loc["image", "mean_abs_logit_shapley"] == pytest.approx(np.mean(np.abs(ev["image"])))


def test_baseline_table_compares_on_patients_with_the_baselines_modalities():
    from medmm.evaluate.robustness import baseline_table

    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.5).astype(float)
    pattern = np.where(rng.random(n) < 0.5, "image+notes", "notes")
    fused = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(size=n))))
    weak = 1 / (1 + np.exp(-(0.3 * (2 * y - 1) + rng.normal(size=n))))
    preds = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "pattern": pattern, "label_t": y,
                          "prob_t": fused})
    base = pd.DataFrame({"patient_id": preds.patient_id[::-1], "prob_t": weak[::-1]})  # order does not matter
    df = baseline_table(preds, {"image only": (base, ("image",))}, ["t"])
    row = df.iloc[0]
    sel = pattern == "image+notes"
    assert row.n == sel.sum()
    assert row.auroc_fused == pytest.approx(roc_auc_score(y[sel], fused[sel]))
    assert row.auroc_baseline == pytest.approx(roc_auc_score(y[sel], weak[sel]))
    assert row.fusion_helps and row.p_value < 1e-3


def test_compare_by_group():
    from medmm.evaluate.compare import compare_by_group

    rng = np.random.default_rng(1)
    n = 300
    y = (rng.random(n) < 0.5).astype(float)
    site = np.where(rng.random(n) < 0.5, "a", "b")
    good = y * 2 + rng.normal(size=n)
    # model 2 is as good at site a and useless at site b
    other = np.where(site == "a", good, rng.normal(size=n))
    p1 = pd.DataFrame({"patient_id": range(n), "site": site, "label_t": y, "prob_t": good})
    p2 = pd.DataFrame({"patient_id": range(n), "prob_t": other})
    df = compare_by_group(p1, p2, ["t"], ["site"], names=("one", "two")).set_index("group")
    assert df.loc["a", "difference"] == pytest.approx(0) and df.loc["a", "n"] == (site == "a").sum()
    assert df.loc["b", "low"] > 0 and df.loc["b", "p_value"] < 1e-3
    assert df.loc["b", "one"] == pytest.approx(roc_auc_score(y[site == "b"], good[site == "b"]))


def test_subgroups_order_age_bands_by_age():
    y, p = _data(120, seed=6)
    bands = np.array(["80+", "<50", "unknown", "50-64", "65-79"] * 24)
    df = pd.DataFrame({"label_t": y, "prob_t": p, "age_band": bands})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSubgroupWarning)
        sub = subgroup_metrics(df, ["t"], by=["age_band"], n_boot=10)
    assert list(sub.group) == ["<50", "50-64", "65-79", "80+", "unknown"]


def test_roc_and_pr_figures_share_one_bootstrap_per_series_and_task(monkeypatch):
    from medmm.evaluate import report

    rng = np.random.default_rng(0)
    frames = {}
    for name in ("model", "other"):
        d = {}
        for t in ("a", "b"):
            y = rng.integers(0, 2, 120).astype(float)
            d[f"label_{t}"], d[f"prob_{t}"] = y, np.clip(0.3 * y + rng.uniform(0, 0.7, 120), 0, 1)
        frames[name] = pd.DataFrame(d)
    calls = []
    real = report._curve_bands
    monkeypatch.setattr(report, "_curve_bands", lambda *a, **k: calls.append(1) or real(*a, **k))
    roc, pr = report.curve_figures(frames["model"], ["a", "b"], n_boot=20, labels={"other": frames["other"]})
    assert len(calls) == 4  # 2 series x 2 tasks, not twice that
    alone_roc = report.roc_figure(frames["model"], ["a", "b"], n_boot=20, labels={"other": frames["other"]})
    alone_pr = report.pr_figure(frames["model"], ["a", "b"], n_boot=20, labels={"other": frames["other"]})
    for shared, alone in ((roc, alone_roc), (pr, alone_pr)):
        for ax1, ax2 in zip(shared.axes, alone.axes):
            assert [ln.get_label() for ln in ax1.lines] == [ln.get_label() for ln in ax2.lines]
            for l1, l2 in zip(ax1.lines, ax2.lines):
                assert np.allclose(l1.get_ydata(), l2.get_ydata())
            assert "ROC" in roc.axes[0].get_title() and "PR" in pr.axes[0].get_title()
