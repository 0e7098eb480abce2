r"""Vital signs: long and wide tables (CSV / Parquet), FHIR Observations by LOINC, cleaning.

Every reader returns :class:`~medmm.records.Vitals` (a long frame ``time, signal, value, unit``,
times naive UTC) after the same cleaning (:func:`clean_vitals`):

1. signal names are mapped to medmm's canonical names (``HR`` -> ``heart_rate``, ...);
2. units are converted to the signal's canonical unit (degF -> degC, kPa -> mmHg,
   fraction -> %, lb -> kg, ...); a unit that cannot be converted drops the row and is reported;
3. physiologically impossible values are dropped and reported (never silently kept);
4. exact duplicates are dropped; two different values of one signal at one time are averaged
   and reported.

Rows that cannot be used are reported, each naming file, row and column, as
:class:`~medmm.problems.Problem`\ s in the ``report`` a reader is given (a
:class:`~medmm.problems.ProblemReport`); ``strict=True`` raises the first one instead.
Signals medmm does not know are kept with their own unit, unchecked.

Times are ``datetime64[ns]``; a record whose times lie beyond its range (1677-2262, e.g.
MIMIC's de-identified dates in the 2700s-2900s) keeps ``datetime64[us]`` instead
(:func:`vitals_times`): the dates are kept as written, not shifted.

**Device signal loss.** A bedside monitor writes 0 when it has no signal (ECG leads off,
SpO2 probe off, an arterial line closed or flushed) and holds a frozen transducer's value
unchanged. :data:`DEVICE_SIGNAL_LOSS` says, per signal, which readings mean "no signal"
(:class:`SignalLoss`); :func:`drop_signal_loss` removes them and reports one problem per
signal and kind. Device numerics (WFDB) apply it by default; the table readers on request
(``signal_loss="device"``), since a charted 0 is a clinician's entry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigError, MedmmError, ReadError, SchemaError
from ..problems import ProblemReport, report_problems
from ..records import Vitals
from .common import naive_utc, parse_times, problem, to_timestamp

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "read_vitals_long",
    "read_vitals_parquet",
    "read_vitals_wide",
    "read_fhir_vitals",
    "vitals_from_observations",
    "clean_vitals",
    "finish_vitals",
    "validate_observation",
    "observation_time",
    "Observation",
    "vitals_times",
    "SignalLoss",
    "DEVICE_SIGNAL_LOSS",
    "signal_loss_rules",
    "find_signal_loss",
    "drop_signal_loss",
    "canonical_signal",
    "convert_unit",
    "LONG_COLUMNS",
    "SIGNALS",
    "VITAL_LOINC",
]

LONG_COLUMNS = ("time", "signal", "value", "unit")

#: canonical signal -> (canonical unit, dimension, (lowest, highest) physiologically possible)
SIGNALS: dict[str, tuple[str, str, tuple[float, float]]] = {
    "heart_rate": ("bpm", "rate", (0.0, 350.0)),
    "pulse_rate": ("bpm", "rate", (0.0, 350.0)),
    "resp_rate": ("/min", "rate", (0.0, 150.0)),
    "spo2": ("%", "fraction", (0.0, 100.0)),
    "sbp": ("mmHg", "pressure", (0.0, 400.0)),
    "dbp": ("mmHg", "pressure", (0.0, 300.0)),
    "map": ("mmHg", "pressure", (0.0, 350.0)),
    "abp_sys": ("mmHg", "pressure", (0.0, 400.0)),
    "abp_dia": ("mmHg", "pressure", (0.0, 300.0)),
    "abp_mean": ("mmHg", "pressure", (0.0, 350.0)),
    "cvp": ("mmHg", "pressure", (-20.0, 100.0)),
    "temperature": ("degC", "temperature", (15.0, 46.0)),
    "weight": ("kg", "mass", (0.2, 700.0)),
    "height": ("cm", "length", (20.0, 280.0)),
    "bmi": ("kg/m2", "bmi", (5.0, 250.0)),
    "pain_score": ("{score}", "score", (0.0, 10.0)),
    "head_circumference": ("cm", "length", (15.0, 80.0)),
}

_SIGNAL_ALIASES = {
    "heart_rate": ["hr", "heart rate", "heartrate", "heart_rate", "ecg hr"],
    "pulse_rate": ["pulse", "pulse rate", "pulse_rate", "pr"],
    "resp_rate": ["rr", "resp", "resp rate", "respiratory rate", "resp_rate", "respiration", "rr rate"],
    "spo2": ["spo2", "%spo2", "sp02", "sao2", "o2 sat", "o2sat", "oxygen saturation", "spo2 %"],
    "sbp": ["sbp", "nbp sys", "nbpsys", "nibp sys", "nbp_sys", "systolic", "systolic bp", "nisysabp", "nbps"],
    "dbp": ["dbp", "nbp dias", "nbpdias", "nibp dia", "nbp_dias", "nbp dia", "diastolic", "diastolic bp",
            "nidiasabp", "nbpd"],
    "map": ["map", "nbp mean", "nbpmean", "nibp mean", "nbp_mean", "mean bp", "nimap", "nbpm"],
    "abp_sys": ["abp sys", "abpsys", "art sys", "abp_sys", "sysabp", "ibp sys", "abps", "arts"],
    "abp_dia": ["abp dias", "abpdias", "abp dia", "art dia", "abp_dia", "diasabp", "ibp dia", "abpd", "artd"],
    "abp_mean": ["abp mean", "abpmean", "art mean", "abp_mean", "meanabp", "ibp mean", "abpm", "artm"],
    "cvp": ["cvp"],
    "temperature": ["temp", "temperature", "body temperature", "t"],
    "weight": ["weight", "body weight", "wt"],
    "height": ["height", "body height", "ht"],
    "bmi": ["bmi", "body mass index"],
    "pain_score": ["pain", "pain score", "pain severity"],
    "head_circumference": ["head circumference", "ofc"],
}
_ALIAS = {a: name for name, aliases in _SIGNAL_ALIASES.items() for a in aliases}

#: LOINC code -> canonical signal (components of the 85354-9 BP panel included)
VITAL_LOINC: dict[str, str] = {
    "8867-4": "heart_rate",
    "76282-3": "heart_rate",  # heart rate.beat-to-beat by EKG
    "8889-8": "pulse_rate",
    "9279-1": "resp_rate",
    "59408-5": "spo2",
    "2708-6": "spo2",
    "20564-1": "spo2",
    "8480-6": "sbp",
    "8462-4": "dbp",
    "8478-0": "map",
    "76215-2": "abp_sys",
    "76213-7": "abp_dia",
    "76214-5": "abp_mean",
    "60985-9": "cvp",
    "8310-5": "temperature",
    "8331-1": "temperature",  # oral
    "8328-7": "temperature",  # axillary
    "29463-7": "weight",
    "3141-9": "weight",
    "8302-2": "height",
    "8306-3": "height",
    "39156-5": "bmi",
    "72514-3": "pain_score",
    "38208-5": "pain_score",
    "9843-4": "head_circumference",
    "8287-5": "head_circumference",
}
#: vital-sign codes that are known but not signals (growth percentiles ...): skipped, not reported
VITAL_IGNORED = {"59576-9", "8289-1", "77606-2", "59575-1"}
#: panels whose value is in their components
VITAL_PANELS = {"85354-9", "55284-4", "35094-2", "85353-1"}

_F = Callable[[Any], Any]  # a float, or an array of them, in -> the same converted


def _scale(k: float) -> _F:
    return lambda x: x * k


_UNITS: dict[str, dict[str, _F]] = {
    "rate": {u: _scale(1.0) for u in ("bpm", "/min", "1/min", "beats/min", "{beats}/min", "{beat}/min",
                                     "min-1", "/min.", "per min", "breaths/min", "{breaths}/min", "br/min",
                                     "brpm", "pm", "rpm", "{counts}/min")}
    | {"/s": _scale(60.0), "hz": _scale(60.0), "1/s": _scale(60.0)},
    "fraction": {"%": _scale(1.0), "percent": _scale(1.0), "%{oxygen}": _scale(1.0)}
    | {u: _scale(100.0) for u in ("1", "{fraction}", "fraction", "ratio", "{ratio}")},
    "pressure": {"mmhg": _scale(1.0), "mm[hg]": _scale(1.0), "mm hg": _scale(1.0), "torr": _scale(1.0),
                 "kpa": _scale(7.500617), "cmh2o": _scale(0.735559), "cm[h2o]": _scale(0.735559)},
    "temperature": {u: _scale(1.0) for u in ("degc", "cel", "°c", "c", "deg c", "celsius")}
    | {u: (lambda x: (x - 32.0) * 5.0 / 9.0) for u in ("degf", "[degf]", "°f", "f", "deg f", "fahrenheit")}
    | {"k": lambda x: x - 273.15},
    "mass": {"kg": _scale(1.0), "g": _scale(0.001), "[lb_av]": _scale(0.45359237), "lb": _scale(0.45359237),
             "lbs": _scale(0.45359237), "[oz_av]": _scale(0.028349523), "oz": _scale(0.028349523)},
    "length": {"cm": _scale(1.0), "m": _scale(100.0), "mm": _scale(0.1), "[in_i]": _scale(2.54),
               "in": _scale(2.54), "[ft_i]": _scale(30.48), "ft": _scale(30.48)},
    "bmi": {u: _scale(1.0) for u in ("kg/m2", "kg/m^2", "kg/(m2)", "kg/m²")},
    "score": {u: _scale(1.0) for u in ("{score}", "score", "1", "{#}")},
}


def canonical_signal(name: str) -> str:
    """medmm's name of a vital signal (``'HR'`` -> ``'heart_rate'``); unknown names unchanged."""
    key = re.sub(r"\s+", " ", str(name).strip().lower().replace("_", " "))
    if key in _ALIAS:
        return _ALIAS[key]
    key2 = key.replace(" ", "_")
    return key2 if key2 in SIGNALS else _ALIAS.get(key.replace(" ", ""), str(name))


def convert_unit(signal: str, unit: str | None) -> _F | None:
    """The function converting ``signal`` values in ``unit`` to its canonical unit.

    ``None`` when the unit cannot be converted. An empty unit is taken as canonical.
    """
    if signal not in SIGNALS:
        return _scale(1.0)
    canon, dim, _ = SIGNALS[signal]
    u = (unit or "").strip()
    if not u or u == canon:
        return _scale(1.0)
    return _UNITS[dim].get(u.lower()) or _UNITS[dim].get(u.lower().replace(" ", ""))


def clean_vitals(
    frame: "pd.DataFrame",
    *,
    path: Any = None,
    problems: list[MedmmError] | None = None,
    rename: bool = True,
    signal_loss: Mapping[str, SignalLoss] | None = None,
) -> "pd.DataFrame":
    """Canonical names, canonical units, range checks and de-duplication of a long frame.

    ``frame`` has :data:`LONG_COLUMNS` (``time`` datetime64, ``value`` float); its index is the
    row reported in problems. ``signal_loss`` (rules per signal, see :func:`signal_loss_rules`)
    drops the device's "no signal" readings first. Returns the cleaned frame sorted by time and
    signal (fresh index).
    """
    import numpy as np

    problems = [] if problems is None else problems
    df = frame[list(LONG_COLUMNS)].copy()
    df["time"] = vitals_times(df["time"])
    df["unit"] = df["unit"].fillna("").astype(str)
    if rename:
        mapping = {s: canonical_signal(s) for s in df["signal"].unique()}
        df["signal"] = df["signal"].map(mapping)
    if signal_loss:
        df = drop_signal_loss(df, signal_loss, path=path, problems=problems)
    keep = np.ones(len(df), dtype=bool)
    values = df["value"].to_numpy(dtype=float, copy=True)
    units = df["unit"].to_numpy(dtype=object, copy=True)
    for (signal, unit), idx in df.groupby(["signal", "unit"], sort=False).indices.items():
        if signal not in SIGNALS:
            continue
        canon, dim, (lo, hi) = SIGNALS[signal]
        fn = convert_unit(signal, unit)
        if fn is None:
            for i in idx:
                problems.append(problem(
                    f"unit {unit!r} of {signal} cannot be converted to {canon!r}",
                    path=path, row=_row(df, i), column="unit",
                    hint=f"give {signal} in one of {sorted(_UNITS[dim])}"))
            keep[idx] = False
            continue
        v = fn(values[idx])
        if dim == "fraction" and unit in ("", "%") and len(v) and np.nanmax(v) <= 1.0:
            for i in idx[:1]:
                problems.append(problem(
                    f"every {signal} value is <= 1 with unit {unit or '(none)'!r}: fractions, not %?",
                    path=path, row=_row(df, i), column="unit",
                    hint="give the unit '1' for fractions so they are converted to %"))
        values[idx] = v
        units[idx] = canon
        bad = ~((v >= lo) & (v <= hi)) & ~np.isnan(v)
        for j in np.flatnonzero(bad):
            i = idx[j]
            hint = _range_hint(signal, float(v[j]))
            problems.append(problem(
                f"impossible {signal} value {_num(frame['value'].iloc[i])} {unit} (= {v[j]:.4g} {canon})",
                path=path, row=_row(df, i), column="value", hint=hint))
        keep[idx[bad]] = False
    df["value"] = values
    df["unit"] = units
    nan = np.isnan(values)
    keep &= ~nan
    df = df[keep]
    df = df.drop_duplicates(subset=["time", "signal", "value"])
    dup = df.duplicated(subset=["time", "signal"], keep=False)
    if dup.any():
        groups = df[dup].groupby(["time", "signal"], sort=False)
        for (t, s), g in groups:
            problems.append(problem(
                f"{len(g)} different {s} values at {t} ({', '.join(f'{x:g}' for x in g['value'])}); averaged",
                path=path, row=int(g.index[0]), column="value",
                hint="keep one value per signal and time"))
        means = groups["value"].transform("mean")
        df.loc[dup, "value"] = means
        df = df.drop_duplicates(subset=["time", "signal"])
    return df.sort_values(["time", "signal"], kind="stable").reset_index(drop=True)


class Observation(NamedTuple):
    """One checked vitals observation: canonical signal, value in its canonical unit, naive UTC time."""

    time: "pd.Timestamp | None"
    signal: str
    value: float
    unit: str


_canonical_cached = lru_cache(maxsize=4096)(canonical_signal)
_converter_cached = lru_cache(maxsize=4096)(convert_unit)


def observation_time(time: Any) -> "pd.Timestamp":
    """An observation's time as a naive UTC timestamp; a :class:`SchemaError` when it is not a time."""
    import pandas as pd

    if type(time) is pd.Timestamp and time.tzinfo is None:
        return time
    try:
        t = to_timestamp(time)
    except (ValueError, TypeError):
        t = None
    if t is None:
        raise SchemaError(f"observation time {time!r} is not a time", column="time", hint="give an ISO 8601 time")
    return t


def _range_hint(signal: str, value: float) -> str:
    canon, _, (lo, hi) = SIGNALS[signal]
    hint = f"{signal} must lie in [{lo:g}, {hi:g}] {canon}"
    if signal == "temperature" and 86 <= value <= 113:
        hint += "; this looks like degF: set the unit to 'degF'"
    return hint


def validate_observation(signal: str, value: Any, unit: str | None = None, *, time: Any = None) -> Observation:
    """One numeric vitals observation checked as :func:`clean_vitals` checks a file's rows: the
    signal's canonical name, a finite number, a unit convertible to the canonical one, a
    physiologically possible value, a time (when given) made naive UTC.

    The streaming monitor and the service call it per observation (a bad one is an error naming
    the field, not a dropped row). Raises :class:`~medmm.errors.SchemaError` with ``column`` set to
    ``time``, ``value`` or ``unit``.
    """
    t = None if time is None else observation_time(time)
    sig = _canonical_cached(signal) if isinstance(signal, str) else canonical_signal(signal)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SchemaError(f"value {value!r} of {sig} is not a number", column="value",
                          hint="give a numeric value") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise SchemaError(f"value {value!r} of {sig} is not {'a number' if isinstance(value, bool) else 'finite'}",
                          column="value", hint="give a finite number")
    if unit is not None and not isinstance(unit, str):
        unit = None if unit != unit else str(unit)  # a table's empty unit cell is NaN
    conv = _converter_cached(sig, unit)
    if conv is None:
        raise SchemaError(f"unit {unit!r} of {sig} cannot be converted to {SIGNALS[sig][0]}", column="unit",
                          hint=f"give {sig} in one of {sorted(_UNITS[SIGNALS[sig][1]])}")
    v = float(conv(v))
    if sig not in SIGNALS:
        return Observation(t, sig, v, unit or "")
    lo, hi = SIGNALS[sig][2]
    if not lo <= v <= hi:
        raise SchemaError(f"{sig} {v:g} {SIGNALS[sig][0]} is physiologically impossible", column="value",
                          hint=_range_hint(sig, v))
    return Observation(t, sig, v, SIGNALS[sig][0])


def vitals_times(values: Any) -> Any:
    """Times as ``datetime64[ns]``, or ``datetime64[us]`` when they lie beyond the ns range
    (1677-2262: MIMIC's de-identified dates in the 2700s-2900s), never shifted."""
    import pandas as pd

    t = pd.to_datetime(values)
    try:
        return t.astype("datetime64[ns]")
    except pd.errors.OutOfBoundsDatetime:
        return t.astype("datetime64[us]")


@dataclass(frozen=True)
class SignalLoss:
    """Which device readings of one signal mean "no signal".

    ``zero``: a reading of exactly 0 (leads off, probe off, line closed or flushed).
    ``flat_s``: one value held unchanged for at least this many seconds (and 3 readings), a
    frozen or damped transducer; ``None`` where a steady value is physiological (a paced heart
    rate, SpO2 100 % on oxygen, a ventilator's set rate, a temperature).
    """

    zero: bool = True
    flat_s: float | None = None


#: device numerics: readings that mean "no signal", per canonical signal. A 0 is loss for every
#: rate, saturation and systemic pressure (none is compatible with a monitored, living patient
#: whose other signals go on); a central venous pressure of 0 mmHg is real, so only its flat-line is.
#: Invasive pressures vary beat to beat: one value held 15 minutes is a frozen or flushed line.
DEVICE_SIGNAL_LOSS: dict[str, SignalLoss] = {
    "heart_rate": SignalLoss(),
    "pulse_rate": SignalLoss(),
    "resp_rate": SignalLoss(),
    "spo2": SignalLoss(),
    "sbp": SignalLoss(),
    "dbp": SignalLoss(),
    "map": SignalLoss(),
    "abp_sys": SignalLoss(flat_s=900.0),
    "abp_dia": SignalLoss(flat_s=900.0),
    "abp_mean": SignalLoss(flat_s=900.0),
    "cvp": SignalLoss(zero=False, flat_s=900.0),
}


def signal_loss_rules(signal_loss: Any = "device") -> dict[str, SignalLoss]:
    """The per-signal rules from a reader's ``signal_loss`` option.

    ``"device"`` (or ``True``): :data:`DEVICE_SIGNAL_LOSS`; ``None``/``False``: none; a mapping
    ``signal -> SignalLoss | bool | None`` overrides the device rules per signal (``False`` or
    ``None`` turns a signal's rule off, ``True`` keeps its default).
    """
    if signal_loss is None or signal_loss is False:
        return {}
    if signal_loss is True or signal_loss == "device":
        return dict(DEVICE_SIGNAL_LOSS)
    if not isinstance(signal_loss, Mapping):
        raise ConfigError(f"signal_loss {signal_loss!r} is not 'device', None or a mapping of signal to SignalLoss")
    rules = dict(DEVICE_SIGNAL_LOSS)
    for name, rule in signal_loss.items():
        sig = canonical_signal(name)
        if rule is None or rule is False:
            rules.pop(sig, None)
        elif rule is True:
            rules[sig] = DEVICE_SIGNAL_LOSS.get(sig, SignalLoss())
        elif isinstance(rule, SignalLoss):
            rules[sig] = rule
        else:
            raise ConfigError(f"signal_loss[{name!r}] = {rule!r} is not a SignalLoss, True, False or None")
    return rules


def find_signal_loss(times: Any, values: Any, rule: SignalLoss) -> tuple[Any, Any]:
    """Masks ``(zero, flat)`` of the readings of one signal (in time order) that are signal loss.

    A flat-line is a run of one non-zero value over at least ``rule.flat_s`` seconds and 3
    readings; NaN readings neither break nor extend a run.
    """
    import numpy as np

    v = np.asarray(values, dtype=float)
    zero = (v == 0) if rule.zero else np.zeros(len(v), dtype=bool)
    flat = np.zeros(len(v), dtype=bool)
    if rule.flat_s is not None and len(v) >= 3:
        ok = np.flatnonzero(~np.isnan(v))
        x = v[ok]
        t = np.asarray(times).astype("datetime64[us]").astype(np.int64)[ok]
        if len(x) >= 3:
            brk = np.flatnonzero(np.diff(x) != 0) + 1
            starts = np.r_[0, brk]
            ends = np.r_[brk, len(x)]
            for a, b in zip(starts, ends):
                if b - a >= 3 and x[a] != 0 and (t[b - 1] - t[a]) >= rule.flat_s * 1e6:
                    flat[ok[a:b]] = True
    return zero, flat


def drop_signal_loss(
    frame: "pd.DataFrame",
    rules: Mapping[str, SignalLoss],
    *,
    path: Any = None,
    problems: list[MedmmError],
    column: str | None = None,
) -> "pd.DataFrame":
    """``frame`` (long, canonical signals) without its signal-loss readings, one problem per
    signal and kind (zeros, flat-lines) naming how many readings, when, and the first row."""
    import numpy as np

    if not rules or frame.empty:
        return frame
    drop = np.zeros(len(frame), dtype=bool)
    for signal, idx in frame.groupby("signal", sort=False).indices.items():
        rule = rules.get(signal)
        if rule is None:
            continue
        idx = idx[np.argsort(frame["time"].to_numpy()[idx], kind="stable")]
        zero, flat = find_signal_loss(frame["time"].to_numpy()[idx], frame["value"].to_numpy()[idx], rule)
        for mask, what, hint in (
                (zero, "are 0, the device's 'no signal' (leads or probe off, line closed or flushed)",
                 f"signal_loss={{{signal!r}: False}} keeps them if a 0 is a real measurement here"),
                (flat, f"hold one value for {rule.flat_s or 0:g} s or more (a frozen or damped line)",
                 f"signal_loss={{{signal!r}: SignalLoss(flat_s=...)}} changes the limit")):
            if not mask.any():
                continue
            sel = idx[mask]
            runs = int(np.count_nonzero(np.diff(np.r_[0, mask.astype(np.int8)]) == 1))
            times = frame["time"].iloc[sel]
            problems.append(problem(
                f"{int(mask.sum()):,} of {len(idx):,} {signal} readings {what}, in {runs} run(s) from "
                f"{times.min()} to {times.max()}; treated as signal loss and left out",
                path=path, row=_row(frame, int(sel[0])), column=column or "value", hint=hint))
            drop[sel] = True
    return frame[~drop]


def _num(x: Any) -> str:
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return repr(x)


def _row(df: "pd.DataFrame", pos: int) -> int | None:
    label = df.index[pos]
    return int(label) if isinstance(label, (int,)) or hasattr(label, "__index__") else None


def finish_vitals(df: "pd.DataFrame", problems: list[MedmmError], *, path: Any, strict: bool,
                  index_time: Any = None, report: ProblemReport | None = None) -> Vitals:
    """The :class:`~medmm.records.Vitals` of a cleaned long frame read from ``path``, as every vitals
    reader ends: ``strict`` raises the first of ``problems``, observations after ``index_time`` are
    left out, a frame left empty is a :class:`~medmm.errors.ReadError`, and the problems go to ``report``."""
    cutoff = to_timestamp(index_time) if index_time is not None else None
    if strict and problems:
        raise problems[0]
    if cutoff is not None and len(df):
        df = df[df["time"] <= cutoff].reset_index(drop=True)
    if df.empty:
        raise ReadError(
            "vitals file holds no usable observation"
            + (f" at or before {cutoff}" if cutoff is not None else "")
            + (f" ({len(problems)} problem(s), first: {problems[0].message})" if problems else ""),
            path=path,
            hint="remove it from the manifest",
        )
    report_problems(problems, report, source=path)
    return Vitals(df)


def _from_table(df: "pd.DataFrame", *, path: Any, problems: list[MedmmError], patient_id: Any) -> "pd.DataFrame":
    import pandas as pd

    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if "unit" in missing:
        df = df.assign(unit="")
        missing.remove("unit")
    if missing:
        raise ReadError(
            f"missing column(s) {missing}; found {list(df.columns)}",
            path=path,
            hint=f"a long vitals table needs the columns {list(LONG_COLUMNS)}",
        )
    if patient_id is not None and "patient_id" in df.columns:
        df = df[df["patient_id"].astype(str) == str(patient_id)]
    raw = df["value"]
    values = pd.to_numeric(raw, errors="coerce")
    for i in df.index[(values.isna() & raw.notna()).to_numpy()]:
        problems.append(problem(
            f"value {raw[i]!r} is not a number", path=path, row=int(i), column="value",
            hint="the value column must hold numbers only; put units in the unit column"))
    times = parse_times(df["time"], problems=problems, path=path, column="time")
    out = pd.DataFrame({"time": times, "signal": df["signal"].astype(str), "value": values.astype(float),
                        "unit": df["unit"].fillna("").astype(str)}, index=df.index)
    return out[out["time"].notna() & out["value"].notna()]


def _read_csv(path: str | Path) -> "pd.DataFrame":
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReadError(f"not a readable CSV ({exc})", path=path, hint="check the file") from exc


def _vitals_of_table(df: "pd.DataFrame", *, path: Any, patient_id: Any, index_time: Any, strict: bool,
                     report: ProblemReport | None, signal_loss: Any) -> Vitals:
    """How every table reader ends: columns checked, rows cleaned, problems reported."""
    problems: list[MedmmError] = []
    df = _from_table(df, path=path, problems=problems, patient_id=patient_id)
    return finish_vitals(clean_vitals(df, path=path, problems=problems, signal_loss=signal_loss_rules(signal_loss)),
                         problems, path=path, strict=strict, index_time=index_time, report=report)


def read_vitals_long(
    path: str | Path,
    *,
    patient_id: str | None = None,
    index_time: Any = None,
    strict: bool = False,
    report: ProblemReport | None = None,
    signal_loss: Any = None,
    **_: Any,
) -> Vitals:
    """Read a long-layout vitals CSV (``time, signal, value, unit``), cleaned.

    An optional ``patient_id`` column is filtered by ``patient_id``; when ``index_time`` is
    given, observations after it are left out. Rows left out go to ``report`` as problems.
    ``signal_loss="device"`` drops a monitor export's "no signal" readings (zeros, flat-lines).
    """
    return _vitals_of_table(_read_csv(path), path=path, patient_id=patient_id, index_time=index_time, strict=strict, report=report,
                            signal_loss=signal_loss)


def read_vitals_parquet(
    path: str | Path,
    *,
    patient_id: str | None = None,
    index_time: Any = None,
    strict: bool = False,
    report: ProblemReport | None = None,
    signal_loss: Any = None,
    **_: Any,
) -> Vitals:
    """Read a long-layout vitals Parquet file (``time, signal, value, unit``), cleaned."""
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types
        raise ReadError(f"not a readable Parquet file ({exc})", path=path, hint="check the file") from exc
    if "time" in df.columns and not pd.api.types.is_datetime64_any_dtype(df["time"]):
        df["time"] = df["time"].astype(str)
    elif "time" in df.columns:
        df["time"] = naive_utc(df["time"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return _vitals_of_table(df, path=path, patient_id=patient_id, index_time=index_time, strict=strict, report=report,
                            signal_loss=signal_loss)


_HEADER = re.compile(r"^\s*(?P<name>.*?)\s*(?:\[(?P<unit>[^\]]*)\]|\((?P<unit2>[^)]*)\))?\s*$")


def read_vitals_wide(
    path: str | Path,
    *,
    patient_id: str | None = None,
    index_time: Any = None,
    strict: bool = False,
    report: ProblemReport | None = None,
    time_column: str = "time",
    signal_loss: Any = None,
    **_: Any,
) -> Vitals:
    """Read a wide vitals CSV: a ``time`` column, one column per signal (``'HR [bpm]'``)."""
    import pandas as pd

    df = _read_csv(path)
    if time_column not in df.columns:
        raise ReadError(f"no {time_column!r} column; found {list(df.columns)}", path=path,
                        hint="a wide vitals CSV needs a time column and one column per signal")
    if patient_id is not None and "patient_id" in df.columns:
        df = df[df["patient_id"].astype(str) == str(patient_id)]
    signal_cols = [c for c in df.columns if c not in (time_column, "patient_id")]
    df = df.reset_index(drop=True)
    long = df.melt(id_vars=[time_column], value_vars=signal_cols, var_name="column", value_name="value",
                   ignore_index=False).dropna(subset=["value"])
    rows = long.index.to_numpy()
    parts = long["column"].map(lambda c: _HEADER.match(c).groupdict())  # type: ignore[union-attr]  # matched above
    long = pd.DataFrame({
        "time": long[time_column].to_numpy(),
        "signal": [p["name"] for p in parts],
        "value": long["value"].to_numpy(),
        "unit": [p["unit"] or p["unit2"] or "" for p in parts],
    }, index=rows)
    long.index = long.index.astype(int)
    return _vitals_of_table(long, path=path, patient_id=None, index_time=index_time, strict=strict, report=report,
                            signal_loss=signal_loss)


# --------------------------------------------------------------------------- FHIR


def vitals_from_observations(
    observations: list[dict[str, Any]],
    *,
    path: Any = None,
    problems: list[MedmmError],
) -> "pd.DataFrame":
    """A cleaned long vitals frame from flattened FHIR observations.

    ``observations`` are the rows :mod:`medmm.io.fhir` produces (``time, system, code,
    display, value, unit, category, entry``). LOINC codes in :data:`VITAL_LOINC` become
    signals; an Observation of category ``vital-signs`` with an unknown code is reported.
    """
    import pandas as pd

    rows = []
    for o in observations:
        code = o.get("code")
        signal = VITAL_LOINC.get(str(code)) if o.get("system", "").endswith("loinc.org") or not o.get("system") else None
        if signal is None:
            if o.get("category") == "vital-signs" and code not in VITAL_PANELS and code not in VITAL_IGNORED:
                problems.append(problem(
                    f"unknown LOINC code {code!r} ({o.get('display') or 'no display'}) for a vital sign; skipped",
                    path=path, row=o.get("entry"), column=f"{o.get('field', 'Observation')}.code",
                    hint=f"known vital-sign codes: {sorted(VITAL_LOINC)}"))
            continue
        if o.get("value") is None:
            continue
        rows.append((o.get("entry"), o["time"], signal, o["value"], o.get("unit") or ""))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(LONG_COLUMNS, ("datetime64[ns]", str, float, str))})
    df = pd.DataFrame([r[1:] for r in rows], columns=list(LONG_COLUMNS), index=[r[0] if r[0] is not None else -1
                                                                                for r in rows])
    df["time"] = pd.to_datetime(df["time"])
    df["value"] = df["value"].astype(float)
    df = df[df["time"].notna()]
    return clean_vitals(df, path=path, problems=problems, rename=False)


def read_fhir_vitals(
    path: str | Path,
    *,
    index_time: Any = None,
    strict: bool = False,
    report: ProblemReport | None = None,
    **_: Any,
) -> Vitals:
    """Read the vital-sign Observations of a FHIR R4 Bundle (JSON), by LOINC code."""
    from .fhir import load_bundle

    bundle = load_bundle(path, only={"Observation"})
    problems = list(bundle.problems)
    df = vitals_from_observations(bundle.observations, path=path, problems=problems)
    return finish_vitals(df, problems, path=path, strict=strict, index_time=index_time, report=report)
