"""Experiments end to end on the tiny cohort: config-driven run logged to MLflow, registry, pyfunc,
predict command, cross-validation with nested runs, transfer learning, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medmm.config import load_config

BASE = {
    "preprocess": {"image": {"spatial_size": [16, 16, 16]}},
    "model": {"dim": 16},
    "train": {"epochs": 2, "batch_size": 8, "min_epochs": 1, "device": "cpu"},
    "tracking": {"experiment": "tests", "flush_every": 1},
}


def _cfg(manifest, out, uri, **sections):
    data = {"cohort": {"manifest": str(manifest)}, "out_dir": str(out), **{k: dict(v) for k, v in BASE.items()}}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["tracking"] = {**data["tracking"], "tracking_uri": uri}
    return load_config(data)


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def logged(tiny_cohort, tiny_loaded, uri, tmp_path_factory):
    from medmm.experiment import run_experiment

    out = tmp_path_factory.mktemp("run")
    # records built from the manifest in 2 processes (preprocess.workers), images read in 2 DataLoader
    # workers through the on-disk cache (the in-memory path is the default in the other runs)
    cfg = _cfg(tiny_cohort, out, uri, train={"loss": "weighted_bce", "pos_weight": "auto", "num_workers": 2},
               preprocess={"cache_dir": str(out / "image_cache"), "workers": 2},
               tracking={"register_model": "tiny-model", "run_name": "logged"})
    return run_experiment(config=cfg, progress=False), out


def test_run_logs_params_config_environment_plots_and_model(logged, uri):
    from mlflow.tracking import MlflowClient

    res, out = logged
    client = MlflowClient(uri)
    run = client.get_run(res.run_id)
    p = run.data.params
    assert p["train.loss"] == "weighted_bce" and p["model.fusion.name"] == "attention"
    assert p["imbalance.loss"] == "weighted_bce" and p["imbalance.pos_weight"].startswith("[")
    assert int(p["data.n_train"]) > 0 and p["cohort.manifest"] == "manifest.csv"
    assert p["train.num_workers"] == "2" and any((out / "image_cache").rglob("*.npy"))
    assert run.data.tags["medmm.checkpoint_dir"] == str(out / "checkpoints")
    hist = client.get_metric_history(res.run_id, "train_loss")
    assert sorted(m.step for m in hist) == [h["epoch"] for h in res.history]
    assert "test_auroc_tumor" in run.data.metrics
    arts = {a.path for d in ("config", "environment", "plots", "evaluation", "model")
            for a in client.list_artifacts(res.run_id, d)}
    for a in ("config/resolved_config.yaml", "environment/environment.json", "plots/learning_curves.png",
              "plots/roc_test.png", "evaluation/metrics_by_pattern.csv", "model/MLmodel"):
        assert a in arts
    logged_cfg = load_config(client.download_artifacts(res.run_id, "config/resolved_config.yaml"))
    assert logged_cfg.train.loss == "weighted_bce" and logged_cfg.out_dir == str(out)
    versions = client.search_model_versions("name='tiny-model'")
    assert [v.run_id for v in versions] == [res.run_id]


def test_pyfunc_model_scores_a_patient_table(logged, tiny_cohort):
    import mlflow

    res, _ = logged
    mlflow.set_tracking_uri(res.tracking_uri)
    model = mlflow.pyfunc.load_model(res.model_uri)
    table = pd.read_csv(tiny_cohort).head(5)
    for c in ("image_path", "notes_path", "vitals_path", "ehr_path"):
        table[c] = [str(Path(tiny_cohort).parent / v) if isinstance(v, str) else None for v in table[c]]
    out = model.predict(table[["patient_id", "index_time", "image_path", "notes_path", "vitals_path", "ehr_path"]])
    assert set(out.columns) == {"patient_id", "prob_disease", "prob_tumor"}
    assert out["prob_tumor"].between(0, 1).all() and len(out) == 5
    assert model.metadata.get_input_schema() is not None


def test_predict_command_scores_the_manifest(logged, tiny_cohort, tmp_path):
    from medmm.cli import main

    res, out = logged
    dest = tmp_path / "scores.parquet"
    assert main(["predict", str(out / "model"), str(tiny_cohort), "--out", str(dest), "--quiet"]) == 0
    df = pd.read_parquet(dest)
    assert len(df) == 40 and {"patient_id", "pattern", "label_tumor", "prob_tumor", "prob_disease"} <= set(df.columns)
    held = res.predictions.set_index("patient_id")
    mine = df.set_index("patient_id").loc[held.index]
    np.testing.assert_allclose(mine["prob_tumor"], held["prob_tumor"], rtol=1e-5, atol=1e-6)
    assert (mine["pattern"] == held["pattern"]).all()


def test_legacy_keyword_arguments_still_work(tiny_cohort, tiny_loaded, uri, tmp_path):
    from medmm.experiment import run_experiment
    from medmm.models.multimodal import ModelConfig
    from medmm.train.trainer import TrainConfig

    res = run_experiment(tiny_cohort, out_dir=tmp_path, cohort=tiny_loaded, tracking_uri=uri, experiment="legacy",
                         run_name="legacy", model_config=ModelConfig(tasks={"tumor": "binary"}, modalities=("ehr",),
                                                                     fusion={"name": "concat"}),
                         train_config=TrainConfig(epochs=1, max_steps=1), log_model=False, progress=False)
    assert res.model_uri is None and list(res.metrics.task.unique()) == ["tumor"]
    assert (tmp_path / "model" / "medmm_model.json").exists()


def test_cross_validation_nested_runs_and_untouched_holdout(tiny_cohort, tiny_loaded, uri, tmp_path):
    from mlflow.tracking import MlflowClient

    from medmm.experiment import run_experiment

    cfg = _cfg(tiny_cohort, tmp_path, uri, split={"cv_folds": 2}, model={"dim": 16, "modalities": ["notes", "ehr"]},
               tracking={"log_model": False, "plots": False, "run_name": "cv"})
    res = run_experiment(config=cfg, cohort=tiny_loaded, progress=False)
    client = MlflowClient(uri)
    children = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.run_id}'")
    assert sorted(r.data.tags["medmm.fold"] for r in children) == ["0", "1"]
    assert all("fold_auroc_tumor" in r.data.metrics for r in children)
    parent = client.get_run(res.run_id).data.metrics
    assert {"cv_pooled_auroc_tumor", "cv_mean_auroc_tumor", "test_auroc_tumor"} <= set(parent)
    assert set(res.cv_metrics.fold) == {"0", "1", "pooled", "mean", "std", "mean paired difference"}
    oof = pd.read_parquet(tmp_path / "cv_predictions.parquet")
    test_ids = {r.patient_id for r in tiny_loaded.split("test")}
    assert not test_ids & set(oof.patient_id)  # the hold-out never entered model selection
    assert len(oof) == len(tiny_loaded.split("train")) + len(tiny_loaded.split("val"))
    assert set(res.predictions.patient_id) == test_ids


def test_transfer_pretrained_frozen_encoders_stay_fixed(tiny_cohort, tiny_loaded, uri, tmp_path):
    from medmm.experiment import run_experiment
    from medmm.train.checkpoint import load_checkpoint

    cfg = _cfg(tiny_cohort, tmp_path, uri, model={"dim": 16, "modalities": ["notes", "ehr"]},
               transfer={"pretrain_epochs": 2, "pretrain_modalities": ["ehr"], "mode": "frozen"},
               tracking={"log_model": False, "plots": False})
    res = run_experiment(config=cfg, cohort=tiny_loaded, progress=False)
    pre = load_checkpoint(tmp_path / "checkpoints" / "pretrain_ehr")["best_state"]
    # the unimodal stage trains the encoder in place (keys 'encoder.*') or in a copy ('encoders.ehr.*')
    pre = {("encoders.ehr." + k[len("encoder."):] if k.startswith("encoder.") else
            "aux_heads.ehr." + k[len("head."):] if k.startswith("head.") else k): v for k, v in pre.items()}
    final = res.model.state_dict()
    enc = [k for k in pre if k.startswith("encoders.ehr.")]
    assert enc and all(torch.equal(pre[k], final[k]) for k in enc)
    trained = [k for k in final if k.startswith(("heads.", "aux_heads.")) and k in pre]
    assert trained and not all(torch.equal(pre[k], final[k]) for k in trained)


def test_partial_freezing_leaves_the_last_blocks_trainable():
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.train.transfer import freeze_encoders

    model = MultimodalModel(ModelConfig(modalities=("image", "ehr")), {"image": (1, 16, 16, 16), "ehr": (10,)})
    counts = freeze_encoders(model, "partial", unfreeze_last=1)
    for m in ("image", "ehr"):
        enc = model.encoders[m]
        assert 0 < counts[m]["trainable"] < counts[m]["total"]
        assert enc.frozen_stages == len(enc.stages()) - 1
        assert all(p.requires_grad for p in enc.stages()[-1].parameters())
        assert not any(p.requires_grad for st in enc.stages()[:-1] for p in st.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    counts = freeze_encoders(model, "frozen")
    assert all(c["trainable"] == 0 for c in counts.values())
    model.train()
    bns = [mod for mod in model.encoders["image"].modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(bn.training for bn in bns) and model.heads.training


def test_freezing_follows_the_encoders_own_stages():
    """Partial freezing unfreezes the last stage of the encoder's own ``stages()`` (here a
    Transformer's last layer norm, not its whole Transformer); parameters outside every stage
    (its CLS token) are frozen as well."""
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.train.transfer import freeze_encoders

    cfg = ModelConfig(modalities=("vitals",), encoders={"vitals": {"name": "vitals_transformer", "layers": 2,
                                                                   "heads": 2, "dim": 16}})
    model = MultimodalModel(cfg, {"vitals": (6, 5)})
    enc = model.encoders["vitals"]
    counts = freeze_encoders(model, "partial", unfreeze_last=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {f"proj.{k}" for k in ("weight", "bias")}
    assert counts["vitals"]["trainable"] == sum(p.numel() for p in enc.proj.parameters())
    assert freeze_encoders(model, "partial", unfreeze_last=99)["vitals"]["trainable"] > 0
    assert freeze_encoders(model, "frozen")["vitals"]["trainable"] == 0


def test_finetune_keeps_a_configured_freeze_stages():
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.train.transfer import freeze_encoders

    cfg = ModelConfig(modalities=("image",), encoders={"image": {"name": "tiny_cnn3d", "freeze_stages": 2}})
    model = MultimodalModel(cfg, {"image": (1, 16, 16, 16)})
    enc = model.encoders["image"]
    counts = freeze_encoders(model, "finetune")
    assert enc.frozen_stages == 2
    assert not any(p.requires_grad for st in enc.stages()[:2] for p in st.parameters())
    assert all(p.requires_grad for p in enc.stages()[2].parameters())
    assert 0 < counts["image"]["trainable"] < counts["image"]["total"]


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from medmm.config import load_config
    from medmm.experiment import run_experiment

    class KillMidEpoch:
        def on_step_end(self, epoch, batch, loss):
            if epoch == 1 and batch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    run_experiment(config=load_config(sys.argv[1]), callbacks=[KillMidEpoch()], progress=False)
""")


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_cohort, tiny_loaded, tmp_path):
    import json

    from mlflow.tracking import MlflowClient

    from medmm.cli import main
    from medmm.experiment import run_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sections = dict(train={"epochs": 3, "batch_size": 4}, tracking={"log_model": False, "plots": False})
    ref = run_experiment(config=_cfg(tiny_cohort, tmp_path / "ref", uri, **sections), cohort=tiny_loaded,
                         progress=False)
    cfg = _cfg(tiny_cohort, tmp_path / "killed", uri, **sections)
    (tmp_path / "exp.yaml").write_text(cfg.to_yaml())
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "exp.yaml")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_id = json.loads((tmp_path / "killed" / "run.json").read_text())["run_id"]
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"  # killed: nobody closed it
    assert main(["train", "--resume", run_id, "--tracking-uri", uri, "--quiet"]) == 0
    resumed = MlflowClient(uri).get_run(run_id)
    assert resumed.info.status == "FINISHED"
    a = torch.load(tmp_path / "ref" / "model" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "model" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_metrics = MlflowClient(uri).get_run(ref.run_id).data.metrics
    for k in ("test_auroc_tumor", "test_auroc_disease", "best_epoch"):
        assert resumed.data.metrics[k] == ref_metrics[k]
    steps = [m.step for m in MlflowClient(uri).get_metric_history(run_id, "val_loss")]
    assert sorted(set(steps)) == [0, 1, 2]
