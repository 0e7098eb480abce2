"""Post-hoc calibration fitted on validation and applied at inference: temperature scaling
and isotonic regression, one calibrator per task, saved as plain JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, NotFittedError

__all__ = ["TemperatureScaling", "IsotonicCalibration", "TaskCalibrator", "CalibratedModel", "create_calibrator",
           "CALIBRATORS"]

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _clean(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = ~np.isnan(y) & ~np.isnan(p)
    return y[keep], p[keep]


def _both_classes(y: Any, p: Any, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The calibration pairs without NaN; a :class:`ConfigError` unless both classes are there."""
    y, p = _clean(y, p)
    if len(np.unique(y)) < 2:
        raise ConfigError(f"{method} needs both classes in the calibration set", hint="use a larger validation split")
    return y, p


class TemperatureScaling:
    """``sigmoid(logit(p) / T)`` with ``T`` minimising the validation log loss (Guo et al., 2017)."""

    name = "temperature"

    def fit(self, y: Any, p: Any) -> "TemperatureScaling":
        from scipy.optimize import minimize_scalar

        y, p = _both_classes(y, p, "temperature scaling")
        z = _logit(p)

        def nll(log_t: float) -> float:
            s = z / np.exp(log_t)
            return float(np.mean(np.logaddexp(0, s) - y * s))

        res = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded")
        self.temperature_ = float(np.exp(res.x))
        return self

    def transform(self, p: Any) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise NotFittedError("TemperatureScaling is not fitted", hint="call fit(y_val, p_val) first")
        return 1.0 / (1.0 + np.exp(-_logit(p) / self.temperature_))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "temperature": self.temperature_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TemperatureScaling":
        obj = cls()
        obj.temperature_ = float(d["temperature"])
        return obj


class IsotonicCalibration:
    """A monotone step map from score to probability (scikit-learn's IsotonicRegression)."""

    name = "isotonic"

    def fit(self, y: Any, p: Any) -> "IsotonicCalibration":
        from sklearn.isotonic import IsotonicRegression

        y, p = _both_classes(y, p, "isotonic calibration")
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        self.x_ = np.asarray(iso.X_thresholds_, dtype=float)
        self.y_ = np.asarray(iso.y_thresholds_, dtype=float)
        return self

    def transform(self, p: Any) -> np.ndarray:
        if not hasattr(self, "x_"):
            raise NotFittedError("IsotonicCalibration is not fitted", hint="call fit(y_val, p_val) first")
        return np.interp(np.asarray(p, dtype=float), self.x_, self.y_)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "x": self.x_.tolist(), "y": self.y_.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IsotonicCalibration":
        obj = cls()
        obj.x_ = np.asarray(d["x"], dtype=float)
        obj.y_ = np.asarray(d["y"], dtype=float)
        return obj


CALIBRATORS = {"temperature": TemperatureScaling, "isotonic": IsotonicCalibration}


def create_calibrator(method: str):
    if method not in CALIBRATORS:
        raise ConfigError(f"unknown calibration method {method!r}", hint=f"use one of {sorted(CALIBRATORS)}")
    return CALIBRATORS[method]()


class TaskCalibrator:
    """One calibrator per task, fitted on a validation prediction table.

    ``fit(predictions, tasks)`` reads ``label_<t>``/``prob_<t>``; ``transform(predictions)``
    returns a copy with calibrated ``prob_<t>``. ``save``/``load`` write JSON, so a
    calibration travels beside a model folder (``calibration.json``) and is applied at
    inference with :meth:`apply`.
    """

    def __init__(self, *, method: str = "temperature") -> None:
        self.method = method

    def fit(self, predictions, tasks: list[str] | tuple[str, ...]) -> "TaskCalibrator":
        self.calibrators_ = {}
        for t in tasks:
            self.calibrators_[t] = create_calibrator(self.method).fit(predictions[f"label_{t}"],
                                                                        predictions[f"prob_{t}"])
        return self

    def apply(self, probs: np.ndarray, tasks: list[str] | tuple[str, ...]) -> np.ndarray:
        """Calibrate an ``[N, T]`` probability array whose columns follow ``tasks``."""
        out = np.array(probs, dtype=float, copy=True)
        for k, t in enumerate(tasks):
            if t in self.calibrators_:
                out[:, k] = self.calibrators_[t].transform(out[:, k])
        return out

    def transform(self, predictions):
        if not hasattr(self, "calibrators_"):
            raise NotFittedError("TaskCalibrator is not fitted", hint="call fit(val_predictions, tasks) first")
        df = predictions.copy()
        for t, c in self.calibrators_.items():
            if f"prob_{t}" in df:
                df[f"prob_{t}"] = c.transform(df[f"prob_{t}"].to_numpy(float))
        return df

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "tasks": {t: c.to_dict() for t, c in self.calibrators_.items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TaskCalibrator":
        d = json.loads(Path(path).read_text())
        obj = cls(method=d["method"])
        obj.calibrators_ = {t: CALIBRATORS[c["method"]].from_dict(c) for t, c in d["tasks"].items()}
        return obj


class CalibratedModel:
    """A model whose binary task probabilities pass through a fitted :class:`TaskCalibrator`
    at inference (``predict_records``); everything else is the wrapped model's."""

    def __init__(self, model: Any, calibrator: "TaskCalibrator | str | Path") -> None:
        self.model = model
        self.calibrator = calibrator if isinstance(calibrator, TaskCalibrator) else TaskCalibrator.load(calibrator)

    def predict_records(self, records: Any, **kwargs: Any) -> np.ndarray:
        probs = np.asarray(self.model.predict_records(records, **kwargs), dtype=float)
        columns = list(getattr(self.model, "output_columns", self.model.tasks))
        return self.calibrator.apply(probs, columns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)
