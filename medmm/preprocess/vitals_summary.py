"""HAIM-style summary statistics of vital signs before an index time.

Soenksen et al. (HAIM, npj Digit. Med. 2022) summarise each time series by a fixed set of
statistics; :func:`summarize_vitals` computes them per signal over a look-back window that
ends at the index time (nothing after it enters a feature), giving one flat row for
tabular models or for the EHR featurizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..records import Vitals

__all__ = ["summarize_vitals", "VitalsSummarizer", "SUMMARY_STATS"]

SUMMARY_STATS = ("count", "last", "hours_since_last", "mean", "std", "min", "max", "median",
                 "first", "diff", "mean_diff", "mean_abs_diff", "max_abs_diff", "sum_abs_diff",
                 "n_peaks", "slope_per_hour")


def _stats(t_hours: np.ndarray, v: np.ndarray, end_hours: float) -> dict[str, float]:
    nan = float("nan")
    n = len(v)
    if n == 0:
        return {"count": 0.0, **{k: nan for k in SUMMARY_STATS if k != "count"}}
    d = np.diff(v)
    peaks = int(np.sum((v[1:-1] > v[:-2]) & (v[1:-1] > v[2:]))) if n >= 3 else 0
    slope = float(np.polyfit(t_hours, v, 1)[0]) if n >= 2 and np.ptp(t_hours) > 0 else nan
    return {
        "count": float(n),
        "last": float(v[-1]),
        "hours_since_last": float(end_hours - t_hours[-1]),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if n >= 2 else nan,
        "min": float(v.min()),
        "max": float(v.max()),
        "median": float(np.median(v)),
        "first": float(v[0]),
        "diff": float(v[-1] - v[0]),
        "mean_diff": float(d.mean()) if len(d) else nan,
        "mean_abs_diff": float(np.abs(d).mean()) if len(d) else nan,
        "max_abs_diff": float(np.abs(d).max()) if len(d) else nan,
        "sum_abs_diff": float(np.abs(d).sum()) if len(d) else nan,
        "n_peaks": float(peaks),
        "slope_per_hour": slope,
    }


def summarize_vitals(
    vitals: Vitals,
    *,
    index_time: Any = None,
    hours: float | None = 48.0,
    signals: Sequence[str] | None = None,
    stats: Sequence[str] = SUMMARY_STATS,
) -> dict[str, float]:
    """Per-signal summary statistics over ``hours`` before ``index_time``.

    Parameters
    ----------
    index_time:
        End of the window (default: the last observation). Observations after it are ignored.
    hours:
        Look-back length (``None``: everything before the index time).
    signals:
        Which signals to summarise; a listed signal without observations gets ``count`` 0 and
        NaN elsewhere, so every record has the same keys.

    Returns
    -------
    dict
        ``'<signal>__<stat>' -> float``.
    """
    import pandas as pd

    df = vitals.frame
    end = pd.Timestamp(index_time) if index_time is not None else df["time"].max()
    keep = df["time"] <= end
    if hours is not None:
        keep &= df["time"] >= end - pd.Timedelta(hours=hours)
    df = df[keep].sort_values("time", kind="stable")
    names = list(signals) if signals is not None else sorted(df["signal"].unique())
    out: dict[str, float] = {}
    t0 = end - pd.Timedelta(hours=hours or 0)
    for s in names:
        rows = df[df["signal"] == s]
        th = (rows["time"] - t0).dt.total_seconds().to_numpy() / 3600.0
        st = _stats(th, rows["value"].to_numpy(dtype=float), (end - t0).total_seconds() / 3600.0)
        out.update({f"{s}__{k}": st[k] for k in stats})
    return out


class VitalsSummarizer:
    """HAIM-style summaries as :class:`~medmm.records.Tabular` rows with the same keys for all.

    ``fit`` learns the signal list from training records (signals seen in at least
    ``min_records`` of them); ``transform`` summarises a record's vitals before its index time,
    ready for :class:`medmm.preprocess.tabular.TabularPreprocessor` (NaN where a signal was not
    observed, which that featurizer imputes with a missing indicator).
    """

    def __init__(self, *, hours: float | None = 48.0, stats: Sequence[str] = SUMMARY_STATS,
                 min_records: int = 1) -> None:
        self.hours = hours
        self.stats = tuple(stats)
        self.min_records = min_records

    def fit(self, series: Sequence[Vitals]) -> "VitalsSummarizer":
        from collections import Counter

        seen: Counter = Counter()
        for v in series:
            seen.update(set(v.frame["signal"]))
        self.signals_ = sorted(s for s, n in seen.items() if n >= self.min_records)
        return self

    def transform(self, vitals: Vitals, *, index_time: Any = None) -> "Any":
        from ..errors import NotFittedError
        from ..records import Tabular

        if not hasattr(self, "signals_"):
            raise NotFittedError("VitalsSummarizer is not fitted", hint="call fit() on training vitals first")
        values = summarize_vitals(vitals, index_time=index_time, hours=self.hours, signals=self.signals_,
                                  stats=self.stats)
        units = dict(zip(vitals.frame["signal"], vitals.frame["unit"]))
        return Tabular(values=values, units={k: units[k.split("__")[0]] for k in values
                                             if k.split("__")[0] in units and not k.endswith(
                                                 ("__count", "__n_peaks", "__hours_since_last", "__slope_per_hour"))})

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Settings and the fitted signal list."""
        state: dict[str, Any] = {"params": {"hours": self.hours, "stats": list(self.stats),
                                            "min_records": self.min_records}, "fitted": hasattr(self, "signals_")}
        if state["fitted"]:
            state["signals_"] = list(self.signals_)
        return state, {}

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> "VitalsSummarizer":
        p = dict(state["params"])
        obj = cls(hours=p["hours"], stats=tuple(p["stats"]), min_records=p["min_records"])
        if state.get("fitted"):
            obj.signals_ = [str(s) for s in state["signals_"]]
        return obj
