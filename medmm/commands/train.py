"""``medmm train``: train a multimodal model from an experiment config and log it to MLflow.

Examples::

    medmm train --config experiment.yaml
    medmm train --config experiment.yaml train.lr=0.001 model.fusion.name=concat split.cv_folds=5
    medmm train cohort/manifest.csv --epochs 20            # no config file: defaults everywhere
    medmm train --resume 3f2a...                           # continue a killed run from its last checkpoint
    torchrun --nproc_per_node 2 -m medmm train --config experiment.yaml   # DistributedDataParallel
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (
        "Train a multimodal model and log it to MLflow.\n\n"
        "The experiment is described by a YAML config (schema: medmm/schemas/experiment.schema.json) with the\n"
        "sections cohort, tasks, split, preprocess, model, train, transfer, tracking and out_dir. Any key can be\n"
        "overridden on the command line as KEY=VALUE with a dotted key (train.lr=0.001, model.fusion.name=concat);\n"
        "values are read as YAML. The resolved config is written to OUT_DIR/config.yaml and logged with the run.\n"
        "Checkpoints are written each epoch and on Ctrl-C/SIGTERM; `--resume RUN_ID` continues from the last one\n"
        "and reaches the same weights and metrics as an uninterrupted run. Under torchrun, training is\n"
        "distributed (gloo on CPU, NCCL on GPU) and only rank 0 logs and checkpoints."
    )
    p.epilog = __doc__.split("Examples::", 1)[1]
    p.add_argument("args", nargs="*", metavar="MANIFEST | KEY=VALUE",
                   help="config overrides KEY=VALUE; without --config the first argument may be a cohort manifest "
                        "(CSV or Parquet with split and label_* columns) trained with default settings")
    p.add_argument("--config", "-c", metavar="FILE", default=None, help="experiment config (YAML)")
    p.add_argument("--resume", metavar="RUN_ID", default=None,
                   help="continue the MLflow run RUN_ID from its logged config and last checkpoint "
                        "(overrides are not allowed: a resumed run keeps its settings)")
    p.add_argument("--out", default=None, help="output folder (shortcut for out_dir=...; default medmm_run)")
    p.add_argument("--fusion", default=None, help="fusion module name (shortcut for model.fusion.name=...)")
    p.add_argument("--modalities", default=None,
                   help="comma-separated modalities to use, e.g. image,ehr (shortcut for model.modalities=[...])")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (shortcut for train.epochs=...)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (shortcut for train.lr=...)")
    p.add_argument("--seed", type=int, default=None, help="training seed (shortcut for train.seed=...)")
    p.add_argument("--cv", type=int, default=None, metavar="K",
                   help="K-fold cross-validation on train+val, final model scored on test (split.cv_folds=K)")
    p.add_argument("--experiment", default=None, help="MLflow experiment name (tracking.experiment=...; default medmm)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--register", metavar="NAME", default=None,
                   help="register the logged model under NAME in the MLflow model registry")
    p.add_argument("--no-log-model", action="store_true", help="do not log the model to MLflow")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _overrides(args: argparse.Namespace, positional: list[str]) -> list[str]:
    out = list(positional)
    shortcuts = {"out_dir": args.out, "model.fusion.name": args.fusion, "train.epochs": args.epochs,
                 "train.lr": args.lr, "train.seed": args.seed, "split.cv_folds": args.cv,
                 "tracking.experiment": args.experiment, "tracking.tracking_uri": args.tracking_uri,
                 "tracking.register_model": args.register}
    out += [f"{k}={v}" for k, v in shortcuts.items() if v is not None]
    if args.modalities:
        mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
        out.append(f"model.modalities=[{','.join(mods)}]")
    if args.no_log_model:
        out.append("tracking.log_model=false")
    return out


def build_config(args: argparse.Namespace):
    from ..config import load_config
    from ..errors import ConfigError

    positional = list(args.args)
    manifest = None
    if not args.config and positional and "=" not in positional[0]:
        manifest = positional.pop(0)
    bad = [a for a in positional if "=" not in a]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not KEY=VALUE", hint="overrides look like train.lr=0.001")
    overrides = _overrides(args, positional)
    if args.config:
        return load_config(args.config, overrides)
    if manifest is None and not any(o.startswith("cohort.manifest=") for o in overrides):
        raise ConfigError("no experiment given", hint="use --config FILE, a manifest path, or --resume RUN_ID")
    return load_config({"cohort": {"manifest": manifest}} if manifest else {}, overrides)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..experiment import resume_experiment, run_experiment
    from ..train.distributed import dist_info

    main = dist_info().rank == 0
    if args.resume:
        if args.args or args.config:
            raise ConfigError("--resume takes no config or overrides", hint="a resumed run keeps its logged settings")
        res = resume_experiment(args.resume, tracking_uri=args.tracking_uri, progress=not args.quiet)
    else:
        cfg = build_config(args)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        res = run_experiment(config=cfg, progress=not args.quiet)
    _shutdown()
    if main:
        if res.cv_metrics is not None:
            print("cross-validation:")
            print(res.cv_metrics.to_string(index=False))
        if res.metrics is not None:
            print(res.metrics[res.metrics["group"] == "all"].to_string(index=False))
        print(f"model: {res.model_dir}\nMLflow run {res.run_id} in {res.tracking_uri}")
    return 0


def _shutdown() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
