"""One experiment end to end: cohort -> splits -> fitted preprocessing -> trained model ->
held-out metrics, tracked in MLflow, driven by an :class:`~medmm.config.ExperimentConfig`.

* Splits are patient-level (no patient in two splits), stratified by label and grouped by
  site when asked. With ``split.cv_folds = k`` the train and val patients are cross-validated
  in k nested MLflow runs (preprocessing fitted on each fold's training part), per-fold and
  pooled out-of-fold metrics are logged on the parent run, and a final model trained on train
  + val for the folds' median best epoch count is scored once on the test hold-out, which no
  fold ever saw.
* Checkpoints go to ``train.checkpoint_dir`` (default ``<out_dir>/checkpoints``); the run is
  tagged with it, and :func:`resume_experiment` (``medmm train --resume RUN_ID``) reopens the
  run from its logged config and continues from the last checkpoint.
* Under ``torchrun`` every rank trains its shard; only rank 0 logs, checkpoints and writes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ExperimentResult", "run_experiment", "resume_experiment", "predictions_frame"]


@dataclass
class ExperimentResult:
    run_id: str | None
    experiment_id: str | None
    tracking_uri: str
    model_dir: Path | None
    model_uri: str | None
    metrics: Any  # DataFrame: task, group, auroc, auprc, n, n_positive
    predictions: Any  # DataFrame, one row per held-out patient
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cv_metrics: Any = None  # DataFrame per fold and pooled (cross-validation only)
    model: Any = None  # the trained MultimodalModel
    train_result: Any = None
    baselines: Any = None  # DataFrame: the model against LogisticRegression, HistGradientBoosting, TF-IDF + LR
    typed: Any = None  # TypedEvaluation of the multiclass, regression and survival tasks


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
    heads = getattr(model, "heads", None)
    if heads is not None and any(heads[t].kind != "binary" for t in model.tasks):
        from .evaluate.task_metrics import typed_columns  # every task type from the one scoring pass

        index = {c: k for k, c in enumerate(dataset.tasks)}
        cols, _ = typed_columns(model, p, lambda key: np.where(m[:, index[key]], y[:, index[key]], np.nan))
        return pd.concat([df, pd.DataFrame(cols, index=df.index)], axis=1)
    for k, t in enumerate(dataset.tasks):
        df[f"label_{t}"] = np.where(m[:, k], y[:, k], np.nan)
        df[f"prob_{t}"] = p[:, k].astype(float)
    return df


def _config_from_kwargs(manifest, out_dir, model_config, train_config, tasks, experiment, run_name, tracking_uri,
                        log_model, register_model):
    from .config import ExperimentConfig

    if manifest is None:
        raise ConfigError("run_experiment needs a manifest or a config", hint="pass manifest=... or config=...")
    data: dict[str, Any] = {
        "cohort": {"manifest": str(manifest)},
        "tasks": list(tasks) if tasks else None,
        "out_dir": str(out_dir or "medmm_run"),
        "tracking": {"experiment": experiment, "run_name": run_name, "tracking_uri": tracking_uri,
                     "log_model": log_model, "register_model": register_model, "flush_every": 1},
    }
    if model_config is not None:
        data["model"] = model_config.to_dict()
    if train_config is not None:
        data["train"] = train_config.to_dict()
    return ExperimentConfig.model_validate(data)


def run_experiment(
    manifest: str | Path | None = None,
    *,
    out_dir: str | Path | None = None,
    model_config: Any = None,
    train_config: Any = None,
    tasks: tuple[str, ...] | None = None,
    experiment: str = "medmm",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    log_model: bool = True,
    progress: bool = True,
    cohort: Any = None,
    config: Any = None,
    resume_run_id: str | None = None,
    callbacks: list[Any] = (),
    register_model: str | None = None,
) -> ExperimentResult:
    """Train on the train split, select on val, report on test; log it all to MLflow.

    Either pass ``config`` (an :class:`~medmm.config.ExperimentConfig`, as ``medmm train
    --config`` does) or the keyword arguments of the walking skeleton (``manifest``,
    ``model_config``, ``train_config``, ...), from which a config is built. ``cohort`` skips
    re-reading the manifest; ``resume_run_id`` reopens that run and continues from the last
    checkpoint; ``callbacks`` are added to the trainer's.
    """
    if config is None:
        config = _config_from_kwargs(manifest, out_dir, model_config, train_config, tasks, experiment, run_name,
                                     tracking_uri, log_model, register_model)
    return _execute(config, cohort=cohort, progress=progress, resume_run_id=resume_run_id,
                    callbacks=list(callbacks))


def resume_experiment(run_id: str, *, tracking_uri: str | None = None, progress: bool = True,
                      callbacks: list[Any] = ()) -> ExperimentResult:
    """Continue the run ``run_id`` from its logged config and its last checkpoint."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from .config import load_config
    from .tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config/resolved_config.yaml",
                                                    tracking_uri=uri)
    except MlflowException as exc:
        raise ConfigError(f"cannot read the config of run {run_id}: {exc.message}",
                          hint=f"check the run id and the tracking URI ({uri})") from exc
    cfg = load_config(local)
    cfg.tracking.tracking_uri = uri
    return _execute(cfg, cohort=None, progress=progress, resume_run_id=run_id, callbacks=list(callbacks))


# ---------------------------------------------------------------------------------------------------------------


def _splits(cfg, records, tasks) -> dict[str, list]:
    from .train.splits import assign_external_splits, assign_patient_splits, check_disjoint

    stratify = cfg.split.stratify or tasks[0]
    if cfg.split.test_groups:  # external validation: whole groups (sites) held out as the test split
        which = assign_external_splits(records, group_by=cfg.split.group_by, test_groups=cfg.split.test_groups,
                                       fractions=cfg.split.fractions, stratify=stratify, seed=cfg.split.seed)
        parts = {s: [r for r in records if which[r.patient_id] == s] for s in ("train", "val", "test")}
        check_disjoint(parts)
        return parts
    if cfg.split.mode == "assign":
        which = assign_patient_splits(records, fractions=cfg.split.fractions, stratify=stratify,
                                      group_by=cfg.split.group_by, seed=cfg.split.seed)
        parts = {s: [r for r in records if which[r.patient_id] == s] for s in ("train", "val", "test")}
    else:
        parts = {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}
    check_disjoint(parts)
    if cfg.split.group_by:
        groups = {s: {str(r.meta.get(cfg.split.group_by)) for r in rs} for s, rs in parts.items()}
        shared = (groups["train"] & groups["test"]) | (groups["train"] & groups["val"]) | (groups["val"] & groups["test"])
        if shared:
            raise ConfigError(f"{cfg.split.group_by} {sorted(shared)[0]!r} is in two splits", column="split",
                              hint="use split.mode=assign to draw grouped splits")
    return parts


def _fit(cfg, model_config, train_config, train_recs, val_recs, test_recs, *, tracker, callbacks, progress, resume,
         report=None):
    """Fit preprocessing on ``train_recs``, build and train a model; returns (model, result, datasets)."""
    from .data import MultimodalDataset
    from .models.multimodal import MultimodalModel, build_preprocessor
    from .train.trainer import seed_everything, train
    from .train.transfer import freeze_encoders, load_encoder_weights, pretrain_encoders

    absent = [m for m in model_config.modalities if not any(r.present.get(m, False) for r in train_recs)]
    if absent:
        have = [m for m in model_config.modalities if m not in absent]
        raise ConfigError(f"no training patient has {absent}: the {', '.join(absent)} encoder cannot be trained",
                          column="model.modalities",
                          hint=(f"train on {have} (--modalities {','.join(have)})" if have else
                                "check the manifest's path columns and splits"))
    if model_config.modalities.of_kind("image"):
        from .forking import return_large_frees

        # an image model's activations (tens of MB per batch) go back to the OS when freed instead of
        # fragmenting the heap, which otherwise grew with every batch of an epoch (benchmarks/bench_scale.py)
        return_large_frees()
    pre = build_preprocessor(model_config, preprocess=cfg.preprocess).fit(train_recs)
    seed_everything(train_config.seed)
    model = MultimodalModel(model_config, pre.output_shapes(), pre)
    columns = tuple(getattr(model, "label_columns_flat", model_config.tasks))
    parts = (("train", train_recs), ("val", val_recs), ("test", test_recs))
    if model.modalities.of_kind("image"):
        # images stream from disk through the preprocessed-volume cache: memory does not grow with the cohort
        from .train.datasets import CachedImageDataset, keep_in_memory, prefill_datasets

        cache_dir = cfg.preprocess.cache_dir or str(Path(cfg.out_dir) / "cache")
        datasets = {s: CachedImageDataset(r, pre, columns, cache_dir=cache_dir, training=s == "train",
                                          seed=train_config.seed, progress=progress)
                    for s, r in parts}
        t = time.perf_counter()
        filled = prefill_datasets(list(datasets.values()), workers=cfg.preprocess.workers, report=report,
                                  progress=progress)
        tracker.log_metrics({"prefill_s": time.perf_counter() - t, "prefill_computed": filled["computed"]})
        keep_in_memory(list(datasets.values()), cfg.preprocess.memory_mb * 2**20)
    else:
        datasets = {s: MultimodalDataset(r, pre, columns, progress=progress) for s, r in parts}
    tc = cfg.transfer
    val = datasets["val"] if len(datasets["val"]) else None
    transfer_info: dict[str, Any] = {}
    for m, src in tc.weights.items():
        load_encoder_weights(model, m, src)
    if tc.pretrain_epochs > 0:
        res = pretrain_encoders(model, datasets["train"], val, train_config, epochs=tc.pretrain_epochs,
                                modalities=tuple(tc.pretrain_modalities) if tc.pretrain_modalities else None,
                                progress=progress, callbacks_for=lambda m: [tracker.prefixed(f"pretrain_{m}_")])
        transfer_info["pretrain_best_epoch"] = {m: r.best_epoch for m, r in res.items()}
    if tc.pretrain_epochs > 0 or tc.weights:
        transfer_info["parameters"] = freeze_encoders(model, tc.mode, unfreeze_last=tc.unfreeze_last)
        tracker.log_dict(transfer_info, "transfer/transfer.json")
    result = train(model, datasets["train"], val, train_config, callbacks=[tracker, *callbacks], progress=progress,
                   resume=resume)
    tracker.log_metrics({"train_loop_s": result.seconds})
    return model, result, datasets


def _plots(tracker, history, preds, tasks, split) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import roc_curve

    if history:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        ep = [h["epoch"] for h in history]
        for key in ("train_loss", "val_loss"):
            if key in history[0]:
                axes[0].plot(ep, [h.get(key) for h in history], label=key)
        axes[0].set_xlabel("epoch"), axes[0].set_ylabel("loss"), axes[0].legend()
        for key in sorted(k for k in history[0] if k.startswith("val_auroc")):
            axes[1].plot(ep, [h.get(key) for h in history], label=key)
        axes[1].set_xlabel("epoch"), axes[1].set_ylabel("AUROC"), axes[1].legend()
        fig.tight_layout()
        tracker.log_figure(fig, "plots/learning_curves.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    for t in tasks:
        y = preds[f"label_{t}"].to_numpy(float)
        keep = ~np.isnan(y)
        if len(np.unique(y[keep])) == 2:
            fpr, tpr, _ = roc_curve(y[keep], preds[f"prob_{t}"].to_numpy(float)[keep])
            ax.plot(fpr, tpr, label=t)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate"), ax.set_ylabel("true positive rate"), ax.set_title(f"ROC ({split})")
    ax.legend(loc="lower right")
    tracker.log_figure(fig, f"plots/roc_{split}.png")


def _cross_validate(cfg, model_config, train_config, dev, *, tracker, progress, resume, report=None):
    """Nested k-fold cross-validation of ``dev``: returns (per-fold and summary table, out-of-fold
    predictions, the folds' median best epoch count, the baselines' out-of-fold predictions,
    the fold assignment)."""
    import numpy as np
    import pandas as pd

    from .evaluate.baselines import compare_with_baselines, run_baselines
    from .evaluate.metrics import evaluate_predictions
    from .train.splits import nested_cv_folds

    tasks = tuple(model_config.tasks)
    k = cfg.split.cv_folds
    folds = nested_cv_folds(dev, k, stratify=cfg.split.stratify or tasks[0], group_by=cfg.split.group_by,
                            val_fraction=cfg.split.cv_val_fraction, seed=cfg.split.seed)
    oof, best_epochs, rows, base_oof, assignment = [], [], [], {}, []
    for fold in folds:
        i = fold.index
        tr, va, te = ([dev[j] for j in idx] for idx in (fold.train, fold.val, fold.test))
        for role, recs in (("train", tr), ("val", va), ("test", te)):
            assignment += [{"patient_id": r.patient_id, "fold": i, "role": role} for r in recs]
        tc = dataclasses.replace(train_config, checkpoint_dir=str(Path(train_config.checkpoint_dir) / f"fold_{i}"))
        with tracker.nested_run(run_name=f"fold-{i}", tags={"medmm.fold": str(i), "medmm.kind": "cv_fold"},
                                resume=resume) as ft:
            ft.log_params({"fold": i, "n_train": len(tr), "n_val": len(va), "n_test": len(te)})
            # the outer fold is the test part: early stopping and epoch selection see only the inner val part
            model, res, ds = _fit(cfg, model_config, tc, tr, va, te, tracker=ft, callbacks=[], progress=progress,
                                  resume=resume, report=report)
            preds = predictions_frame(model, ds["test"], "cv")
            preds["fold"] = i
            m = evaluate_predictions(preds, tasks, by=None)
            for _, row in m.iterrows():
                ft.log_metrics({f"fold_auroc_{row.task}": row.auroc, f"fold_auprc_{row.task}": row.auprc})
                rows.append({"fold": str(i), "model": "medmm", "task": row.task, "auroc": row.auroc,
                             "auprc": row.auprc, "n": row.n})
            if cfg.evaluation.baselines:
                # the baselines have no early stopping: they fit the whole outer training part
                bpreds, _, _ = run_baselines(tr + va, te, model.preprocessor, tasks, preds, seed=cfg.split.seed,
                                             which=cfg.evaluation.baseline_models, compare=False)
                for name, bp in bpreds.items():
                    bp["fold"] = i
                    base_oof.setdefault(name, []).append(bp)
                    bm = evaluate_predictions(bp, tasks, by=None)
                    for _, row in bm.iterrows():
                        ft.log_metrics({f"fold_auroc_{row.task}_{name}": row.auroc})
                        rows.append({"fold": str(i), "model": name, "task": row.task, "auroc": row.auroc,
                                     "auprc": row.auprc, "n": row.n})
        oof.append(preds)
        best_epochs.append(res.best_epoch + 1)
    oof = pd.concat(oof, ignore_index=True)
    base_oof = {name: pd.concat(parts, ignore_index=True) for name, parts in base_oof.items()}
    per_fold = pd.DataFrame(rows)
    summary = []
    for name, frame in {"medmm": oof, **base_oof}.items():
        pooled = evaluate_predictions(frame, tasks, by=None)
        for t in tasks:
            f = per_fold[(per_fold.task == t) & (per_fold.model == name)]
            p = pooled[pooled.task == t].iloc[0]
            summary.append({"fold": "pooled", "model": name, "task": t, "auroc": p.auroc, "auprc": p.auprc, "n": p.n})
            summary.append({"fold": "mean", "model": name, "task": t, "auroc": f.auroc.mean(), "auprc": f.auprc.mean(),
                            "n": f.n.sum()})
            summary.append({"fold": "std", "model": name, "task": t, "auroc": f.auroc.std(ddof=1),
                            "auprc": f.auprc.std(ddof=1), "n": f.n.sum()})
            suffix = "" if name == "medmm" else f"_{name}"
            tracker.log_metrics({f"cv_pooled_auroc_{t}{suffix}": p.auroc, f"cv_pooled_auprc_{t}{suffix}": p.auprc,
                                 f"cv_mean_auroc_{t}{suffix}": f.auroc.mean(),
                                 f"cv_std_auroc_{t}{suffix}": f.auroc.std(ddof=1)})
    for name in base_oof:  # paired over folds: the same outer folds, the same patients
        for t in tasks:
            a = per_fold[(per_fold.task == t) & (per_fold.model == "medmm")].set_index("fold").auroc
            b = per_fold[(per_fold.task == t) & (per_fold.model == name)].set_index("fold").auroc
            d = (a - b.reindex(a.index)).dropna()
            summary.append({"fold": "mean paired difference", "model": f"medmm - {name}", "task": t,
                            "auroc": d.mean() if len(d) else np.nan, "auprc": np.nan, "n": len(d)})
            tracker.log_metrics({f"cv_mean_auroc_diff_{t}_{name}": float(d.mean()) if len(d) else float("nan")})
    table = pd.concat([per_fold, pd.DataFrame(summary)], ignore_index=True)
    if base_oof:
        cmp = compare_with_baselines(oof, base_oof, tasks, n_boot=cfg.evaluation.n_boot, seed=cfg.split.seed)
        table.attrs["baselines"] = cmp
    return table, oof, int(np.median(best_epochs)), base_oof, pd.DataFrame(assignment)


def _execute(cfg, *, cohort, progress, resume_run_id, callbacks) -> ExperimentResult:
    import torch

    from .audit import audit_splits
    from .cohort import Cohort, load_cohort
    from .evaluate.metrics import evaluate_predictions
    from .tasks import check_task_labels, merge_task_declarations
    from .train.distributed import barrier, init_distributed
    from .tracking import MlflowTracker, NullTracker

    info = init_distributed(cfg.train.device)
    main = info.rank == 0
    progress = progress and main
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # resolve paths so that the logged config resumes from anywhere
    cfg.out_dir = str(Path(cfg.out_dir).resolve())
    cfg.cohort.manifest = str(Path(cfg.cohort.manifest).resolve())
    if not cfg.train.checkpoint_dir:
        cfg.train.checkpoint_dir = str(Path(cfg.out_dir) / "checkpoints")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Path(cfg.cohort.manifest)
    config_tasks = cfg.model.get("tasks")
    if cohort is None:
        cohort = load_cohort(manifest, strict=cfg.cohort.strict, progress=progress, declare=cfg.modalities,
                             tasks=config_tasks if isinstance(config_tasks, dict) else None)
    elif not isinstance(cohort, Cohort):  # a list of records
        cohort = Cohort.from_records(list(cohort), manifest=manifest)
    # the config's model.tasks wins over the manifest's sidecar, task by task
    declared = merge_task_declarations(cohort.declared_tasks, config_tasks, cfg.tasks)
    tasks = tuple(declared or cohort.tasks)
    if not tasks:
        raise ConfigError("the cohort has no label_* column to train on", path=manifest,
                          hint="add label columns such as label_tumor to the manifest")
    if cohort.frame is not None and any(t in declared for t in tasks):
        # before anything is read or trained: a bad label of a declared task fails here, by row and column
        check_task_labels(cohort.frame, {t: declared[t] for t in tasks if t in declared}, source=str(manifest))
    # built once (notes, vitals, EHR read, in preprocess.workers processes; images stay on disk)
    records = cohort.build_records(workers=cfg.preprocess.workers, progress=progress)
    timings["load_s"] = time.perf_counter() - t0
    cfg.tasks = list(tasks)
    spec = cohort.modalities
    if cfg.modalities:
        spec = spec.merged(cfg.modalities)
    model_config = cfg.model_config_for(tasks, spec=spec, available=cohort.available_modalities(),
                                        declared_tasks=declared)
    cfg.model = model_config.to_dict()  # logged in full: a resumed run must not pick up changed defaults
    train_config = cfg.train_config()
    parts = _splits(cfg, records, tasks)
    if not parts["train"]:
        raise ConfigError("the train split is empty", path=manifest, hint="set split=train for some patients")
    audit = audit_splits(records, parts, tasks, cohort.report, enabled=cfg.cohort.audit, strict=cfg.cohort.strict_audit)
    resume = resume_run_id is not None

    tr = cfg.tracking
    tracker = (MlflowTracker(experiment=tr.experiment, run_name=tr.run_name, tracking_uri=tr.tracking_uri,
                             tags={"medmm.kind": "train", **tr.tags}, run_id=resume_run_id, flush_every=tr.flush_every)
               if main else NullTracker(tr.tracking_uri))
    with tracker:
        if main:
            (out_dir / "run.json").write_text(json.dumps({"run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
                                                          "tracking_uri": tracker.tracking_uri}, indent=2) + "\n")
            if progress:
                print(f"MLflow run {tracker.run_id} ({tracker.tracking_uri}); resume with "
                      f"`medmm train --resume {tracker.run_id}`")
        resolved = cfg.resolved()
        tracker.set_tags({"medmm.checkpoint_dir": train_config.checkpoint_dir, "medmm.out_dir": cfg.out_dir,
                          "medmm.manifest": manifest.name})
        tracker.log_params({**{k: v for k, v in resolved.items() if k not in ("cohort", "out_dir")},
                            "cohort": {"manifest": manifest.name, "strict": cfg.cohort.strict},
                            "data": {f"n_{s}": len(r) for s, r in parts.items()} | {
                                f"present_{m}_train": sum(x.present.get(m, False) for x in parts["train"])
                                for m in model_config.modalities}})
        if audit is not None and main:
            tracker.log_dict(audit.to_dict(), "data/audit.json")
            tracker.log_metrics(audit.metrics())
            (out_dir / "audit.json").write_text(audit.to_json() + "\n")
        tracker.log_text(cfg.to_yaml(), "config/resolved_config.yaml")
        tracker.log_dict(resolved, "config/resolved_config.json")
        if main:
            (out_dir / "config.yaml").write_text(cfg.to_yaml())
            tracker.log_environment()

        t2 = time.perf_counter()
        cv_table = None
        if cfg.split.cv_folds:
            dev = parts["train"] + parts["val"]
            cv_table, oof, n_epochs, base_oof, assignment = _cross_validate(
                cfg, model_config, train_config, dev, tracker=tracker, progress=progress, resume=resume,
                report=cohort.report)
            if main:
                cv_table.to_csv(out_dir / "cv_metrics.csv", index=False)
                oof.to_parquet(out_dir / "cv_predictions.parquet", index=False)
                assignment.to_csv(out_dir / "cv_folds.csv", index=False)
                tracker.log_artifact(out_dir / "cv_metrics.csv", "evaluation")
                if "baselines" in cv_table.attrs:
                    cv_table.attrs["baselines"].to_csv(out_dir / "cv_baselines.csv", index=False)
                    tracker.log_artifact(out_dir / "cv_baselines.csv", "evaluation")
            tracker.log_params({"final": {"epochs": n_epochs, "trained_on": "train+val"}})
            final_tc = dataclasses.replace(train_config, epochs=max(n_epochs, 1), min_epochs=max(n_epochs, 1),
                                           monitor="last", checkpoint_dir=str(Path(train_config.checkpoint_dir) / "final"))
            model, result, datasets = _fit(cfg, model_config, final_tc, dev, [], parts["test"], tracker=tracker,
                                           callbacks=callbacks, progress=progress, resume=resume,
                                           report=cohort.report)
        else:
            model, result, datasets = _fit(cfg, model_config, train_config, parts["train"], parts["val"],
                                           parts["test"], tracker=tracker, callbacks=callbacks, progress=progress,
                                           resume=resume, report=cohort.report)
        timings["train_s"] = time.perf_counter() - t2
        if main:  # after training: the image pass adds the images it could not read
            tracker.log_dict({"problems": [str(p) for p in cohort.report.problems]}, "data/problem_report.json")
        eval_split = "test" if len(datasets["test"]) else "val"
        binary = tuple(t for t in tasks if model.config.task_spec(t)[0] == "binary")
        preds = metrics = model_dir = model_uri = baselines = typed = None
        if main and len(datasets[eval_split]):
            preds = predictions_frame(model, datasets[eval_split], eval_split)
            metrics = evaluate_predictions(preds, binary, by="pattern")
            if len(binary) < len(tasks):
                typed = _typed_metrics(cfg, model, preds, parts["train"], eval_split, tracker, out_dir)
            for _, row in (metrics[metrics["group"] == "all"] if len(metrics) else metrics).iterrows():
                tracker.log_metrics({f"{eval_split}_auroc_{row.task}": row.auroc,
                                     f"{eval_split}_auprc_{row.task}": row.auprc})
            if cfg.evaluation.baselines:
                fit_on = parts["train"] + (parts["val"] if eval_split == "test" else [])
                baselines = _baselines(cfg, model, fit_on, parts[eval_split], preds, tasks, eval_split, tracker,
                                       typed=typed)
        tracker.log_metrics({"best_epoch": result.best_epoch})
        swa = (result.loss_info or {}).get("swa")
        if swa:  # the averaged weights' own validation (the per-epoch figures are the epochs' weights)
            tracker.log_metrics({"swa_epochs_averaged": swa["epochs_averaged"],
                                 **{f"swa_{k}": v for k, v in swa.get("val", {}).items()}})
        if main:
            model_dir = model.save(out_dir / "model")
            if preds is not None:
                preds.to_parquet(out_dir / "predictions.parquet", index=False)
                metrics.to_csv(out_dir / "metrics_by_pattern.csv", index=False)
                tracker.log_artifact(out_dir / "metrics_by_pattern.csv", "evaluation")
            if baselines is not None:
                baselines.to_csv(out_dir / "baselines.csv", index=False)
                tracker.log_artifact(out_dir / "baselines.csv", "evaluation")
            if tr.plots:
                try:
                    _plots(tracker, result.history, preds if preds is not None else _empty_preds(binary), binary,
                           eval_split)
                except Exception as exc:  # a plot must never lose a trained run
                    tracker.set_tags({"medmm.plot_error": str(exc)[:200]})
            if tr.log_model:
                from .train.pyfunc import log_medmm_model  # mlflow.pyfunc: only when a model is logged

                t3 = time.perf_counter()
                model_uri = log_medmm_model(tracker, model_dir, tasks=tasks, registered_model_name=tr.register_model)
                timings["log_model_s"] = time.perf_counter() - t3
        timings["total_s"] = time.perf_counter() - t0
        if result.step_s > 0:
            timings["data_wait_share"] = result.data_wait_s / result.step_s
            timings["data_wait_s"] = result.data_wait_s
        tracker.log_metrics(dict(timings))
        if main:
            (out_dir / "run.json").write_text(json.dumps({
                "run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
                "tracking_uri": tracker.tracking_uri, "model_uri": model_uri}, indent=2) + "\n")
    barrier()
    torch.set_grad_enabled(True)
    return ExperimentResult(tracker.run_id, tracker.experiment_id, tracker.tracking_uri, model_dir, model_uri,
                            metrics, preds, result.history, timings, cv_table, model, result, baselines, typed)


def _baselines(cfg, model, train_recs, eval_recs, preds, tasks, split, tracker, typed=None):
    """Classical baselines fitted on the records the model learnt from (train+val: they have no
    early stopping) through its fitted preprocessing, scored on the same held-out patients: for
    binary tasks LR / HGB / TF-IDF + LR, for multiclass, regression and survival tasks (``typed``,
    their :class:`~medmm.evaluate.task_metrics.TypedEvaluation`) their type's linear model."""
    from .evaluate.baselines import TYPED_BASELINES, reference_metric_dict, run_baselines

    binary = [t for t in tasks if model.config.task_spec(t)[0] == "binary"]
    specs = {t: s for t, s in typed.specs.items() if s.kind in TYPED_BASELINES} if typed is not None else {}
    if not (binary or specs) or not eval_recs:
        return None
    label_columns = {t: getattr(model, "label_columns", {}).get(t) for t in specs}
    _, table, skipped = run_baselines(train_recs, eval_recs, model.preprocessor, binary, preds,
                                      n_boot=cfg.evaluation.n_boot, seed=cfg.split.seed,
                                      which=cfg.evaluation.baseline_models, typed=specs,
                                      typed_predictions=typed.predictions if specs else None,
                                      label_columns=label_columns, typed_n_boot=typed.n_boot if specs else None)
    if skipped:
        tracker.set_tags({"medmm.baselines_skipped": "; ".join(skipped)[:250]})
    if table is not None:
        tracker.log_metrics(reference_metric_dict(table, split))
    return table


def _typed_metrics(cfg, model, preds, train_recs, split, tracker, out_dir) -> Any:
    """Evaluate the multiclass, regression and survival tasks of the held-out predictions (the
    training split's labels give the censoring distribution) and log their headline metrics."""
    import math

    from .evaluate.task_metrics import head_spec, evaluate_typed_frame, survival_label_table
    from .tasks import TaskSpec

    specs = {t: TaskSpec.from_config(t, head_spec(model.heads[t])) for t in model.tasks}
    train = survival_label_table(model, train_recs) if any(s.kind == "survival" for s in specs.values()) else None
    typed = evaluate_typed_frame(preds, specs, train=train, n_boot=min(cfg.evaluation.n_boot, 200),
                                 seed=cfg.split.seed)
    for t, m in typed.metrics.items():
        tracker.log_metrics({f"{split}_{k.replace('@', '_at_')}_{t}": float(v[0]) for k, v in m.items()
                             if isinstance(v, tuple) and math.isfinite(v[0])})
    if out_dir is not None:
        frame = typed.metrics_frame()
        frame.to_csv(Path(out_dir) / "typed_metrics.csv", index=False)
        tracker.log_artifact(Path(out_dir) / "typed_metrics.csv", "evaluation")
    return typed


def _empty_preds(tasks):
    import pandas as pd

    return pd.DataFrame({**{f"label_{t}": [] for t in tasks}, **{f"prob_{t}": [] for t in tasks}})
