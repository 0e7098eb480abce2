"""``medmm train``: train a multimodal model from an experiment config and log it to MLflow.

Examples::

    medmm train --config experiment.yaml
    medmm train --config experiment.yaml train.lr=0.001 model.fusion.name=concat split.cv_folds=5
    medmm train cohort/manifest.csv --epochs 20            # no config file: defaults everywhere
    medmm train --resume 3f2a...                           # continue a killed run from its last checkpoint
    torchrun --nproc_per_node 2 -m medmm train --config experiment.yaml   # DistributedDataParallel
    medmm train --config experiment.yaml --engine ray --address auto --num-workers 4   # Ray Train, across nodes
"""

from __future__ import annotations

import argparse
from typing import Any


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
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (or each torchrun process); ray: --num-workers processes of a Ray "
                        "cluster under Ray Train's TorchTrainer, one DDP process group (default local)")
    p.add_argument("--address", default=None,
                   help="Ray cluster for --engine ray: auto, host:port or ray://host:port (default $RAY_ADDRESS, "
                        "else a Ray started for this command)")
    p.add_argument("--num-workers", type=int, default=2, metavar="N",
                   help="training processes for --engine ray, one CPU (or GPU with --gpu) each (default 2)")
    p.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker (NCCL); --engine ray")
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
    return experiment_config(list(args.args), args.config, lambda positional: _overrides(args, positional))


def experiment_config(positional: list[str], config: str | None, overrides: Any = list):
    """The experiment of a command line: ``[MANIFEST] KEY=VALUE ...`` or ``--config FILE KEY=VALUE ...``
    (``overrides`` turns the KEY=VALUE words into the override list, adding a command's shortcuts)."""
    from ..config import load_config
    from ..errors import ConfigError

    positional = list(positional)
    manifest = None
    if not config and positional and "=" not in positional[0]:
        manifest = positional.pop(0)
    bad = [a for a in positional if "=" not in a]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not KEY=VALUE", hint="overrides look like train.lr=0.001")
    overrides = overrides(positional)
    if config:
        return load_config(config, overrides)
    if manifest is None and not any(o.startswith("cohort.manifest=") for o in overrides):
        raise ConfigError("no experiment given", hint="use --config FILE, a manifest path, or --resume RUN_ID")
    return load_config({"cohort": {"manifest": manifest}} if manifest else {}, overrides)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..experiment import resume_experiment, run_experiment
    from ..train.distributed import dist_info

    main = dist_info().rank == 0
    if args.engine != "local" and args.resume:
        raise ConfigError("--resume runs locally", hint="resume without --engine ray, or start a new run on Ray")
    if args.resume:
        if args.args or args.config:
            raise ConfigError("--resume takes no config or overrides", hint="a resumed run keeps its logged settings")
        res = resume_experiment(args.resume, tracking_uri=args.tracking_uri, progress=not args.quiet)
    else:
        cfg = build_config(args)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        if args.engine == "ray":
            return _print_ray(train_on_ray(cfg, address=args.address, num_workers=args.num_workers,
                                           use_gpu=args.gpu))
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


# ------------------------------------------------------------------------------------------------ Ray Train


def train_on_ray(cfg: Any, *, address: str | None = None, num_workers: int = 2, use_gpu: bool = False) -> dict[str, Any]:
    """Run the experiment ``cfg`` under Ray Train's ``TorchTrainer``: ``num_workers`` processes
    anywhere on the cluster, joined in one process group (gloo, NCCL with ``use_gpu``) by Ray
    Train; each runs :func:`medmm.experiment.run_experiment` as a ``torchrun`` rank would (its
    shard of every epoch, DDP, the image cache filled in shares; rank 0 logs, checkpoints and
    writes ``out_dir``). The manifest, its files, ``preprocess.cache_dir`` and ``out_dir`` must
    be at the same paths on every node (a shared filesystem), medmm installed on each.

    Returns rank 0's summary: ``run_id``, ``tracking_uri``, ``model_dir``, ``out_dir``."""
    import json
    from pathlib import Path

    from ..engines.ray_engine import connect
    from ..errors import ConfigError, EngineError
    from ..tracking import default_tracking_uri

    if num_workers < 1:
        raise ConfigError(f"--num-workers must be at least 1, got {num_workers}", column="num_workers")
    connect(address)
    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EngineError("Ray Train is not installed", hint="pip install 'medmm[ray]' (ray[train])") from exc
    # the workers run in other folders, on other machines: every path absolute, the cache shared
    cfg.out_dir = str(Path(cfg.out_dir).resolve())
    cfg.cohort.manifest = str(Path(cfg.cohort.manifest).resolve())
    cfg.preprocess.cache_dir = str(Path(cfg.preprocess.cache_dir or Path(cfg.out_dir) / "cache").resolve())
    cfg.tracking.tracking_uri = cfg.tracking.tracking_uri or default_tracking_uri()
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "run.json").unlink(missing_ok=True)
    trainer = TorchTrainer(
        _ray_train_loop,
        train_loop_config={"config": cfg},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="medmm-train", storage_path=str(Path(cfg.out_dir) / "ray_train")),
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps the workers' errors, with their tracebacks
        raise EngineError(f"training on Ray failed: {exc}",
                          hint="the same config runs locally without --engine ray") from exc
    run = json.loads((Path(cfg.out_dir) / "run.json").read_text())
    return {**run, "out_dir": cfg.out_dir, "model_dir": str(Path(cfg.out_dir) / "model"), "num_workers": num_workers}


def _ray_train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the experiment, as one rank of the process group Ray Train set up."""
    import ray.train

    from ..experiment import run_experiment

    res = run_experiment(config=config["config"], progress=False)
    ray.train.report({"best_epoch": float(res.train_result.best_epoch) if res.train_result else -1.0})


def _print_ray(summary: dict[str, Any]) -> int:
    from pathlib import Path

    metrics = Path(summary["out_dir"]) / "metrics_by_pattern.csv"
    if metrics.exists():
        import pandas as pd

        m = pd.read_csv(metrics)
        print(m[m["group"] == "all"].to_string(index=False))
    print(f"model: {summary['model_dir']} (Ray Train, {summary['num_workers']} workers)\n"
          f"MLflow run {summary['run_id']} in {summary['tracking_uri']}")
    return 0
