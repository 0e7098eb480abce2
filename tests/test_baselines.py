"""Classical baselines beside the model: their AUROC is scikit-learn's on the same split; the
comparison's interval is the paired bootstrap of the same patients; `medmm evaluate` reports them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medmm.evaluate.baselines import compare_with_baselines, featurize, fit_baselines, run_baselines
from medmm.records import Note, Notes, PatientRecord, Tabular


@pytest.fixture(scope="module")
def breast_cancer():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target.to_numpy(float)
    rng = np.random.default_rng(0)
    X = X.copy()
    # a real table's gaps: 5% of two lab-like columns not measured
    for col in ("mean texture", "worst smoothness"):
        X.loc[rng.random(len(X)) < 0.05, col] = np.nan
    records = [PatientRecord(patient_id=f"BC{i:03d}", ehr=Tabular(X.iloc[i].to_dict()), labels={"malignant": 1 - y[i]})
               for i in range(len(X))]
    test = rng.random(len(X)) < 0.3
    return X, 1 - y, records, test


def _preprocessor(records):
    from medmm.preprocess import MultimodalPreprocessor

    return MultimodalPreprocessor(modalities=("ehr",)).fit(records)


def test_lr_and_hgb_auroc_equal_scikit_learn_on_the_same_split(breast_cancer):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, records, test = breast_cancer
    train_recs = [r for r, t in zip(records, test) if not t]
    test_recs = [r for r, t in zip(records, test) if t]
    pre = _preprocessor(train_recs)
    fitted = fit_baselines(featurize(train_recs, pre, ["malignant"]), ["malignant"], seed=0)
    preds = fitted.predict(featurize(test_recs, pre, ["malignant"]))
    assert set(preds) == {"logistic_regression", "hist_gradient_boosting"}  # no notes: no TF-IDF baseline
    assert list(preds["logistic_regression"].patient_id) == [r.patient_id for r in test_recs]
    ours = {k: roc_auc_score(y[test], v["prob_malignant"]) for k, v in preds.items()}
    # scikit-learn on the raw table: standardising is affine and HGB bins by quantiles, so the same AUROC
    lr = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=5000)).fit(X[~test], y[~test])
    hgb = HistGradientBoostingClassifier(random_state=0).fit(X[~test], y[~test])
    assert ours["logistic_regression"] == pytest.approx(roc_auc_score(y[test], lr.predict_proba(X[test])[:, 1]),
                                                        abs=2e-3)
    assert ours["hist_gradient_boosting"] == pytest.approx(roc_auc_score(y[test], hgb.predict_proba(X[test])[:, 1]),
                                                           abs=2e-3)
    assert ours["logistic_regression"] > 0.97


def test_tfidf_baseline_equals_scikit_learn_and_gives_the_prior_without_notes():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline

    from medmm.preprocess import MultimodalPreprocessor
    from medmm.synth.real_notes import note_corpus

    corpus = note_corpus(120, seed=1)
    rows = [(text, kind) for kind, notes in sorted(corpus.items()) for text, _ in notes]
    rng = np.random.default_rng(2)
    rng.shuffle(rows)
    kinds = sorted({k for _, k in rows})
    target = kinds[0]
    records = []
    for i, (text, kind) in enumerate(rows):
        notes = Notes([Note(text.replace("\n", " "))]) if i % 10 else Notes([])  # a tenth have no note
        from medmm.records import Missing

        records.append(PatientRecord(patient_id=f"N{i:04d}", notes=notes if len(notes) else Missing("no note"),
                                     labels={"allcaps_format": float(kind == target)}))
    n_train = int(0.7 * len(records))
    train, test = records[:n_train], records[n_train:]
    pre = MultimodalPreprocessor(modalities=("notes",)).fit(train)
    model_preds = pd.DataFrame({"patient_id": [r.patient_id for r in test],
                                "label_allcaps_format": [r.labels["allcaps_format"] for r in test],
                                "prob_allcaps_format": rng.random(len(test))})
    preds, table, _ = run_baselines(train, test, pre, ["allcaps_format"], model_preds, n_boot=300, seed=0)
    assert {"tfidf_lr", "logistic_regression", "hist_gradient_boosting"} <= set(preds)
    has = np.array([not isinstance(r.notes, Missing) for r in test])
    p = preds["tfidf_lr"]["prob_allcaps_format"].to_numpy()
    prior = np.mean([r.labels["allcaps_format"] for r in train])
    assert np.allclose(p[~has], prior)
    tr_rows = [r for r in train if not isinstance(r.notes, Missing)]
    ref = make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2),
                        LogisticRegression(max_iter=5000)).fit([r.notes.text for r in tr_rows],
                                                               [r.labels["allcaps_format"] for r in tr_rows])
    y = np.array([r.labels["allcaps_format"] for r in test])
    ref_p = ref.predict_proba([r.notes.text for r, h in zip(test, has) if h])[:, 1]
    np.testing.assert_allclose(p[has], ref_p, rtol=1e-9)
    row = table[(table.baseline == "tfidf_lr")].iloc[0]
    assert row.auroc_baseline == pytest.approx(roc_auc_score(y, p))
    assert row.auroc_medmm == pytest.approx(roc_auc_score(y, model_preds.prob_allcaps_format))
    assert row.low <= row.difference <= row.high and row.difference < 0  # a random model is worse
    assert row.verdict == ("tfidf_lr better" if row.high < 0 else "no clear difference")


def test_paired_interval_is_zero_width_for_identical_predictions_and_verdict_is_neutral():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.4).astype(float)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    a = pd.DataFrame({"patient_id": [f"p{i}" for i in range(200)], "label_t": y, "prob_t": p})
    same = a[["patient_id", "prob_t"]].iloc[::-1]  # row order does not matter: joined on patient_id
    table = compare_with_baselines(a, {"copy": same}, ["t"], n_boot=300, seed=0)
    row = table.iloc[0]
    assert row.difference == 0 and row.low == 0 and row.high == 0 and row.verdict == "no clear difference"


def test_evaluate_reports_baselines_in_tables_report_and_files(tiny_loaded, tmp_path):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medmm.evaluate.api import evaluate_cohort
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor

    train = list(tiny_loaded.split("train"))
    pre = MultimodalPreprocessor(modalities=("notes", "ehr")).fit(train)
    model = MultimodalModel(ModelConfig(tasks={"tumor": "binary", "disease": "binary"}, modalities=("notes", "ehr"),
                                        dim=8, fusion={"name": "concat"}), pre.output_shapes(), pre).eval()
    res = evaluate_cohort(model, tiny_loaded, split="test", robustness=False, n_boot=200, progress=False,
                          baseline_models=["logistic_regression"], out=tmp_path)
    ref = res.reference_models
    assert set(ref.task) == {"tumor", "disease"} and set(ref.baseline) == {"logistic_regression"}
    # the same featurised inputs through scikit-learn directly
    test = list(tiny_loaded.split("test"))
    feats_tr, feats_te = featurize(train, pre, ["disease"]), featurize(test, pre, ["disease"])
    keep = ~np.isnan(feats_tr.labels["disease"])
    sk = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler(),
                       LogisticRegression(max_iter=5000)).fit(feats_tr.X[keep], feats_tr.labels["disease"][keep])
    yt = feats_te.labels["disease"]
    kt = ~np.isnan(yt)
    expected = roc_auc_score(yt[kt], sk.predict_proba(feats_te.X[kt])[:, 1])
    got = ref[ref.task == "disease"].iloc[0]
    assert got.auroc_baseline == pytest.approx(expected)
    assert got.low <= got.difference <= got.high
    html = (tmp_path / "report.html").read_text()
    assert "better than logistic regression" in html and "logistic_regression" in html
    saved = pd.read_csv(tmp_path / "reference_models.csv")
    assert len(saved) == 2
    assert "eval_auroc_diff_disease_logistic_regression_low" in res.reference_metrics()
    # evaluating the training split itself would flatter the baselines: skipped, with a warning
    res2 = evaluate_cohort(model, tiny_loaded, split="train", robustness=False, n_boot=100, progress=False)
    assert res2.reference_models is None and any("baselines skipped" in w for w in res2.warnings)
