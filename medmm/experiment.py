"""One experiment end to end: cohort -> fitted preprocessing -> trained model -> held-out metrics, tracked in MLflow."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ExperimentResult", "run_experiment", "predictions_frame"]


@dataclass
class ExperimentResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    model_dir: Path
    model_uri: str | None
    metrics: Any  # DataFrame: task, group, auroc, auprc, n, n_positive
    predictions: Any  # DataFrame, one row per held-out patient
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def predictions_frame(model: Any, dataset: Any, split: str):
    """Per-patient probabilities, labels and presence pattern for a dataset."""
    import numpy as np
    import pandas as pd

    from .train.trainer import predict_dataset

    p, y, m, present = predict_dataset(model, dataset)
    mods = dataset.modalities
    df = pd.DataFrame({
        "patient_id": [it["id"] for it in dataset.items],
        "split": split,
        "pattern": ["+".join(mm for j, mm in enumerate(mods) if row[j]) or "none" for row in present],
    })
    for k, t in enumerate(dataset.tasks):
        df[f"label_{t}"] = np.where(m[:, k], y[:, k], np.nan)
        df[f"prob_{t}"] = p[:, k].astype(float)
    return df


def run_experiment(
    manifest: str | Path,
    *,
    out_dir: str | Path,
    model_config: Any = None,
    train_config: Any = None,
    tasks: tuple[str, ...] | None = None,
    experiment: str = "medmm",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    log_model: bool = True,
    progress: bool = True,
    cohort: Any = None,
) -> ExperimentResult:
    """Train on the manifest's train split, select on val, report on test; log it all to MLflow."""
    import torch

    from .cohort import load_cohort
    from .data import MultimodalDataset
    from .evaluate.metrics import evaluate_predictions
    from .models.multimodal import ModelConfig, MultimodalModel
    from .preprocess import MultimodalPreprocessor
    from .train.tracking import MlflowTracker
    from .train.trainer import TrainConfig, seed_everything, train

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cohort = cohort if cohort is not None else load_cohort(manifest, progress=progress)
    timings["load_s"] = time.perf_counter() - t0
    tasks = tuple(tasks or cohort.tasks)
    if not tasks:
        raise ConfigError("the cohort has no label_* column to train on", path=manifest,
                          hint="add label columns such as label_tumor to the manifest")
    model_config = model_config or ModelConfig(tasks={t: "binary" for t in tasks})
    train_config = train_config or TrainConfig()
    seed_everything(train_config.seed)
    splits = {s: cohort.split(s) for s in ("train", "val", "test")}
    if not splits["train"]:
        raise ConfigError("the train split is empty", path=manifest, hint="set split=train for some patients")

    t1 = time.perf_counter()
    pre = MultimodalPreprocessor(modalities=model_config.modalities).fit(splits["train"])
    datasets = {s: MultimodalDataset(r, pre, tasks, progress=progress) for s, r in splits.items()}
    timings["preprocess_s"] = time.perf_counter() - t1
    model = MultimodalModel(model_config, pre.output_shapes(), pre)

    resolved = {"model": model_config.to_dict(), "train": train_config.to_dict(), "tasks": list(tasks),
                "manifest": str(Path(manifest).name)}
    with MlflowTracker(experiment=experiment, run_name=run_name, tracking_uri=tracking_uri,
                       tags={"medmm.kind": "train"}) as tracker:
        tracker.log_params({**resolved, "data": {
            f"n_{s}": len(r) for s, r in splits.items()} | {
            f"present_{m}_train": sum(x.present[m] for x in splits["train"]) for m in model_config.modalities}})
        tracker.log_dict(resolved, "config/resolved_config.json")
        tracker.log_dict({"problems": [str(p) for p in cohort.report.problems]}, "data/problem_report.json")
        t2 = time.perf_counter()
        result = train(model, datasets["train"], datasets["val"] if len(datasets["val"]) else None,
                       train_config, callbacks=[tracker], progress=progress)
        timings["train_s"] = time.perf_counter() - t2
        eval_split = "test" if len(datasets["test"]) else "val"
        preds = predictions_frame(model, datasets[eval_split], eval_split)
        metrics = evaluate_predictions(preds, tasks, by="pattern")
        for _, row in metrics[metrics["group"] == "all"].iterrows():
            tracker.log_metrics({f"{eval_split}_auroc_{row.task}": row.auroc, f"{eval_split}_auprc_{row.task}": row.auprc})
        tracker.log_metrics({"best_epoch": result.best_epoch})
        model_dir = model.save(out_dir / "model")
        preds.to_parquet(out_dir / "predictions.parquet", index=False)
        metrics.to_csv(out_dir / "metrics_by_pattern.csv", index=False)
        tracker.log_artifact(out_dir / "metrics_by_pattern.csv", "evaluation")
        model_uri = None
        if log_model:
            t3 = time.perf_counter()
            model_uri = tracker.log_model(model_dir, tasks=tasks)
            timings["log_model_s"] = time.perf_counter() - t3
        timings["total_s"] = time.perf_counter() - t0
        tracker.log_metrics({k: v for k, v in timings.items()})
        (out_dir / "run.json").write_text(json.dumps({
            "run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
            "tracking_uri": tracker.tracking_uri, "model_uri": model_uri}, indent=2) + "\n")
    torch.set_grad_enabled(True)
    return ExperimentResult(tracker.run_id, tracker.experiment_id, tracker.tracking_uri, model_dir, model_uri,
                            metrics, preds, result.history, timings)
