"""Drift monitoring: does the current data still look like the reference (training) data?

Per modality, on per-patient features:

Modalities are the records' own (any declared name), each tested by its kind:

* **table (EHR, labs, ...)**: numeric columns by the two-sample Kolmogorov-Smirnov test (with the
  population stability index, PSI, over reference deciles, reported beside it); categorical
  columns by a chi-square test of the category counts;
* **series (vitals)**: per-signal summaries per patient (mean, last value) and the observation count,
  by KS and PSI;
* **image (any series)**: raw intensity statistics (mean, standard deviation, 5th and 95th percentiles) by
  KS, and the model's image-encoder embeddings by the maximum mean discrepancy (MMD, RBF
  kernel with the median-distance bandwidth, permutation p-value);
* **text (notes)**: the model's note-encoder embeddings by MMD, and note length by KS;
* **missingness**: each modality's missing rate by a chi-square test (Fisher's exact test for
  small counts);
* **predictions**: each task's predicted probabilities by KS and PSI;
* **calibration** (once labels arrive): the mean residual ``label - probability`` by Welch's
  t-test, with the expected calibration error (ECE) of both sets reported.

Every test gives a p-value; a test alarms when its p-value is below ``alpha / m`` (Bonferroni
over all ``m`` tests of the report), so the chance of any false alarm on unshifted data is at
most ``alpha``. A modality has drifted when any of its tests alarms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

EMBEDDED = ("image", "notes")  # the default modalities whose encoder embeddings are compared (MMD)
EMBEDDED_KINDS = ("image", "text")  # the kinds whose encoder embeddings are compared

__all__ = ["DriftFeatures", "DriftReport", "extract_features", "drift_report", "mmd_test", "psi", "ks_test"]

_LEGACY = {"ehr": "tabular", "vitals": "vitals", "image": "image_stats", "notes": "notes_stats"}


@dataclass
class DriftFeatures:
    """Per-patient features of one cohort, for drift tests.

    ``stats`` holds one frame per modality (any declared name: ``ct``, ``labs``), built by its
    kind; the four default names are also the attributes ``tabular``, ``vitals``,
    ``image_stats`` and ``notes_stats``.
    """

    present: Any  # DataFrame: one bool column per modality
    tabular: Any = None  # DataFrame: EHR features (patients with EHR)
    vitals: Any = None  # DataFrame: per-signal summaries (patients with vitals)
    image_stats: Any = None  # DataFrame: raw intensity statistics (patients with an image)
    notes_stats: Any = None  # DataFrame: note length (patients with notes)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> [n_present, D]
    probs: np.ndarray | None = None  # [n, T]
    labels: np.ndarray | None = None  # [n, T], NaN where unknown
    tasks: tuple[str, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)  # modality -> DataFrame of its per-patient features

    def __post_init__(self) -> None:
        import pandas as pd

        for m, attr in _LEGACY.items():
            if getattr(self, attr) is not None:
                self.stats.setdefault(m, getattr(self, attr))
            setattr(self, attr, self.stats.get(m, pd.DataFrame()))

    def subset(self, idx: np.ndarray) -> "DriftFeatures":
        """The features of patients ``idx`` (positions in :attr:`present`)."""
        idx = np.asarray(idx)
        keep = set(self.present.index[idx])
        pick = lambda df: df[df.index.isin(keep)]  # noqa: E731
        emb = {}
        for m, e in self.embeddings.items():
            rows = self.present.index[self.present[m].to_numpy()]
            mask = np.isin(rows, list(keep))
            emb[m] = e[mask]
        return DriftFeatures(self.present.iloc[idx], embeddings=emb,
                             probs=None if self.probs is None else self.probs[idx],
                             labels=None if self.labels is None else self.labels[idx], tasks=self.tasks,
                             stats={m: pick(df) for m, df in self.stats.items()})


def _table_stats(values: list[Any]):
    import pandas as pd

    tab = pd.DataFrame([v.values for v in values])
    return tab.drop(columns=[c for c in ("patient_id",) if c in tab.columns])


def _series_stats(values: list[Any]):
    import pandas as pd

    rows = []
    for v in values:
        f = v.frame
        g = f.sort_values("time").groupby("signal")["value"]
        row = {"n_obs": float(len(f))}
        for s, x in g.mean().items():
            row[f"{s}_mean"] = float(x)
        for s, x in g.last().items():
            row[f"{s}_last"] = float(x)
        rows.append(row)
    return pd.DataFrame(rows)


def _image_stats(values: list[Any]):
    import pandas as pd

    rows = []
    for v in values:
        d = np.asarray(v.get_data(caching="unchanged"), dtype=np.float64)
        p5, p95 = np.percentile(d, [5, 95])
        rows.append({"intensity_mean": d.mean(), "intensity_std": d.std(), "intensity_p5": p5, "intensity_p95": p95})
    return pd.DataFrame(rows)


def _text_stats(values: list[Any]):
    import pandas as pd

    return pd.DataFrame({"note_chars": [float(len(v.text)) for v in values]})


_STATS = {"table": _table_stats, "series": _series_stats, "image": _image_stats, "text": _text_stats}


def extract_features(records: list[Any], model: Any = None, *, batch_size: int = 64) -> DriftFeatures:
    """Per-patient drift features of ``records`` for each of their modalities (the declared ones,
    each by its kind); with a model, also its embeddings and predictions."""
    import pandas as pd

    from ..records import Missing, spec_of_records

    records = list(records)
    spec = getattr(model, "modalities", None) if model is not None else None
    spec = spec if hasattr(spec, "kind") else spec_of_records(records)
    ids = [r.patient_id for r in records]
    value = lambda r, m: r.modalities.get(m, Missing("not in this record"))  # noqa: E731
    present = pd.DataFrame({m: [not isinstance(value(r, m), Missing) for r in records] for m in spec},
                           index=pd.Index(ids, name="patient_id"))
    stats = {}
    for m in spec:
        have = [r for r in records if not isinstance(value(r, m), Missing)]
        frame = _STATS[spec.kind(m)]([value(r, m) for r in have])
        frame.index = [r.patient_id for r in have]
        stats[m] = frame
    feats = DriftFeatures(present, stats=stats)
    if model is not None:
        _model_features(feats, records, model, batch_size)
    return feats


def _model_features(feats: DriftFeatures, records: list[Any], model: Any, batch_size: int) -> None:
    import torch

    from ..data import collate, encode_records
    from .export import output_probs

    model.eval()
    shapes = model.preprocessor.output_shapes()
    embs: dict[str, list[np.ndarray]] = {m: [] for m in model.modalities}
    probs, labels = [], []
    with torch.no_grad():
        for s in range(0, len(records), batch_size):
            items = encode_records(records[s:s + batch_size], model.preprocessor)
            b = collate(items, model.modalities, shapes, model.tasks)
            probs.append(output_probs(model, model(b.values, b.present)).numpy())
            labels.append(np.where(b.label_mask.numpy(), b.labels.numpy(), np.nan))
            for j, m in enumerate(model.modalities):
                rows = torch.nonzero(b.present[:, j], as_tuple=True)[0]
                enc = model.encoders[m]
                if model.modalities.kind(m) in EMBEDDED_KINDS and rows.numel() and hasattr(enc, "encode"):
                    embs[m].append(enc.encode(b.values[m].index_select(0, rows)).numpy())
    feats.embeddings = {m: np.concatenate(v) for m, v in embs.items() if v}
    feats.probs = np.concatenate(probs) if probs else None
    feats.labels = np.concatenate(labels) if labels else None
    feats.tasks = tuple(getattr(model, "output_columns", None) or model.tasks)


# ---------------------------------------------------------------------- tests


def psi(reference: np.ndarray, current: np.ndarray, *, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index over the reference's quantile bins."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) < 2 or len(cur) < 1:
        return float("nan")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    r, c = np.clip(r, eps, None), np.clip(c, eps, None)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(KS statistic, p-value); NaN when either side has fewer than 2 values."""
    from scipy.stats import ks_2samp

    a = np.asarray(reference, dtype=float)
    b = np.asarray(current, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    res = ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def _median_bandwidth(d: np.ndarray) -> float:
    """Median of the pairwise squared distances ``d`` (the RBF bandwidth heuristic)."""
    med = np.median(d[np.triu_indices(len(d), 1)])
    return float(med) if med > 0 else 1.0


def mmd_test(x: np.ndarray, y: np.ndarray, *, n_permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """(MMD^2 with an RBF kernel at the median bandwidth, permutation p-value)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan"), float("nan")
    z = np.concatenate([x, y])
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d / _median_bandwidth(d))
    n, m = len(x), len(y)

    def stat(ix: np.ndarray) -> float:
        a, b = ix[:n], ix[n:]
        kxx = k[np.ix_(a, a)]
        kyy = k[np.ix_(b, b)]
        kxy = k[np.ix_(a, b)]
        return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())

    rng = np.random.default_rng(seed)
    base = np.arange(n + m)
    observed = stat(base)
    hits = sum(stat(rng.permutation(n + m)) >= observed for _ in range(n_permutations))
    return observed, (hits + 1) / (n_permutations + 1)


def _chi2_counts(ref: Any, cur: Any) -> tuple[float, float]:
    import pandas as pd
    from scipy.stats import chi2_contingency

    a = pd.Series(ref).dropna().astype(str).value_counts()
    b = pd.Series(cur).dropna().astype(str).value_counts()
    cats = sorted(set(a.index) | set(b.index))
    if len(cats) < 2 or a.sum() == 0 or b.sum() == 0:
        return float("nan"), float("nan")
    table = np.array([[a.get(c, 0) for c in cats], [b.get(c, 0) for c in cats]])
    res = chi2_contingency(table)
    return float(res.statistic), float(res.pvalue)


def _missing_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    from scipy.stats import chi2_contingency, fisher_exact

    table = np.array([[ref.sum(), (~ref).sum()], [cur.sum(), (~cur).sum()]])
    if (table.sum(0) == 0).any():
        return 0.0, 1.0
    if table.min() < 5:
        _, p = fisher_exact(table)
        return float(abs(cur.mean() - ref.mean())), float(p)
    res = chi2_contingency(table, correction=False)  # Yates' correction is needlessly conservative here
    return float(res.statistic), float(res.pvalue)


@dataclass
class DriftReport:
    table: Any  # DataFrame: modality, feature, test, statistic, p_value, psi, n_reference, n_current, alarm
    alpha: float
    threshold: float  # alpha / number of tests
    modalities: dict[str, bool]  # modality -> drifted

    @property
    def drifted(self) -> bool:
        return any(self.modalities.values())

    def to_dict(self) -> dict[str, Any]:
        rows = json.loads(self.table.to_json(orient="records"))
        return {"drifted": self.drifted, "alpha": self.alpha, "bonferroni_threshold": self.threshold,
                "modalities": self.modalities, "tests": rows}


def drift_report(reference: DriftFeatures, current: DriftFeatures, *, alpha: float = 0.05, n_permutations: int = 200,
                 seed: int = 0, min_n: int = 5) -> DriftReport:
    """Every drift test of ``current`` against ``reference``, with Bonferroni-corrected alarms."""
    import pandas as pd

    if not 0 < alpha < 1:
        raise ConfigError(f"alpha {alpha} is outside (0, 1)")
    rows: list[dict[str, Any]] = []

    def add(modality, feature, test, stat, p, n_ref, n_cur, psi_value=float("nan")):
        rows.append({"modality": modality, "feature": feature, "test": test, "statistic": stat, "p_value": p,
                     "psi": psi_value, "n_reference": int(n_ref), "n_current": int(n_cur)})

    def numeric_block(modality, ref_df, cur_df):
        for col in ref_df.columns:
            if col not in cur_df.columns:
                add(modality, col, "absent in current", float("nan"), 0.0, ref_df[col].notna().sum(), 0)
                continue
            a = pd.to_numeric(ref_df[col], errors="coerce")
            b = pd.to_numeric(cur_df[col], errors="coerce")
            if a.notna().mean() >= 0.5:  # numeric column
                a, b = a.dropna().to_numpy(), b.dropna().to_numpy()
                if len(a) >= min_n and len(b) >= min_n:
                    s, p = ks_test(a, b)
                    add(modality, col, "ks", s, p, len(a), len(b), psi(a, b))
            else:
                s, p = _chi2_counts(ref_df[col], cur_df[col])
                if np.isfinite(p):
                    add(modality, col, "chi2", s, p, ref_df[col].notna().sum(), cur_df[col].notna().sum())

    for m, ref_df in reference.stats.items():
        numeric_block(m, ref_df, current.stats.get(m, pd.DataFrame()))
    for m, e in reference.embeddings.items():
        c = current.embeddings.get(m)
        if c is not None and len(e) >= min_n and len(c) >= min_n:
            s, p = mmd_test(e, c, n_permutations=n_permutations, seed=seed)
            add(m, "embedding", "mmd", s, p, len(e), len(c))
    for m in reference.present.columns:
        a = reference.present[m].to_numpy(bool)
        b = current.present[m].to_numpy(bool)
        s, p = _missing_test(a, b)
        add("missingness", f"{m}_missing_rate {1 - a.mean():.3f} -> {1 - b.mean():.3f}", "chi2", s, p, len(a), len(b))
    if reference.probs is not None and current.probs is not None:
        for k, t in enumerate(reference.tasks):
            s, p = ks_test(reference.probs[:, k], current.probs[:, k])
            add("prediction", f"prob_{t}", "ks", s, p, len(reference.probs), len(current.probs),
                psi(reference.probs[:, k], current.probs[:, k]))
        if reference.labels is not None and current.labels is not None:
            from scipy.stats import ttest_ind

            from ..evaluate.metrics import expected_calibration_error

            for k, t in enumerate(reference.tasks):
                ra, ca = ~np.isnan(reference.labels[:, k]), ~np.isnan(current.labels[:, k])
                if ra.sum() < min_n or ca.sum() < min_n:
                    continue
                r_res = reference.labels[ra, k] - reference.probs[ra, k]
                c_res = current.labels[ca, k] - current.probs[ca, k]
                res = ttest_ind(r_res, c_res, equal_var=False)
                ece_r = expected_calibration_error(reference.labels[ra, k], reference.probs[ra, k])
                ece_c = expected_calibration_error(current.labels[ca, k], current.probs[ca, k])
                add("calibration", f"{t} mean residual {r_res.mean():+.3f} -> {c_res.mean():+.3f}; "
                    f"ECE {ece_r:.3f} -> {ece_c:.3f}", "welch_t", float(res.statistic), float(res.pvalue),
                    ra.sum(), ca.sum())
    table = pd.DataFrame(rows, columns=["modality", "feature", "test", "statistic", "p_value", "psi", "n_reference",
                                        "n_current"])
    n_tests = int(table["p_value"].notna().sum())
    threshold = alpha / max(n_tests, 1)
    table["alarm"] = table["p_value"].fillna(1.0) < threshold
    mods = {m: bool(g["alarm"].any()) for m, g in table.groupby("modality", sort=False)}
    return DriftReport(table, alpha, threshold, mods)
