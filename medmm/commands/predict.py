"""``medmm predict MODEL MANIFEST --out FILE.parquet``: score a cohort with a trained model."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Score every patient of a cohort manifest with a trained model and write one row per patient to a "
        "Parquet file: patient_id, split, pattern (the modalities the patient has), label_<column> when the "
        "manifest has labels, and each task's outputs: prob_<task> (binary), prob_<task>.<class> and "
        "pred_<task> (multi-class), value_<task> (regression), risk_score_<task> and risk_<task>@<horizon> "
        "(survival). The model's own fitted preprocessing is applied to the raw files."
    )
    p.add_argument("model", help="a model folder written by `medmm train` (OUT_DIR/model) or an MLflow model URI "
                                 "(runs:/RUN_ID/model, models:/NAME/VERSION, models:/NAME@ALIAS)")
    p.add_argument("manifest", help="cohort manifest (CSV or Parquet); label_* and split columns are optional")
    p.add_argument("--out", "-o", default="predictions.parquet", help="output Parquet file (default predictions.parquet)")
    p.add_argument("--batch-size", type=int, default=64, help="patients per forward pass (default 64)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI for a models:/ or runs:/ URI (default $MLFLOW_TRACKING_URI, "
                        "else sqlite:///mlflow.db here)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    from ..engines import add_engine_arguments

    add_engine_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_model(ref: str, tracking_uri: str | None = None):
    """A :class:`MultimodalModel` from a folder or an MLflow model URI (:func:`medmm.load_model`)."""
    from ..train.hub import load_model as _load

    return _load(ref, tracking_uri=tracking_uri)


def predict_manifest(model, manifest, *, batch_size: int = 64, progress: bool = False):
    """The predictions table of every patient in ``manifest``."""
    import numpy as np
    import pandas as pd

    from ..cohort import load_cohort
    from ..models.outputs import task_outputs

    cohort = load_cohort(manifest, progress=progress, modalities=model.modalities)
    records = cohort.records
    probs = model.predict_records(records, batch_size=batch_size)
    df = pd.DataFrame({
        "patient_id": [r.patient_id for r in records],
        "split": [r.split for r in records],
        "pattern": ["+".join(m for m in model.modalities if r.present[m]) or "none" for r in records],
    })
    for c in model.label_columns_flat:
        if any(c in r.labels for r in records):
            df[f"label_{c}"] = [np.nan if r.labels.get(c) is None else float(r.labels[c]) for r in records]
    for c, v in task_outputs(model, probs).items():
        df[c] = v
    return df, cohort.report


def predict_manifest_engine(model, manifest, *, batch_size: int = 64, progress: bool = False, engine: str = "ray",
                            address: str | None = None):
    """:func:`predict_manifest`'s table, scored by :func:`~medmm.evaluate.scoring.score_cohort`
    on ``engine`` (streamed, bounded memory): every task's output columns
    (:mod:`medmm.models.outputs`); a survival task's labels are ``time_t`` / ``event_t``."""
    import numpy as np

    from ..cohort import ProblemReport
    from ..evaluate.scoring import score_cohort
    from ..models.outputs import task_outputs

    report = ProblemReport()
    scored = score_cohort(model, manifest, split=None, batch_size=batch_size, progress=progress, report=report,
                          device=str(next(model.parameters()).device), engine=engine, address=address)
    p = scored.predictions
    outputs = list(task_outputs(model, np.zeros((1, model.n_outputs), dtype=np.float32)))
    cols = ["patient_id", "split", "pattern"]
    for t in model.tasks:  # the labels each task has (survival: time and event, censored at the horizon)
        for c in (f"label_{t}", *(f"label_{x}" for x in model.label_columns[t]), f"time_{t}", f"event_{t}"):
            if c in p and c not in cols and p[c].notna().any():
                cols.append(c)
    cols += [c for c in outputs if c in p]
    missing = [c for c in outputs if c not in p]
    if missing:
        from ..errors import EngineError

        raise EngineError(f"the {engine} engine returned no column {missing}", hint="score with --engine local")
    return p[cols].reset_index(drop=True), report


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.engine == "ray":  # the cluster's workers load the model while this process does
        from ..engines.ray_engine import manifest_batches, prepare

        prepare(args.model, address=args.address, batches=manifest_batches(args.manifest, ["all"], args.batch_size))
    model = load_model(args.model, args.tracking_uri)
    model.to(args.device)
    if args.engine == "local":
        df, report = predict_manifest(model, args.manifest, batch_size=args.batch_size, progress=not args.quiet)
    else:
        df, report = predict_manifest_engine(model, args.manifest, batch_size=args.batch_size,
                                             progress=not args.quiet, engine=args.engine, address=args.address)
    if report.problems:
        print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out, index=False)
    print(f"{len(df)} patients scored for {', '.join(model.tasks)} -> {out}")
    return 0
