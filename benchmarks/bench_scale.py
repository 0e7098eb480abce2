"""Cohorts bigger than the machine (issue 12): memory, loading, cache and engine figures per cohort size.

For each size in ``--sizes`` a synthetic cohort (NIfTI, ``--image-size``^3, notes, vitals, EHR) is
written once with ``medmm synth --workers N`` under ``--data-dir`` (reused by later runs), and then,
every command a subprocess of this script:

* ``medmm preprocess --workers 1`` and ``--workers 2``, each on an empty cache: patients/s (wall);
* ``medmm train --epochs 1`` twice, first on an empty cache, then on the full one: the epoch's
  time is ``prefill_s + train_loop_s`` as logged to MLflow (filling the image cache, all hits when
  warm, then the epoch's training loop and validation); the data pass alone is ``prefill_s +
  data_wait_s`` (the loop's waits for batches), the part a cache can make faster; and the peak
  RSS of the process tree (``medmm train`` and its workers, summed, polled with psutil; the
  largest single process's ``ru_maxrss`` is in ``*_max_process_rss_mb``; the tree's proportional
  set size, which counts a page shared with forked workers once instead of once per process, in
  ``*_peak_pss_mb``);
* ``medmm evaluate`` of the trained model with ``--engine local --workers 2`` (peak RSS, wall) and
  with ``--engine ray`` on a local two-node Ray cluster (``ray.cluster_utils.Cluster``, one CPU per
  node, started before timing); predictions compared.

One JSON row per size is written to ``--out``, and each figure is printed beside its target::

    PYTHONPATH=. python benchmarks/bench_scale.py --sizes 100,400 --image-size 64 --out scale.json
    PYTHONPATH=. python benchmarks/bench_scale.py --sizes 100,400,1600 --image-size 128 --out scale.json

Targets (issue 12): train and evaluate peak RSS at the largest size within 1.25x of the smallest and
under 3 GB; two workers preprocess at >= 1.7x the rate of one; a warm-cache epoch >= 5x faster than
a cold one; ``evaluate --engine ray`` within 1.3x of the process pool, identical predictions.

Last full run (2026-12-02, quiet 2-core machine, ``--sizes 100,400,1600 --image-size 128
--skip-preprocess``), after training and scoring pinned glibc's mmap threshold in their own process:
train tree peak RSS 1,820 / 1,917 / 2,054 MB (1.13x), evaluate 1,531 / 1,673 / 1,691 MB (1.10x), Ray /
local 1.05x / 0.86x / 0.70x with identical predictions, epoch cold / warm 5.5x / 5.8x / 5.8x (warm
epoch at 1,600: 14.3 s, against 10.5 s before the pin).

``evaluate --engine ray`` against ``--engine local --workers 2`` (100 patients at 128^3, two-node
cluster of one CPU each, the same model; a 2-core machine shared with other work, the 1-minute
load average beside each figure, taken at the end of the command):

* before (Ray Data reads -> autoscaling scoring actor pool), quiet machine: 61.2 s vs 25.4 s, 2.41x;
  back to back under load: 78.5 vs 40.1 s (1.96x, load 6.4-8.0), 80.2 vs 33.2 s (2.42x, load 7.7-8.8).
  Where it went (phase timestamps, ``ray.timeline()``, ``-X importtime``): ``ray.init`` 0.4 s; every
  ``medmm evaluate`` started four fresh worker processes that each import torch, MONAI (with the
  mlflow and matplotlib it imports) and scikit-learn (all of it, through skops' trusted types) and
  load the model, ~10 CPU-s each at that load: two read workers (loading the whole model for its
  preprocessing), the scoring actor, and a second actor for the calibration split, because Ray
  Data's actor pool ends with its dataset (that pass took 24 s against 3 s locally). Ray Data
  itself: ``import ray.data`` ~2 s, its streaming executor ~3.5 s more than plain tasks on a
  trivial job, and on a fresh cluster four detached helper actors of its own.
* after (CPU clusters: a task per batch reads, preprocesses and scores in worker processes that
  keep the model; ``prepare`` warms one per node while the command loads its own copy; a batch of
  a split too small to fill the CPUs is read by several tasks; the GPU shape is unchanged Ray
  Data): back to back 53.4 vs 37.9 s (1.41x, load 7.0-7.8), 48.8 vs 36.2 s (1.35x, load 8.7-9.1),
  47.5 vs 36.5 s (1.30x, load 6.5-8.0), 53.7 vs 42.2 s (1.27x, load 6.1-7.6); this script
  (``--sizes 100 --image-size 128 --skip-preprocess --data-dir /work/bench``, fresh cluster,
  model retrained) 57.4 vs 41.9 s (**1.37x**, load 7.6-7.7); predictions identical (max diff 0.0)
  every time. The calibration pass now takes ~1 s. What is left is the two workers' imports
  (~11 CPU-s each under that load, 26-28 s wall while the command loads its model beside them)
  on two cores that three processes and other jobs share; not measured on a quiet machine.
  At 400 patients (the same model), back to back: after 90.2 vs 87.9 s (**1.03x**, load 6.8-8.8),
  before 111.9 vs 88.5 s (1.26x, load 8.2-9.5; 1.69x on the quiet machine); predictions within 3e-8.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS  # noqa: E402

_WRAP = """
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    json.dump({"rc": rc, "maxrss_kb": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime}, fh)
sys.exit(rc)
"""


def _medmm() -> list[str]:
    return [sys.executable, "-m", "medmm"]


def run_measured(cmd: list[str], *, log: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd``; wall seconds, peak RSS of its process tree (MB, polled every 50 ms), the
    largest single descendant's ``ru_maxrss`` (MB), the CPU seconds of the tree and the machine's
    1-minute load average at the end. Raises when it fails, with its log's tail."""
    stats = log.with_suffix(".rusage.json")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", _WRAP, str(stats), *cmd], stdout=fh, stderr=subprocess.STDOUT,
                                env=env)
    with PeakRSS(proc.pid, include_root=False) as mem:  # the command's tree, not the waiting wrapper
        rc = proc.wait()
        wall = time.perf_counter() - t0
    peak = mem.peak
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}):\n" + "\n".join(log.read_text().splitlines()[-30:]))
    ru = json.loads(stats.read_text())
    return {"wall_s": wall, "peak_rss_mb": peak / 2**20, "peak_pss_mb": mem.peak_pss_mb,
            "max_process_rss_mb": ru["maxrss_kb"] / 1024,
            "cpu_s": ru["cpu_s"], "load_1min": os.getloadavg()[0]}


def ensure_cohort(data_dir: Path, n: int, size: int, workers: int) -> tuple[Path, float | None]:
    """The cohort's manifest (written once, reused); the synth wall time when it was written now."""
    folder = data_dir / f"synth_n{n}_s{size}"
    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest, None
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([*_medmm(), "synth", str(folder), "--patients", str(n), "--workers", str(workers),
                    "--image-format", "nifti", "--image-size", str(size), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return manifest, time.perf_counter() - t0


def _train_seconds(out_dir: Path) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    run = json.loads((out_dir / "run.json").read_text())
    m = MlflowClient(tracking_uri=run["tracking_uri"]).get_run(run["run_id"]).data.metrics
    out = {k: m[k] for k in ("train_s", "load_s", "total_s", "prefill_s", "train_loop_s", "data_wait_s") if k in m}
    out["epoch_s"] = out["prefill_s"] + out["train_loop_s"]  # filling the cache (hits when warm) + the epoch
    # the data pass alone: filling the cache plus the training loop's waits for batches (reads of
    # cached tensors, augmentation, collation not hidden behind the model's step)
    out["data_pass_s"] = out["prefill_s"] + out.get("data_wait_s", 0.0)
    return out


def _predictions_equal(a: Path, b: Path) -> tuple[bool, float]:
    import numpy as np
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    if list(x.patient_id) != list(y.patient_id):
        return False, float("inf")
    probs = [c for c in x.columns if c.startswith("prob_")]
    diff = float(np.nanmax(np.abs(x[probs].to_numpy(float) - y[probs].to_numpy(float)))) if len(x) else 0.0
    same_nan = bool((x[probs].isna().to_numpy() == y[probs].isna().to_numpy()).all())
    return same_nan and diff <= 1e-6, diff


def bench_size(n: int, args: argparse.Namespace, cluster_address: str | None) -> dict[str, object]:
    manifest, synth_s = ensure_cohort(Path(args.data_dir), n, args.image_size, args.synth_workers)
    work = Path(args.data_dir) / f"run_n{n}_s{args.image_size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    s = args.spatial_size
    common = [f"preprocess.image.spatial_size=[{s},{s},{s}]"]
    row: dict[str, object] = {"n_patients": n, "image_size": args.image_size, "spatial_size": s}
    if synth_s is not None:
        row["synth_s"] = round(synth_s, 2)

    def say(msg: str) -> None:
        print(f"[n={n}] {msg}", flush=True)

    for w in (() if args.skip_preprocess else (1, 2)):
        cache = work / f"cache_pre{w}"
        r = run_measured([*_medmm(), "preprocess", str(manifest), *common, "--cache", str(cache),
                          "--workers", str(w), "--quiet"], log=work / f"preprocess_{w}w.log")
        row[f"load_patients_per_s_{w}w"] = round(n / r["wall_s"], 2)
        row[f"preprocess_{w}w_wall_s"] = round(r["wall_s"], 2)
        row[f"preprocess_{w}w_cpu_s"] = round(r["cpu_s"], 2)
        row[f"preprocess_{w}w_load_1min"] = round(r["load_1min"], 1)
        say(f"preprocess --workers {w}: {r['wall_s']:.1f} s, {n / r['wall_s']:.1f} patients/s "
            f"({r['cpu_s']:.1f} CPU s; machine load {r['load_1min']:.1f} on {os.cpu_count()} CPUs)")
        if w == 1:
            shutil.rmtree(cache, ignore_errors=True)

    cache = work / "cache_train"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    for phase in ("cold", "warm"):
        out = work / f"train_{phase}"
        r = run_measured([*_medmm(), "train", str(manifest), *common, f"preprocess.cache_dir={cache}",
                          f"preprocess.workers={args.prefill_workers}", f"train.num_workers={args.loader_workers}",
                          f"train.batch_size={args.batch_size}", "tracking.plots=false", "--out", str(out),
                          "--epochs", "1", "--quiet", "--no-log-model", "--tracking-uri", uri],
                         log=work / f"train_{phase}.log")
        secs = _train_seconds(out)
        row[f"train_epoch_s_{phase}"] = round(secs["epoch_s"], 2)
        row[f"train_prefill_s_{phase}"] = round(secs["prefill_s"], 2)
        row[f"train_data_pass_s_{phase}"] = round(secs["data_pass_s"], 2)
        row[f"train_loop_s_{phase}"] = round(secs["train_loop_s"], 2)
        row[f"train_load_s_{phase}"] = round(secs["load_s"], 2)
        row[f"train_s_{phase}"] = round(secs["train_s"], 2)
        row[f"train_{phase}_wall_s"] = round(r["wall_s"], 2)
        row[f"train_{phase}_cpu_s"] = round(r["cpu_s"], 2)
        if phase == "cold":
            row["train_peak_rss_mb"] = round(r["peak_rss_mb"], 1)
            row["train_peak_pss_mb"] = round(r["peak_pss_mb"], 1)
            row["train_max_process_rss_mb"] = round(r["max_process_rss_mb"], 1)
        say(f"train {phase}: epoch {secs['epoch_s']:.1f} s (cache fill {secs['prefill_s']:.1f} s) (wall {r['wall_s']:.1f} s), tree peak RSS "
            f"{r['peak_rss_mb']:.0f} MB, largest process {r['max_process_rss_mb']:.0f} MB")
    model = work / "train_warm" / "model"

    ev = [*_medmm(), "evaluate", str(model), str(manifest), "--split", "all", "--bootstrap", str(args.bootstrap),
          "--quiet"]
    r = run_measured([*ev, "--out", str(work / "eval_local"), "--engine", "local", "--workers",
                      str(args.eval_workers)], log=work / "eval_local.log")
    row["evaluate_peak_rss_mb"] = round(r["peak_rss_mb"], 1)
    row["evaluate_peak_pss_mb"] = round(r["peak_pss_mb"], 1)
    row["evaluate_max_process_rss_mb"] = round(r["max_process_rss_mb"], 1)
    row["local_evaluate_s"] = round(r["wall_s"], 2)
    row["local_evaluate_load_1min"] = round(r["load_1min"], 1)
    say(f"evaluate local --workers {args.eval_workers}: {r['wall_s']:.1f} s, tree peak RSS {r['peak_rss_mb']:.0f} MB")
    if cluster_address is not None:
        r = run_measured([*ev, "--out", str(work / "eval_ray"), "--engine", "ray", "--address", cluster_address],
                         log=work / "eval_ray.log")
        row["ray_evaluate_s"] = round(r["wall_s"], 2)
        row["ray_evaluate_load_1min"] = round(r["load_1min"], 1)
        same, diff = _predictions_equal(work / "eval_local" / "predictions.parquet",
                                        work / "eval_ray" / "predictions.parquet")
        row["predictions_identical"] = same
        row["predictions_max_abs_diff"] = diff
        say(f"evaluate ray two-node: {r['wall_s']:.1f} s, identical predictions {same} (max diff {diff:.1e})")
    else:
        row["ray_evaluate_s"] = None
        row["predictions_identical"] = None
    if not args.keep:
        for sub in ("cache_pre2", "cache_train", "train_cold/cache", "train_warm/cache"):
            shutil.rmtree(work / sub, ignore_errors=True)
    return row


def _check(label: str, ours: float | None, target: str, ok: bool | None) -> None:
    mark = "n/a " if ok is None else ("ok  " if ok else "MISS")
    text = "-" if ours is None else f"{ours:.2f}"
    print(f"  {mark} {label:<52} ours {text:>9}   target {target}")


def report(rows: list[dict[str, object]]) -> None:
    small, large = rows[0], rows[-1]
    print(f"\ntargets (smallest {small['n_patients']}, largest {large['n_patients']} patients, "
          f"{large['image_size']}^3 images):")
    for key, name in (("train_peak_rss_mb", "train"), ("evaluate_peak_rss_mb", "evaluate")):
        ratio = large[key] / small[key]
        _check(f"{name} peak RSS largest / smallest", ratio, "<= 1.25x", ratio <= 1.25 if len(rows) > 1 else None)
        _check(f"{name} peak RSS at {large['n_patients']} (MB)", large[key], "< 3000 MB", large[key] < 3000)
        pss = key.replace("_rss_", "_pss_")
        if small.get(pss) and large.get(pss):  # the tree's RSS counts pages shared with forked workers once each
            print(f"         (proportional set size, shared pages counted once: {small[pss]:.0f} -> {large[pss]:.0f} MB, "
                  f"{large[pss] / small[pss]:.2f}x)")
    for r in rows:
        n = r["n_patients"]
        if "load_patients_per_s_1w" in r:
            speed = r["load_patients_per_s_2w"] / r["load_patients_per_s_1w"]
            _check(f"[{n}] preprocess 2 workers / 1 worker", speed, ">= 1.7x", speed >= 1.7)
        if "preprocess_1w_cpu_s" in r:
            extra = r["preprocess_2w_cpu_s"] / r["preprocess_1w_cpu_s"]
            print(f"         (CPU seconds 2 workers / 1 worker {extra:.2f}: what the pool adds; machine load "
                  f"{r['preprocess_1w_load_1min']} / {r['preprocess_2w_load_1min']} on {os.cpu_count()} CPUs)")
        warm = r["train_epoch_s_cold"] / r["train_epoch_s_warm"]
        _check(f"[{n}] cold epoch / warm epoch", warm, ">= 5x", warm >= 5)
        if r.get("train_prefill_s_warm"):
            print(f"         (of which filling the cache: cold {r['train_prefill_s_cold']:.1f} s, warm "
                  f"{r['train_prefill_s_warm']:.1f} s; the rest is the model's training loop)")
        if r.get("train_data_pass_s_warm"):
            data = r["train_data_pass_s_cold"] / r["train_data_pass_s_warm"]
            _check(f"[{n}] cold / warm data pass (cache fill + batch waits)", data, ">= 5x", data >= 5)
        if r.get("ray_evaluate_s") is not None:
            ray = r["ray_evaluate_s"] / r["local_evaluate_s"]
            _check(f"[{n}] evaluate ray / local process pool", ray, "<= 1.3x", ray <= 1.3)
            _check(f"[{n}] identical predictions", None, "true", bool(r["predictions_identical"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,400,1600", help="comma-separated cohort sizes (default 100,400,1600)")
    ap.add_argument("--image-size", type=int, default=128, help="voxels per axis of the written images (default 128)")
    ap.add_argument("--spatial-size", type=int, default=32,
                    help="the model's image input size per axis, preprocess.image.spatial_size (default 32)")
    ap.add_argument("--data-dir", default=os.environ.get("MEDMM_BENCH_DIR", "/tmp/medmm-bench-scale"),
                    help="where cohorts are written once and reused, and runs work (default /tmp/medmm-bench-scale)")
    ap.add_argument("--out", required=True, help="JSON file: one row per cohort size")
    ap.add_argument("--synth-workers", type=int, default=2)
    ap.add_argument("--prefill-workers", type=int, default=2, help="preprocess.workers of medmm train (default 2)")
    ap.add_argument("--loader-workers", type=int, default=2, help="train.num_workers (default 2)")
    ap.add_argument("--eval-workers", type=int, default=2, help="medmm evaluate --workers (default 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bootstrap", type=int, default=200, help="medmm evaluate --bootstrap (default 200)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray evaluation")
    ap.add_argument("--skip-preprocess", action="store_true",
                    help="skip the `medmm preprocess` 1-vs-2-worker rates (a memory-only run at a large size)")
    ap.add_argument("--keep", action="store_true", help="keep the caches of each run")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    need_gb = max(sizes) * args.spatial_size**3 * 4 * 3 / 2**30 + max(sizes) * args.image_size**3 * 2 * 0.6 / 2**30
    free_gb = shutil.disk_usage(args.data_dir).free / 2**30
    print(f"disk: about {need_gb:.1f} GB needed at most, {free_gb:.1f} GB free in {args.data_dir}")

    cluster = None
    if not args.no_ray:
        import ray
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 300 * 2**20})
        cluster.add_node(num_cpus=1, object_store_memory=300 * 2**20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)  # the cluster up before timing
        ray.shutdown()
    rows = []
    try:
        for n in sizes:
            rows.append(bench_size(n, args, cluster.address if cluster else None))
            Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        if cluster is not None:
            cluster.shutdown()
    print(json.dumps(rows, indent=2))
    report(rows)


if __name__ == "__main__":
    main()
