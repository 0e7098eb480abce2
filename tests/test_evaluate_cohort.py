"""Batch scoring and evaluation of a cohort with a (small, untrained) model; the CLI; MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def model_dir(tiny_loaded, tmp_path_factory):
    import torch

    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor

    torch.manual_seed(0)
    pre = MultimodalPreprocessor().fit(tiny_loaded.split("train"))
    model = MultimodalModel(ModelConfig(tasks={"tumor": "binary", "disease": "binary"}), pre.output_shapes(), pre)
    return model.save(tmp_path_factory.mktemp("eval_model") / "model")


@pytest.fixture(scope="module")
def model(model_dir):
    from medmm.models.multimodal import MultimodalModel

    return MultimodalModel.load(model_dir)


def test_streaming_scores_equal_predict_records_and_masking_is_consistent(model, tiny_cohort, tiny_loaded, tmp_path):
    from medmm.evaluate.scoring import score_cohort

    out = tmp_path / "p.parquet"
    s = score_cohort(model, tiny_cohort, split="test", batch_size=5, subsets=True, out=out, progress=False)
    records = tiny_loaded.split("test")
    assert len(s.predictions) == len(records) > 5
    got = s.predictions[["prob_tumor", "prob_disease"]].to_numpy()
    assert np.allclose(got[:6], model.predict_records(records[:6])[:, :2], atol=1e-6)
    assert list(s.predictions.patient_id) == [r.patient_id for r in records]
    assert (s.predictions.pattern == [r.pattern for r in records]).all()
    assert {"site", "sex", "age_band", "scanner_manufacturer"} <= set(s.predictions.columns)
    # the Parquet file was written batch by batch and holds the same table
    back = pd.read_parquet(out)
    assert len(back) == len(records) and np.allclose(back.prob_tumor, s.predictions.prob_tumor)
    assert len(s.masked) == 16
    # keeping every modality changes nothing; keeping none gives every patient the same prior
    assert np.allclose(s.masked["image+notes+vitals+ehr"], got, atol=1e-6)
    none = s.masked["none"]
    assert np.isfinite(none).all() and np.ptp(none, axis=0).max() < 1e-5
    # the encoder cache is exact: same masked scores as running every encoder for every subset
    plain = score_cohort(model, records[:6], split=None, subsets=[("image",), ("notes", "ehr"), ("vitals", "ehr")],
                         cache_encoders=False, progress=False)
    for k in plain.masked:
        assert np.allclose(plain.masked[k], s.masked[k][:6], atol=1e-6)
    assert (s.predictions.split == "test").all()


@pytest.mark.slow
def test_reader_workers_give_the_same_table(model, tiny_cohort):
    from medmm.evaluate.scoring import score_cohort

    inline = score_cohort(model, tiny_cohort, split="test", batch_size=5, progress=False)
    workers = score_cohort(model, tiny_cohort, split="test", batch_size=5, num_workers=2, progress=False)
    pd.testing.assert_frame_equal(workers.predictions, inline.predictions)


def test_evaluate_cohort_end_to_end(model_dir, tiny_loaded, tmp_path):
    import medmm
    from medmm.evaluate.subgroups import SmallSubgroupWarning

    with pytest.warns(SmallSubgroupWarning):
        res = medmm.evaluate(model_dir, tiny_loaded, split="test", calibrate="temperature", n_boot=100,
                             out=tmp_path / "ev", progress=False, min_subgroup=10, calibration_split="val")
    assert isinstance(res, medmm.EvaluationResult)
    assert medmm.evaluate_cohort.__name__ == "evaluate_cohort"
    summ = res.summary()
    n_test = len(tiny_loaded.split("test"))
    assert list(summ.task) == ["tumor", "disease"] and (summ.n == n_test).all()
    ops = res.operating_points()
    assert {"threshold_0.5", "youden", "sensitivity_0.9", "youden (val)"} <= set(ops["operating point"])
    assert res.calibrated_metrics is not None and "prob_tumor_calibrated" in res.predictions
    assert set(res.calibration_curves["tumor"]) == {"uncalibrated", "temperature"}
    assert len(res.masking) == 16 * 2 and len(res.fusion) == 4 * 2 and len(res.shapley) == 4 * 2
    assert set(res.patterns.column) == {"pattern"}
    files = {p.name for p in (tmp_path / "ev").rglob("*") if p.is_file()}
    assert {"predictions.parquet", "metrics.csv", "report.html", "subgroups.csv", "masking.csv", "shapley.csv",
            "calibration.json", "roc.png", "pr.png", "calibration.png", "subgroups_forest.png",
            "missing_heatmap.png", "confusion.png"} <= files
    report = (tmp_path / "ev" / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 7 and "<script" not in report
    assert "too small" in report and "Shapley" in report
    html = res._repr_html_()
    assert "EvaluationResult" in html and "auroc" in html
    m = res.metrics_frame()
    auc = m[(m.task == "tumor") & (m.metric == "auroc")].iloc[0]
    from sklearn.metrics import roc_auc_score

    assert auc.estimate == pytest.approx(roc_auc_score(res.predictions.label_tumor, res.predictions.prob_tumor))
    cmp = res.compare(res, names=("a", "b"), n_boot=50)
    assert np.allclose(cmp["difference"].dropna(), 0)


def test_evaluate_command(model_dir, tiny_cohort, tmp_path, capsys):
    from medmm.cli import main

    rc = main(["evaluate", str(model_dir), str(tiny_cohort), "--out", str(tmp_path / "cli"), "--bootstrap", "50",
               "--no-robustness", "--split", "test", "--subgroups", "site", "--quiet", "--calibrate", "isotonic"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "auroc" in out and "report:" in out
    sub = pd.read_csv(tmp_path / "cli" / "subgroups.csv")
    assert set(sub.column) == {"site"}
    assert not (tmp_path / "cli" / "masking.csv").exists()
    rc = main(["evaluate", str(tmp_path / "nope"), str(tiny_cohort), "--out", str(tmp_path / "x")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nope: model not found" in err and "runs:/RUN_ID/model" in err  # the path and the fix


@pytest.mark.slow
def test_log_to_mlflow(model, tiny_loaded, tmp_path):
    import mlflow

    from medmm.evaluate.api import evaluate_scored
    from medmm.evaluate.scoring import score_cohort

    res = evaluate_scored(score_cohort(model, tiny_loaded, split="test", progress=False), n_boot=30, min_subgroup=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = res.log_to_mlflow(tracking_uri=uri, experiment="evaltest")
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.tags["medmm.kind"] == "evaluate"
    assert "eval_auroc_tumor" in run.data.metrics and "eval_auroc_tumor_low" in run.data.metrics
    names = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/roc.png", "evaluation/report.html", "evaluation/subgroups_forest.png"} <= names
    assert not any("patient" in k for k in run.data.params)


def test_calibration_fitted_once_is_applied_at_inference(model, tiny_loaded, tmp_path):
    from medmm.evaluate.api import evaluate_scored
    from medmm.evaluate.calibration import CalibratedModel, TaskCalibrator
    from medmm.evaluate.scoring import score_cohort

    test = score_cohort(model, tiny_loaded, split="test", progress=False)
    val = score_cohort(model, tiny_loaded, split="val", progress=False)
    fitted = evaluate_scored(test, val=val, calibrate="isotonic", n_boot=20, min_subgroup=1)
    path = fitted.calibrator.save(tmp_path / "calibration.json")
    again = evaluate_scored(test, calibrate=path, n_boot=20, min_subgroup=1)  # no validation needed now
    assert again.calibration_method == "isotonic"
    assert np.allclose(again.predictions.prob_tumor_calibrated, fitted.predictions.prob_tumor_calibrated)
    wrapped = CalibratedModel(model, TaskCalibrator.load(path))
    recs = tiny_loaded.split("test")[:5]
    assert np.allclose(wrapped.predict_records(recs)[:, 0], fitted.predictions.prob_tumor_calibrated[:5], atol=1e-6)
    assert wrapped.tasks == model.tasks


def test_streamed_splits_match_load_cohort_when_the_manifest_has_none(tiny_cohort, tmp_path):
    from medmm.cohort import load_cohort
    from medmm.evaluate.scoring import iter_record_batches

    df = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False).drop(columns=["split"])
    df.loc[:4, "label_tumor"] = ""  # unknown labels are a stratum of their own
    path = tmp_path / "no_split.csv"  # files are not read here (modalities=())
    df.to_csv(path, index=False)
    want = {r.patient_id: r.split for r in load_cohort(path, progress=False, modalities=()).records}
    got = {r.patient_id: r.split for b in iter_record_batches(path, batch_size=7, modalities=()) for r in b}
    assert got == want and set(got.values()) == {"train", "val", "test"}


def test_streamed_splits_match_load_cohort_with_some_splits_blank_and_bad_rows(tiny_cohort, tmp_path):
    """Training (load_cohort) and evaluation (streamed batches) split through one Cohort:
    given splits are kept, bad rows (no or a duplicate patient_id) are skipped by both."""
    from medmm.cohort import load_cohort
    from medmm.evaluate.scoring import iter_record_batches

    df = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    given = df.loc[::3, ["patient_id", "split"]].set_index("patient_id")["split"].to_dict()
    df.loc[df.index % 3 != 0, "split"] = ""  # two thirds without a split
    df.loc[1, "label_tumor"] = "nan"  # a label cell that is not 0/1
    df.loc[2, "label_tumor"] = "unknown"
    dup = df.iloc[[4]].assign(label_tumor="1" if df.loc[4, "label_tumor"] == "0" else "0")
    no_id = df.iloc[[5]].assign(patient_id="")
    df = pd.concat([df, dup, no_id], ignore_index=True)
    path = tmp_path / "some_split.csv"
    df.to_csv(path, index=False)
    cohort = load_cohort(path, progress=False, modalities=())
    want = {r.patient_id: r.split for r in cohort.records}
    streamed = [r for b in iter_record_batches(path, batch_size=9, modalities=()) for r in b]
    assert len(streamed) == len(want) == 40 and len({r.patient_id for r in streamed}) == 40
    got = {r.patient_id: r.split for r in streamed}
    assert got == want and set(got.values()) == {"train", "val", "test"}
    assert all(got[p] == s for p, s in given.items())  # splits the manifest gives are kept
    assert any("26 patient(s) had no split" in p.message for p in cohort.report.warnings)


def test_fill_splits_only_fills_the_rows_it_should(tmp_path):
    from medmm.cohort import fill_splits

    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(10)],
                       "split": ["test", None, "", "training", "val", None, None, None, None, None],
                       "label_x": ["1", "0"] * 5})
    assert fill_splits(df, seed=3, skip_rows={9}) == 7  # rows 1-3 and 5-8 ("training" is no split)
    assert df.loc[0, "split"] == "test" and df.loc[4, "split"] == "val"
    assert set(df.loc[1:8, "split"]) <= {"train", "val", "test"} and pd.isna(df.loc[9, "split"])
    bare = df.drop(columns=["split"])
    assert fill_splits(bare) == 10 and set(bare["split"]) <= {"train", "val", "test"}
