"""``evaluate_cohort``: score a cohort with a saved model and evaluate it in every way at once."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["EvaluationResult", "evaluate_cohort", "evaluate_scored"]

_SUMMARY = ("auroc", "auprc", "brier", "ece")
_POINT_FIELDS = ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1")


def _fmt(est: float, lo: float, hi: float, digits: int = 3) -> str:
    if est is None or np.isnan(est):
        return "–"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


@dataclass
class EvaluationResult:
    """Everything an evaluation found. Tables are pandas DataFrames; :meth:`to_html` writes
    the report, :meth:`save` every file, :meth:`log_to_mlflow` the metrics and figures."""

    tasks: tuple[str, ...]
    modalities: tuple[str, ...]
    predictions: Any
    metrics: dict[str, dict[str, Any]]  # task -> bootstrap_metrics() result
    thresholds: dict[str, float]  # task -> threshold of the confusion matrices (Youden)
    calibration_curves: dict[str, dict[str, Any]]
    seed: int = 0
    n_boot: int = 2000
    val_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration_method: str | None = None
    calibrator: Any = None
    calibrated_metrics: dict[str, dict[str, Any]] | None = None
    subgroups: Any = None
    patterns: Any = None
    masking: Any = None
    fusion: Any = None
    shapley: Any = None
    masked: dict[str, np.ndarray] = field(default_factory=dict)
    comparisons: dict[str, Any] = field(default_factory=dict)
    baselines: Any = None
    reference_models: Any = None  # the model against LR / HGB / TF-IDF + LR fitted on the training split
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    audit: Any = None  # the cohort's data audit (medmm.audit.AuditReport)
    typed: Any = None  # multiclass/regression/survival tasks (medmm.evaluate.task_metrics.TypedEvaluation)

    # ------------------------------------------------------------------ tables
    def summary(self):
        """One row per task: n, positives and AUROC, AUPRC, Brier, ECE with their 95% CIs."""
        import pandas as pd

        rows = []
        for t in self.tasks:
            m = self.metrics[t]
            row: dict[str, Any] = {"task": t, "n": m["n"], "positives": m["n_positive"]}
            for k in _SUMMARY:
                row[k] = _fmt(*m[k])
            rows.append(row)
        return pd.DataFrame(rows)

    def metrics_frame(self):
        """Long table: ``task, metric, estimate, low, high`` (every metric and operating point)."""
        import pandas as pd

        rows = [{"task": t, "metric": k, "estimate": v[0], "low": v[1], "high": v[2]}
                for t in self.tasks for k, v in self.metrics[t].items() if isinstance(v, tuple)]
        return pd.DataFrame(rows)

    def operating_points(self):
        """Per task and operating point: threshold, sensitivity, specificity, PPV, NPV, F1 (95% CIs)."""
        import pandas as pd

        rows = []
        for t in self.tasks:
            m = self.metrics[t]
            points = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in m if isinstance(m[k], tuple) and "." in k))
            for pt in points:
                row = {"task": t, "operating point": pt}
                for f in _POINT_FIELDS:
                    v = m.get(f"{pt}.{f}")
                    row[f] = _fmt(*v) if v is not None else "–"
                rows.append(row)
        return pd.DataFrame(rows)

    def calibration_table(self):
        """Before/after calibration: Brier, ECE and AUROC per task."""
        import pandas as pd

        if self.calibrated_metrics is None:
            return pd.DataFrame()
        rows = []
        for t in self.tasks:
            for k in ("brier", "ece", "auroc"):
                rows.append({"task": t, "metric": k, "before": _fmt(*self.metrics[t][k]),
                             f"after ({self.calibration_method})": _fmt(*self.calibrated_metrics[t][k])})
        return pd.DataFrame(rows)

    def subgroup_table(self):
        """Subgroup metrics with CIs as text."""
        import pandas as pd

        if self.subgroups is None or not len(self.subgroups):
            return pd.DataFrame()
        df = self.subgroups
        out = df[["task", "column", "group", "n", "n_positive", "too_small"]].copy()
        for k in ("auroc", "auprc", "brier", "ece"):
            out[k] = [_fmt(a, b, c) for a, b, c in zip(df[k], df[f"{k}_low"], df[f"{k}_high"])]
        return out

    def compare(self, other: "EvaluationResult", *, names: tuple[str, str] = ("this", "other"),
                n_boot: int | None = None):
        """Paired comparison with another model's evaluation on the same patients (DeLong for
        AUROC, paired bootstrap for the rest). Stored in :attr:`comparisons` for the report."""
        from .compare import compare_models

        df = compare_models(self.predictions, other.predictions, self.tasks, n_boot=n_boot or self.n_boot,
                            seed=self.seed, names=names)
        self.comparisons[f"{names[0]} vs {names[1]}"] = df
        return df

    def compare_groups(self, other: "EvaluationResult", *, by: list[str] | tuple[str, ...] = ("pattern",),
                       names: tuple[str, str] = ("this", "other")):
        """AUROC of this model and ``other`` per subgroup or presence pattern (DeLong per
        group); stored in :attr:`comparisons` for the report."""
        from .compare import compare_by_group

        by = [c for c in by if c in self.predictions.columns and c in other.predictions.columns]
        df = compare_by_group(self.predictions, other.predictions, self.tasks, by, names=names)
        self.comparisons[f"{names[0]} vs {names[1]} by {', '.join(by)}"] = df
        return df

    def compare_baselines(self, baselines: dict[str, Any]):
        """Fusion against separately trained baselines (e.g. one unimodal model per modality:
        ``{"image only": image_result, ...}``), each on the patients that have its modalities.
        Stored in :attr:`baselines` for the report; see :func:`~medmm.evaluate.robustness.baseline_table`."""
        from .robustness import baseline_table

        self.baselines = baseline_table(self.predictions, baselines, self.tasks)
        return self.baselines

    # ------------------------------------------------------------------ outputs
    def figures(self, *, n_boot: int = 200) -> dict[str, Any]:
        """The report's matplotlib figures, by file name."""
        from .report import make_figures

        return make_figures(self, n_boot=n_boot)

    def to_html(self, path: str | Path | None = None, *, figures: dict[str, Any] | None = None,
                title: str = "medmm evaluation") -> str:
        """The self-contained HTML report; written to ``path`` when given."""
        from .report import render_html

        text = render_html(self, figures, title=title)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        return text

    def save(self, out_dir: str | Path, *, figures: dict[str, Any] | None = None) -> dict[str, Path]:
        """Write predictions (Parquet), every table (CSV), figures (PNG), the calibrator and
        ``report.html`` under ``out_dir``; returns the paths by name."""
        from ..viz.common import figure_png

        out = Path(out_dir)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        figures = figures if figures is not None else self.figures()
        paths: dict[str, Path] = {}
        paths["predictions"] = out / "predictions.parquet"
        self.predictions.to_parquet(paths["predictions"], index=False)
        paths["metrics"] = out / "metrics.csv"
        self.metrics_frame().to_csv(paths["metrics"], index=False)
        for name in ("subgroups", "patterns", "masking", "fusion", "shapley", "baselines", "reference_models"):
            df = getattr(self, name)
            if df is not None and len(df):
                paths[name] = out / f"{name}.csv"
                df.to_csv(paths[name], index=False)
        for name, df in self.comparisons.items():
            p = out / f"compare_{name.replace(' ', '_')}.csv"
            df.to_csv(p, index=False)
            paths[f"compare {name}"] = p
        if self.calibrator is not None:
            paths["calibration"] = self.calibrator.save(out / "calibration.json")
        pngs = {name: figure_png(fig) for name, fig in figures.items()}  # rendered once, used twice
        for name, png in pngs.items():
            p = out / "figures" / name
            p.write_bytes(png)
            paths[name] = p
        paths["report"] = out / "report.html"
        self.to_html(paths["report"], figures=pngs)
        (out / "evaluation.json").write_text(json.dumps({
            "info": self.info, "warnings": self.warnings,
            "metrics": {t: {k: list(v) for k, v in self.metrics[t].items() if isinstance(v, tuple)}
                        for t in self.tasks}}, indent=2, default=str) + "\n")
        paths["summary"] = out / "evaluation.json"
        if self.typed is not None:
            paths.update(self.typed.save(out))
        if self.audit is not None:
            paths["audit"] = out / "audit.json"
            paths["audit"].write_text(self.audit.to_json() + "\n")
        return paths

    def log_to_mlflow(self, *, run_id: str | None = None, experiment: str = "medmm",
                      tracking_uri: str | None = None, figures: dict[str, Any] | None = None,
                      prefix: str = "eval") -> str:
        """Log metrics (with CI bounds), tables, figures and the HTML report to an MLflow run
        (``run_id``, or a new run tagged ``medmm.kind=evaluate``). Returns the run id.
        Per-patient predictions are not logged (no patient identifiers leave the machine)."""
        import mlflow

        from ..tracking import default_tracking_uri

        mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
        figures = figures if figures is not None else self.figures()
        if run_id is None:
            mlflow.set_experiment(experiment)
            ctx = mlflow.start_run(tags={"medmm.kind": "evaluate"})
        else:
            ctx = mlflow.start_run(run_id=run_id)
        with ctx as run:
            metrics: dict[str, float] = {}
            for t in self.tasks:
                for k, (est, lo, hi) in ((k, v) for k, v in self.metrics[t].items() if isinstance(v, tuple)):
                    key = f"{prefix}_{k}_{t}".replace(" ", "_").replace("(", "").replace(")", "")
                    for suffix, v in (("", est), ("_low", lo), ("_high", hi)):
                        if v is not None and not np.isnan(v):
                            metrics[key + suffix] = float(v)
            metrics.update(self.reference_metrics(prefix))
            mlflow.log_metrics(metrics)
            for name, fig in figures.items():
                mlflow.log_figure(fig, f"evaluation/{name}")
            mlflow.log_text(self.to_html(figures=figures), "evaluation/report.html")
            mlflow.log_text(self.metrics_frame().to_csv(index=False), "evaluation/metrics.csv")
            if self.audit is not None:
                mlflow.log_text(self.audit.to_json(), "evaluation/audit.json")
                mlflow.log_metrics(self.audit.metrics())
            for name in ("subgroups", "masking", "fusion", "shapley", "reference_models"):
                df = getattr(self, name)
                if df is not None and len(df):
                    mlflow.log_text(df.to_csv(index=False), f"evaluation/{name}.csv")
            return run.info.run_id

    def reference_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}_auroc_<task>_<baseline>`` and the model's difference with its CI bounds."""
        from .baselines import reference_metric_dict

        return reference_metric_dict(self.reference_models, prefix)

    def _repr_html_(self) -> str:
        import html

        from .report import html_table

        parts = [f"<div><b>EvaluationResult</b> &middot; {len(self.predictions)} patients &middot; "
                 f"tasks: {html.escape(', '.join(self.tasks))}"]
        for w in self.warnings[:5]:
            parts.append(f"<div style='background:#fff4e5;padding:3px 6px;margin:3px 0'>{html.escape(w)}</div>")
        parts.append(html_table(self.summary()))
        parts.append("<details><summary>operating points</summary>" + html_table(self.operating_points()) + "</details>")
        if self.calibrated_metrics is not None:
            parts.append("<details><summary>calibration</summary>" + html_table(self.calibration_table()) + "</details>")
        for name in ("reference_models", "subgroups", "patterns", "masking", "fusion", "baselines", "shapley"):
            df = self.subgroup_table() if name == "subgroups" else getattr(self, name)
            if df is not None and len(df):
                parts.append(f"<details><summary>{name}</summary>{html_table(df)}</details>")
        for name, df in self.comparisons.items():
            parts.append(f"<details open><summary>{html.escape(name)}</summary>{html_table(df)}</details>")
        parts.append("<p style='font-size:12px;color:#666'>.to_html(path) writes the full report with figures.</p>"
                     "</div>")
        return "".join(parts)


def evaluate_scored(
    scored,
    *,
    val=None,
    calibrate: Any = None,
    subgroups: list[str] | tuple[str, ...] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    fixed_threshold: float = 0.5,
    target_sensitivity: float = 0.9,
    min_subgroup: int = 30,
) -> EvaluationResult:
    """Evaluate a :class:`~medmm.evaluate.scoring.ScoredCohort` (``val``: the validation
    split's one, for thresholds and calibration)."""
    from .bootstrap import OperatingPoints, bootstrap_metrics
    from .calibration import TaskCalibrator
    from .metrics import choose_thresholds
    from .robustness import fusion_table, masking_table, pattern_metrics, shapley_values
    from .scoring import modality_subsets, subset_name
    from .subgroups import SmallSubgroupWarning, subgroup_metrics

    tasks, preds = scored.tasks, scored.predictions.copy()
    ops = OperatingPoints(fixed=fixed_threshold, target_sensitivity=target_sensitivity)
    notes: list[str] = []
    val_thr: dict[str, dict[str, float]] = {}
    has_val = val is not None and len(val.predictions) > 0
    if has_val:
        for t in tasks:
            y = val.predictions[f"label_{t}"].to_numpy(float)
            if len(np.unique(y[~np.isnan(y)])) == 2:
                val_thr[t] = {f"{k} (val)": v for k, v in
                              choose_thresholds(y, val.predictions[f"prob_{t}"], target_sensitivity=target_sensitivity).items()}
    metrics = {t: bootstrap_metrics(preds[f"label_{t}"], preds[f"prob_{t}"], n_boot=n_boot, seed=seed, ops=ops,
                                    fixed_thresholds=val_thr.get(t)) for t in tasks}
    thresholds = {t: metrics[t]["youden.threshold"][0] if "youden.threshold" in metrics[t] else fixed_threshold
                  for t in tasks}
    curves = {t: {"uncalibrated": metrics[t]["calibration"]} for t in tasks}
    calibrator, cal_metrics = None, None
    if calibrate is not None and not isinstance(calibrate, str):  # a fitted calibrator (or its JSON file)
        calibrator = calibrate if isinstance(calibrate, TaskCalibrator) else TaskCalibrator.load(calibrate)
        calibrate = calibrator.method
    elif calibrate:
        if not has_val:
            notes.append(f"no validation patients: {calibrate} calibration was skipped")
        else:
            calibrator = TaskCalibrator(method=calibrate).fit(val.predictions, tasks)
    if calibrator is not None:
        cal = calibrator.transform(preds)
        cal_metrics = {t: bootstrap_metrics(cal[f"label_{t}"], cal[f"prob_{t}"], n_boot=n_boot, seed=seed,
                                            ops=ops) for t in tasks}
        for t in tasks:
            curves[t][calibrate] = cal_metrics[t]["calibration"]
            preds[f"prob_{t}_calibrated"] = cal[f"prob_{t}"].to_numpy(float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallSubgroupWarning)
        sub = subgroup_metrics(preds, tasks, by=subgroups, n_boot=min(n_boot, 1000), seed=seed, min_n=min_subgroup)
    for w in caught:
        if issubclass(w.category, SmallSubgroupWarning):
            notes.append(str(w.message))
            warnings.warn(w.message, SmallSubgroupWarning, stacklevel=3)
    pats = pattern_metrics(preds, tasks, n_boot=min(n_boot, 500), seed=seed)
    masking = fusion = shap = None
    if scored.masked:
        masking = masking_table(scored)
        fusion = fusion_table(scored)
        if all(subset_name(s) in scored.masked for s in modality_subsets(scored.modalities)):
            shap = shapley_values(scored)
    for t in tasks:
        n, npos = metrics[t]["n"], metrics[t]["n_positive"]
        if min(npos, n - npos) < 10:
            notes.append(f"{t}: only {npos} positive and {n - npos} negative patients; confidence intervals are wide")
    return EvaluationResult(
        tasks=tuple(tasks), modalities=tuple(scored.modalities), predictions=preds, metrics=metrics,
        thresholds=thresholds, calibration_curves=curves, seed=seed, n_boot=n_boot, val_thresholds=val_thr,
        calibration_method=calibrate if calibrator is not None else None, calibrator=calibrator,
        calibrated_metrics=cal_metrics, subgroups=sub, patterns=pats, masking=masking, fusion=fusion,
        shapley=shap, masked=scored.masked, warnings=notes,
        info={"patients": len(preds), "bootstrap resamples": n_boot, "seed": seed,
              "scoring seconds": round(scored.seconds, 2)},
    )


def _audit(cohort: Any, tasks: tuple[str, ...], notes: list[str]) -> Any:
    """The data audit of the evaluated cohort (``None`` for a cohort the audit cannot read)."""
    from ..audit import audit_cohort
    from ..cohort import load_cohort
    from ..errors import MedmmError

    try:
        c = load_cohort(cohort, progress=False) if isinstance(cohort, (str, Path)) else cohort
        rep = audit_cohort(c, tasks=list(tasks))
    except MedmmError as exc:
        notes.append(f"the data audit could not run: {exc}")
        return None
    if rep.warnings:
        notes.append(f"the data audit found {len(rep.warnings)} problem(s) in the cohort; see 'Data audit'")
    return rep


def evaluate_cohort(
    model: Any,
    cohort: Any,
    *,
    split: str | None = "test",
    calibrate: Any = None,
    calibration_split: str = "val",
    subgroups: list[str] | tuple[str, ...] | None = None,
    robustness: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
    batch_size: int = 64,
    fixed_threshold: float = 0.5,
    target_sensitivity: float = 0.9,
    min_subgroup: int = 30,
    out: str | Path | None = None,
    mlflow: bool | str = False,
    tracking_uri: str | None = None,
    experiment: str = "medmm",
    progress: bool = True,
    device: str = "auto",
    num_workers: int = 0,
    engine: str = "local",
    address: str | None = None,
    audit: bool = True,
    baselines: bool = True,
    baseline_models: list[str] | tuple[str, ...] | None = None,
    train_split: str = "train",
) -> EvaluationResult:
    """Score ``cohort`` with ``model`` in batches and evaluate it.

    Parameters
    ----------
    model:
        A :class:`~medmm.models.multimodal.MultimodalModel` or the folder it was saved to.
    cohort:
        A manifest path (streamed, bounded memory), a loaded :class:`~medmm.cohort.Cohort`
        or a list of records.
    split:
        The split to evaluate (``None`` or ``'all'``: every patient).
    calibrate:
        ``'temperature'`` or ``'isotonic'``: fit on ``calibration_split`` and report before
        and after; or a fitted :class:`~medmm.evaluate.calibration.TaskCalibrator` (or the
        ``calibration.json`` an earlier evaluation saved) to apply at inference as it is. Thresholds (Youden, target sensitivity) are also chosen on that split
        when it has patients, and evaluated held fixed.
    subgroups:
        Columns to break the metrics down by (default sex, age band, site, scanner
        manufacturer); any manifest column works.
    robustness:
        Also score every subset of modalities (masking the others): masking table, heat
        map, fusion-vs-unimodal table, Shapley values.
    out:
        Folder for predictions.parquet, the tables, figures and report.html.
    mlflow:
        ``True`` logs to a new MLflow run, a run id string logs into that run.
    num_workers:
        Worker processes that read and preprocess a manifest's patients while the model scores.
    engine, address:
        Where a manifest is scored: ``'local'`` or ``'ray'`` (a Ray cluster at ``address``,
        see :mod:`medmm.engines`); the results are the same.
    audit:
        Also run the data audit (:func:`medmm.audit.audit_cohort`) on the cohort; its findings
        go into the report.
    baselines, baseline_models, train_split:
        Fit LogisticRegression, HistGradientBoosting (and TF-IDF + LR on notes) on the
        ``train_split`` patients' featurised inputs (the model's own fitted preprocessing) and
        report each beside the model, with the paired bootstrap CI of the AUROC difference
        (:mod:`medmm.evaluate.baselines`); multiclass, regression and survival tasks get their
        type's linear baseline (multinomial LR, ridge, Cox PH; penalised by CV where the columns
        outnumber the labels) compared on macro AUROC, MAE and R^2, Harrell's C.
    """
    from ..train.hub import load_model
    from .scoring import score_cohort

    t0 = time.perf_counter()
    if isinstance(model, (str, Path)):
        model = load_model(model, tracking_uri=tracking_uri)
    if not hasattr(model, "predict_records"):
        raise ConfigError(f"cannot evaluate a {type(model).__name__}", hint="give a MultimodalModel or its folder")
    source = cohort  # the Ray engine reads the manifest itself
    if isinstance(cohort, (str, Path)):  # parsed once; records are built once, for every step below
        from ..cohort import load_cohort

        cohort = load_cohort(cohort, progress=False)
    scored = score_cohort(model, source if engine != "local" else cohort, split=split, batch_size=batch_size,
                          subsets=bool(robustness), progress=progress, device=device, num_workers=num_workers,
                          engine=engine, address=address)
    if not len(scored.predictions):
        raise ConfigError(f"no patient in split {split!r}", path=source if isinstance(source, (str, Path)) else None,
                          hint="choose another --split, or 'all'")
    val = None
    if calibration_split and calibration_split != split:
        val = score_cohort(model, source if engine != "local" else cohort, split=calibration_split,
                           batch_size=batch_size, subsets=False, progress=progress, device=device,
                           num_workers=num_workers, engine=engine, address=address)
    res = evaluate_scored(scored, val=val, calibrate=calibrate, subgroups=subgroups, n_boot=n_boot, seed=seed,
                          fixed_threshold=fixed_threshold, target_sensitivity=target_sensitivity,
                          min_subgroup=min_subgroup)
    res.info.update({"split": split or "all", "calibration split": calibration_split if val is not None else "–",
                     "model": type(model).__name__, "modalities": "+".join(res.modalities)})
    from .task_metrics import evaluate_typed

    res.typed = evaluate_typed(model, cohort, split=split, n_boot=min(n_boot, 500), seed=seed, subgroups=subgroups,
                               min_subgroup=min_subgroup, batch_size=batch_size,
                               predictions=scored.predictions)  # scored once, for every task type
    if audit:
        res.audit = _audit(cohort, res.tasks, res.warnings)
    if baselines:
        _reference_models(res, model, cohort, split=split, train_split=train_split, which=baseline_models,
                          n_boot=n_boot, seed=seed)
    figures = None
    if out is not None or mlflow:
        figures = res.figures()
    if out is not None:
        res.save(out, figures=figures)
    if mlflow:
        res.info["mlflow run"] = res.log_to_mlflow(run_id=mlflow if isinstance(mlflow, str) else None,
                                                   experiment=experiment, tracking_uri=tracking_uri, figures=figures)
    res.info["total seconds"] = round(time.perf_counter() - t0, 2)
    return res


def _split_records(cohort: Any, name: str | None) -> list[Any]:
    from ..cohort import Cohort

    if isinstance(cohort, (str, Path)):
        cohort = Cohort.from_manifest(cohort)
    if isinstance(cohort, Cohort):  # .records keeps them: the baselines and the audit share one build
        return (cohort if name in (None, "all") else cohort.split(name)).records
    return [r for r in cohort if name in (None, "all") or r.split == name]


def _reference_models(res: EvaluationResult, model: Any, cohort: Any, *, split: str | None, train_split: str,
                      which: Any, n_boot: int, seed: int) -> None:
    """Fit the classical baselines on ``train_split`` and put them beside the model (in place):
    LR / HGB / TF-IDF + LR for binary tasks, and for the typed ones (``res.typed``) their type's
    linear baseline (multinomial LR, ridge, Cox PH) compared on the headline metric."""
    from .baselines import TYPED_BASELINES, run_baselines

    config = getattr(model, "config", None)
    tasks = [t for t in res.tasks if config is None or config.task_spec(t)[0] == "binary"]
    typed = res.typed
    specs = {t: s for t, s in typed.specs.items() if s.kind in TYPED_BASELINES} if typed is not None else {}
    if split in (None, "all") or split == train_split:
        res.warnings.append(f"baselines skipped: the evaluated patients include the {train_split!r} split they "
                            "would be fitted on; evaluate another --split")
        return
    train = _split_records(cohort, train_split)
    if not train or not (tasks or specs) or getattr(model, "preprocessor", None) is None:
        res.warnings.append(f"baselines skipped: no {train_split!r} patients to fit them on" if not train else
                            "baselines skipped: no task with a baseline or no fitted preprocessing in the model")
        return
    ids = set(res.predictions.patient_id)
    if typed is not None:
        ids |= set(typed.predictions.patient_id)
    evaluated = [r for r in _split_records(cohort, split) if r.patient_id in ids]
    label_columns = {t: getattr(model, "label_columns", {}).get(t) for t in specs}
    _, table, skipped = run_baselines(train, evaluated, model.preprocessor, tasks, res.predictions, n_boot=n_boot,
                                      seed=seed, which=which, typed=specs,
                                      typed_predictions=typed.predictions if typed is not None else None,
                                      label_columns=label_columns, typed_n_boot=typed.n_boot if typed else None)
    res.reference_models = table
    res.warnings.extend(f"baseline skipped: {s}" for s in skipped)
    res.info["baselines fitted on"] = f"{len(train)} {train_split} patients"
