"""The whole flow on a tiny cohort: synth -> load -> train -> evaluate -> MLflow -> reload and predict."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def test_import_medmm_stays_light():
    code = ("import sys, medmm; heavy = [m for m in ('torch', 'monai', 'mlflow', 'sklearn', 'pandas', 'pydicom') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import medmm pulled in {out.stdout.strip()}"


def test_reading_an_experiment_config_does_not_import_torch():
    code = ("import sys, medmm; cfg = medmm.ExperimentConfig.model_validate({'cohort': {'manifest': 'm.csv'}, "
            "'train': {'epochs': 3}}); assert cfg.train_config().epochs == 3; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "medmm", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("synth", "validate", "demo", "train"):
        assert cmd in out.stdout


def test_validate_cli_exit_codes(tiny_cohort, tmp_path):
    from medmm.cli import main

    assert main(["validate", str(tiny_cohort)]) == 0
    bad = tmp_path / "bad.csv"
    df = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    df.loc[0, "notes_path"] = "notes/missing.txt"
    df.to_csv(bad, index=False)
    assert main(["validate", str(bad)]) == 1


def _dying_seed(*args, **kwargs):
    import os

    os._exit(3)


def test_demo_end_to_end_logs_to_mlflow_and_the_model_predicts(tmp_path, monkeypatch, capsys):
    import mlflow

    from medmm.cli import main
    from medmm.cohort import load_cohort
    from medmm.models import MultimodalModel

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--patients", "40", "--image-size", "16", "--epochs", "2", "--seeds", "2",
            "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "oracle AUROC" in printed and "mlflow ui --backend-store-uri" in printed and "written in" in printed

    # the figures are the two seeds' average, beside the oracle with the averaged gap and its CI
    from sklearn.metrics import roc_auc_score

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"tumor", "disease"}
    seed1 = pd.read_parquet(out / "seeds" / "seed_1" / "predictions.parquet")
    seed0 = pd.read_parquet(out / "predictions.parquet")
    for t, m in metrics.items():
        for key in ("auroc", "auprc", "oracle_auroc", "best_single_modality_oracle_auroc"):
            assert 0.0 <= m[key] <= 1.0 or np.isnan(m[key])
        assert m["seeds"] == [0, 1] and len(m["auroc_per_seed"]) == 2
        known = seed0[f"label_{t}"].notna()
        assert m["auroc_per_seed"] == pytest.approx(
            [roc_auc_score(p.loc[known, f"label_{t}"], p.loc[known, f"prob_{t}"]) for p in (seed0, seed1)])
        assert m["auroc"] == pytest.approx(np.mean(m["auroc_per_seed"]))
        gap, low, high = m["gap_to_oracle"]
        assert gap == pytest.approx(m["auroc"] - m["oracle_auroc"]) and low <= gap <= high

    # the run, its params, per-epoch metrics, config and model are in MLflow
    run_info = json.loads((out / "run.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.fusion.name"] == "attention"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert "test_auroc_tumor" in run.data.metrics
    assert not any("patient" in k.lower() for k in run.data.params)  # no identifiers as params
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert "config/resolved_config.json" in artifacts

    # the saved model predicts on raw records with no other file, as the logged pyfunc does
    # a second demo in the same folder reuses the cohort when its settings are the same
    import argparse

    from medmm.commands.demo import add_arguments, make_cohort

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    same = parser.parse_args(["--patients", "40", "--image-size", "16"])  # the demo's other defaults
    assert make_cohort(out / "cohort", same, reuse=True) == (out / "cohort" / "manifest.csv", True)

    # the seeds ran in worker processes (two CPUs or more) or here (one): the same runs either way.
    # Run seed 1 again here, with the workers' share of threads, and compare its predictions
    import torch

    from medmm.commands import demo as demo_cmd

    jobs = demo_cmd._jobs(None, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, demo_cmd._cpus() // jobs) if jobs > 1 else threads)
    try:
        again = tmp_path / "again"
        import shutil

        shutil.copytree(out / "cohort", again / "cohort")
        shutil.copytree(out / "cache", again / "cache")
        assert main(args[:2] + [str(again)] + args[3:] + ["--jobs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "at a time" not in capsys.readouterr().out.split("[2/3]")[1].splitlines()[0]
    rerun = pd.read_parquet(again / "seeds" / "seed_1" / "predictions.parquet")
    np.testing.assert_allclose(rerun["prob_tumor"], seed1["prob_tumor"], atol=1e-6)
    assert demo_cmd._jobs(1, 3) == 1 and demo_cmd._jobs(None, 1) == 1
    assert demo_cmd._jobs(None, 3) == min(3, demo_cmd._cpus())
    if jobs > 1:  # a worker that dies (out of memory, a signal) is a clear error naming --jobs 1
        monkeypatch.setattr(demo_cmd, "_train_seed", _dying_seed)
        assert main(args[:2] + [str(again)] + args[3:] + ["--jobs", "2"]) == 1
        err = capsys.readouterr().err
        assert "a training worker process of the demo died" in err and "--jobs 1" in err

    model = MultimodalModel.load(out / "model")
    records = load_cohort(out / "cohort" / "manifest.csv", progress=False).split("test")
    probs = model.predict_records(records)
    preds = pd.read_parquet(out / "predictions.parquet").set_index("patient_id")
    np.testing.assert_allclose(probs[:, 0], preds.loc[[r.patient_id for r in records], "prob_tumor"], atol=1e-5)

    pyfunc = mlflow.pyfunc.load_model(run_info["model_uri"])
    table = pd.read_csv(out / "cohort" / "manifest.csv", dtype=str, keep_default_na=False)
    table = table[table["split"] == "test"].copy()
    for c in ("image_path", "notes_path", "vitals_path", "ehr_path"):
        table[c] = [str(out / "cohort" / v) if v else "" for v in table[c]]
    got = pyfunc.predict(table[["patient_id", "index_time", "image_path", "notes_path", "vitals_path", "ehr_path"]])
    np.testing.assert_allclose(got["prob_tumor"].to_numpy(), probs[:, 0], atol=1e-5)
    np.testing.assert_allclose(got["prob_disease"].to_numpy(), probs[:, 1], atol=1e-5)

    # other settings write it again (the last check: it replaces the cohort read above)
    assert make_cohort(out / "cohort", argparse.Namespace(**{**vars(same), "image_size": 12}), reuse=True)[1] is False
    assert json.loads((out / "cohort" / "synth_config.json").read_text())["image_size"] == 12
