"""Vectorised bootstrap of every binary metric of one task.

A bootstrap resample of ``N`` patients is represented by its *weights*: how many times each
patient was drawn (a row of a ``[B, N]`` count matrix). Every metric is then a weighted sum
over patients, so ``B`` resamples are evaluated together with a few matrix operations:

* the ROC and PR curves come from cumulative weighted counts of positives and negatives over
  the distinct scores (ties grouped, as scikit-learn does), which gives AUROC (trapezoids),
  average precision (sklearn's step definition), and the operating points (a fixed
  threshold, Youden's J, a target sensitivity) re-selected in every resample;
* Brier score, expected calibration error and the calibration curve come from a
  ``[B, N] @ [N, K]`` product with the bin indicator matrix.

The same ``seed`` and ``N`` give the same resamples, so two models scored on the same
cohort are compared *paired* by bootstrapping both with one seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["bootstrap_weights", "curve_counts", "metric_arrays", "bootstrap_metrics", "OperatingPoints",
           "bca_interval", "jackknife_groups",
           "METRICS", "POINT_METRICS"]

#: metrics that do not depend on a threshold
METRICS = ("auroc", "auprc", "brier", "ece")
#: metrics computed at each operating point
POINT_METRICS = ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")


@dataclass(frozen=True)
class OperatingPoints:
    """How thresholds are chosen: a fixed one, Youden's J, and a target sensitivity.

    ``fixed`` may also be given per task by the caller (e.g. chosen on validation).
    """

    fixed: float = 0.5
    youden: bool = True
    target_sensitivity: float | None = 0.9

    def names(self) -> list[str]:
        out = [f"threshold_{self.fixed:g}"]
        if self.youden:
            out.append("youden")
        if self.target_sensitivity is not None:
            out.append(f"sensitivity_{self.target_sensitivity:g}")
        return out


def bootstrap_weights(n: int, n_boot: int, seed: int = 0, *, chunk: int = 256):
    """Yield ``[b, n]`` float32 count matrices (patients drawn with replacement), ``n_boot`` rows in all."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b) * n)[:, None]
        w = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)
        done += b
        yield w


def _groups(p_sorted: np.ndarray) -> np.ndarray:
    """Start index of each run of equal scores in a sorted score vector."""
    if len(p_sorted) == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])


def curve_counts(w: np.ndarray, y: np.ndarray, p: np.ndarray):
    """Weighted positives and totals per distinct score, highest score first.

    Returns ``(thresholds [G], pos [B, G], tot [B, G])``: group ``g`` holds the patients
    whose score equals ``thresholds[g]``; cumulative sums along ``G`` give the true
    positives and all positives when predicting positive for ``score >= thresholds[g]``.
    """
    order = np.argsort(-p, kind="mergesort")
    ps = p[order]
    starts = _groups(ps)
    ws = w[:, order]
    pos = ws * y[order].astype(w.dtype)[None, :]
    if len(starts) < len(ps):
        return ps[starts], np.add.reduceat(pos, starts, axis=1), np.add.reduceat(ws, starts, axis=1)
    return ps, pos, ws


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


class _FP:
    """``cum - tp`` evaluated only where indexed (avoids a third ``[B, G]`` matrix)."""

    def __init__(self, tp: np.ndarray, cum: np.ndarray) -> None:
        self.tp, self.cum = tp, cum

    def __getitem__(self, key):
        return self.cum[key] - self.tp[key]


def _point(tp, fp, pos, neg, idx, thr) -> dict[str, np.ndarray]:
    """Metrics at column ``idx`` of the cumulative counts (``-1``: nothing predicted positive)."""
    rows = np.arange(tp.shape[0])
    valid = idx >= 0
    ii = np.where(valid, idx, 0)
    tpi = np.where(valid, tp[rows, ii], 0.0).astype(np.float64)
    fpi = np.where(valid, fp[rows, ii], 0.0).astype(np.float64)
    fn = pos - tpi
    tn = neg - fpi
    return {"threshold": thr, "sensitivity": _safe_div(tpi, pos), "specificity": _safe_div(tn, neg),
            "ppv": _safe_div(tpi, tpi + fpi), "npv": _safe_div(tn, tn + fn),
            "f1": _safe_div(2 * tpi, 2 * tpi + fpi + fn), "accuracy": _safe_div(tpi + tn, pos + neg)}


def metric_arrays(
    w: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    *,
    ops: OperatingPoints = OperatingPoints(),
    n_bins: int = 10,
    fixed_thresholds: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Every metric for each row of the weight matrix ``w`` (``[B, N]``); values ``[B]``.

    Keys: ``auroc, auprc, brier, ece, n, n_positive``, ``<point>.<metric>`` for each
    operating point and ``calib_pred``/``calib_obs``/``calib_n`` (``[B, n_bins]``).
    ``fixed_thresholds`` adds named thresholds held fixed across resamples (for example
    a Youden threshold chosen on validation).
    """
    w = np.asarray(w, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    p = np.asarray(p, dtype=np.float64)
    b = w.shape[0]
    thr, posg, totg = curve_counts(w, y, p)
    # integer counts: float32 sums are exact up to 2**24 patients; the point estimate uses float64
    acc = np.float64 if b == 1 else np.float32
    tp = np.cumsum(posg, axis=1, dtype=acc)
    cum = np.cumsum(totg, axis=1, dtype=acc)
    g = tp.shape[1]
    pos = tp[:, -1].astype(np.float64) if g else np.zeros(b)
    neg = (cum[:, -1] - tp[:, -1]).astype(np.float64) if g else np.zeros(b)
    ok = (pos > 0) & (neg > 0)
    out: dict[str, np.ndarray] = {"n": pos + neg, "n_positive": pos}
    e = lambda a, c: np.einsum("bg,bg->b", a, c, dtype=np.float64)  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        # AUROC: each negative scores against the positives at or above it, ties counting half:
        # sum_g neg_g * (tp_g - pos_g / 2), with neg_g = tot_g - pos_g
        auc = e(totg, tp) - e(posg, tp) - 0.5 * (e(totg, posg) - e(posg, posg))
        out["auroc"] = np.where(ok, auc / (pos * neg), np.nan)
        # average precision: sum over thresholds of (R_k - R_{k-1}) * P_k
        prec = tp / np.maximum(cum, 1)  # cum == 0 only where tp == 0
        out["auprc"] = np.where(ok, e(posg, prec) / pos, np.nan)
        del prec
    # calibration
    total = w.sum(axis=1, dtype=np.float64)
    out["brier"] = _safe_div(w @ ((p - y) ** 2).astype(np.float32), total)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    design = np.zeros((len(p), 3 * n_bins), dtype=np.float32)  # [bin indicator | p | y] per bin, one matmul
    rows = np.arange(len(p))
    design[rows, bins] = 1.0
    design[rows, n_bins + bins] = p
    design[rows, 2 * n_bins + bins] = y
    sums = (w @ design).astype(np.float64)
    cnt, sp, sy = sums[:, :n_bins], sums[:, n_bins:2 * n_bins], sums[:, 2 * n_bins:]
    out["ece"] = _safe_div(np.abs(sp - sy).sum(axis=1), total)
    out["calib_n"] = cnt
    out["calib_pred"] = _safe_div(sp, cnt)
    out["calib_obs"] = _safe_div(sy, cnt)
    # operating points
    points: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    named = {f"threshold_{ops.fixed:g}": ops.fixed, **(fixed_thresholds or {})}
    for name, t in named.items():
        idx = np.full(b, int(np.searchsorted(-thr, -t, side="right")) - 1)  # last threshold >= t
        points[name] = (idx, np.full(b, float(t)))
    if g and ops.youden:
        # J = tp/P - fp/N = tp (1/P + 1/N) - cum/N; rows without both classes pick column 0
        ip = np.where(pos > 0, 1.0 / np.maximum(pos, 1), 0.0).astype(acc)
        ineg = np.where(neg > 0, 1.0 / np.maximum(neg, 1), 0.0).astype(acc)
        j = tp * (ip + ineg)[:, None]
        j -= cum * ineg[:, None]
        idx = np.argmax(j, axis=1)
        del j
        points["youden"] = (idx, thr[idx])
    if g and ops.target_sensitivity is not None:
        below = (tp < (ops.target_sensitivity * pos - 1e-9).astype(acc)[:, None]).sum(axis=1)
        idx = np.minimum(below, g - 1)
        points[f"sensitivity_{ops.target_sensitivity:g}"] = (idx, thr[idx])
    fp = _FP(tp, cum)
    for name, (idx, t) in points.items():
        for k, v in _point(tp, fp, pos, neg, idx, t).items():
            out[f"{name}.{k}"] = np.asarray(v, dtype=np.float64)
    return out


def jackknife_groups(n: int, max_groups: int = 200, seed: int = 0):
    """Yield ``[g, n]`` weight matrices, each row leaving one group of patients out: every
    patient alone when ``n <= max_groups`` (the leave-one-out jackknife), else ``max_groups``
    random groups (the delete-d jackknife), for the BCa acceleration."""
    g = min(n, max_groups)
    if n <= max_groups:
        group = np.arange(n)
    else:
        group = np.random.default_rng(seed).permutation(n) % g
    for start in range(0, g, 256):
        ids = np.arange(start, min(g, start + 256))
        yield (group[None, :] != ids[:, None]).astype(np.float32)


def bca_interval(estimate: float, boot: np.ndarray, jack: np.ndarray | None, alpha: float = 0.05,
                 bounds: tuple[float, float] | None = (0.0, 1.0)) -> tuple[float, float, str]:
    """A bias-corrected bootstrap interval that contains ``estimate``: ``(low, high, method)``.

    BCa (Efron 1987): the percentile interval with levels moved by the bias correction
    ``z0`` (the share of resamples below the estimate) and the acceleration ``a`` (from the
    jackknife values ``jack``). Where the resampled statistic is so biased that even BCa
    leaves the estimate out (a binned ECE near 0 resamples above it almost always), the
    percentile interval of the bias-corrected resamples ``boot - (mean(boot) - estimate)`` is
    used instead (``method`` ``'bias-shifted'``), widened to the estimate if needed and
    clipped to ``bounds``.
    """
    from scipy.special import ndtr, ndtri

    boot = np.asarray(boot, dtype=np.float64)
    boot = boot[~np.isnan(boot)]
    if not len(boot) or np.isnan(estimate):
        return float("nan"), float("nan"), "none"
    b = len(boot)
    below = (np.count_nonzero(boot < estimate) + 0.5 * np.count_nonzero(boot == estimate)) / b
    z0 = float(ndtri(np.clip(below, 1.0 / (b + 1), b / (b + 1.0))))
    a = 0.0
    if jack is not None:
        jack = np.asarray(jack, dtype=np.float64)
        jack = jack[~np.isnan(jack)]
        if len(jack) > 2:
            d = jack.mean() - jack
            den = 6.0 * float((d ** 2).sum()) ** 1.5
            a = float((d ** 3).sum()) / den if den > 0 else 0.0
    z = ndtri(np.array([alpha / 2, 1 - alpha / 2]))
    denom = 1.0 - a * (z0 + z)
    method = "bca"
    if alpha / 2 <= below <= 1 - alpha / 2 and (denom > 0).all():
        levels = ndtr(z0 + (z0 + z) / denom)
        lo, hi = (float(v) for v in np.quantile(boot, levels))
    else:
        lo = hi = float("nan")
    if not (lo <= estimate <= hi):
        shifted = boot - (boot.mean() - estimate)
        lo, hi = (float(v) for v in np.quantile(shifted, [alpha / 2, 1 - alpha / 2]))
        lo, hi = min(lo, estimate), max(hi, estimate)
        method = "bias-shifted"
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return lo, hi, method


#: metrics whose values are not bounded to [0, 1]
_UNBOUNDED = ("n", "n_positive")


def _summarise(full: dict[str, np.ndarray], boot: dict[str, list[np.ndarray]], alpha: float,
               jack: dict[str, np.ndarray] | None = None, method: str = "bca") -> dict[str, Any]:
    res: dict[str, Any] = {}
    methods: dict[str, str] = {}
    for k, v in full.items():
        if k.startswith("calib_"):
            continue
        est = float(v[0])
        arr = np.concatenate(boot[k]) if boot else np.array([])
        arr = arr[~np.isnan(arr)]
        if not len(arr):
            lo, hi = np.nan, np.nan
        elif method == "percentile" or k in _UNBOUNDED:
            lo, hi = np.quantile(arr, [alpha / 2, 1 - alpha / 2])
        else:
            lo, hi, methods[k] = bca_interval(est, arr, None if jack is None else jack.get(k), alpha)
        res[k] = (est, float(lo), float(hi))
    res["ci_method"] = methods
    return res


def bootstrap_metrics(
    y: Any,
    p: Any,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    ops: OperatingPoints = OperatingPoints(),
    n_bins: int = 10,
    fixed_thresholds: dict[str, float] | None = None,
    keep_samples: bool = False,
    ci: str = "bca",
) -> dict[str, Any]:
    """Point estimates and bootstrap CIs of every metric of one binary task.

    ``ci="bca"`` (default): bias-corrected and accelerated intervals (:func:`bca_interval`;
    the acceleration from a jackknife of at most 200 groups), which always contain the
    estimate, also for statistics the resampling biases (ECE, the sensitivity at a threshold
    re-chosen in each resample); ``ci="percentile"``: the plain percentile interval.
    Patients with an unknown label (NaN) are dropped first. Returns
    ``{metric: (estimate, low, high)}`` plus ``"ci_method"`` (``{metric: 'bca' |
    'bias-shifted'}``), ``"calibration"`` (a per-bin table with counts, mean prediction,
    observed rate and its CI) and, with ``keep_samples``, ``"samples"`` (``{metric:
    [n_boot]}`` for paired comparisons).
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    n = len(y)
    full = metric_arrays(np.ones((1, n), np.float32), y, p, ops=ops, n_bins=n_bins,
                         fixed_thresholds=fixed_thresholds)
    boot: dict[str, list[np.ndarray]] = {}
    if n and n_boot:
        for w in bootstrap_weights(n, n_boot, seed):
            for k, v in metric_arrays(w, y, p, ops=ops, n_bins=n_bins, fixed_thresholds=fixed_thresholds).items():
                boot.setdefault(k, []).append(v)
    jack: dict[str, np.ndarray] | None = None
    if ci == "bca" and boot and n > 2:
        parts: dict[str, list[np.ndarray]] = {}
        for w in jackknife_groups(n, seed=seed):
            for k, v in metric_arrays(w, y, p, ops=ops, n_bins=n_bins, fixed_thresholds=fixed_thresholds).items():
                if not k.startswith("calib_"):
                    parts.setdefault(k, []).append(v)
        jack = {k: np.concatenate(v) for k, v in parts.items()}
    elif ci not in ("bca", "percentile"):
        raise ValueError(f"ci must be 'bca' or 'percentile', not {ci!r}")
    res = _summarise(full, boot, alpha, jack, ci)
    res["n"] = int(n)
    res["n_positive"] = int(y.sum())
    obs = np.concatenate(boot["calib_obs"]) if boot else np.full((1, n_bins), np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nanquantile(obs, alpha / 2, axis=0)
            hi = np.nanquantile(obs, 1 - alpha / 2, axis=0)
    res["calibration"] = {
        "bin_low": np.arange(n_bins) / n_bins, "bin_high": np.arange(1, n_bins + 1) / n_bins,
        "n": full["calib_n"][0], "mean_predicted": full["calib_pred"][0], "observed": full["calib_obs"][0],
        "observed_low": lo, "observed_high": hi,
    }
    if keep_samples:
        res["samples"] = {k: np.concatenate(v) for k, v in boot.items() if not k.startswith("calib_")}
    return res
