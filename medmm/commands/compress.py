"""``medmm compress MODEL --cohort MANIFEST``: compress a model several ways and compare them.

Writes a table (CSV and Markdown) with, per method, the size, single-patient latency p50/p99, and
AUROC/AUPRC per task with their change against the fp32 model on the cohort's validation split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("fp32", "torchscript", "onnx", "dynamic-int8", "onnx-dynamic-int8", "onnx-static-int8", "pruned",
           "distilled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder written by `medmm train` / MultimodalModel.save, or an MLflow "
                                      "model URI (runs:/RUN_ID/model, models:/NAME/VERSION)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for a runs:/ or models:/ MODEL")
    parser.add_argument("--cohort", required=True,
                        help="cohort manifest: its validation split (test when there is none) is the evaluation "
                             "cohort, its train split trains the distilled student")
    parser.add_argument("--out", default="compressed", help="output folder (default ./compressed; never inside MODEL)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated methods (default all: {','.join(METHODS)})")
    parser.add_argument("--prune-amount", type=float, default=0.5,
                        help="fraction of Linear/Conv weights pruned by magnitude (default 0.5)")
    parser.add_argument("--distill-epochs", type=int, default=20, help="epochs to train the student (default 20)")
    parser.add_argument("--latency-calls", type=int, default=200, help="timed single-patient calls per method")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (student initialisation and batches)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..cohort import load_cohort
    from ..data import MultimodalDataset
    from ..deploy.bench import machine_load
    from ..deploy.compress import compare_methods
    from ..errors import ConfigError
    from ..train.hub import load_model

    out = Path(args.out)
    model = load_model(args.model, tracking_uri=args.tracking_uri)
    cohort = load_cohort(args.cohort, progress=False)
    val = cohort.split("val") or cohort.split("test")
    if not val:
        raise ConfigError("the cohort has no val or test split to evaluate on", path=args.cohort)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    train = cohort.split("train")
    if "distilled" in methods and not train:
        raise ConfigError("distillation needs a train split", path=args.cohort, hint="drop 'distilled' from --methods")
    tasks = model.tasks
    train_ds = MultimodalDataset(train, model.preprocessor, tasks) if train else None
    val_ds = MultimodalDataset(val, model.preprocessor, tasks)
    print(f"before: {machine_load()}")
    df = compare_methods(model, train_ds, val_ds, out_dir=out, methods=methods, prune_amount=args.prune_amount,
                         distill_epochs=args.distill_epochs, n_latency=args.latency_calls, threads=args.threads,
                         seed=args.seed)
    print(f"after:  {machine_load()}")
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "compression.csv", index=False)
    cols = ["method", "size_mb", "p50_ms", "p99_ms"] + [c for c in df.columns if c.startswith(("auroc_", "d_auroc_",
                                                                                                  "auprc_", "d_auprc_"))]
    cols += ["speedup_p50"] if "speedup_p50" in df.columns else []
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(df[cols].round(4).to_string(index=False))
    for _, r in df.iterrows():
        if r["note"]:
            print(f"  {r['method']}: {r['note']}")
    (out / "compression.md").write_text(df[cols + ["note"]].round(4).to_markdown(index=False)
                                        if _has_tabulate() else df[cols + ["note"]].round(4).to_string(index=False))
    print(f"wrote {out / 'compression.csv'}")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
