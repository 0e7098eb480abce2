"""``preprocess.ehr.numeric_splines``: a B-spline basis per numeric EHR column, so that a linear
model (the wide path, the MLP's first layer) can express thresholds and U-shapes."""

import warnings

import numpy as np
import pytest

from medmm.errors import ConfigError
from medmm.records import Tabular


def _lis_export(n: int, seed: int):
    """Rows as a lab system exports them: unit-named columns, unresulted cells ('?', empty), a
    categorical column; the outcome is U-shaped in sodium (hypo- and hypernatraemia both bad) and
    has nothing to do with haemoglobin."""
    rng = np.random.default_rng(seed)
    sodium = rng.normal(139.0, 4.5, n)
    rows, y = [], []
    for i in range(n):
        na = round(float(sodium[i]), 1)
        cell = "?" if i % 23 == 0 else (None if i % 17 == 0 else na)
        rows.append(Tabular({"patient_id": f"P{i:04d}", "sodium [mmol/L]": cell,
                             "hemoglobin [g/dL]": round(float(rng.normal(13.5, 1.6)), 1),
                             "smoking": rng.choice(["never", "former", "current"])}))
        risk = 1.0 / (1.0 + np.exp(-(3.0 * abs(na - 139.0) / 4.5 - 3.5)))
        y.append(int(rng.random() < risk))
    return rows, np.asarray(y)


def _oracle_auroc() -> float:
    """The true risk's ranking (distance from 139 mmol/L; the unresulted rows tied) on the held-out rows."""
    from sklearn.metrics import roc_auc_score

    rows, y = _lis_export(1200, seed=3)
    na = [r.values["sodium [mmol/L]"] for r in rows[800:]]
    return roc_auc_score(y[800:], [abs(v - 139.0) if isinstance(v, float) else 0.0 for v in na])


def _held_out_auroc(numeric_splines: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from medmm.preprocess.tabular import TabularPreprocessor

    rows, y = _lis_export(1200, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the '?' placeholder warning
        pre = TabularPreprocessor(numeric_splines=numeric_splines).fit(rows[:800])
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(pre.transform_many(rows[:800]), y[:800])
    return roc_auc_score(y[800:], lr.predict_proba(pre.transform_many(rows[800:]))[:, 1])


def test_splines_let_a_linear_model_learn_a_u_shape():
    plain, splines, oracle = _held_out_auroc(0), _held_out_auroc(8), _oracle_auroc()
    assert oracle > 0.75
    assert plain < 0.6  # one standardised column: a U is invisible to a linear model
    assert splines > oracle - 0.03


def test_spline_columns_follow_the_numeric_block_and_round_trip(tmp_path):
    from medmm.preprocess.state import read_state, save_state
    from medmm.preprocess.tabular import TabularPreprocessor

    rows, _ = _lis_export(200, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = TabularPreprocessor().fit(rows)
        pre = TabularPreprocessor(numeric_splines=6).fit(rows)
    # 2 numeric columns x (6 knots + 3 - 1) basis functions on top of the plain features
    assert pre.output_shape[0] == plain.output_shape[0] + 2 * (6 + 3 - 1)
    X = pre.transform_many(rows)
    assert np.isfinite(X).all()
    np.testing.assert_array_equal(X[:, :plain.output_shape[0]], plain.transform_many(rows))
    save_state(pre, tmp_path)
    back = read_state(tmp_path)
    assert back.numeric_splines == 6
    np.testing.assert_array_equal(back.transform_many(rows), X)


def test_a_state_saved_before_the_option_loads_without_splines():
    from medmm.preprocess.tabular import TabularPreprocessor

    rows, _ = _lis_export(60, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pre = TabularPreprocessor().fit(rows)
    state, arrays = pre.get_state()
    del state["params"]["numeric_splines"]
    back = TabularPreprocessor.from_state(state, arrays)
    assert back.numeric_splines == 0
    np.testing.assert_array_equal(back.transform_many(rows), pre.transform_many(rows))


def test_too_few_knots_is_a_config_error_naming_the_field():
    from medmm.preprocess.tabular import TabularPreprocessor

    with pytest.raises(ConfigError, match="at least 3 knots") as e:
        TabularPreprocessor(numeric_splines=2)
    assert e.value.column == "preprocess.ehr.numeric_splines"


def test_the_experiment_config_reaches_the_ehr_step(tiny_cohort):
    from medmm.config import load_config
    from medmm.models.multimodal import ModelConfig, build_preprocessor

    cfg = load_config({"cohort": {"manifest": str(tiny_cohort)}, "preprocess": {"ehr": {"numeric_splines": 5}}})
    pre = build_preprocessor(ModelConfig(tasks=["tumor"]), preprocess=cfg.preprocess)
    assert pre.steps["ehr"].numeric_splines == 5


def test_tied_floored_and_constant_lab_columns_as_exports_have_them():
    """Real lab exports: a dipstick graded 0-3, a troponin reported at its detection floor for most
    patients ('<0.01' read as 0.01), a column that is constant at one site and one never resulted:
    quantile knots of such columns coincide; the basis is still built, finite, and as wide as the
    plain features promise."""
    from medmm.preprocess.tabular import TabularPreprocessor

    rng = np.random.default_rng(0)
    rows = [Tabular({"protein [dipstick]": float(rng.integers(0, 4)),
                     "troponin [ng/mL]": 0.01 if rng.random() < 0.93 else round(float(rng.exponential(0.5)), 2),
                     "site_code": 1.0, "ionised calcium [mmol/L]": None,
                     "age": float(rng.normal(60, 10))}) for _ in range(200)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = TabularPreprocessor().fit(rows)
        pre = TabularPreprocessor(numeric_splines=8).fit(rows)
    X = pre.transform_many(rows)
    assert X.shape == (200, pre.n_features_) and np.isfinite(X).all()
    assert pre.n_features_ > plain.n_features_  # the spline block is there
    np.testing.assert_array_equal(X[:, :plain.n_features_], plain.transform_many(rows))  # plain block unchanged


def test_raw_scale_columns_follow_the_others_and_are_on_for_survival_models(tmp_path):
    """``numeric_raw``: each numeric column also on its own scale (median-imputed, standardised on
    the training rows) after every other block; on by default for a model with a survival task,
    off otherwise; saved and loaded with the state (absent in states saved before it: off)."""
    from medmm.models.multimodal import ModelConfig, build_preprocessor
    from medmm.preprocess.state import read_state, save_state
    from medmm.preprocess.tabular import TabularPreprocessor

    rows, _ = _lis_export(200, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = TabularPreprocessor().fit(rows)
        pre = TabularPreprocessor(numeric_splines=4, numeric_raw=True).fit(rows)
    n_plain, n_spline = plain.output_shape[0], 2 * (4 + 3 - 1)
    assert pre.output_shape[0] == n_plain + n_spline + 2
    X = pre.transform_many(rows)
    np.testing.assert_array_equal(X[:, :n_plain], plain.transform_many(rows))
    raw = X[:, n_plain + n_spline:]
    hb = np.array([r.values["hemoglobin [g/dL]"] for r in rows])
    np.testing.assert_allclose(raw[:, 1], (hb - hb.mean()) / hb.std(), atol=1e-5)  # linear in the lab itself
    assert abs(raw[:, 0].mean()) < 0.05 and np.isfinite(raw).all()  # sodium, its '?' and empty cells imputed
    # column_blocks() says where each block sits: together they tile the row, in order
    blocks = pre.column_blocks()
    assert list(blocks) == ["normal", "indicator", "categorical", "spline", "raw"]
    np.testing.assert_array_equal(np.concatenate(list(blocks.values())), np.arange(pre.output_shape[0]))
    np.testing.assert_array_equal(blocks["raw"], np.arange(n_plain + n_spline, n_plain + n_spline + 2))
    assert len(blocks["normal"]) == 2 and len(blocks["spline"]) == n_spline
    np.testing.assert_allclose(X[:, blocks["normal"][1]], plain.transform_many(rows)[:, 1])  # haemoglobin's scores
    assert set(plain.column_blocks()) == {"normal", "indicator", "categorical"}
    save_state(pre, tmp_path)
    back = read_state(tmp_path)
    assert back.numeric_raw and back.numeric_splines == 4
    np.testing.assert_array_equal(back.transform_many(rows), X)
    state, arrays = plain.get_state()
    del state["params"]["numeric_raw"]
    assert not TabularPreprocessor.from_state(state, arrays).numeric_raw

    surv = ModelConfig(tasks={"death": {"kind": "survival", "method": "cox"}, "tumor": "binary"})
    assert build_preprocessor(surv).steps["ehr"].numeric_raw
    assert not build_preprocessor(ModelConfig(tasks=["tumor"])).steps["ehr"].numeric_raw
    assert not build_preprocessor(surv, preprocess={"ehr": {"numeric_raw": False}}).steps["ehr"].numeric_raw


def test_the_fast_single_row_path_computes_the_raw_block():
    """Serving a survival model featurises one row at a time through the numpy mirror, not the
    ~7 ms scikit-learn path: the raw block is mirrored and checked against the fitted transformer."""
    from medmm.preprocess.tabular import TabularPreprocessor

    rows, _ = _lis_export(200, seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pre = TabularPreprocessor(numeric_raw=True).fit(rows)
    fast = pre._fast()
    assert fast is not None and fast.raw_slice is not None
    one = [Tabular({"sodium [mmol/L]": None, "hemoglobin [g/dL]": 21.0, "smoking": "never"})]
    np.testing.assert_allclose(fast.transform(one), pre._sklearn_transform(one), atol=1e-5)
