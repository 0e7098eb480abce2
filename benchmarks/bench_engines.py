"""Ray engine vs the local process pool, and `medmm synth --workers`.

Prints: synth patients/s with 1 and N workers (same files), then `evaluate_cohort` wall time with
the local engine (a reader process pool) and with ``engine='ray'`` on a local two-node Ray
cluster (started before timing), and the largest prediction difference. Target (issue 12):
ray within 1.3x of the process pool, identical predictions.

    PYTHONPATH=. python benchmarks/bench_engines.py --patients 200 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from medmm.cohort import load_cohort
    from medmm.evaluate.api import evaluate_cohort
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor
    from medmm.synth import generate_cohort

    tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    kw = dict(n_patients=args.patients, seed=0, image_size=args.image_size, image_format="nifti", progress=False)
    t = time.perf_counter()
    m = generate_cohort(tmp / "one", workers=1, **kw)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    generate_cohort(tmp / "many", workers=args.workers, **kw)
    tn = time.perf_counter() - t
    same = _digest(tmp / "one") == _digest(tmp / "many")
    print(f"synth {args.patients} pts nifti {args.image_size}^3: 1 worker {args.patients / t1:.1f} pt/s, "
          f"{args.workers} workers {args.patients / tn:.1f} pt/s (x{t1 / tn:.2f}), identical files: {same}")

    torch.manual_seed(0)
    pre = MultimodalPreprocessor().fit(load_cohort(m, progress=False).split("train"))
    model = MultimodalModel(ModelConfig(tasks={"tumor": "binary", "disease": "binary"}), pre.output_shapes(), pre)
    folder = model.save(tmp / "model")
    common = dict(split=None, robustness=True, n_boot=200, calibration_split=None, progress=False, batch_size=32)
    t = time.perf_counter()
    loc = evaluate_cohort(folder, m, num_workers=1, **common)
    t_loc = time.perf_counter() - t

    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 * 2**20})
    c.add_node(num_cpus=1, object_store_memory=200 * 2**20)
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    try:
        t = time.perf_counter()
        got = evaluate_cohort(folder, m, engine="ray", address=c.address, **common)
        t_ray = time.perf_counter() - t
    finally:
        ray.shutdown()
        c.shutdown()
    a, b = loc.predictions, got.predictions
    diff = float(np.abs(a[["prob_tumor", "prob_disease"]].to_numpy() - b[["prob_tumor", "prob_disease"]].to_numpy()).max())
    print(f"evaluate {len(a)} pts (16 masked subsets): local process pool {t_loc:.1f} s, "
          f"ray two-node {t_ray:.1f} s (x{t_ray / t_loc:.2f}; target <= 1.3), same patients: "
          f"{list(a.patient_id) == list(b.patient_id)}, max |prob diff| {diff:.1e}")


if __name__ == "__main__":
    main()
