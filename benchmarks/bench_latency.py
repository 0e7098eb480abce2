"""Single-patient and batch prediction latency (p50/p99) per runtime, side by side with the targets.

Runtimes: eager PyTorch (fp32 and dynamic int8), TorchScript, ONNX Runtime (split graphs: each
encoder on present rows only; and the single graph) and ONNX Runtime dynamic int8.

Scenarios:
  * one patient with vitals, EHR and a note, no image     (target: p99 < 10 ms, best runtime)
  * one patient with every modality and a 64^3 volume      (target: p99 < 100 ms, best runtime)
  * a batch of 32 patients (every modality present)
and int8 against fp32 eager (target: >= 1.5x faster; AUROC drop <= 0.01, see `medmm compress`).

The 64^3 scenario runs the same weights on 64^3 inputs (the encoders pool globally, so they take
any volume size): the model is re-exported for that input shape.

    python benchmarks/bench_latency.py --model MODEL_DIR [--quick] [--threads 2]
    python benchmarks/bench_latency.py --quick        # trains a small demo model first (minutes)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def demo_model(out: Path) -> Path:
    import medmm
    from medmm.train.trainer import TrainConfig

    manifest = medmm.generate_cohort(out / "cohort", n_patients=120, seed=0, image_size=16, progress=False)
    res = medmm.run_experiment(manifest, out_dir=out / "exp", log_model=False, progress=False,
                               train_config=TrainConfig(epochs=3),
                               tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return res.model_dir


def inputs_for(model, present: dict[str, bool], batch: int, image_shape=None, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = []
    for m in model.modalities:
        shape = image_shape if (m == "image" and image_shape) else model.input_shapes[m]
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        if not present.get(m, False):
            x[:] = 0
        xs.append(x)
    xs.append(np.tile(np.array([[present.get(m, False) for m in model.modalities]]), (batch, 1)))
    return xs


def raw_record(model):
    """One patient as the service receives it (``bench_serve.payload``: 24 h of five vital signs,
    an EHR row, a note), parsed by the service's own JSON path."""
    if model.preprocessor is None:
        return None
    from bench_serve import payload

    from medmm.deploy.app import PatientIn
    from medmm.deploy.app.conversion import record_from_json

    return record_from_json(PatientIn.model_validate(payload(0)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a model folder written by MultimodalModel.save (default: train a demo model)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per runtime (the target is for 2 cores)")
    ap.add_argument("--n", type=int, default=500, help="timed calls per measurement")
    ap.add_argument("--quick", action="store_true", help="100 timed calls, for development")
    ap.add_argument("--runtimes", default="eager,torchscript,onnx,onnx-full,eager-int8,onnx-int8",
                    help="comma-separated runtimes to measure")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    import torch

    from medmm.deploy.bench import machine_load, measure_latency
    from medmm.deploy.runtime import Predictor
    from medmm.models.multimodal import MultimodalModel

    n = 100 if args.quick else args.n
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="medmm_bench_"))
    model_dir = Path(args.model) if args.model else demo_model(tmp)
    print(f"machine at start: {machine_load()}")
    model = MultimodalModel.load(model_dir)
    # the same weights on 64^3 volumes, exported for that shape
    shapes64 = dict(model.input_shapes)
    has_image = "image" in model.modalities
    if has_image:
        shapes64["image"] = (model.input_shapes["image"][0], 64, 64, 64)
    model64 = MultimodalModel(model.config, shapes64, model.preprocessor)
    model64.load_state_dict(model.state_dict())
    model64.eval()
    scenarios = [
        ("1 patient: vitals+EHR+note, no image", model, {"vitals": True, "ehr": True, "notes": True}, 1, None, 10.0),
    ]
    if has_image:
        scenarios.append(("1 patient: all + 64^3 volume", model64, {m: True for m in model.modalities}, 1, None, 100.0))
    scenarios.append(("batch of 32: all modalities", model, {m: True for m in model.modalities}, 32, None, None))
    runtimes = args.runtimes.split(",")
    rows = []
    predictors = {}
    for sname, mdl, present, batch, _, target in scenarios:
        export_dir = (model_dir / "export") if mdl is model else (tmp / "export64")
        xs = inputs_for(mdl, present, batch)
        for rt in runtimes:
            key = (id(mdl), rt)
            if key not in predictors:
                predictors[key] = Predictor.from_model(mdl, runtime=rt, export_dir=export_dir, threads=args.threads)
            pred = predictors[key]
            lat = measure_latency(pred.predict_arrays, xs, n=n if batch == 1 else max(20, n // 5),
                                  warmup=max(10, n // 10))
            rows.append({"scenario": sname, "runtime": rt, "batch": batch, **lat, "target_p99_ms": target})
    # end to end from a raw record (what a caller of the service or of predict_records waits for):
    # preprocessing (vitals grid, TF-IDF + findings, EHR transform) and the model
    record = raw_record(model)
    if record is not None:
        sname = "1 patient end to end: raw record, no image"
        scenarios.insert(1, (sname, model, None, 1, None, 10.0))
        for rt in runtimes:
            pred = predictors[(id(model), rt)]
            lat = measure_latency(pred.predict_records, [record], n=n, warmup=max(10, n // 10))
            rows.append({"scenario": sname, "runtime": rt, "batch": 1, **lat, "target_p99_ms": 10.0})
    print(f"machine at end:   {machine_load()}")
    print(f"\nmodel {model_dir}  threads={args.threads}  torch {torch.__version__}\n")
    print(f"{'scenario':40s} {'runtime':12s} {'p50 ms':>8s} {'p99 ms':>8s} {'target p99':>11s}  verdict")
    for r in rows:
        t = r["target_p99_ms"]
        verdict = "" if t is None else ("meets" if r["p99_ms"] < t else "misses")
        print(f"{r['scenario']:40s} {r['runtime']:12s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{('< %g ms' % t) if t else '':>11s}  {verdict}")
    print()
    for sname, *_rest in scenarios:
        sub = [r for r in rows if r["scenario"] == sname]
        best = min(sub, key=lambda r: r["p99_ms"])
        t = best["target_p99_ms"]
        print(f"{sname}: best runtime {best['runtime']} p99 {best['p99_ms']:.2f} ms"
              + (f" (target < {t:g} ms: {'met' if best['p99_ms'] < t else 'NOT met'})" if t else ""))
        by = {r["runtime"]: r for r in sub}
        for q, base in (("eager-int8", "eager"), ("onnx-int8", "onnx")):
            if q in by and base in by:
                sp = by[base]["p50_ms"] / by[q]["p50_ms"]
                print(f"    {q} vs {base}: {sp:.2f}x (p50)" + (f"; vs eager fp32 {by['eager']['p50_ms'] / by[q]['p50_ms']:.2f}x"
                                                          if "eager" in by else "") + "  (target >= 1.5x vs eager fp32)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
