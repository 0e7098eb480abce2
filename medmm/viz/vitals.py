"""Vital-sign plots with the NEWS2 bands shaded (RCP 2017 Chart 1).

The bands come from :mod:`medmm.monitor.news2`'s scoring functions, and a signal's name is
resolved as the monitor resolves it (:func:`medmm.io.vitals.canonical_signal`, then
:data:`medmm.monitor.health.NEWS2_SIGNALS`), so the plot and the monitor agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.vitals import canonical_signal
from ..monitor.health import NEWS2_SIGNALS
from ..monitor.news2 import score_pulse, score_respiration_rate, score_spo2, score_systolic_bp, score_temperature
from .common import figure_html, new_figure

__all__ = ["news2_bands", "plot_vitals", "VitalsView"]

#: NEWS2 parameter -> its Chart 1 scoring function (SpO2 on scale 1, air)
_NEWS2_FUNCS = {"resp_rate": score_respiration_rate, "spo2": score_spo2, "sbp": score_systolic_bp,
                "pulse": score_pulse, "temperature": score_temperature}
_COLORS = {0: None, 1: "#fff3b0", 2: "#ffd08a", 3: "#ff9d8a"}


def news2_bands(signal: str, lo: float, hi: float) -> list[tuple[float, float, int]]:
    """``(low, high, score)`` runs of the NEWS2 sub-score over ``[lo, hi]`` for ``signal``.

    ``signal`` is any name :func:`medmm.io.vitals.canonical_signal` knows (``'pulse'``,
    ``'Heart Rate'``, ``'abp_sys'`` ...); signals NEWS2 does not chart give ``[]``.
    """
    name = NEWS2_SIGNALS.get(canonical_signal(signal))
    fn = _NEWS2_FUNCS.get(name)
    if fn is None:
        return []
    step = 0.01 if name == "temperature" else 0.1
    grid = np.arange(lo, hi + step, step)
    scores = []
    for v in grid:
        try:
            scores.append(int(fn(float(v))))
        except Exception:  # outside the chart's plausible range
            scores.append(-1)
    out: list[tuple[float, float, int]] = []
    start = 0
    for i in range(1, len(grid) + 1):
        if i == len(grid) or scores[i] != scores[start]:
            if scores[start] >= 0:
                out.append((float(grid[start] - step / 2), float(grid[i - 1] + step / 2), scores[start]))
            start = i
    return out


def plot_vitals(vitals: Any, *, signals: list[str] | None = None, bands: bool = True, index_time: Any = None):
    """One panel per signal against time, NEWS2 bands shaded (deeper colour, higher score).

    ``vitals`` is a :class:`~medmm.records.Vitals` or its long frame (``time, signal, value,
    unit``); ``index_time`` draws a vertical line at the prediction time.
    """
    frame = getattr(vitals, "frame", vitals)
    names = signals or sorted(frame["signal"].unique().tolist())
    fig = new_figure(figsize=(8, 1.6 * max(1, len(names)) + 0.4))
    axes = fig.subplots(max(1, len(names)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        rows = frame[frame["signal"] == name]
        t, v = rows["time"], rows["value"].to_numpy(float)
        unit = rows["unit"].iloc[0] if len(rows) and "unit" in rows else ""
        ax.plot(t, v, ".-", ms=3, lw=0.8, color="C0")
        if len(v):
            pad = max(1e-3, 0.15 * (np.nanmax(v) - np.nanmin(v)) or 1.0)
            lo, hi = float(np.nanmin(v) - pad), float(np.nanmax(v) + pad)
            if bands:
                for a, b, s in news2_bands(name, lo, hi):
                    if _COLORS.get(min(s, 3)):
                        ax.axhspan(a, b, color=_COLORS[min(s, 3)], alpha=0.6, lw=0, zorder=0)
                    if s > 0:
                        ax.text(1.005, (max(a, lo) + min(b, hi)) / 2, str(s), transform=ax.get_yaxis_transform(),
                                fontsize=7, va="center", color="#a33")
            ax.set_ylim(lo, hi)
        if index_time is not None:
            ax.axvline(index_time, color="k", ls="--", lw=0.8)
        ax.set_ylabel(f"{name}\n[{unit}]", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_title("vital signs (shaded: NEWS2 sub-score 1 / 2 / 3)", fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


class VitalsView:
    """Inline vitals plot for notebooks (``_repr_html_``)."""

    def __init__(self, vitals: Any, **kwargs: Any) -> None:
        self.vitals = vitals
        self.kwargs = kwargs

    def figure(self):
        return plot_vitals(self.vitals, **self.kwargs)

    def _repr_html_(self) -> str:
        return figure_html(self.figure(), alt="vital signs")
