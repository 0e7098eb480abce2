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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BASELINES", "BaselineFeatures", "FittedBaselines", "featurize", "fit_baselines",
           "compare_with_baselines", "run_baselines"]

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
                  compare: bool = True) -> tuple[dict[str, Any], Any, list[str]]:
    """Fit the baselines on ``train_records`` (through the fitted ``preprocessor``), score
    ``eval_records`` and compare with ``model_predictions`` (a predictions frame of the same
    patients). Returns ``(predictions by baseline, comparison table or None, notes)``."""
    tasks = [t for t in tasks if f"prob_{t}" in model_predictions.columns]
    fitted = fit_baselines(featurize(train_records, preprocessor, tasks), tasks, seed=seed, which=which)
    preds = fitted.predict(featurize(eval_records, preprocessor, tasks))
    table = compare_with_baselines(model_predictions, preds, tasks, n_boot=n_boot, seed=seed) if compare else None
    return preds, table, list(fitted.skipped)


def reference_metric_dict(table: Any, prefix: str) -> dict[str, float]:
    """MLflow metrics of a :func:`run_baselines` table: ``{prefix}_auroc_<task>_<baseline>`` and the
    model's difference with its CI bounds (``_auroc_diff_..``, ``_low``, ``_high``); NaNs left out."""
    import numpy as np

    out: dict[str, float] = {}
    if table is None or not len(table):
        return out
    for _, row in table.iterrows():
        diff = f"{prefix}_auroc_diff_{row.task}_{row.baseline}"
        for k, v in ((f"{prefix}_auroc_{row.task}_{row.baseline}", row.auroc_baseline), (diff, row.difference),
                     (f"{diff}_low", row.low), (f"{diff}_high", row.high)):
            if v is not None and not np.isnan(v):
                out[k] = float(v)
    return out

