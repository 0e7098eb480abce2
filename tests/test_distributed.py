"""DistributedDataParallel on CPU (gloo): 2 processes match a single-process run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medmm.train.trainer import TrainConfig, train
from test_train_toys import toy_dataset, toy_model, weights

CFG = dict(epochs=3, lr=0.05, min_epochs=1, patience=100, device="cpu", scheduler="constant")


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = toy_model(0)
        res = train(model, toy_dataset(40), None,
                    TrainConfig(**CFG, batch_size=8, checkpoint_dir=f"{out}/ckpt{rank}"), progress=False)
        torch.save({"weights": weights(model), "history": res.history, "samples": res.samples}, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    single = toy_model(0)
    res = train(single, toy_dataset(40), None, TrainConfig(**CFG, batch_size=16), progress=False)
    # the ranks hold the same weights; each saw half the samples
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])
    assert r0["samples"] == r1["samples"] == res.samples // 2
    # 2 x 8 per step under DDP is the single process's 16 per step: same result up to float rounding
    for k, v in weights(single).items():
        torch.testing.assert_close(r0["weights"][k], v, atol=1e-5, rtol=1e-4)
    for h0, h in zip(r0["history"], res.history):
        assert h0["train_loss"] == pytest.approx(h["train_loss"], abs=1e-5)
    assert (tmp_path / "ckpt0" / "last.pt").exists() and not (tmp_path / "ckpt1").exists()  # rank 0 only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_on_the_tiny_cohort(tiny_cohort, tmp_path):
    """`torchrun --nproc_per_node 2 -m medmm train` against a single-process run of the same
    global batch, on a model whose training step does not depend on how the batch is split: no
    dropout, GroupNorm instead of BatchNorm (batch statistics are per process on CPU). Every
    epoch's train and validation loss then agree to float rounding, which needs the masked means
    over the global batch (absent modalities and unknown labels differ between the processes'
    halves; before, 2.5 % of the weights moved the other way after one step)."""
    from mlflow.tracking import MlflowClient

    from medmm.config import load_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = {"cohort": {"manifest": str(tiny_cohort)},
            "preprocess": {"image": {"spatial_size": [16, 16, 16]}},
            "model": {"dim": 16, "modality_dropout": 0.0, "fusion": {"name": "concat", "dropout": 0.0},
                      "tasks": {"tumor": {"kind": "binary", "dropout": 0.0}, "disease": {"kind": "binary", "dropout": 0.0}},
                      "encoders": {"image": {"name": "tiny_cnn3d", "dropout": 0.0, "norm": "group"},
                                   "notes": {"name": "tfidf_mlp", "dropout": 0.0}, "vitals": {"name": "gru"},
                                   "ehr": {"name": "mlp", "dropout": 0.0}}},
            "train": {"epochs": 3, "min_epochs": 1, "device": "cpu", "scheduler": "constant"},
            "tracking": {"tracking_uri": uri, "log_model": False, "plots": False}}
    runs = {}
    for name, world, batch in (("ddp", 2, 4), ("single", 1, 8)):
        cfg = load_config(base, [f"out_dir={tmp_path / name}", f"train.batch_size={batch}",
                                 f"tracking.experiment={name}"])
        (tmp_path / f"{name}.yaml").write_text(cfg.to_yaml())
        torchrun = Path(sys.executable).parent / "torchrun"
        cmd = ([str(torchrun), "--standalone", "--nproc_per_node", str(world)] if world > 1 else [sys.executable]) + [
            "-m", "medmm", "train", "--config", str(tmp_path / f"{name}.yaml"), "--quiet"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = json.loads((tmp_path / name / "run.json").read_text())["run_id"]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ddp")
    assert len(client.search_runs([exp.experiment_id])) == 1  # only rank 0 logged
    ddp, single = client.get_run(runs["ddp"]), client.get_run(runs["single"])
    assert ddp.data.params["runtime.world_size"] == "2" and single.data.params["runtime.world_size"] == "1"
    for key, tol in (("train_loss", 1e-4), ("val_loss", 1e-4)):  # measured: within 2e-6
        a = [m.value for m in sorted(client.get_metric_history(runs["ddp"], key), key=lambda m: m.step)]
        b = [m.value for m in sorted(client.get_metric_history(runs["single"], key), key=lambda m: m.step)]
        print(key, "ddp", a, "single", b)
        assert len(a) == len(b) == 3
        assert max(abs(x - y) for x, y in zip(a, b)) < tol, (key, a, b)
    print({k: (ddp.data.metrics[k], single.data.metrics[k]) for k in ddp.data.metrics if k.startswith("test_")})
    assert sorted(os.listdir(tmp_path / "ddp" / "checkpoints")) == ["last.pt"]
    shutil.rmtree(tmp_path / "ddp", ignore_errors=True)


def test_ranks_take_the_single_process_s_full_global_batches():
    """23 patients, 2 ranks x 4 against one process x 8: each rank's capped share is half of
    the single process's two full batches, in the same order, and no padded duplicate is taken
    (uncapped, each rank has 12, one of them the padding, and an epoch has 3 steps, not 2)."""
    from medmm.train.distributed import EpochSampler

    single = EpochSampler(23, seed=5)
    single.set_epoch(2)
    ranks = [EpochSampler(23, seed=5, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == 12 and len(set(ranks[0].indices()) | set(ranks[1].indices())) == 23  # padded
    first = single.indices()[:16]
    for r in ranks:
        r.cap = 23 // (4 * 2) * 4
        r.set_epoch(2)
        assert len(r) == 8
    for step in range(2):
        together = ranks[0].indices()[4 * step:4 * step + 4] + ranks[1].indices()[4 * step:4 * step + 4]
        assert sorted(together) == sorted(first[8 * step:8 * step + 8])
    ranks[0].set_epoch(2, skip=4)
    assert ranks[0].indices() == first[8:16:2] and len(ranks[0]) == 4
