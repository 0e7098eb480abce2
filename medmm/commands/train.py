"""``medmm train MANIFEST``: train a multimodal model on a cohort and log it to MLflow."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="cohort manifest (CSV or Parquet) with split and label_* columns")
    p.add_argument("--out", default="medmm_run", help="folder for the model, predictions and metrics (default medmm_run)")
    p.add_argument("--fusion", default="attention", help="fusion module: attention (default) or concat")
    p.add_argument("--modalities", default="image,notes,vitals,ehr", help="comma-separated modalities to use")
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs (default 60; early stopping on val)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--experiment", default="medmm", help="MLflow experiment name (default medmm)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--no-log-model", action="store_true", help="do not log the model to MLflow")


def run(args: argparse.Namespace) -> int:
    from ..cohort import load_cohort
    from ..models.multimodal import ModelConfig
    from ..train.trainer import TrainConfig
    from ..experiment import run_experiment

    cohort = load_cohort(args.manifest)
    if cohort.report.problems:
        print(cohort.report)
    mods = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    mc = ModelConfig(tasks={t: "binary" for t in cohort.tasks}, modalities=mods, fusion={"name": args.fusion})
    tc = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    res = run_experiment(args.manifest, out_dir=args.out, model_config=mc, train_config=tc, cohort=cohort,
                         experiment=args.experiment, tracking_uri=args.tracking_uri, log_model=not args.no_log_model)
    print(res.metrics[res.metrics["group"] == "all"].to_string(index=False))
    print(f"model: {res.model_dir}\nMLflow run {res.run_id} in {res.tracking_uri}")
    return 0
