"""Evaluation benchmark: vectorised bootstrap CIs, batch scoring throughput, flat memory.

Run: ``.venv/bin/python benchmarks/bench_evaluate.py [--quick] [--device auto]``

1. **Bootstrap**: every metric of one task (AUROC, AUPRC, Brier, ECE and the calibration
   curve, and sensitivity/specificity/PPV/NPV/F1/accuracy at three operating points
   re-chosen per resample), 2,000 resamples of 10,000 patients, against the target (5 s)
   and the reference a loop over resamples with scikit-learn would take (timed on a few
   resamples and scaled).
2. **Throughput**: batch scoring of the demo cohort (DICOM, notes, vitals, EHR) with a model
   of the demo's architecture, cache warm (a first pass fills the OS page cache and the
   EHR table cache), patients/s, plain and with all 16 modality subsets masked.
3. **Memory**: peak RSS of scoring a manifest streamed in batches (``score_cohort``), in a
   fresh process per size, as the cohort grows 10x (1,000 to 10,000 patients; ``--quick``
   200 to 2,000), beside the reference that loads the whole cohort first
   (``load_cohort`` + ``predict_records``). The big manifests repeat the demo cohort's files
   under new patient ids.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_bootstrap(n: int, n_boot: int) -> None:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    from medmm.evaluate.bootstrap import bootstrap_metrics

    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.3).astype(float)
    p = 1 / (1 + np.exp(-(1.5 * y + rng.normal(size=n) - 1)))
    bootstrap_metrics(y[:100], p[:100], n_boot=10)  # imports, first-call overheads
    t0 = time.perf_counter()
    res = bootstrap_metrics(y, p, n_boot=n_boot, seed=0)
    ours = time.perf_counter() - t0
    n_metrics = sum(isinstance(v, tuple) for v in res.values())
    # reference: a Python loop over resamples with scikit-learn (4 metrics only), scaled
    k = 20
    t0 = time.perf_counter()
    for _ in range(k):
        idx = rng.integers(0, n, n)
        roc_auc_score(y[idx], p[idx])
        average_precision_score(y[idx], p[idx])
        brier_score_loss(y[idx], p[idx])
        (p[idx] >= 0.5).mean()
    ref = (time.perf_counter() - t0) / k * n_boot
    print(f"bootstrap: {n_boot} resamples x {n} patients, {n_metrics} metrics + calibration curve")
    print(f"  {'medmm (vectorised)':<40}{ours:8.2f} s")
    print(f"  {'target':<40}{5.0:8.2f} s")
    print(f"  {'sklearn loop, 4 metrics (scaled from ' + str(k) + ')':<40}{ref:8.2f} s")
    print(f"  AUROC {res['auroc'][0]:.4f} [{res['auroc'][1]:.4f}, {res['auroc'][2]:.4f}]")


def make_model(manifest: Path, out: Path) -> Path:
    import torch

    from medmm.cohort import load_cohort
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor

    torch.manual_seed(0)
    cohort = load_cohort(manifest, progress=False)
    pre = MultimodalPreprocessor().fit(cohort.split("train"))
    model = MultimodalModel(ModelConfig(tasks={"tumor": "binary", "disease": "binary"}), pre.output_shapes(), pre)
    return model.save(out)


def bench_throughput(manifest: Path, model_dir: Path, device: str, batch_size: int, workers: int) -> None:
    from medmm.evaluate.scoring import score_cohort
    from medmm.models.multimodal import MultimodalModel

    model = MultimodalModel.load(model_dir)
    score_cohort(model, manifest, split=None, progress=False, device=device, batch_size=batch_size)  # warm
    rows = []
    for subsets, nw in [(False, 0), (True, 0)] + ([(False, workers)] if workers else []):
        t0 = time.perf_counter()
        s = score_cohort(model, manifest, split=None, subsets=subsets, progress=False, device=device,
                         batch_size=batch_size, num_workers=nw)
        dt = time.perf_counter() - t0
        rows.append((subsets, nw, len(s.predictions), dt))
    print(f"batch scoring throughput (cache warm, device {device}, batch {batch_size}, {os.cpu_count()} CPUs):")
    for subsets, nw, n, dt in rows:
        label = ("plus 16 masked subsets" if subsets else "plain") + (f", {nw} reader workers" if nw else "")
        print(f"  {label:<40}{n / dt:8.1f} patients/s  ({n} patients in {dt:.1f} s)")


def replicate(manifest: Path, n: int, out: Path) -> Path:
    """A manifest of ``n`` rows repeating ``manifest``'s files under new patient ids."""
    import pandas as pd

    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    reps = -(-n // len(df))
    big = pd.concat([df] * reps, ignore_index=True).iloc[:n].copy()
    # EHR rows are looked up by patient id: keep the original id for that file via a copy per repeat
    base = manifest.parent
    ehr = pd.read_csv(base / "ehr.csv", dtype=str, keep_default_na=False)
    new_ids = [f"R{i:06d}" for i in range(n)]
    orig = big["patient_id"].tolist()
    ehr_map = dict(zip(ehr["patient_id"], ehr.to_dict(orient="records")))
    rows = []
    for nid, oid in zip(new_ids, orig):
        if oid in ehr_map:
            rows.append({**ehr_map[oid], "patient_id": nid})
    pd.DataFrame(rows).to_csv(out / f"ehr_{n}.csv", index=False)
    big["patient_id"] = new_ids
    for c in ("image_path", "notes_path", "vitals_path"):
        big[c] = [str((base / v).resolve()) if v else "" for v in big[c]]
    big["ehr_path"] = [f"ehr_{n}.csv" if v else "" for v in big["ehr_path"]]
    path = out / f"manifest_{n}.csv"
    big.to_csv(path, index=False)
    return path


_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from medmm.models.multimodal import MultimodalModel
model = MultimodalModel.load({model!r})
t0 = time.perf_counter()
if {mode!r} == "stream":
    from medmm.evaluate.scoring import score_cohort
    s = score_cohort(model, {manifest!r}, split=None, progress=False, device={device!r}, batch_size={bs})
    n = len(s.predictions)
else:
    from medmm.cohort import load_cohort
    cohort = load_cohort({manifest!r}, progress=False)
    n = len(model.predict_records(cohort.records, batch_size={bs}))
print(json.dumps({{"n": n, "seconds": time.perf_counter() - t0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def peak_memory(manifest: Path, model_dir: Path, mode: str, device: str, batch_size: int) -> dict:
    code = _CHILD.format(root=str(ROOT), model=str(model_dir), manifest=str(manifest), mode=mode, device=device,
                         bs=batch_size)
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (200 and 2,000 patients; 500 resamples)")
    ap.add_argument("--device", default="auto", help="torch device for scoring (default auto: CUDA when available)")
    ap.add_argument("--batch-size", type=int, default=64, help="patients per scoring batch (default 64)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                    help="reader processes for the throughput run with workers (default min(4, CPUs); 0: skip it)")
    ap.add_argument("--skip", default="",
                    help="comma-separated parts to skip: bootstrap, throughput, memory, reference (the load-all run)")
    ap.add_argument("--sizes", default=None,
                    help="cohort sizes of the memory part, comma-separated (default 1000,10000; --quick 200,2000)")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "bootstrap" not in skip:
        bench_bootstrap(10_000, 2_000)
    if skip >= {"throughput", "memory"}:
        return 0
    from medmm.synth import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_demo = 60 if args.quick else 300
        size = 16 if args.quick else 32
        t0 = time.perf_counter()
        manifest = generate_cohort(tmp / "demo", n_patients=n_demo, seed=0, image_size=size, progress=False)
        print(f"demo cohort: {n_demo} patients, {size}^3 DICOM volumes, written in {time.perf_counter() - t0:.0f} s")
        model_dir = make_model(manifest, tmp / "model")
        if "throughput" not in skip:
            bench_throughput(manifest, model_dir, args.device, args.batch_size, args.workers)
        if "memory" not in skip:
            sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else (
                (200, 2_000) if args.quick else (1_000, 10_000))
            print(f"peak memory (RSS of a fresh process) scoring {' and '.join(f'{n:,}' for n in sizes)} patients:",
                  flush=True)
            for mode, label in (("stream", "medmm score_cohort (stream)"), ("load", "reference: load all, predict")):
                if mode == "load" and "reference" in skip:
                    continue
                first = None
                for n in sizes:
                    r = peak_memory(replicate(manifest, n, tmp), model_dir, mode, args.device, args.batch_size)
                    first = first or r["peak_mb"]
                    print(f"  {label:<30}{n:>8,} patients {r['peak_mb']:8.0f} MB  ({r['peak_mb'] / first:.2f}x)  "
                          f"{r['seconds']:.0f} s, {r['n'] / r['seconds']:.0f} patients/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
