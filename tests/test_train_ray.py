"""`medmm train --engine ray`: Ray Train's TorchTrainer over a local two-node Ray cluster."""

from __future__ import annotations

import json

import pytest
import yaml

from medmm.cli import main

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train.torch")


def test_ray_training_refuses_resume_and_no_workers(tiny_cohort, tmp_path, capsys):
    assert main(["train", "--resume", "abc", "--engine", "ray"]) == 1
    assert "--resume runs locally" in capsys.readouterr().err
    assert main(["train", str(tiny_cohort), "--engine", "ray", "--num-workers", "0", "--out", str(tmp_path)]) == 1
    assert "--num-workers must be at least 1" in capsys.readouterr().err
    assert not ray.is_initialized()  # refused before any cluster was joined


@pytest.mark.slow
def test_two_ray_train_workers_on_two_nodes_match_one_process(tiny_cohort, tmp_path):
    """Two Ray Train workers, one on each node of a two-node cluster (one CPU per node), against a
    single-process run of the same global batch (4 per worker, 8 alone). As for torchrun
    (tests/test_distributed.py): per-epoch train loss within 0.2 and validation loss within 0.1
    (batch-norm statistics are per process); one MLflow run; the cache holds each image once."""
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    from medmm import load_model
    from medmm.cohort import load_cohort
    from medmm.preprocess.cache import VolumeCache

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = {"cohort": {"manifest": str(tiny_cohort)},
            "preprocess": {"image": {"spatial_size": [16, 16, 16]}},
            "model": {"dim": 16, "modality_dropout": 0.0,
                      "encoders": {"image": {"name": "tiny_cnn3d", "dropout": 0.0}, "notes": {"name": "tfidf_mlp",
                                   "dropout": 0.0}, "vitals": {"name": "gru"}, "ehr": {"name": "mlp", "dropout": 0.0}}},
            "train": {"min_epochs": 1, "device": "cpu", "scheduler": "constant"},
            "tracking": {"plots": False}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(base))
    common = ["--config", str(tmp_path / "exp.yaml")]
    opts = ["--epochs", "2", "--quiet", "--no-log-model", "--tracking-uri", uri]
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 120 * 2**20})
    c.add_node(num_cpus=1, object_store_memory=120 * 2**20)
    c.wait_for_nodes()
    try:
        assert main(["train", "train.batch_size=4", f"preprocess.cache_dir={tmp_path / 'cache'}", *common, *opts,
                     "--experiment", "ray", "--out", str(tmp_path / "ray"), "--engine", "ray", "--address",
                     c.address, "--num-workers", "2"]) == 0
        nodes = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
        c.shutdown()
    assert len(nodes) == 2 and all(n["Resources"]["CPU"] == 1 for n in nodes)  # so one worker per node
    assert main(["train", "train.batch_size=8", *common, *opts, "--experiment", "single", "--out",
                 str(tmp_path / "single")]) == 0

    client = MlflowClient(uri)
    runs = {name: json.loads((tmp_path / name / "run.json").read_text())["run_id"] for name in ("ray", "single")}
    assert len(client.search_runs([client.get_experiment_by_name("ray").experiment_id])) == 1  # rank 0 only
    assert client.get_run(runs["ray"]).data.params["runtime.world_size"] == "2"
    for key, tol in (("train_loss", 0.2), ("val_loss", 0.1)):
        a = [m.value for m in sorted(client.get_metric_history(runs["ray"], key), key=lambda m: m.step)]
        b = [m.value for m in sorted(client.get_metric_history(runs["single"], key), key=lambda m: m.step)]
        assert len(a) == len(b) == 2
        assert max(abs(x - y) for x, y in zip(a, b)) < tol, (key, a, b)
    n_images = sum(r.present["image"] for r in load_cohort(tiny_cohort, progress=False).records)
    assert len(VolumeCache(tmp_path / "cache")) == n_images
    # the ranks filled the cache in shares: rank 0 (which logs) computed every other image, no more
    assert client.get_run(runs["ray"]).data.metrics["prefill_computed"] == (n_images + 1) // 2
    model = load_model(tmp_path / "ray" / "model")
    assert model.config.modalities == load_model(tmp_path / "single" / "model").config.modalities
