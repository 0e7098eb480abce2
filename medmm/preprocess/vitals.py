"""Vital-sign preprocessing: a regular grid with observation mask and time since last observation."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import NotFittedError
from ..records import Vitals

__all__ = ["VitalsPreprocessor"]


class VitalsPreprocessor:
    """Resample an irregular series onto ``hours / step_hours`` bins ending at the index time.

    Output ``float32 [T, 3 * C]``: per channel the z-scored value (last observation carried
    forward, 0 before the first), the observation mask of the bin, and the hours since the
    last observation divided by ``hours`` (the inputs a GRU-D style encoder needs).
    Channel list and normalisation statistics are fitted on training records only.
    """

    def __init__(self, *, hours: float = 48.0, step_hours: float = 2.0) -> None:
        self.hours = float(hours)
        self.step_hours = float(step_hours)

    @property
    def n_steps(self) -> int:
        return int(round(self.hours / self.step_hours))

    def fit(self, series: list[Vitals]) -> "VitalsPreprocessor":
        import pandas as pd

        frames = [v.frame[["signal", "value"]] for v in series]
        if not frames:
            self.signals_, self.mean_, self.std_ = [], np.zeros(0), np.ones(0)
            return self
        allv = pd.concat(frames, ignore_index=True)
        stats = allv.groupby("signal")["value"].agg(["mean", "std"]).sort_index()
        self.signals_ = stats.index.tolist()
        self.mean_ = stats["mean"].to_numpy(np.float64)
        self.std_ = stats["std"].fillna(1.0).replace(0.0, 1.0).to_numpy(np.float64)
        return self

    def transform(self, vitals: Vitals, *, index_time: Any = None) -> np.ndarray:
        if not hasattr(self, "signals_"):
            raise NotFittedError("VitalsPreprocessor is not fitted", hint="call fit() on training vitals first")
        import pandas as pd

        df = vitals.frame
        times = df["time"].to_numpy("datetime64[us]")  # us: de-identified dates in the 2700s fit
        if index_time is not None:
            end = pd.Timestamp(index_time).to_datetime64().astype("datetime64[us]")
        else:
            end = times.max() if len(times) else np.datetime64(0, "us")
        hours_before = (end - times).astype(np.float64) / 3.6e9
        keep = (hours_before >= 0) & (hours_before <= self.hours)
        t = self.n_steps
        c = len(self.signals_)
        out = np.zeros((t, 3 * c), dtype=np.float32)
        if c == 0:
            return out
        col = {s: i for i, s in enumerate(self.signals_)}
        sig = df["signal"].to_numpy()[keep]
        val = df["value"].to_numpy(np.float64)[keep]
        pos = self.hours - hours_before[keep]  # hours since window start
        b = np.minimum((pos / self.step_hours).astype(int), t - 1)
        chan = np.fromiter((col.get(s, -1) for s in sig), dtype=np.int64, count=len(sig))
        ok = chan >= 0
        b, chan = b[ok], chan[ok]
        sums = np.bincount(b * c + chan, weights=(val[ok] - self.mean_[chan]) / self.std_[chan],
                           minlength=t * c).reshape(t, c)
        counts = np.bincount(b * c + chan, minlength=t * c).reshape(t, c)
        observed = counts > 0
        # last observation carried forward: index of the latest observed step at or before each step
        steps = np.arange(t)[:, None]
        last_step = np.maximum.accumulate(np.where(observed, steps, -1), axis=0)
        seen = last_step >= 0
        means = np.divide(sums, counts, out=np.zeros((t, c)), where=observed)
        out[:, :c] = np.where(seen, means[np.maximum(last_step, 0), np.arange(c)], 0.0)
        out[:, c:2 * c] = observed
        # hours since the last observation (the whole window, capped, before the first one)
        since = np.where(seen, (steps - last_step) * self.step_hours, steps * self.step_hours + self.hours)
        out[:, 2 * c:] = np.minimum(since, self.hours) / self.hours
        return out

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n_steps, 3 * len(self.signals_))

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Grid settings, the channel list and the per-channel mean and standard deviation."""
        state: dict[str, Any] = {"params": {"hours": self.hours, "step_hours": self.step_hours},
                                 "fitted": hasattr(self, "signals_")}
        if not state["fitted"]:
            return state, {}
        state["signals_"] = list(self.signals_)
        return state, {"mean": np.asarray(self.mean_, dtype=np.float64), "std": np.asarray(self.std_, dtype=np.float64)}

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> "VitalsPreprocessor":
        obj = cls(**state["params"])
        if state.get("fitted"):
            obj.signals_ = [str(s) for s in state["signals_"]]
            obj.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
            obj.std_ = np.asarray(arrays["std"], dtype=np.float64)
            if obj.mean_.shape != (len(obj.signals_),) or obj.std_.shape != obj.mean_.shape:
                raise ValueError(f"{len(obj.signals_)} signals but statistics of shape {obj.mean_.shape}")
        return obj
