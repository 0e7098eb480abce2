"""Classical baselines beside every evaluation: "is the deep model better than logistic regression?"

On the same patients and the same splits as the model, scikit-learn's

* ``logistic_regression``: mean imputation + standardisation + ``LogisticRegression``,
* ``hist_gradient_boosting``: ``HistGradientBoostingClassifier`` (missing values native),

are fitted on the *featurised inputs*: the model's fitted
:class:`~medmm.preprocess.MultimodalPreprocessor` outputs of every table, text and series
modality, flattened, with one presence indicator per modality (a missing modality's features
are NaN; images are left out: a baseline on voxels is not a fair reference). When the model
reads clinical notes, ``tfidf_lr`` (TF-IDF of unigrams and bigrams of the raw note text +
``LogisticRegression``, the usual text reference) is fitted too; patients without a note get
its training prevalence.

:func:`compare_with_baselines` puts each beside the model with the paired bootstrap CI of the
AUROC difference (model - baseline, the same resamples of the same patients through
:func:`medmm.evaluate.bootstrap.bootstrap_metrics`) and DeLong's p-value.

Multiclass, regression and survival tasks get their type's linear baseline on the same
featurised inputs (:func:`fit_typed_baselines` over
:func:`medmm.evaluate.task_metrics.typed_baseline`: multinomial logistic regression, ridge, Cox
proportional hazards; penalties chosen by cross-validation where the columns outnumber what the
labels carry) and :func:`compare_typed_with_baselines` compares them on the type's headline
metrics (macro AUROC; MAE and R^2; Harrell's C) with a paired bootstrap CI of the difference.
:func:`run_baselines` does both from one featurisation, into one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BASELINES", "TYPED_BASELINES", "BaselineFeatures", "FittedBaselines", "featurize", "fit_baselines",
           "compare_with_baselines", "run_baselines", "fit_typed_baselines", "compare_typed_with_baselines",
           "reference_metric_dict"]

BASELINES = ("logistic_regression", "hist_gradient_boosting", "tfidf_lr")
_DEFAULT_KINDS = {"image": "image", "notes": "text", "vitals": "series", "ehr": "table"}


def _kind(preprocessor: Any, modality: str) -> str:
    kinds = getattr(preprocessor, "kinds", None)
    if isinstance(kinds, dict) and modality in kinds:
        return str(kinds[modality])
    step = getattr(preprocessor, "steps", {}).get(modality)
    kind = getattr(step, "kind", None)
    if isinstance(kind, str) and kind in ("image", "text", "series", "table"):
        return kind
    return _DEFAULT_KINDS.get(modality, "table")


def _value(record: Any, modality: str) -> Any:
    mods = getattr(record, "modalities", None)
    if isinstance(mods, dict) and modality in mods:
        return mods[modality]
    return getattr(record, modality, None)


def _is_missing(value: Any) -> bool:
    from ..records import Missing

    return value is None or isinstance(value, Missing)


def _text(value: Any) -> str:
    if _is_missing(value):
        return ""
    return str(getattr(value, "text", value))


@dataclass
class BaselineFeatures:
    """Flattened featurised inputs of some records."""

    X: np.ndarray  # float [n, d], NaN where a modality is missing
    names: list[str]
    texts: list[str] | None  # raw note text per record ("" when absent); None when no text modality
    ids: list[str]
    labels: dict[str, np.ndarray]  # task -> float labels (NaN unknown)


def featurize(records: Any, preprocessor: Any, tasks: tuple[str, ...] | list[str]) -> BaselineFeatures:
    """The fitted ``preprocessor``'s outputs for every non-image modality, flattened, plus one
    ``present_<modality>`` indicator each; raw note text for the TF-IDF baseline."""
    records = list(records)
    mods = [m for m in preprocessor.modalities if _kind(preprocessor, m) != "image"]
    text_mods = [m for m in preprocessor.modalities if _kind(preprocessor, m) == "text"]
    shapes = preprocessor.output_shapes()
    blocks, names = [], []
    values = preprocessor.transform_many(records, modalities=tuple(mods)) if mods and records else \
        [dict() for _ in records]
    for m in mods:
        d = int(np.prod(shapes[m]))
        block = np.full((len(records), d), np.nan, dtype=np.float64)
        present = np.zeros((len(records), 1))
        for i, v in enumerate(values):
            if v.get(m) is not None:
                block[i] = np.asarray(v[m], dtype=np.float64).reshape(-1)
                present[i] = 1.0
        blocks += [block, present]
        names += [f"{m}[{j}]" for j in range(d)] + [f"present_{m}"]
    X = np.hstack(blocks) if blocks else np.zeros((len(records), 0))
    texts = None
    if text_mods:
        texts = ["\n\n".join(t for t in (_text(_value(r, m)) for m in text_mods) if t) for r in records]
    labels = {}
    for t in tasks:
        y = [r.labels.get(t) for r in records]
        labels[t] = np.asarray([np.nan if v is None else float(v) for v in y], dtype=float)
    return BaselineFeatures(X, names, texts, [r.patient_id for r in records], labels)


def _make(name: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic_regression":
        return make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler(),
                             LogisticRegression(max_iter=5000))
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=seed)
    if name == "tfidf_lr":
        return make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2),
                             LogisticRegression(max_iter=5000))
    raise ValueError(f"unknown baseline {name!r}; use one of {BASELINES}")


def _threads(n_rows: int):
    """One OpenMP thread for small fits: on a few hundred rows, thread start-up and spinning
    cost HistGradientBoosting several times its work (4x measured on 40 x 600)."""
    import contextlib

    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1) if n_rows < 20_000 else contextlib.nullcontext()


@dataclass
class FittedBaselines:
    """Baselines fitted per task on one training set; :meth:`predict` scores other records."""

    tasks: tuple[str, ...]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # baseline -> task -> estimator or prior
    skipped: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def predict(self, features: BaselineFeatures) -> dict[str, Any]:
        """``{baseline: DataFrame(patient_id, label_<task>, prob_<task>)}``."""
        import pandas as pd

        out = {}
        for name, per_task in self.models.items():
            df = pd.DataFrame({"patient_id": features.ids})
            for t in self.tasks:
                df[f"label_{t}"] = features.labels[t]
                df[f"prob_{t}"] = _predict_one(per_task.get(t), name, features)
            out[name] = df
        return out


def _inputs(name: str, features: BaselineFeatures, rows: np.ndarray) -> Any:
    if name == "tfidf_lr":
        return [features.texts[i] for i in rows]
    return features.X[rows]


def _predict_one(fitted: Any, name: str, features: BaselineFeatures) -> np.ndarray:
    n = len(features.ids)
    if fitted is None:
        return np.full(n, np.nan)
    est, prior = fitted
    p = np.full(n, prior, dtype=float)
    rows = np.arange(n)
    if name == "tfidf_lr":
        rows = np.asarray([i for i in rows if features.texts[i]], dtype=int)
    if len(rows):
        p[rows] = est.predict_proba(_inputs(name, features, rows))[:, 1]
    return p


def fit_baselines(features: BaselineFeatures, tasks: tuple[str, ...] | list[str], *, seed: int = 0,
                  which: tuple[str, ...] | list[str] | None = None) -> FittedBaselines:
    """Fit every applicable baseline for each binary task on the labelled rows of ``features``."""
    which = tuple(which) if which is not None else BASELINES
    fitted = FittedBaselines(tuple(tasks))
    for name in which:
        if name == "tfidf_lr" and features.texts is None:
            continue
        if name != "tfidf_lr" and features.X.shape[1] == 0:
            continue
        per_task: dict[str, Any] = {}
        for t in tasks:
            y = features.labels[t]
            rows = np.flatnonzero(~np.isnan(y))
            if name == "tfidf_lr":
                rows = np.asarray([i for i in rows if features.texts[i]], dtype=int)
            yk = y[rows]
            if not len(rows) or set(np.unique(yk)) - {0.0, 1.0} or len(np.unique(yk)) < 2:
                fitted.skipped.append(f"{name}/{t}: needs binary labels of both classes in the training rows")
                continue
            est = _make(name, seed)
            with _threads(len(rows)):
                est.fit(_inputs(name, features, rows), yk.astype(int))
            per_task[t] = (est, float(np.mean(y[~np.isnan(y)])))
        if per_task:
            fitted.models[name] = per_task
    return fitted


def compare_with_baselines(model_predictions: Any, baseline_predictions: dict[str, Any],
                           tasks: tuple[str, ...] | list[str], *, n_boot: int = 2000, seed: int = 0,
                           model_name: str = "medmm") -> Any:
    """One row per task and baseline: AUROC of the model and the baseline on the same patients,
    the difference (model - baseline) with its paired bootstrap 95% CI, DeLong's p-value and a
    plain-words verdict."""
    import pandas as pd

    from .compare import compare_predictions

    rows = []
    for t in tasks:
        for name, bp in baseline_predictions.items():
            m = model_predictions[["patient_id", f"label_{t}", f"prob_{t}"]].merge(
                bp[["patient_id", f"prob_{t}"]], on="patient_id", suffixes=("", "__b"))
            y = m[f"label_{t}"].to_numpy(float)
            keep = ~np.isnan(y) & ~np.isnan(m[f"prob_{t}__b"].to_numpy(float))
            y = y[keep]
            row: dict[str, Any] = {"task": t, "baseline": name, "n": int(len(y)), "n_positive": int(np.sum(y == 1))}
            if len(np.unique(y)) < 2:
                rows.append({**row, f"auroc_{model_name}": np.nan, "auroc_baseline": np.nan, "difference": np.nan,
                             "low": np.nan, "high": np.nan, "p_value": np.nan, "verdict": "too few labels"})
                continue
            df = compare_predictions(y, m[f"prob_{t}"].to_numpy(float)[keep], m[f"prob_{t}__b"].to_numpy(float)[keep],
                                     n_boot=n_boot, seed=seed)
            boot = df[(df.metric == "auroc") & (df.method == "paired bootstrap")].iloc[0]
            dl = df[(df.metric == "auroc") & (df.method == "DeLong")].iloc[0]
            lo, hi = float(boot.low), float(boot.high)
            verdict = (f"{model_name} better" if lo > 0 else f"{name} better" if hi < 0 else "no clear difference")
            rows.append({**row, f"auroc_{model_name}": float(boot.model_1), "auroc_baseline": float(boot.model_2),
                         "difference": float(boot.difference), "low": lo, "high": hi,
                         "p_value": float(dl.p_value), "verdict": verdict})
    return pd.DataFrame(rows)


def run_baselines(train_records: Any, eval_records: Any, preprocessor: Any, tasks: tuple[str, ...] | list[str],
                  model_predictions: Any, *, n_boot: int = 2000, seed: int = 0,
                  which: tuple[str, ...] | list[str] | None = None,
                  compare: bool = True, typed: dict[str, Any] | None = None,
                  typed_predictions: Any = None, label_columns: dict[str, Any] | None = None,
                  typed_n_boot: int | None = None) -> tuple[dict[str, Any], Any, list[str]]:
    """Fit the baselines on ``train_records`` (through the fitted ``preprocessor``), score
    ``eval_records`` and compare with ``model_predictions`` (a predictions frame of the same
    patients). Returns ``(predictions by baseline, comparison table or None, notes)``.

    ``typed`` (``{task: TaskSpec}`` of multiclass, regression and survival tasks, with
    ``typed_predictions``, the model's typed predictions table, and ``label_columns``, a survival
    task's time and event label keys) adds each type's linear baseline
    (:func:`fit_typed_baselines`, predictions under ``"typed"``) on the same featurised inputs;
    its rows (:func:`compare_typed_with_baselines`) follow the binary ones in the table, which then
    also has ``kind, metric, value_medmm, value_baseline`` for every row."""
    import pandas as pd

    tasks = [t for t in tasks if f"prob_{t}" in model_predictions.columns]
    typed = {t: s for t, s in (typed or {}).items() if s.kind in TYPED_BASELINES} \
        if typed_predictions is not None and _wants_typed(which) else {}
    keys = list(dict.fromkeys([*tasks, *(k for t, s in typed.items()
                                          for k in typed_label_keys(s, (label_columns or {}).get(t)))]))
    feats_tr = featurize(train_records, preprocessor, keys)
    feats_ev = featurize(eval_records, preprocessor, keys)
    fitted = fit_baselines(feats_tr, tasks, seed=seed, which=which) if tasks else FittedBaselines(())
    preds = fitted.predict(feats_ev)
    notes = list(fitted.skipped)
    table = compare_with_baselines(model_predictions, preds, tasks, n_boot=n_boot, seed=seed) \
        if compare and tasks else None
    if typed:
        tp, fits, typed_notes = fit_typed_baselines(feats_tr, feats_ev, typed, label_columns, seed=seed)
        preds["typed"] = tp
        notes += typed_notes
        if compare and fits:
            rows = compare_typed_with_baselines(typed_predictions, tp, typed, fits, seed=seed,
                                                n_boot=typed_n_boot if typed_n_boot is not None else min(n_boot, 500))
            if table is not None and len(table):
                table = table.assign(kind="binary", metric="auroc", value_medmm=table["auroc_medmm"],
                                     value_baseline=table["auroc_baseline"], fitted_on=np.nan)
                order = [*rows.columns, "auroc_medmm", "auroc_baseline"]
                table = pd.concat([table[order], rows], ignore_index=True)[order]
            else:
                table = rows
    return preds, table, notes


def reference_metric_dict(table: Any, prefix: str) -> dict[str, float]:
    """MLflow metrics of a :func:`run_baselines` table: ``{prefix}_auroc_<task>_<baseline>`` and the
    model's difference with its CI bounds (``_auroc_diff_..``, ``_low``, ``_high``); a typed row
    (``metric`` e.g. ``harrell_c``) gives ``{prefix}_<metric>_<task>_<baseline>`` and
    ``{prefix}_<metric>_diff_<task>_<baseline>`` with its bounds; NaNs left out."""
    out: dict[str, float] = {}
    if table is None or not len(table):
        return out
    for _, row in table.iterrows():
        typed = "metric" in row.index and isinstance(row.get("kind"), str) and row.kind != "binary"
        metric = row.metric if typed else "auroc"
        value = row.value_baseline if typed else row.auroc_baseline
        diff = f"{prefix}_{metric}_diff_{row.task}_{row.baseline}"
        for k, v in ((f"{prefix}_{metric}_{row.task}_{row.baseline}", value), (diff, row.difference),
                     (f"{diff}_low", row.low), (f"{diff}_high", row.high)):
            if v is not None and not np.isnan(v):
                out[k.replace(" ", "_")] = float(v)
    return out


# ---------------------------------------------------------------------------------------- other task types
#: the linear baseline of each non-binary task type, and the headline metrics it is compared on
#: (``True``: higher is better)
TYPED_BASELINES = {"multiclass": "multinomial_lr", "regression": "ridge_cv", "survival": "cox_ph"}
TYPED_HEADLINE: dict[str, tuple[tuple[str, bool], ...]] = {
    "multiclass": (("auroc_macro", True),), "regression": (("mae", False), ("r2", True)),
    "survival": (("harrell_c", True),)}


def typed_label_keys(spec: Any, label_columns: Any = None) -> list[str]:
    """The record label keys of a task: its name, or a survival task's time and event columns."""
    if spec.kind == "survival":
        return list(label_columns) if label_columns else spec.label_columns()
    return [spec.name]


def _wants_typed(which: Any) -> bool:
    """The typed baselines run by default, or when ``which`` names the linear family."""
    if which is None:
        return True
    names = set(which)
    return bool(names & ({"logistic_regression"} | set(TYPED_BASELINES.values()) | {"multinomial_lr_cv", "coxnet_cv"}))


def fit_typed_baselines(train: BaselineFeatures, test: BaselineFeatures, specs: dict[str, Any],
                        label_columns: dict[str, Any] | None = None, *, seed: int = 0
                        ) -> tuple[Any, dict[str, dict[str, Any]], list[str]]:
    """Fit each multiclass, regression and survival task's linear baseline
    (:func:`medmm.evaluate.task_metrics.typed_baseline`) on the labelled rows of ``train`` and
    score ``test``.

    Survival labels are censored at the task's horizon, as the model learnt them. The penalty is
    chosen by 5-fold cross-validation where the featurised columns outnumber what the labels can
    carry: a multinomial ``LogisticRegressionCV`` when every class has 5 training patients, and
    an elastic-net Cox (``coxnet_cv``) when there are fewer than 10 events per column (the plain
    Cox PH does not converge there). Ridge always chooses its penalty by (leave-one-out) CV.

    Returns ``(predictions, fits, notes)``: ``predictions`` has ``patient_id`` and, per task, the
    model's column names (``prob_<t>.<class>``, ``value_<t>``, ``risk_score_<t>``); ``fits`` per
    task ``{"baseline", "n_fit", "ids"}`` (the training patients each fit used).
    """
    import warnings

    import pandas as pd

    from .task_metrics import typed_baseline

    label_columns = label_columns or {}
    out = pd.DataFrame({"patient_id": test.ids})
    fits: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for t, spec in specs.items():
        if spec.kind not in TYPED_BASELINES:
            continue
        keys = typed_label_keys(spec, label_columns.get(t))
        d = train.X.shape[1]
        if d == 0:
            notes.append(f"{TYPED_BASELINES[spec.kind]}/{t}: the model has no table, text or series input to fit on")
            continue
        if spec.kind == "survival":
            time, event = train.labels[keys[0]], train.labels[keys[1]]
            rows = np.flatnonzero(~(np.isnan(time) | np.isnan(event)))
            time, event = spec.censor(time[rows], event[rows])
            event = np.asarray(event) > 0.5
            n_events = int(event.sum())
            if n_events < 2:
                notes.append(f"{TYPED_BASELINES[spec.kind]}/{t}: {n_events} event(s) in the training rows; needs 2")
                continue
            tune = d * 10 > n_events
            name = "coxnet_cv" if tune else "cox_ph"
            y: Any = (np.asarray(time, dtype=float), event)
        else:
            yk = train.labels[keys[0]]
            rows = np.flatnonzero(~np.isnan(yk))
            y = yk[rows]
            tune = False
            name = TYPED_BASELINES[spec.kind]
            if spec.kind == "multiclass":
                y = y.astype(int)
                counts = np.bincount(y, minlength=len(spec.classes)) if len(y) else np.zeros(1, int)
                if int((counts > 0).sum()) < 2:
                    notes.append(f"{name}/{t}: needs two classes among the labelled training rows")
                    continue
                tune = bool(counts[counts > 0].min() >= 5)
                name = "multinomial_lr_cv" if tune else name
            elif len(y) < 3:
                notes.append(f"{name}/{t}: {len(y)} labelled training row(s); needs 3")
                continue
        try:
            with _threads(len(rows)), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter of the CV paths; the fit is still used
                pred = typed_baseline(spec.kind, train.X[rows], y, test.X, seed=seed, tune=tune)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            notes.append(f"{name}/{t}: the fit failed ({exc})")
            continue
        if spec.kind == "multiclass":
            prob = np.zeros((len(test.ids), len(spec.classes)))
            prob[:, :pred["prob"].shape[1]] = pred["prob"][:, :len(spec.classes)]
            for k, c in enumerate(spec.classes):
                out[f"prob_{t}.{c}"] = prob[:, k]
        elif spec.kind == "regression":
            out[f"value_{t}"] = pred["value"]
        else:
            out[f"risk_score_{t}"] = pred["risk_score"]
        fits[t] = {"baseline": name, "n_fit": int(len(rows)), "ids": [train.ids[i] for i in rows]}
    return out, fits, notes


def _headline(kind: str, metrics: tuple[tuple[str, bool], ...]):
    """``fn(labels..., model output, baseline output) -> {metric_model, metric_baseline, metric_diff}``."""
    from sksurv.metrics import concordance_index_censored

    from .task_metrics import macro_auroc, regression_metrics

    def one(args: tuple[Any, ...], out: Any) -> dict[str, float]:
        if kind == "multiclass":  # the macro AUROC alone: multiclass_metrics' other metrics are not needed here
            value = macro_auroc(args[0], out)
            return {} if np.isnan(value) else {"auroc_macro": value}
        if kind == "regression":
            return regression_metrics(args[0], out)
        time, event = args
        e = event > 0.5
        if len(time) < 2 or not e.any():
            return {}
        return {"harrell_c": float(concordance_index_censored(e, time, out)[0])}

    def fn(*arrays: Any) -> dict[str, float]:
        *labels, a, b = arrays
        ma, mb = one(tuple(labels), a), one(tuple(labels), b)
        res: dict[str, float] = {}
        for k, _ in metrics:
            va, vb = ma.get(k, np.nan), mb.get(k, np.nan)
            # unbounded names: percentile intervals (a difference is not clipped to [0, 1])
            res.update({f"model|{k}": va, f"baseline|{k}": vb, f"diff|{k}": va - vb})
        return res

    return fn


def compare_typed_with_baselines(model_predictions: Any, baseline_predictions: Any, specs: dict[str, Any],
                                 fits: dict[str, dict[str, Any]], *, n_boot: int = 500, seed: int = 0,
                                 model_name: str = "medmm") -> Any:
    """One row per task and headline metric (macro AUROC; MAE and R^2; Harrell's C): the model and
    its type's baseline on the same evaluated patients (those with a known label), the difference
    (model - baseline) with its paired bootstrap 95 % CI (both scored on the same resamples,
    :func:`medmm.evaluate.task_metrics.bootstrap_ci`) and a plain-words verdict that knows which
    direction is better (a lower MAE)."""
    import pandas as pd

    from .task_metrics import bootstrap_ci

    rows = []
    for t, fit in fits.items():
        spec = specs[t]
        b = baseline_predictions.set_index("patient_id")
        m = model_predictions.drop_duplicates("patient_id").set_index("patient_id")
        ids = [i for i in m.index if i in b.index]
        m, b = m.loc[ids], b.loc[ids]
        if spec.kind == "multiclass":
            cols = [f"prob_{t}.{c}" for c in spec.classes]
            labels: tuple[Any, ...] = (m[f"label_{t}"].to_numpy(float),)
            known = ~np.isnan(labels[0])
            outs = (m[cols].to_numpy(float), b[cols].to_numpy(float))
        elif spec.kind == "regression":
            labels = (m[f"label_{t}"].to_numpy(float),)
            known = ~np.isnan(labels[0])
            outs = (m[f"value_{t}"].to_numpy(float), b[f"value_{t}"].to_numpy(float))
        else:
            labels = (m[f"time_{t}"].to_numpy(float), m[f"event_{t}"].to_numpy(float))
            known = ~(np.isnan(labels[0]) | np.isnan(labels[1]))
            outs = (m[f"risk_score_{t}"].to_numpy(float), b[f"risk_score_{t}"].to_numpy(float))
        known &= ~np.isnan(outs[0]).reshape(len(ids), -1).any(axis=1) & ~np.isnan(outs[1]).reshape(len(ids), -1).any(axis=1)
        arrays = tuple(a[known] for a in (*labels, *outs))
        metrics = TYPED_HEADLINE[spec.kind]
        ci = bootstrap_ci(_headline(spec.kind, metrics), arrays, n_boot=n_boot, seed=seed)
        n = int(known.sum())
        n_pos = int(np.sum(arrays[1] > 0.5)) if spec.kind == "survival" else np.nan
        for k, higher in metrics:
            est, lo, hi = ci.get(f"diff|{k}", (np.nan, np.nan, np.nan))
            if np.isnan(est):
                verdict = "too few labels"
            elif np.isnan(lo):
                verdict = "no interval"
            else:
                better, worse = (lo > 0, hi < 0) if higher else (hi < 0, lo > 0)
                verdict = f"{model_name} better" if better else f"{fit['baseline']} better" if worse else \
                    "no clear difference"
            rows.append({"task": t, "kind": spec.kind, "baseline": fit["baseline"], "metric": k, "n": n,
                         "n_positive": n_pos, f"value_{model_name}": ci.get(f"model|{k}", (np.nan,))[0],
                         "value_baseline": ci.get(f"baseline|{k}", (np.nan,))[0], "difference": est, "low": lo,
                         "high": hi, "p_value": np.nan, "verdict": verdict, "fitted_on": fit["n_fit"]})
    return pd.DataFrame(rows)
