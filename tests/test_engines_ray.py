"""The Ray engine on a real local two-node Ray cluster: same predictions as the local engine,
a clear error for an unreachable cluster, resume after a failure; map_rows on both engines."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'medmm[ray]')")

from medmm.errors import ConfigError, EngineError  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_cluster_is_a_clear_error(tiny_cohort, scheme, tmp_path):
    from medmm.engines.ray_engine import connect

    assert not ray.is_initialized()  # runs before the cluster below starts
    address = f"{scheme}127.0.0.1:{_free_port()}"
    with pytest.raises(EngineError, match="cannot reach the Ray cluster at " + address.replace(".", r"\.")) as e:
        connect(address)
    assert "--engine local" in str(e.value)
    assert not ray.is_initialized()


def test_an_unknown_engine_is_refused(tiny_cohort):
    from medmm.evaluate.scoring import score_cohort

    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        score_cohort(None, tiny_cohort, engine="spark")


def test_prepare_does_nothing_for_a_model_that_is_not_a_folder(tmp_path):
    from medmm.engines.ray_engine import prepare

    assert prepare("runs:/0123456789abcdef/model", address="127.0.0.1:1") == 0  # not even a connection
    assert prepare(tmp_path, address="127.0.0.1:1") == 0
    assert not ray.is_initialized()


def test_manifest_batches_counts_the_scored_splits(tmp_path):
    from medmm.engines.ray_engine import manifest_batches

    rows = ["patient_id,split,label_tumor"] + [f"P{i},{s},0" for i, s in
                                              enumerate(["train"] * 50 + ["val"] * 10 + ["test"] * 17 + [""] * 3)]
    csv = tmp_path / "m.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert manifest_batches(csv, ["test"], 8) == 3  # 17 test rows and 3 without a split (assigned later)
    assert manifest_batches(csv, ["test", "val"], 8) == 3 + 2
    assert manifest_batches(csv, ["all", "val"], 64) == 2 + 1
    pd.read_csv(csv).drop(columns=["split"]).to_parquet(tmp_path / "m.parquet")
    assert manifest_batches(tmp_path / "m.parquet", ["test"], 16) == 5  # no split column: every row
    assert manifest_batches(tmp_path / "missing.csv", ["test"], 16) is None


def test_few_batches_are_read_by_several_tasks_each():
    from medmm.engines.ray_engine import _reads_per_batch

    assert _reads_per_batch(7, 2, 64) == 1  # seven batches keep two CPUs busy: a task per batch
    assert _reads_per_batch(2, 2, 64) == 2  # 100 patients on two one-CPU nodes: 64 + 36 -> 32+32, 18+18
    assert _reads_per_batch(1, 16, 64) == 16  # one batch, a 16-CPU cluster: 16 reads of 4
    assert _reads_per_batch(1, 16, 8) == 2  # never reads of fewer than 4 patients
    assert _reads_per_batch(1, 1, 64) == 1  # one CPU: nothing to spread over


@pytest.fixture(scope="module")
def cluster():
    """A real Ray cluster of two nodes (one CPU each, small object stores) on this machine."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 120 * 2**20})
    c.add_node(num_cpus=1, object_store_memory=120 * 2**20)
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def model(tiny_loaded):
    import torch

    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor

    torch.manual_seed(0)
    pre = MultimodalPreprocessor().fit(tiny_loaded.split("train"))
    return MultimodalModel(ModelConfig(tasks={"tumor": "binary", "disease": "binary"}), pre.output_shapes(), pre).eval()


def _same(a, b) -> None:
    """Same patients, rows and columns; probabilities equal up to float32 rounding (the actors
    run torch with one intra-op thread, which may sum in another order)."""
    probs = [c for c in a.predictions.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(a.predictions.drop(columns=probs), b.predictions.drop(columns=probs))
    np.testing.assert_allclose(a.predictions[probs], b.predictions[probs], rtol=0, atol=1e-6)
    assert a.masked.keys() == b.masked.keys()
    for k in a.masked:
        np.testing.assert_allclose(a.masked[k], b.masked[k], rtol=0, atol=1e-6)


def test_two_node_cluster_scores_the_test_split_like_the_local_engine(cluster, model, tiny_cohort):
    """The default suite's real Ray run: without GPUs each batch is one task (read, preprocess,
    score) on both nodes."""
    from medmm.evaluate.scoring import score_cohort

    local = score_cohort(model, tiny_cohort, split="test", batch_size=16, progress=False)
    got = score_cohort(model, tiny_cohort, split="test", batch_size=16, progress=False, engine="ray",
                       address=cluster.address)
    assert len(got.predictions) == len(local.predictions) > 5
    _same(local, got)


@pytest.mark.slow
def test_the_ray_data_pipeline_of_gpu_clusters_scores_like_the_local_engine(cluster, model, tiny_cohort):
    """The pipeline a GPU cluster gets (Ray Data read tasks -> scoring actors), forced on CPUs."""
    from medmm.engines.ray_engine import score_manifest
    from medmm.evaluate.scoring import score_cohort

    local = score_cohort(model, tiny_cohort, split="all", batch_size=8, subsets=True, progress=False)
    got = score_manifest(model, tiny_cohort, split="all", batch_size=8, subsets=True, progress=False,
                         address=cluster.address, fused=False)
    assert len(got.predictions) == 40
    _same(local, got)


def _worker_per_node() -> dict[str, tuple[int, list[str], int]]:
    """Per node, the worker process the job left idle there (a one-CPU task on the node runs in
    it): its pid, the models it holds and how many times it loaded one."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def probe():
        import os

        from medmm.engines import ray_engine

        return os.getpid(), sorted(ray_engine._models), ray_engine._loads

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    remote = ray.remote(num_cpus=1)(probe)
    return {n: ray.get(remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote())
            for n in nodes}


def test_prepared_workers_hold_the_model_and_a_second_split_reuses_them(cluster, model, tiny_cohort, tmp_path):
    """`medmm evaluate --engine ray` warms one worker per node with the model (prepare) while it
    loads its own copy, then scores its two splits in those processes: none loads it again."""
    import torch

    from medmm.engines import ray_engine
    from medmm.evaluate.scoring import score_cohort
    from medmm.models.multimodal import ModelConfig, MultimodalModel

    torch.manual_seed(1)  # a model no worker has seen yet
    other = MultimodalModel(ModelConfig(tasks={"tumor": "binary", "disease": "binary"}), model.input_shapes,
                            model.preprocessor).eval()
    folder = other.save(tmp_path / "model")
    batches = ray_engine.manifest_batches(tiny_cohort, ["test", "val"], 8)
    assert batches >= 2
    assert ray_engine.prepare(folder, address=cluster.address, batches=batches) == 2  # a CPU per node
    digest = next(iter(ray_engine._prepared))
    assert len(set(ray.get(ray_engine._prepared[digest]["warm"], timeout=300))) == 2  # two processes
    before = _worker_per_node()
    assert all(held == [digest] for _, held, _ in before.values()), before  # loaded ahead, on every node

    for split in ("test", "val"):
        local = score_cohort(other, tiny_cohort, split=split, batch_size=8, progress=False)
        got = score_cohort(other, tiny_cohort, split=split, batch_size=8, progress=False, engine="ray",
                           address=cluster.address)
        _same(local, got)
    assert not ray_engine._prepared[digest]["warm"]  # the warm-up tasks are collected
    assert _worker_per_node() == before  # the same processes, the model not loaded again


@pytest.mark.slow
def test_two_node_cluster_scores_like_the_local_engine_and_resumes(cluster, model, tiny_cohort, tmp_path,
                                                                    monkeypatch):
    from medmm.cohort import ProblemReport
    from medmm.engines import ray_engine
    from medmm.evaluate.scoring import score_cohort

    local = score_cohort(model, tiny_cohort, split="all", batch_size=6, subsets=True, progress=False,
                         out=tmp_path / "local.parquet")
    assert len(local.predictions) == 40

    # a failure after two batches (a lost node, as the driver sees it): a clear error, the parts kept
    out = tmp_path / "ray.parquet"
    real_write = ray_engine._write_part
    calls = []

    def failing_write(parts, k, *args):
        if len(calls) == 2:
            raise ray.exceptions.NodeDiedError("node 10.0.0.7 died")
        calls.append(k)
        real_write(parts, k, *args)

    monkeypatch.setattr(ray_engine, "_write_part", failing_write)
    with pytest.raises(EngineError, match=r"failed while scoring .*manifest\.csv.*2 of 7 batches") as e:
        score_cohort(model, tiny_cohort, split="all", batch_size=6, subsets=True, progress=False, out=out,
                     engine="ray", address=cluster.address)
    assert "run the same command again to resume" in str(e.value)
    parts = tmp_path / "ray.parquet.parts"
    assert sorted(p.name for p in parts.glob("part-*.parquet")) == [f"part-{k:06d}.parquet" for k in sorted(calls)]
    monkeypatch.setattr(ray_engine, "_write_part", real_write)

    # the re-run scores only the five batches not yet written, and gives the local engine's table
    real_run, todo = ray_engine._run, []
    monkeypatch.setattr(ray_engine, "_run", lambda t, *a: (todo.extend(t), real_run(t, *a)))
    report = ProblemReport()
    got = score_cohort(model, tiny_cohort, split="all", batch_size=6, subsets=True, progress=False, out=out,
                       engine="ray", address=cluster.address, report=report)
    assert sorted(todo) == sorted(set(range(7)) - set(calls))
    _same(local, got)
    assert not parts.exists()
    back, ref = pd.read_parquet(out), pd.read_parquet(tmp_path / "local.parquet")
    assert list(back.columns) == list(ref.columns) and list(back.patient_id) == list(ref.patient_id)
    np.testing.assert_allclose(back.prob_tumor, ref.prob_tumor, rtol=0, atol=1e-6)
    # no node was lost during the run (which node scored which batch is not recorded)
    assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2


@pytest.mark.slow
def test_evaluate_cli_on_ray_matches_local(cluster, model, tiny_cohort, tmp_path):
    from medmm.cli import main

    folder = model.save(tmp_path / "model")
    common = [str(folder), str(tiny_cohort), "--no-robustness", "--bootstrap", "50", "--quiet", "--split", "all"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "loc")]) == 0
    assert main(["evaluate", *common, "--out", str(tmp_path / "ray"), "--engine", "ray",
                 "--address", cluster.address]) == 0
    a, b = pd.read_parquet(tmp_path / "loc" / "predictions.parquet"), pd.read_parquet(tmp_path / "ray" / "predictions.parquet")
    assert list(a.patient_id) == list(b.patient_id)
    np.testing.assert_allclose(a.prob_disease, b.prob_disease, rtol=0, atol=1e-6)
    assert main(["predict", str(folder), str(tiny_cohort), "--out", str(tmp_path / "p_loc.parquet"), "--quiet"]) == 0
    assert main(["predict", str(folder), str(tiny_cohort), "--out", str(tmp_path / "p_ray.parquet"), "--quiet",
                 "--engine", "ray", "--address", cluster.address]) == 0
    a, b = pd.read_parquet(tmp_path / "p_loc.parquet"), pd.read_parquet(tmp_path / "p_ray.parquet")
    assert list(a.columns) == list(b.columns) and list(a.patient_id) == list(b.patient_id)
    np.testing.assert_allclose(a.prob_tumor, b.prob_tumor, rtol=0, atol=1e-6)


def _count_row(row: dict, *, out: str) -> dict:
    """A per-row job that leaves a trace of every run (to see what a resume runs again)."""
    from pathlib import Path

    with open(Path(out) / f"{row['patient_id']}.log", "a") as fh:
        fh.write("run\n")
    return {"patient_id": row["patient_id"], "n_paths": sum(bool(row.get(c)) for c in row if c.endswith("_path"))}


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_map_rows_writes_each_row_and_resumes(cluster, tiny_cohort, tmp_path, engine):
    from functools import partial

    from medmm.engines import map_rows, row_state_path

    rows = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False).to_dict(orient="records")[:8]
    fn = partial(_count_row, out=str(tmp_path))
    state = tmp_path / "state"
    first = map_rows(rows, fn, state_dir=state, engine=engine, address=cluster.address,
                     workers=2 if engine == "local" else 0)
    assert [r["patient_id"] for r in first] == [r["patient_id"] for r in rows]
    assert first[0]["n_paths"] == sum(bool(rows[0][c]) for c in rows[0] if c.endswith("_path"))
    # a row whose record is lost runs again; the others are not run twice
    row_state_path(state, rows[3]["patient_id"]).unlink()
    again = map_rows(rows, fn, state_dir=state, engine=engine, address=cluster.address)
    assert again == first
    runs = {r["patient_id"]: (tmp_path / f"{r['patient_id']}.log").read_text().count("run") for r in rows}
    assert runs == {r["patient_id"]: 2 if i == 3 else 1 for i, r in enumerate(rows)}
    assert json.loads(row_state_path(state, rows[0]["patient_id"]).read_text())["key"] == rows[0]["patient_id"]


def test_preprocess_on_ray_fills_the_same_cache_as_the_local_engine(cluster, tiny_cohort, tmp_path):
    import argparse

    from medmm.commands import preprocess
    from medmm.preprocess.cache import VolumeCache

    def run(engine: str, cache) -> int:
        ns = argparse.Namespace(args=[str(tiny_cohort)], config=None, cache=str(cache), workers=0, engine=engine,
                                address=cluster.address, strict=False, quiet=True)
        return preprocess.run(ns)

    assert run("ray", tmp_path / "ray") == 0
    assert run("local", tmp_path / "local") == 0
    ray_cache, local_cache = VolumeCache(tmp_path / "ray"), VolumeCache(tmp_path / "local")
    names = sorted(p.name for p, _, _ in ray_cache.entries())
    assert names and names == sorted(p.name for p, _, _ in local_cache.entries())
    for p, _, _ in local_cache.entries():
        key = p.stem
        np.testing.assert_array_equal(ray_cache.get(key), local_cache.get(key))
