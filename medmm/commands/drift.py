"""``medmm drift REFERENCE CURRENT``: input, missingness, prediction and calibration drift of a
current cohort against a reference cohort, written as a report and logged to MLflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", help="reference cohort manifest (e.g. the training data)")
    parser.add_argument("current", help="current cohort manifest (e.g. last month's patients)")
    parser.add_argument("--model", default=None,
                        help="model folder or MLflow URI: adds embedding (MMD), prediction and calibration drift")
    parser.add_argument("--out", default="drift_report", help="output folder (default drift_report)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="family-wise false-alarm rate, Bonferroni over all tests (default 0.05)")
    parser.add_argument("--permutations", type=int, default=500, help="permutations of each MMD test (default 500)")
    parser.add_argument("--reference-split", default=None,
                        help="use only this split of the reference cohort (e.g. train); default all patients")
    parser.add_argument("--seed", type=int, default=0, help="seed of the permutation tests")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI, for logging and for a runs:/ or "
                        "models:/ --model (default $MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--experiment", default="medmm-drift", help="MLflow experiment name (default medmm-drift)")


def run(args: argparse.Namespace) -> int:
    from ..cohort import load_cohort
    from ..deploy.drift import drift_report, extract_features

    model = None
    if args.model:
        from ..train.hub import load_model

        model = load_model(args.model, tracking_uri=args.tracking_uri)
    ref_cohort = load_cohort(args.reference, progress=False)
    ref = ref_cohort.split(args.reference_split) if args.reference_split else ref_cohort.records
    cur = load_cohort(args.current, progress=False).records
    report = drift_report(extract_features(ref, model), extract_features(cur, model), alpha=args.alpha,
                          n_permutations=args.permutations, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.table.to_csv(out / "drift_tests.csv", index=False)
    (out / "drift_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    for m, d in report.modalities.items():
        print(f"{m:12s} {'DRIFT' if d else 'ok'}")
    alarms = report.table[report.table["alarm"]]
    if len(alarms):
        print("\nalarms (p below the Bonferroni threshold %.2g):" % report.threshold)
        print(alarms[["modality", "feature", "test", "statistic", "p_value", "psi"]].to_string(index=False))
    if not args.no_mlflow:
        from ..tracking import MlflowTracker

        with MlflowTracker(experiment=args.experiment, tracking_uri=args.tracking_uri,
                           tags={"medmm.kind": "drift"}) as tracker:
            tracker.log_params({"reference": Path(args.reference).name, "current": Path(args.current).name,
                                "alpha": args.alpha, "model": _model_name(args.model)})
            tracker.log_metrics({f"drift_{m}": float(d) for m, d in report.modalities.items()}
                                | {"drift_any": float(report.drifted), "n_alarms": float(len(alarms))})
            tracker.log_artifact(out / "drift_report.json", "drift")
            tracker.log_artifact(out / "drift_tests.csv", "drift")
        print(f"logged to MLflow run {tracker.run_id}")
    print(f"wrote {out / 'drift_report.json'}")
    return 0


def _model_name(ref: str | None) -> str:
    from ..train.hub import is_mlflow_uri

    return "none" if not ref else ref if is_mlflow_uri(ref) else Path(ref).name
