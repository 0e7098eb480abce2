"""``medmm evaluate MODEL MANIFEST``: score a cohort in batches and write predictions, metrics
with confidence intervals, subgroup and missing-data analyses and an HTML report."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model folder written by `medmm train` or MultimodalModel.save")
    p.add_argument("manifest", help="cohort manifest (CSV or Parquet) with label_* columns")
    p.add_argument("--out", default="medmm_eval",
                   help="folder for predictions.parquet, the tables, figures and report.html (default medmm_eval)")
    p.add_argument("--split", default="test", help="split to evaluate, or 'all' (default test)")
    p.add_argument("--calibrate", default="none", metavar="METHOD_OR_FILE",
                   help="temperature or isotonic: fit a calibrator on --calibration-split and report before/after; "
                        "or the calibration.json of an earlier evaluation, applied as it is (default none)")
    p.add_argument("--calibration-split", default="val",
                   help="split used to fit the calibrator and to choose thresholds (default val)")
    p.add_argument("--subgroups", default=None,
                   help="comma-separated columns to break metrics down by "
                        "(default sex,age_band,site,scanner_manufacturer; any manifest column works)")
    p.add_argument("--min-subgroup", type=int, default=30,
                   help="subgroups with fewer labelled patients are flagged too small (default 30)")
    p.add_argument("--no-robustness", action="store_true",
                   help="skip scoring every subset of modalities (masking table, fusion table, Shapley values)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    p.add_argument("--threshold", type=float, default=0.5, help="fixed operating threshold (default 0.5)")
    p.add_argument("--target-sensitivity", type=float, default=0.9,
                   help="operating point with at least this sensitivity (default 0.9)")
    p.add_argument("--compare", default=None, metavar="MODEL2",
                   help="a second model folder to compare with on the same patients (DeLong, paired bootstrap)")
    p.add_argument("--no-baselines", action="store_true",
                   help="do not fit LogisticRegression / HistGradientBoosting / TF-IDF + LR (binary tasks), "
                        "multinomial LR / ridge / Cox PH (other task types) on the train split "
                        "to report beside the model")
    p.add_argument("--batch-size", type=int, default=64, help="patients scored per batch (default 64)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes reading and preprocessing patients while the model scores (default 0: inline)")
    from ..engines import add_engine_arguments

    add_engine_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda:0 ...")
    p.add_argument("--mlflow", action="store_true", help="log metrics, figures and the report to a new MLflow run")
    p.add_argument("--run-id", default=None, help="log into this existing MLflow run instead (implies --mlflow)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--experiment", default="medmm", help="MLflow experiment of a new run (default medmm)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _calibration(value: str):
    from pathlib import Path

    from ..errors import ConfigError
    from ..evaluate.calibration import CALIBRATORS

    if value == "none":
        return None
    if value in CALIBRATORS:
        return value
    if Path(value).is_file():
        return Path(value)
    raise ConfigError(f"--calibrate {value!r} is neither a method nor a file",
                      hint=f"use none, {', '.join(sorted(CALIBRATORS))} or a calibration.json path")


def run(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from ..evaluate.subgroups import SmallSubgroupWarning

    warnings.simplefilter("ignore", SmallSubgroupWarning)  # printed below with the other warnings
    if args.engine == "ray":  # the cluster's workers load the model while this process does
        from ..engines.ray_engine import manifest_batches, prepare

        splits = [args.split, *([args.calibration_split] if args.calibration_split not in (None, "", args.split) else [])]
        prepare(args.model, address=args.address, batches=manifest_batches(args.manifest, splits, args.batch_size))
    from ..evaluate.api import evaluate_cohort

    common = dict(
        split=None if args.split == "all" else args.split,
        calibrate=_calibration(args.calibrate),
        calibration_split=args.calibration_split,
        subgroups=[c.strip() for c in args.subgroups.split(",") if c.strip()] if args.subgroups else None,
        robustness=not args.no_robustness, n_boot=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
        fixed_threshold=args.threshold, target_sensitivity=args.target_sensitivity,
        min_subgroup=args.min_subgroup, progress=not args.quiet, device=args.device, num_workers=args.workers,
        engine=args.engine, address=args.address,
    )
    res = evaluate_cohort(args.model, args.manifest, baselines=not args.no_baselines, **common)
    if args.compare:
        other = evaluate_cohort(args.compare, args.manifest, baselines=False,
                                **{**common, "robustness": False, "calibrate": None})
        cmp = res.compare(other, names=(Path(args.model).name or "model_1", Path(args.compare).name or "model_2"))
        print(cmp[cmp["metric"].isin(["auroc", "auprc", "brier"])].to_string(index=False))
    figures = res.figures()
    paths = res.save(args.out, figures=figures)
    if args.mlflow or args.run_id:
        run_id = res.log_to_mlflow(run_id=args.run_id, experiment=args.experiment, tracking_uri=args.tracking_uri,
                                   figures=figures)
        print(f"MLflow run {run_id}")
    print(res.summary().to_string(index=False))
    if res.reference_models is not None and len(res.reference_models):
        cols = [c for c in res.reference_models.columns if c not in ("n_positive", "p_value")]
        if "metric" in cols:  # every task type: the metric's own value columns say it all
            cols = [c for c in cols if c not in ("auroc_medmm", "auroc_baseline", "kind")]
        what = "value of the metric" if "metric" in cols else "AUROC"
        print(f"against classical baselines (difference = model - baseline {what}, paired bootstrap 95% CI):")
        print(res.reference_models[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for w in res.warnings:
        print(f"warning: {w}")
    print(f"report: {paths['report']}\npredictions: {paths['predictions']}")
    return 0
