"""Evaluation of every task type: multi-class, regression and time-to-event (binary tasks keep
:mod:`medmm.evaluate.api`'s path).

Every metric comes with a bootstrap 95 % interval over patients (BCa where the metric is bounded,
:func:`medmm.evaluate.bootstrap.bca_interval`), per presence pattern and per subgroup as the
binary metrics are. The metrics are the reference libraries' own: scikit-learn for multi-class and
regression, scikit-survival for survival (Harrell's and Uno's C, cumulative/dynamic AUROC, Brier
score and its integral with IPCW weights from the training split's censoring, Kaplan-Meier).

=============  ==========================================================================================
multiclass     macro and micro one-vs-rest AUROC, accuracy, balanced accuracy, log loss; per-class table
               (precision, recall, F1, AUROC, ECE), confusion matrix, reliability curve per class
regression     MAE, RMSE, R^2, calibration-in-the-large (mean observed - mean predicted) and slope;
               observed-vs-predicted plot by decile
survival       Harrell's C, Uno's C (truncated at the last horizon), AUROC(t) and Brier(t) at each
               horizon, integrated Brier score, calibration at each horizon (Kaplan-Meier observed vs
               mean predicted risk by risk decile), Kaplan-Meier curves by predicted-risk tertile
=============  ==========================================================================================

Baselines for these types (multinomial logistic regression, ridge, Cox proportional hazards) are in
:func:`typed_baseline`; :func:`medmm.evaluate.baselines.run_baselines` fits them beside every evaluation.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["multiclass_metrics", "regression_metrics", "survival_metrics", "bootstrap_ci", "typed_predictions",
           "typed_columns", "survival_label_table", "curves_from_table",
           "evaluate_typed", "evaluate_typed_frame", "TypedEvaluation", "typed_baseline", "km_by_risk_group", "head_spec"]

_BOUNDED = ("auroc", "accuracy", "c_", "harrell", "uno", "auc", "brier", "ece", "ibs")


def _bounded(name: str) -> bool:
    return any(name.startswith(b) or f".{b}" in name for b in _BOUNDED)


# ---------------------------------------------------------------------------------------- metrics
def macro_auroc(y: Any, prob: Any) -> float:
    """One-vs-rest AUROC averaged over the classes present in ``y`` (integer labels, no NaN);
    NaN with fewer than two classes."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(y == c, prob[:, c]) for c in present]))


def multiclass_metrics(y: Any, prob: Any, *, n_classes: int | None = None) -> dict[str, float]:
    """Macro/micro OvR AUROC, accuracy, balanced accuracy, log loss and per-class AUROC/ECE.

    Macro AUROC averages the classes present in ``y`` (a class without patients has no AUROC)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, roc_auc_score

    from .metrics import expected_calibration_error

    y = np.asarray(y, dtype=float)
    p = np.asarray(prob, dtype=float)
    k = n_classes or p.shape[1]
    keep = ~np.isnan(y)
    y, p = y[keep].astype(int), p[keep]
    out: dict[str, float] = {"n": float(len(y))}
    if not len(y):
        return out
    pred = p.argmax(axis=1)
    present = np.unique(y)
    for c in range(k):
        out[f"auroc.{c}"] = float(roc_auc_score(y == c, p[:, c])) if c in present and len(present) > 1 else np.nan
        out[f"ece.{c}"] = expected_calibration_error((y == c).astype(float), p[:, c])
    out["auroc_macro"] = macro_auroc(y, p) if len(present) > 1 else np.nan
    onehot = np.eye(k)[y]
    out["auroc_micro"] = float(roc_auc_score(onehot.ravel(), p.ravel())) if len(present) > 1 else np.nan
    out["accuracy"] = float(accuracy_score(y, pred))
    out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred)) if len(present) > 1 else np.nan
    q = np.clip(p, 1e-7, 1)  # float32 softmax rows sum to 1 only within rounding: renormalised, as log_loss would
    out["log_loss"] = float(log_loss(y, q / q.sum(axis=1, keepdims=True), labels=list(range(k))))
    return out


def regression_metrics(y: Any, pred: Any) -> dict[str, float]:
    """MAE, RMSE, R^2, calibration-in-the-large (mean observed - mean predicted) and slope."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y = np.asarray(y, dtype=float)
    f = np.asarray(pred, dtype=float)
    keep = ~np.isnan(y)
    y, f = y[keep], f[keep]
    out: dict[str, float] = {"n": float(len(y))}
    if len(y) < 2:
        return out
    out["mae"] = float(mean_absolute_error(y, f))
    out["rmse"] = float(np.sqrt(mean_squared_error(y, f)))
    out["r2"] = float(r2_score(y, f))
    out["calibration_in_the_large"] = float(y.mean() - f.mean())
    out["calibration_slope"] = float(np.polyfit(f, y, 1)[0]) if np.ptp(f) > 0 else np.nan
    return out


def _surv(time: np.ndarray, event: np.ndarray):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event) > 0.5, time=np.asarray(time, dtype=float))


def survival_metrics(time: Any, event: Any, risk_score: Any, *, horizons: Any = (), risk: Any = None,
                     grid: Any = None, survival_grid: Any = None, train: tuple[Any, Any] | None = None
                     ) -> dict[str, float]:
    """Survival metrics of one task (labels already censored at the horizon).

    ``risk_score [N]`` orders patients (higher: earlier event); ``risk [N, H]`` is the absolute risk
    by each of ``horizons`` (when the model gives one); ``survival_grid [N, G]`` is ``S(t)`` on
    ``grid`` for the integrated Brier score. ``train`` = ``(time, event)`` of the training split
    estimates the censoring distribution of the IPCW metrics (default: these patients)."""
    from sksurv.metrics import (brier_score, concordance_index_censored, concordance_index_ipcw,
                                cumulative_dynamic_auc, integrated_brier_score)

    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=float) > 0.5
    r = np.asarray(risk_score, dtype=float)
    keep = ~(np.isnan(t) | np.isnan(r))
    t, e, r = t[keep], e[keep], r[keep]
    out: dict[str, float] = {"n": float(len(t)), "events": float(e.sum())}
    if len(t) < 2 or not e.any():
        return out
    test = _surv(t, e)
    tr = _surv(*train) if train is not None else test
    t_max_tr = float(np.asarray(tr["time"]).max())
    out["harrell_c"] = float(concordance_index_censored(e, t, r)[0])
    hs = np.asarray([h for h in np.asarray(horizons, dtype=float) if t.min() <= h < min(t.max(), t_max_tr)])
    tau = float(hs.max()) if len(hs) else None
    try:
        out["uno_c"] = float(concordance_index_ipcw(tr, test, r, tau=tau)[0])
    except ValueError:
        out["uno_c"] = np.nan
    if risk is not None:
        risk = np.asarray(risk, dtype=float)[keep]
    all_h = np.asarray(horizons, dtype=float)
    for j, h in enumerate(all_h):
        if h not in hs:
            continue
        est = risk[:, j] if risk is not None else r
        try:
            out[f"auc@{h:g}"] = float(cumulative_dynamic_auc(tr, test, est, [h])[0][0])
        except ValueError:
            out[f"auc@{h:g}"] = np.nan
        if risk is not None:
            out[f"brier@{h:g}"] = float(brier_score(tr, test, 1.0 - risk[:, j:j + 1], [h])[1][0])
            obs = _km_risk(t, e, h)
            out[f"observed_risk@{h:g}"] = obs
            out[f"predicted_risk@{h:g}"] = float(risk[:, j].mean())
    if survival_grid is not None and grid is not None:
        g = np.asarray(grid, dtype=float)
        sg = np.asarray(survival_grid, dtype=float)[keep]
        ok = (g >= t.min()) & (g < min(t.max(), t_max_tr))
        if ok.sum() >= 2:
            try:
                out["ibs"] = float(integrated_brier_score(tr, test, sg[:, ok], g[ok]))
            except ValueError:
                out["ibs"] = np.nan
    return out


def _km_risk(time: np.ndarray, event: np.ndarray, h: float) -> float:
    """``1 - KM(h)``: the observed risk by ``h``."""
    from sksurv.nonparametric import kaplan_meier_estimator

    if not len(time):
        return np.nan
    x, s = kaplan_meier_estimator(np.asarray(event) > 0.5, np.asarray(time, dtype=float))
    idx = np.searchsorted(x, h, side="right") - 1
    return float(1.0 - (s[idx] if idx >= 0 else 1.0))


def survival_calibration(time: Any, event: Any, risk: Any, h: float, *, groups: int = 10) -> Any:
    """Calibration at horizon ``h``: per risk group, mean predicted risk vs Kaplan-Meier observed."""
    import pandas as pd

    t, e, r = (np.asarray(a, dtype=float) for a in (time, event, risk))
    groups = max(2, min(groups, len(t) // 10))
    q = pd.qcut(r, groups, labels=False, duplicates="drop")
    rows = []
    for g in np.unique(q):
        sel = q == g
        rows.append({"group": int(g) + 1, "n": int(sel.sum()), "predicted": float(r[sel].mean()),
                     "observed": _km_risk(t[sel], e[sel], h)})
    return pd.DataFrame(rows)


def km_by_risk_group(time: Any, event: Any, risk_score: Any, *, groups: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Kaplan-Meier curves ``{group: (times, S)}`` of the predicted-risk groups (tertiles by default)."""
    import pandas as pd
    from sksurv.nonparametric import kaplan_meier_estimator

    t, e, r = (np.asarray(a, dtype=float) for a in (time, event, risk_score))
    names = ["low", "middle", "high"] if groups == 3 else [f"Q{k + 1}" for k in range(groups)]
    q = pd.qcut(r, groups, labels=False, duplicates="drop")
    out = {}
    for g in np.unique(q):
        sel = q == g
        x, s = kaplan_meier_estimator(e[sel] > 0.5, t[sel])
        out[f"{names[int(g)] if int(g) < len(names) else g} risk (n={int(sel.sum())})"] = (x, s)
    return out


def bootstrap_ci(fn: Any, arrays: tuple[Any, ...], *, n_boot: int = 500, seed: int = 0, alpha: float = 0.05
                 ) -> dict[str, tuple[float, float, float]]:
    """``fn(*arrays) -> {metric: value}`` with a bootstrap interval per metric (patients resampled
    with replacement; BCa for metrics bounded to [0, 1], percentile otherwise)."""
    from .bootstrap import bca_interval

    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    full = fn(*arrays)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {k: [] for k in full}
    for _ in range(n_boot if n > 1 else 0):
        idx = rng.integers(0, n, n)
        try:
            m = fn(*(a[idx] for a in arrays))
        except ValueError:
            continue
        for k in full:
            boots[k].append(m.get(k, np.nan))
    out = {}
    for k, est in full.items():
        b = np.asarray(boots[k], dtype=float)
        b = b[~np.isnan(b)]
        if k in ("n", "events") or not len(b) or np.isnan(est):
            out[k] = (float(est), float("nan"), float("nan"))
        elif _bounded(k):
            lo, hi, _ = bca_interval(float(est), b, None, alpha)
            out[k] = (float(est), lo, hi)
        else:
            lo, hi = np.quantile(b, [alpha / 2, 1 - alpha / 2])
            out[k] = (float(est), float(min(lo, est)), float(max(hi, est)))
    return out


# ---------------------------------------------------------------------------------------- scoring
def typed_columns(model: Any, probs: Any, label: Any, *, curve_points: int = 50,
                  curves: bool = True) -> tuple[dict[str, Any], dict]:
    """Every task's label and output columns from the model's output ``probs`` ``[N, n_outputs]``
    (:meth:`~medmm.models.multimodal.MultimodalModel.predict_proba`); ``label(key)`` gives the
    label column ``key`` (a record label key, NaN where unknown) as a float array. The one mapping
    from outputs to a predictions table, so that scoring once feeds every task type."""
    import torch

    from ..models.outputs import task_outputs
    from ..models.survival import DiscreteTimeHead, SurvivalHead
    from ..tasks import TaskSpec

    p = np.asarray(probs, dtype=np.float32)
    outs = task_outputs(model, p)
    cols: dict[str, Any] = {}
    want_curves, curves = curves, {}
    for t in model.tasks:
        head = model.heads[t]
        if isinstance(head, SurvivalHead):
            tc, ec = model.label_columns[t]
            spec = TaskSpec(name=t, kind="survival", horizon=head.horizon)
            ev = label(ec)
            time, event = spec.censor(label(tc), ev)
            cols[f"time_{t}"], cols[f"event_{t}"] = time, np.where(np.isnan(ev), np.nan, event)
            cols.update({k: v for k, v in outs.items() if k == f"risk_score_{t}" or k.startswith(f"risk_{t}@")})
            if isinstance(head, DiscreteTimeHead):  # its whole survival curve: the risk by each interval's end
                sl = p[:, model.output_slices[t]]
                for j, e in enumerate(head.edges[1:].tolist()):
                    cols[f"risk_{t}@{e:g}"] = sl[:, j].astype(float)
            if want_curves and head.can_give_risk():
                end = head.horizon or (float(np.nanmax(time)) if len(time) and np.isfinite(time).any() else 1.0)
                g = np.linspace(0.0, end, curve_points)
                sl = torch.as_tensor(p[:, model.output_slices[t]])
                curves[t] = {"times": g, "survival": head.survival_from_output(sl, g).numpy()}
        elif head.kind == "multiclass":
            cols[f"label_{t}"] = label(t)
            cols.update({f"prob_{t}.{c}": outs[f"prob_{t}.{c}"] for c in head.classes})
            cols[f"pred_{t}"] = outs[f"pred_{t}"]
        elif head.kind == "multilabel":
            for c, lc in zip(head.labels, model.label_columns[t]):
                cols[f"label_{lc}"], cols[f"prob_{lc}"] = label(lc), outs[f"prob_{t}.{c}"]
        elif head.kind == "regression":
            cols[f"label_{t}"], cols[f"value_{t}"] = label(t), outs[f"value_{t}"]
        else:
            cols[f"label_{t}"], cols[f"prob_{t}"] = label(t), outs[f"prob_{t}"]
    return cols, curves


def typed_predictions(model: Any, records: Any, *, batch_size: int = 64, curve_points: int = 50) -> tuple[Any, dict]:
    """One row per patient with every task's labels and outputs, and the survival curves.

    Columns: ``patient_id, split, pattern``, the subgroup metadata, then per task: binary
    ``label_t, prob_t``; multiclass ``label_t, prob_t.<class>, pred_t``; multilabel
    ``label_t.<l>, prob_t.<l>``; regression ``label_t, value_t``; survival ``time_t, event_t``
    (censored at the horizon), ``risk_score_t`` and ``risk_t@<h>`` per horizon. Returns
    ``(table, {task: {"times": [G], "survival": [N, G]}})``.
    """
    import pandas as pd
    import torch

    from ..data import collate, encode_records
    from .subgroups import record_metadata

    model.eval()
    device = next(model.parameters()).device
    shapes = model.preprocessor.output_shapes()
    rows, probs = [], []
    n = len(records)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            part = [records[i] for i in range(s, min(n, s + batch_size))]
            items = encode_records(part, model.preprocessor)
            b = collate(items, model.modalities, shapes, ()).to(device)
            probs.append(model.predict_from_logits(model(b.values, b.present)).float().cpu().numpy())
            for r in part:
                rows.append({"patient_id": r.patient_id, "split": str(r.split), "pattern": r.pattern,
                             **record_metadata(r), "_labels": dict(r.labels)})
    p = np.concatenate(probs) if probs else np.zeros((0, model.n_outputs), np.float32)
    df = pd.DataFrame(rows)
    labels = df.pop("_labels").tolist() if len(df) else []
    cols, curves = typed_columns(model, p, lambda key: record_label(labels, key), curve_points=curve_points)
    df = pd.concat([df, pd.DataFrame(cols, index=df.index)], axis=1)
    return df, curves


def curves_from_table(model: Any, table: Any, *, curve_points: int = 50) -> dict[str, dict[str, np.ndarray]]:
    """Each survival task's ``S(t)`` on a grid, from a predictions table's columns (what
    :func:`typed_columns` wrote): a Cox head's log hazard and baseline, a discrete-time head's risk
    by each interval's end (interpolated as the head does)."""
    import torch

    from ..models.survival import DiscreteTimeHead, SurvivalHead

    out: dict[str, dict[str, np.ndarray]] = {}
    for t in model.tasks:
        head = model.heads[t]
        if not isinstance(head, SurvivalHead) or not head.can_give_risk() or f"risk_score_{t}" not in table:
            continue
        if isinstance(head, DiscreteTimeHead):
            names = [f"risk_{t}@{e:g}" for e in head.edges[1:].tolist()]
            if not all(c in table for c in names):
                continue
            sl = torch.as_tensor(table[names].to_numpy(np.float32))
        else:
            sl = torch.as_tensor(table[[f"risk_score_{t}"]].to_numpy(np.float32))
        time = table[f"time_{t}"].to_numpy(float) if f"time_{t}" in table else np.zeros(0)
        end = head.horizon or (float(np.nanmax(time)) if len(time) and np.isfinite(time).any() else 1.0)
        g = np.linspace(0.0, end, curve_points)
        out[t] = {"times": g, "survival": head.survival_from_output(sl, g).numpy()}
    return out


def record_label(labels: list[dict[str, Any]], key: str) -> np.ndarray:
    """Label ``key`` of each record's label dict as floats (NaN where unknown)."""
    return np.asarray([np.nan if d.get(key) is None else float(d[key]) for d in labels], dtype=float)


def survival_label_table(model: Any, records: Any) -> Any:
    """``time_t, event_t`` (censored at the horizon) of each survival task for ``records``, read
    from their labels without scoring them: the training split's censoring distribution for
    Uno's C, AUROC(t) and the Brier score."""
    import pandas as pd

    from ..models.survival import SurvivalHead
    from ..tasks import TaskSpec

    labels = [dict(r.labels) for r in records]
    cols: dict[str, Any] = {}
    for t in model.tasks:
        head = model.heads[t]
        if isinstance(head, SurvivalHead):
            tc, ec = model.label_columns[t]
            ev = record_label(labels, ec)
            time, event = TaskSpec(name=t, kind="survival", horizon=head.horizon).censor(record_label(labels, tc), ev)
            cols[f"time_{t}"], cols[f"event_{t}"] = time, np.where(np.isnan(ev), np.nan, event)
    return pd.DataFrame(cols)


# ---------------------------------------------------------------------------------------- result
@dataclass
class TypedEvaluation:
    """Evaluation of the non-binary tasks: ``metrics[task][metric] = (estimate, low, high)``,
    ``tables[task][name]`` DataFrames (per class, confusion, calibration, by pattern, by subgroup)."""

    specs: dict[str, Any]
    predictions: Any
    metrics: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    n_boot: int = 500
    seed: int = 0

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    def metrics_frame(self):
        import pandas as pd

        return pd.DataFrame([{"task": t, "kind": self.specs[t].kind, "metric": k, "estimate": v[0], "low": v[1],
                              "high": v[2]} for t, m in self.metrics.items() for k, v in m.items()])

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures by file name: confusion matrices and reliability per class,
        regression calibration, survival calibration and Kaplan-Meier by risk group."""
        from .report import report_figure

        figs: dict[str, Any] = {}
        p = self.predictions
        for t, spec in self.specs.items():
            tb = self.tables.get(t, {})
            if spec.kind == "multiclass" and "confusion" in tb:
                fig = report_figure(figsize=(10, 4))
                ax = fig.subplots(1, 2)
                cm = tb["confusion"].to_numpy(dtype=float)
                ax[0].imshow(cm, cmap="Blues")
                for (i, j), v in np.ndenumerate(cm):
                    ax[0].text(j, i, f"{int(v)}", ha="center", va="center", fontsize=8)
                ax[0].set_xticks(range(len(spec.classes)), spec.classes, rotation=45)
                ax[0].set_yticks(range(len(spec.classes)), spec.classes)
                ax[0].set_xlabel("predicted"), ax[0].set_ylabel("true"), ax[0].set_title(f"{t}: confusion")
                for c in spec.classes:
                    cal = tb.get(f"reliability.{c}")
                    if cal is not None and len(cal):
                        ax[1].plot(cal["predicted"], cal["observed"], marker="o", label=c)
                ax[1].plot([0, 1], [0, 1], "k--", lw=1)
                ax[1].set_xlabel("predicted probability"), ax[1].set_ylabel("observed frequency")
                ax[1].set_title(f"{t}: calibration per class (one vs rest)"), ax[1].legend(fontsize=7)
                figs[f"{t}_multiclass.png"] = fig
            elif spec.kind == "regression" and f"value_{t}" in p:
                fig = report_figure(figsize=(5, 4))
                ax = fig.subplots()
                cal = tb.get("calibration")
                ax.scatter(p[f"value_{t}"], p[f"label_{t}"], s=6, alpha=0.4, label="patients")
                if cal is not None and len(cal):
                    ax.plot(cal["predicted"], cal["observed"], "o-", color="C1", label="decile means")
                lo = float(np.nanmin(p[[f"value_{t}", f"label_{t}"]].to_numpy()))
                hi = float(np.nanmax(p[[f"value_{t}", f"label_{t}"]].to_numpy()))
                ax.plot([lo, hi], [lo, hi], "k--", lw=1)
                unit = f" ({spec.unit})" if spec.unit else ""
                ax.set_xlabel(f"predicted{unit}"), ax.set_ylabel(f"observed{unit}")
                citl = self.metrics[t].get("calibration_in_the_large", (np.nan,))[0]
                ax.set_title(f"{t}: calibration in the large {citl:+.3g}"), ax.legend(fontsize=7)
                figs[f"{t}_regression.png"] = fig
            elif spec.kind == "survival" and f"time_{t}" in p:
                fig = report_figure(figsize=(10, 4))
                ax = fig.subplots(1, 2)
                km = km_by_risk_group(*(p[c].to_numpy(float) for c in (f"time_{t}", f"event_{t}", f"risk_score_{t}")))
                for name, (x, s) in km.items():
                    ax[0].step(np.r_[0, x], np.r_[1, s], where="post", label=name)
                ax[0].set_xlabel(f"time ({spec.time_unit})"), ax[0].set_ylabel("survival (Kaplan-Meier)")
                ax[0].set_title(f"{t}: by predicted risk group"), ax[0].legend(fontsize=7)
                for h in spec.eval_horizons:
                    cal = tb.get(f"calibration@{h:g}")
                    if cal is not None and len(cal):
                        ax[1].plot(cal["predicted"], cal["observed"], "o-", label=f"at {h:g} {spec.time_unit}")
                ax[1].plot([0, 1], [0, 1], "k--", lw=1)
                ax[1].set_xlabel("predicted risk"), ax[1].set_ylabel("observed risk (Kaplan-Meier)")
                ax[1].set_title(f"{t}: calibration at horizons"), ax[1].legend(fontsize=7)
                figs[f"{t}_survival.png"] = fig
        return figs

    def to_html(self, figures: dict[str, bytes] | None = None) -> str:
        """The report section: per task its metrics with CIs, tables and figures."""
        import base64

        from .report import html_table

        parts = ["<h2>Multi-class, regression and survival tasks</h2>"]
        mf = self.metrics_frame()
        for t, spec in self.specs.items():
            if t not in self.metrics:
                continue
            extra = {"multiclass": f"classes {', '.join(spec.classes)}",
                     "regression": f"unit {spec.unit or '–'}",
                     "survival": f"{spec.method}, horizons {', '.join(f'{h:g}' for h in spec.eval_horizons)} "
                                 f"{spec.time_unit}"}.get(spec.kind, "")
            parts.append(f"<h3>{html.escape(t)} ({spec.kind}; {html.escape(extra)})</h3>")
            sub = mf[mf.task == t].drop(columns=["task", "kind"])
            sub = sub.assign(**{"95% CI": [f"[{lo:.3f}, {hi:.3f}]" if not np.isnan(lo) else "–"
                                           for lo, hi in zip(sub["low"], sub["high"])]}).drop(columns=["low", "high"])
            parts.append(html_table(sub))
            for name, df in self.tables.get(t, {}).items():
                if name.startswith("reliability.") or df is None or not len(df):
                    continue
                parts.append(f"<details><summary>{html.escape(name)}</summary>{html_table(df.reset_index())}</details>")
            for fname, png in (figures or {}).items():
                if fname.startswith(f"{t}_"):
                    data = png if isinstance(png, bytes) else b""
                    parts.append(f"<img src='data:image/png;base64,{base64.b64encode(data).decode()}' "
                                 f"style='max-width:100%'>")
        return "\n".join(parts)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """``typed_metrics.csv``, each table as CSV and each figure as PNG under ``out_dir``."""
        from ..viz.common import figure_png

        out = Path(out_dir)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        paths = {"typed_metrics": out / "typed_metrics.csv"}
        self.metrics_frame().to_csv(paths["typed_metrics"], index=False)
        for t, tabs in self.tables.items():
            for name, df in tabs.items():
                if df is not None and len(df):
                    p = out / f"{t}_{name.replace('@', '_at_')}.csv"
                    df.to_csv(p)
                    paths[f"{t} {name}"] = p
        for name, fig in self.figures().items():
            p = out / "figures" / name
            p.write_bytes(figure_png(fig))
            paths[name] = p
        return paths


def _task_fn(spec: Any, p: Any, train: Any = None, curve: dict | None = None):
    """``(metric function, its arrays)`` of one task on table ``p``; ``curve`` (``{"times": [G],
    "survival": [N, G]}``, rows as ``p``'s) gives a survival task its integrated Brier score."""
    t = spec.name
    if spec.kind == "multiclass":
        probs = np.column_stack([p[f"prob_{t}.{c}"].to_numpy(float) for c in spec.classes])
        k = len(spec.classes)
        return (lambda y, pr: multiclass_metrics(y, pr, n_classes=k)), (p[f"label_{t}"].to_numpy(float), probs)
    if spec.kind == "regression":
        return regression_metrics, (p[f"label_{t}"].to_numpy(float), p[f"value_{t}"].to_numpy(float))
    hs = [h for h in spec.eval_horizons if f"risk_{t}@{h:g}" in p]
    risk = np.column_stack([p[f"risk_{t}@{h:g}"].to_numpy(float) for h in hs]) if hs else None
    known = ~(p[f"time_{t}"].isna() | p[f"event_{t}"].isna()).to_numpy()
    surv = None
    if curve is not None and len(np.asarray(curve["survival"])) == len(p):
        grid, surv = np.asarray(curve["times"], dtype=float), np.asarray(curve["survival"], dtype=float)

    def fn(time, event, score, *rest):
        rest_ = list(rest)
        sg = rest_.pop() if surv is not None else None
        return survival_metrics(time, event, score, horizons=hs, risk=rest_[0] if rest_ else None, train=train,
                                grid=grid if sg is not None else None, survival_grid=sg)

    arrays = (p[f"time_{t}"].to_numpy(float), p[f"event_{t}"].to_numpy(float), p[f"risk_score_{t}"].to_numpy(float))
    if risk is not None:
        arrays = (*arrays, risk)
    if surv is not None:
        arrays = (*arrays, surv)
    return fn, tuple(a[known] for a in arrays)


_HEADLINE = {"multiclass": ("auroc_macro", "balanced_accuracy"), "regression": ("mae", "r2"),
             "survival": ("harrell_c", "uno_c")}


def evaluate_typed_frame(predictions: Any, specs: dict[str, Any], *, curves: dict | None = None,
                         train: Any = None, n_boot: int = 500, seed: int = 0, subgroups: Any = None,
                         min_subgroup: int = 30) -> TypedEvaluation:
    """Evaluate the multiclass, regression and survival tasks of a :func:`typed_predictions` table.

    ``train`` is the training split's table (its survival labels estimate the censoring
    distribution for Uno's C, AUROC(t) and the Brier score)."""
    import pandas as pd
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    res = TypedEvaluation(specs={t: s for t, s in specs.items() if s.kind in _HEADLINE}, predictions=predictions,
                          curves=curves or {}, n_boot=n_boot, seed=seed)
    p = predictions
    by = ["pattern", *(subgroups if subgroups is not None else
                       [c for c in ("sex", "age_band", "site", "scanner_manufacturer") if c in p])]
    for t, spec in res.specs.items():
        tr = None
        if spec.kind == "survival" and train is not None and f"time_{t}" in train:
            k = ~(train[f"time_{t}"].isna() | train[f"event_{t}"].isna())
            tr = (train.loc[k, f"time_{t}"].to_numpy(float), train.loc[k, f"event_{t}"].to_numpy(float))
        fn, arrays = _task_fn(spec, p, tr, curve=res.curves.get(t))
        res.metrics[t] = bootstrap_ci(fn, arrays, n_boot=n_boot, seed=seed)
        tabs: dict[str, Any] = {}
        if spec.kind == "multiclass":
            y, probs = arrays
            keep = ~np.isnan(y)
            yk, pk = y[keep].astype(int), probs[keep]
            labels = list(range(len(spec.classes)))
            pr, rc, f1, sup = precision_recall_fscore_support(yk, pk.argmax(1), labels=labels, zero_division=0)
            m = res.metrics[t]
            tabs["per_class"] = pd.DataFrame({
                "class": spec.classes, "n": sup, "precision": pr, "recall": rc, "f1": f1,
                "auroc": [m[f"auroc.{c}"][0] for c in labels], "auroc_low": [m[f"auroc.{c}"][1] for c in labels],
                "auroc_high": [m[f"auroc.{c}"][2] for c in labels], "ece": [m[f"ece.{c}"][0] for c in labels]})
            tabs["confusion"] = pd.DataFrame(confusion_matrix(yk, pk.argmax(1), labels=labels),
                                             index=pd.Index(spec.classes, name="true"), columns=spec.classes)
            for c, name in enumerate(spec.classes):
                tabs[f"reliability.{name}"] = _reliability((yk == c).astype(float), pk[:, c])
        elif spec.kind == "regression":
            y, f = arrays
            keep = ~np.isnan(y)
            tabs["calibration"] = _binned(f[keep], y[keep])
        else:
            time, event, score = arrays[:3]
            for j, h in enumerate(h for h in spec.eval_horizons if f"risk_{t}@{h:g}" in p):
                tabs[f"calibration@{h:g}"] = survival_calibration(time, event, arrays[3][:, j], h)
        rows = []
        for col in by:
            if col not in p:
                continue
            for g, idx in p.groupby(col, sort=True).groups.items():
                sub = p.loc[idx]
                fn_g, arr_g = _task_fn(spec, sub, tr)
                if len(arr_g[0]) < min_subgroup:
                    rows.append({"column": col, "group": str(g), "n": len(arr_g[0]), "too_small": True})
                    continue
                mg = bootstrap_ci(fn_g, arr_g, n_boot=min(n_boot, 200), seed=seed)
                row: dict[str, Any] = {"column": col, "group": str(g), "n": len(arr_g[0]), "too_small": False}
                for k in _HEADLINE[spec.kind]:
                    est, lo, hi = mg.get(k, (np.nan, np.nan, np.nan))
                    row.update({k: est, f"{k}_low": lo, f"{k}_high": hi})
                rows.append(row)
        tabs["by_group"] = pd.DataFrame(rows)
        res.tables[t] = tabs
    return res


def _binned(pred: np.ndarray, obs: np.ndarray, bins: int = 10):
    import pandas as pd

    if len(pred) < 2:
        return pd.DataFrame(columns=["bin", "n", "predicted", "observed"])
    q = pd.qcut(pred, min(bins, max(2, len(pred) // 10)), labels=False, duplicates="drop")
    return pd.DataFrame([{"bin": int(b) + 1, "n": int((q == b).sum()), "predicted": float(pred[q == b].mean()),
                          "observed": float(obs[q == b].mean())} for b in np.unique(q)])


def _reliability(y: np.ndarray, p: np.ndarray, bins: int = 10):
    import pandas as pd

    edges = np.clip((p * bins).astype(int), 0, bins - 1)
    return pd.DataFrame([{"bin": int(b), "n": int((edges == b).sum()), "predicted": float(p[edges == b].mean()),
                          "observed": float(y[edges == b].mean())} for b in np.unique(edges)])


def evaluate_typed(model: Any, cohort: Any, *, split: str | None = "test", train_split: str = "train",
                   n_boot: int = 500, seed: int = 0, subgroups: Any = None, min_subgroup: int = 30,
                   batch_size: int = 64, predictions: Any = None) -> TypedEvaluation | None:
    """Score ``cohort`` (a :class:`~medmm.cohort.Cohort`, a manifest or records) and evaluate the
    model's multiclass, regression and survival tasks; ``None`` when it has none. ``predictions``
    (a table :func:`~medmm.evaluate.scoring.score_cohort` already made, with the typed columns)
    is evaluated as it is, without scoring again."""
    from ..cohort import Cohort, load_cohort
    from ..tasks import TaskSpec

    specs = {t: TaskSpec.from_config(t, head_spec(model.heads[t])) for t in model.tasks}
    if not any(s.kind in _HEADLINE for s in specs.values()):
        return None
    if isinstance(cohort, (str, Path)):
        cohort = load_cohort(cohort, progress=False, modalities=model.modalities)

    def part(name: str | None):
        if isinstance(cohort, Cohort):
            return cohort if name in (None, "all") else cohort.split(name)
        return [r for r in cohort if name in (None, "all") or r.split == name]

    if predictions is not None:
        test, curves = predictions, curves_from_table(model, predictions)
    else:
        test, curves = typed_predictions(model, part(split), batch_size=batch_size)
    train = None
    if any(s.kind == "survival" for s in specs.values()) and train_split and train_split != split:
        train = survival_label_table(model, part(train_split))
        train = train if len(train) else None
    return evaluate_typed_frame(test, specs, curves=curves, train=train, n_boot=n_boot, seed=seed,
                                subgroups=subgroups, min_subgroup=min_subgroup)


def head_spec(head: Any) -> dict[str, Any]:
    """A head's task declaration (the inverse of :meth:`medmm.tasks.TaskSpec.from_config`)."""
    d = head.describe()
    kind = d["kind"]
    if kind == "multiclass":
        return {"kind": kind, "classes": d["classes"]}
    if kind == "multilabel":
        return {"kind": kind, "labels": d["labels"]}
    if kind == "regression":
        return {"kind": kind, "unit": d.get("unit")}
    if kind == "survival":
        return {"kind": kind, "method": d["method"], "horizon": d["horizon"], "horizons": d["horizons"],
                "time_unit": d["time_unit"]}
    return {"kind": kind}


# ---------------------------------------------------------------------------------------- baselines
def typed_baseline(kind: str, X_train: Any, y_train: Any, X_test: Any, *, horizons: Any = (), seed: int = 0,
                   tune: bool = False) -> dict[str, np.ndarray]:
    """The classical baseline of a task type on tabular features (the hook for the baselines module):
    multinomial logistic regression (``multiclass``: ``prob [N, K]``), ridge (``regression``:
    ``value [N]``), Cox proportional hazards (``survival``, ``y_train`` = ``(time, event)``:
    ``risk_score [N]`` and ``risk [N, H]`` at ``horizons``). Features are imputed (median) and
    standardised on the training rows.

    ``tune=True`` chooses the penalty by 5-fold cross-validation on the training rows, as needed
    where features outnumber events (a featurised multimodal row has hundreds): multinomial
    ``LogisticRegressionCV`` by log loss, and for survival scikit-survival's elastic-net Cox
    (``CoxnetSurvivalAnalysis``, ``l1_ratio`` 0.5) with ``alpha`` chosen by Harrell's C (without it,
    the nearly unpenalised Cox PH fails to converge there)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    prep = [SimpleImputer(strategy="median"), StandardScaler()]
    if kind == "multiclass":
        from sklearn.linear_model import LogisticRegression

        if tune:
            from sklearn.linear_model import LogisticRegressionCV

            est: Any = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13).tolist(), cv=5, scoring="neg_log_loss",
                                            max_iter=3000, random_state=seed)
        else:
            est = LogisticRegression(max_iter=2000, random_state=seed)
        m = make_pipeline(*prep, est).fit(X_train, y_train)
        k = int(np.max(y_train)) + 1
        prob = np.zeros((len(X_test), k))
        prob[:, m.classes_.astype(int)] = m.predict_proba(X_test)
        return {"prob": prob}
    if kind == "regression":
        from sklearn.linear_model import RidgeCV

        return {"value": make_pipeline(*prep, RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(X_train, y_train).predict(X_test)}
    if kind == "survival":
        from sksurv.linear_model import CoxPHSurvivalAnalysis

        time, event = y_train
        if tune:
            return _coxnet_cv(X_train, _surv(time, event), X_test, seed=seed)
        m = make_pipeline(*prep, CoxPHSurvivalAnalysis(alpha=1e-4, ties="efron")).fit(X_train, _surv(time, event))
        out = {"risk_score": m.predict(X_test)}
        if len(horizons):
            fns = m.predict_survival_function(X_test)
            hs = np.minimum(np.asarray(horizons, dtype=float), fns[0].x.max())
            out["risk"] = 1.0 - np.stack([fn(hs) for fn in fns])
        return out
    raise ValueError(f"no baseline for task kind {kind!r}")


def _coxnet_cv(X_train: Any, y: Any, X_test: Any, *, seed: int = 0, l1_ratio: float = 0.5, folds: int = 5
               ) -> dict[str, np.ndarray]:
    """Elastic-net Cox on median-imputed, standardised features, ``alpha`` chosen on its path by the
    mean held-out Harrell's C of ``folds``-fold cross-validation; ``{"risk_score", "alpha"}``."""
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored

    def model(alphas: Any = None):
        return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                             CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, alphas=alphas, n_alphas=30,
                                                    alpha_min_ratio=0.01, fit_baseline_model=False))

    full = model().fit(X_train, y)
    alphas = full[-1].alphas_
    scores = np.zeros((folds, len(alphas)))
    event, time = y[y.dtype.names[0]], y[y.dtype.names[1]]
    for f, (tr, va) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(X_train)):
        if not event[tr].any() or not event[va].any():
            scores[f] = 0.5
            continue
        fm = model(alphas).fit(X_train[tr], y[tr])
        for j, a in enumerate(alphas):
            risk = fm.predict(X_train[va], alpha=a)
            scores[f, j] = concordance_index_censored(event[va], time[va], risk)[0] if np.ptp(risk) > 0 else 0.5
    best = float(alphas[int(np.argmax(scores.mean(0)))])
    return {"risk_score": full.predict(X_test, alpha=best), "alpha": np.asarray(best)}
