"""Figures (matplotlib) and the self-contained HTML report of an evaluation."""

from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np

from ..viz.common import figure_png

__all__ = ["roc_figure", "pr_figure", "curve_figures", "calibration_figure", "forest_figure", "heatmap_figure",
           "confusion_figure", "make_figures", "render_html", "report_figure", "html_table"]

_GRID = np.linspace(0, 1, 101)


def report_figure(*args: Any, **kw: Any) -> Any:
    """A pyplot-free Figure with constrained layout (the report's figures)."""
    from ..viz.common import new_figure

    kw.setdefault("layout", "constrained")  # laid out at draw time: labels never clipped, one render
    return new_figure(*args, **kw)


def _curve_bands(y, p, *, n_boot: int, seed: int):
    """ROC (TPR on an FPR grid) and PR (precision on a recall grid), point and 95% band."""
    from .bootstrap import bootstrap_weights, curve_counts

    y = np.asarray(y, float)
    p = np.asarray(p, float)
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]

    def curves(w):
        _, posg, totg = curve_counts(w, y, p)
        tp = np.cumsum(posg, axis=1, dtype=np.float64)
        cum = np.cumsum(totg, axis=1, dtype=np.float64)
        pos, neg = tp[:, -1:], cum[:, -1:] - tp[:, -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr, fpr = tp / pos, (cum - tp) / neg
            prec = tp / cum
        roc, pr = [], []
        for i in range(w.shape[0]):
            if pos[i, 0] == 0 or neg[i, 0] == 0:
                continue
            roc.append(np.interp(_GRID, np.r_[0, fpr[i]], np.r_[0, tpr[i]]))
            # precision as a step function of recall (the highest precision at recall >= r)
            r, pr_i = tpr[i], prec[i]
            best = np.maximum.accumulate(pr_i[::-1])[::-1]
            idx = np.clip(np.searchsorted(r, _GRID, side="left"), 0, len(r) - 1)
            pr.append(best[idx])
        return np.array(roc), np.array(pr)

    roc0, pr0 = curves(np.ones((1, len(y)), np.float32))
    rocs, prs = [], []
    for w in bootstrap_weights(len(y), n_boot, seed):
        a, b = curves(w)
        rocs.append(a)
        prs.append(b)
    rocb = np.concatenate(rocs) if rocs else roc0
    prb = np.concatenate(prs) if prs else pr0
    q = lambda a: (np.quantile(a, 0.025, axis=0), np.quantile(a, 0.975, axis=0)) if len(a) else (None, None)  # noqa: E731
    return (roc0[0] if len(roc0) else None, *q(rocb)), (pr0[0] if len(pr0) else None, *q(prb)), float(y.mean()) if len(y) else np.nan


def roc_figure(predictions, tasks, *, n_boot: int = 200, seed: int = 0, labels: dict[str, Any] | None = None):
    """ROC curves with 95% bootstrap bands, one panel per task (``labels``: more prediction
    tables to overlay, by name)."""
    series = {"model": predictions, **(labels or {})}
    return _curves_figure(tasks, "roc", _series_bands(series, tasks, n_boot=n_boot, seed=seed))


def pr_figure(predictions, tasks, *, n_boot: int = 200, seed: int = 0, labels: dict[str, Any] | None = None):
    """Precision-recall curves with 95% bootstrap bands, one panel per task."""
    series = {"model": predictions, **(labels or {})}
    return _curves_figure(tasks, "pr", _series_bands(series, tasks, n_boot=n_boot, seed=seed))


def curve_figures(predictions, tasks, *, n_boot: int = 200, seed: int = 0,
                  labels: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """``(roc_figure, pr_figure)`` from one bootstrap per series and task (the two figures
    share it; calling :func:`roc_figure` and :func:`pr_figure` runs it twice)."""
    series = {"model": predictions, **(labels or {})}
    bands = _series_bands(series, tasks, n_boot=n_boot, seed=seed)
    return _curves_figure(tasks, "roc", bands), _curves_figure(tasks, "pr", bands)


def _series_bands(series: dict[str, Any], tasks, *, n_boot: int, seed: int) -> dict[str, dict[str, tuple]]:
    """task -> series name -> ``(y, p, roc, pr, prevalence)``, :func:`_curve_bands` once each."""
    out: dict[str, dict[str, tuple]] = {}
    for t in tasks:
        out[t] = {}
        for name, df in series.items():
            y, p = df[f"label_{t}"].to_numpy(float), df[f"prob_{t}"].to_numpy(float)
            out[t][name] = (y, p, *_curve_bands(y, p, n_boot=n_boot, seed=seed))
    return out


def _curves_figure(tasks, kind, bands):
    from .metrics import auroc

    fig = report_figure(figsize=(4.2 * len(tasks), 4))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, t in zip(axes, tasks):
        prev = np.nan
        for i, (name, (y, p, roc, pr, prev)) in enumerate(bands[t].items()):  # noqa: B007 (prev: the prevalence line drawn after the loop)
            est, lo, hi = roc if kind == "roc" else pr
            if est is None:
                continue
            color = f"C{i}"
            keep = ~np.isnan(y)
            lab = f"{name} (AUROC {auroc(y[keep], p[keep]):.3f})" if kind == "roc" else name
            ax.plot(_GRID, est, color=color, label=lab)
            if lo is not None:
                ax.fill_between(_GRID, lo, hi, color=color, alpha=0.2, linewidth=0)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls=":", color="grey")
            ax.set_xlabel("1 - specificity")
            ax.set_ylabel("sensitivity")
        else:
            ax.axhline(prev, ls=":", color="grey")
            ax.set_xlabel("recall (sensitivity)")
            ax.set_ylabel("precision (PPV)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{t}: {'ROC' if kind == 'roc' else 'PR'} curve, 95% band")
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    return fig


def calibration_figure(calibration: dict[str, dict[str, Any]]):
    """Reliability diagrams: ``{task: {label: calibration bins}}`` (e.g. before and after)."""
    tasks = list(calibration)
    fig = report_figure(figsize=(4.2 * max(1, len(tasks)), 4))
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, t in zip(axes, tasks):
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        for i, (name, c) in enumerate(calibration[t].items()):
            ok = np.asarray(c["n"]) > 0
            x = np.asarray(c["mean_predicted"])[ok]
            yv = np.asarray(c["observed"])[ok]
            lo = np.asarray(c["observed_low"])[ok]
            hi = np.asarray(c["observed_high"])[ok]
            err = np.vstack([np.clip(yv - lo, 0, None), np.clip(hi - yv, 0, None)])
            err = np.nan_to_num(err)
            ax.errorbar(x, yv, yerr=err, marker="o", ms=4, capsize=2, color=f"C{i}", label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed rate")
        ax.set_title(f"{t}: calibration")
        ax.legend(loc="upper left", fontsize=8)
    return fig


def forest_figure(subgroups, *, metric: str = "auroc"):
    """Subgroup forest plot: the metric with its 95% CI per subgroup, one panel per task;
    subgroups too small to estimate are drawn hollow."""
    tasks = list(dict.fromkeys(subgroups["task"])) if len(subgroups) else []
    n_rows = max((len(subgroups[subgroups["task"] == t]) for t in tasks), default=1)
    fig = report_figure(figsize=(6.5 * max(1, len(tasks)), 0.32 * n_rows + 1.2))
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, t in zip(axes, tasks):
        sub = subgroups[subgroups["task"] == t].reset_index(drop=True)
        ys = np.arange(len(sub))[::-1]
        for yi, (_, r) in zip(ys, sub.iterrows()):
            est, lo, hi = r[metric], r[f"{metric}_low"], r[f"{metric}_high"]
            if np.isnan(est):
                continue
            ax.plot([lo, hi], [yi, yi], color="C0")
            ax.plot([est], [yi], "o", color="C0", mfc="white" if r["too_small"] else "C0")
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{r.column}={r.group} (n={r.n})" for r in sub.itertuples()], fontsize=8)
        ax.axvline(0.5, ls=":", color="grey")
        ax.set_xlabel(f"{metric.upper()}, 95% CI (hollow: too small)")
        ax.set_title(f"{t}: subgroups")
    return fig


def heatmap_figure(table, *, value: str = "auroc_all", row: str = "subset", title: str = "AUROC with modalities masked"):
    """Heat map of ``value`` per ``row`` (subset or pattern) and task."""
    pivot = table.pivot_table(index=row, columns="task", values=value, aggfunc="first")
    if "n_modalities" in table.columns:
        order = table.drop_duplicates(row).sort_values(["n_modalities", row])[row]
        pivot = pivot.reindex([r for r in order if r in pivot.index])
    fig = report_figure(figsize=(2.0 + 1.4 * pivot.shape[1], 0.35 * pivot.shape[0] + 1.3))
    ax = fig.subplots()
    data = pivot.to_numpy(float)
    im = ax.imshow(data, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(pivot.shape[1]))
    ax.set_xticklabels(pivot.columns)
    ax.set_yticks(range(pivot.shape[0]))
    ax.set_yticklabels(pivot.index, fontsize=8)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < 0.75 else "black")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_title(title)
    return fig


def confusion_figure(predictions, tasks, thresholds: dict[str, float]):
    """Confusion matrices at the given threshold per task."""
    fig = report_figure(figsize=(3.2 * len(tasks), 3))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, t in zip(axes, tasks):
        y = predictions[f"label_{t}"].to_numpy(float)
        p = predictions[f"prob_{t}"].to_numpy(float)
        keep = ~np.isnan(y)
        y, yhat = y[keep].astype(int), (p[keep] >= thresholds[t]).astype(int)
        cm = np.array([[np.sum((y == a) & (yhat == b)) for b in (0, 1)] for a in (0, 1)])
        ax.imshow(cm, cmap="Blues")
        for a in (0, 1):
            for b in (0, 1):
                ax.text(b, a, str(cm[a, b]), ha="center", va="center",
                        color="white" if cm[a, b] > cm.max() / 2 else "black")
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["pred 0", "pred 1"])
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["true 0", "true 1"])
        ax.set_title(f"{t} at {thresholds[t]:.3g}", fontsize=9)
    return fig


def make_figures(result, *, n_boot: int = 200) -> dict[str, Any]:
    """Every figure of the report, by file name."""
    tasks = list(result.tasks)
    if not tasks:  # no binary task: the typed tasks' figures come with result.typed
        return {}
    roc, pr = curve_figures(result.predictions, tasks, n_boot=n_boot, seed=result.seed)
    figs = {
        "roc.png": roc,
        "pr.png": pr,
        "calibration.png": calibration_figure(result.calibration_curves),
    }
    if result.subgroups is not None and len(result.subgroups):
        figs["subgroups_forest.png"] = forest_figure(result.subgroups)
    if result.masking is not None and len(result.masking):
        figs["missing_heatmap.png"] = heatmap_figure(result.masking)
    if result.patterns is not None and len(result.patterns):
        figs["pattern_heatmap.png"] = heatmap_figure(
            result.patterns.assign(subset=result.patterns["group"]), value="auroc",
            title="AUROC per observed presence pattern")
    figs["confusion.png"] = confusion_figure(result.predictions, tasks, result.thresholds)
    return figs


def html_table(df: Any, *, floats: str = "{:.3f}", max_rows: int = 200) -> str:
    """A DataFrame as an HTML table (floats formatted, at most ``max_rows`` rows)."""
    if df is None or not len(df):
        return "<p><i>none</i></p>"
    return df.head(max_rows).to_html(index=False, float_format=lambda v: floats.format(v), na_rep="–",
                                     classes="tbl", border=0)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table.tbl{border-collapse:collapse;font-size:12px;margin:8px 0}
table.tbl th,table.tbl td{border:1px solid #ddd;padding:3px 6px;text-align:right}
table.tbl th{background:#f4f4f4}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:8px 0;font-size:13px}
.note{color:#555;font-size:13px} img{max-width:100%}
"""


def render_html(result, figures: dict[str, Any] | None = None, *, title: str = "medmm evaluation") -> str:
    """The whole report as one self-contained HTML string (figures, or their PNG bytes, inlined)."""
    figures = figures if figures is not None else make_figures(result)

    def img(name: str) -> str:
        if name not in figures:
            return ""
        data = base64.b64encode(figure_png(figures[name])).decode()
        return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}"/>'

    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>"]
    info = result.info
    parts.append("<p class='note'>" + " &middot; ".join(f"{e(str(k))}: {e(str(v))}" for k, v in info.items())
                 + "</p>")
    for w in result.warnings:
        parts.append(f"<div class='warn'>{e(w)}</div>")
    parts.append("<h2>Summary (95% bootstrap CIs, resampling patients)</h2>" + html_table(result.summary()))
    ref = getattr(result, "reference_models", None)
    if ref is not None and len(ref):
        parts.append("<h2>Is the model better than logistic regression?</h2><p class='note'>Classical baselines "
                     "fitted on the training split's featurised inputs (the model's own fitted preprocessing; "
                     "TF-IDF of the raw notes for TF-IDF + LR), scored on the same patients. Difference = model "
                     "- baseline AUROC with its paired bootstrap 95% CI (the same resamples for both) and "
                     "DeLong's p-value."
                     + (" Multi-class, regression and survival tasks: their type's linear baseline (multinomial "
                        "logistic regression, ridge, Cox proportional hazards; with the penalty chosen by 5-fold "
                        "CV where the featurised columns outnumber what the labels carry: _cv, coxnet_cv) on "
                        "the same inputs, compared on macro AUROC, MAE and R², Harrell's C; difference = model "
                        "- baseline with its paired bootstrap 95% CI (a negative MAE difference favours the "
                        "model); <code>fitted_on</code>: the training patients with a known label."
                        if "metric" in ref.columns else "") + "</p>" + html_table(ref))
    parts.append("<h2>Operating points</h2><p class='note'>Thresholds: a fixed one, Youden's J and a target "
                 "sensitivity, re-chosen in every bootstrap resample" + (
                     "; '(val)' thresholds were chosen on the validation split and held fixed"
                     if result.val_thresholds else "") + ".</p>" + html_table(result.operating_points()))
    parts.append("<h2>ROC and precision-recall curves</h2>" + img("roc.png") + img("pr.png"))
    parts.append("<h2>Confusion matrices (Youden threshold)</h2>" + img("confusion.png"))
    parts.append("<h2>Calibration</h2>" + img("calibration.png"))
    if result.calibrated_metrics is not None:
        parts.append(f"<p class='note'>Calibrator ({e(result.calibration_method or '')}) fitted on the "
                     "validation split, applied to the evaluated patients.</p>" + html_table(result.calibration_table()))
    if result.subgroups is not None and len(result.subgroups):
        parts.append("<h2>Subgroups</h2>" + img("subgroups_forest.png") + html_table(result.subgroup_table()))
    if result.patterns is not None and len(result.patterns):
        parts.append("<h2>Observed presence patterns</h2>" + img("pattern_heatmap.png")
                     + html_table(result.patterns[["task", "group", "n", "n_positive", "too_small", "auroc", "auroc_low",
                                                "auroc_high", "brier"]]))
    if result.masking is not None and len(result.masking):
        parts.append("<h2>Modalities removed on purpose</h2><p class='note'>Each subset of modalities kept, "
                     "the others masked for every patient; <code>*_complete</code>: only patients that have "
                     "every kept modality.</p>" + img("missing_heatmap.png") + html_table(result.masking))
    if result.fusion is not None and len(result.fusion):
        parts.append("<h2>Does fusion help?</h2><p class='note'>On the patients that have the modality: the "
                     "fused prediction against the same model given that modality alone (DeLong).</p>"
                     + html_table(result.fusion))
    if getattr(result, "baselines", None) is not None and len(result.baselines):
        parts.append("<h3>Against separately trained baselines</h3><p class='note'>On the patients that have "
                     "every modality the baseline uses (DeLong).</p>" + html_table(result.baselines))
    if result.shapley is not None and len(result.shapley):
        parts.append("<h2>Per-modality contribution (Shapley values by masking)</h2>" + html_table(result.shapley))
    if result.comparisons:
        for name, df in result.comparisons.items():
            parts.append(f"<h2>Paired comparison: {e(name)}</h2>" + html_table(df))
    typed = getattr(result, "typed", None)
    if typed is not None:  # multi-class, regression and survival tasks (medmm.evaluate.task_metrics)
        parts.append(typed.to_html({k: figure_png(v) for k, v in typed.figures().items()}))
    audit = getattr(result, "audit", None)
    if audit is not None:
        parts.append("<h2>Data audit</h2><p class='note'>Leakage suspects (single-feature AUROC on the training "
                     "split), data recorded after the index time, duplicates across splits, type drift, disguised "
                     "missing values and label prevalence (medmm.audit).</p>" + audit.to_html())
    parts.append("</body></html>")
    return "".join(parts)
