"""A streaming health monitor: vital signs in one observation at a time, NEWS2 and a model's risk
out, with alerts that carry an escalation level and an explanation.

Per patient the monitor keeps a window of observations (``window_hours``). After each one it
recomputes NEWS2 from the latest value of each Chart 1 parameter (values older than
``stale_hours`` are not used) and, when a :class:`~medmm.deploy.runtime.Predictor` is attached,
the model's risk from whatever modalities are present: the vitals window, plus any notes, EHR
row or image registered with :meth:`HealthMonitor.set_context`.

Escalation levels follow NEWS2 Chart 4 (0 none, 1 low, 2 low-medium, 3 medium, 4 high); the
model adds level 2 when its risk reaches ``model_threshold`` and 3 at ``model_high``. An alert
is raised when the level reaches ``alert_level`` and either rises above the last alert's level
or ``cooldown_hours`` have passed since it; the level falling below ``alert_level`` re-arms
the patient.

Unrecorded consciousness and oxygen are assumed *alert* and *on air* (``assume_normal``),
which is stated in the explanation of every alert that relied on it.

**Sources.** Two NEWS2 parameters have two sources (:data:`NEWS2_SOURCES`, most trusted
first): pulse from the ECG heart rate, else the pleth pulse rate; systolic pressure from the
invasive arterial line, else the cuff. A parameter uses the most trusted source with a valid
reading in the last ``source_window_minutes``, else the newest valid reading of any source
(not older than ``stale_hours``); the result names it (``news2['sources']``). When both
sources have a recent valid reading and disagree by more than ``agreement`` (pulse 10 bpm,
systolic 20 mmHg) the disagreement is stated in the state and in every alert: a pulse deficit
or an artifact (ECG double counting, a damped line, a loose probe) that a nurse must check.

**Artifact rejection.** Impossible values are refused (:class:`SchemaError`). The device's
"no signal" readings (per signal, :data:`~medmm.io.vitals.DEVICE_SIGNAL_LOSS`: a 0 from the
ECG, the pleth, the impedance respiration or an arterial line; a frozen arterial line held
unchanged 15 minutes) are signal loss: never scored, never shown to the model; the source
counts as lost until a valid reading comes, the parameter falls back to its other source, and
a *technical* alert (``kind='technical'``, band ``signal-lost``) is raised once per loss instead
of a NEWS2 escalation.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SchemaError
from ..io.vitals import canonical_signal, observation_time, signal_loss_rules, validate_observation
from .news2 import BAND_LEVEL, NEWS2Error, News2Result, news2, parse_on_oxygen

_canonical = lru_cache(maxsize=4096)(canonical_signal)

__all__ = ["MonitorConfig", "Alert", "HealthMonitor", "replay", "NEWS2_SIGNALS", "NEWS2_SOURCES", "ReplayResult"]

#: canonical vitals signal -> NEWS2 parameter
NEWS2_SIGNALS = {
    "resp_rate": "resp_rate",
    "spo2": "spo2",
    "sbp": "sbp",
    "abp_sys": "sbp",
    "heart_rate": "pulse",
    "pulse_rate": "pulse",
    "temperature": "temperature",
    "consciousness": "consciousness",
    "on_oxygen": "on_oxygen",
    "o2_flow": "on_oxygen",
    "fio2": "on_oxygen",
}
#: NEWS2 parameter -> its source signals, most trusted first
NEWS2_SOURCES: dict[str, tuple[str, ...]] = {
    "resp_rate": ("resp_rate",),
    "spo2": ("spo2",),
    "sbp": ("abp_sys", "sbp"),
    "pulse": ("heart_rate", "pulse_rate"),
    "temperature": ("temperature",),
}
#: how a source is named in explanations
SOURCE_LABELS = {"heart_rate": "heart_rate (ECG)", "pulse_rate": "pulse_rate (pleth)",
                 "abp_sys": "abp_sys (arterial line)", "sbp": "sbp (cuff)"}
_UNITS = {"pulse": "bpm", "sbp": "mmHg"}
#: LOINC codes of the NEWS2 parameters that are not vital signs in medmm.io.vitals
EXTRA_LOINC = {
    "67775-7": "consciousness",  # level of responsiveness (AVPU)
    "80288-4": "consciousness",  # level of consciousness
    "3151-8": "o2_flow",  # inhaled oxygen flow rate
    "3150-0": "fio2",  # inhaled oxygen concentration
}
_LEVEL_NAME = {v: k for k, v in BAND_LEVEL.items()}


@dataclass
class MonitorConfig:
    window_hours: float = 48.0
    stale_hours: float = 12.0
    alert_level: int = 2
    cooldown_hours: float = 4.0
    model_threshold: float = 0.5
    model_high: float = 0.8
    model_task: str | None = None
    model_every_hours: float = 0.0  # recompute the model's risk at most this often per patient (0: every time)
    use_model: bool = True
    assume_normal: bool = True
    spo2_scale: int = 1
    signal_loss: Any = "device"  # device "no signal" readings: see medmm.io.vitals.signal_loss_rules
    source_window_minutes: float = 15.0  # a source's reading this recent is preferred by priority
    agreement: dict[str, float] = field(default_factory=lambda: {"pulse": 10.0, "sbp": 20.0})
    technical_alerts: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.alert_level <= 4:
            raise ConfigError(f"alert_level {self.alert_level} is outside 0-4")
        if not 0 < self.model_threshold <= self.model_high <= 1:
            raise ConfigError("need 0 < model_threshold <= model_high <= 1")


@dataclass
class Alert:
    """One alert: who, when, how urgent, and why."""

    patient_id: str
    time: Any
    level: int
    band: str
    source: str  # "news2", "model" or "news2+model"
    news2: dict[str, Any]
    risk: float | None
    explanation: list[str] = field(default_factory=list)
    kind: str = "clinical"  # "clinical" (NEWS2 / model escalation) or "technical" (signal lost)

    def to_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "time": str(self.time), "kind": self.kind, "level": self.level,
                "band": self.band, "source": self.source, "news2": self.news2, "risk": self.risk,
                "explanation": self.explanation}


@dataclass
class _Patient:
    obs: deque = field(default_factory=deque)  # (time, signal, value, unit)
    latest: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # source signal -> (time, valid value)
    lost: dict[str, tuple[Any, str, str]] = field(default_factory=dict)  # source signal -> (since, why, note)
    lost_alerted: set = field(default_factory=set)
    runs: dict[str, list] = field(default_factory=dict)  # signal -> [value, since, count] (flat-lines)
    context: dict[str, Any] = field(default_factory=dict)  # modality -> value for the model
    spo2_scale: int | None = None
    last_alert_level: int = 0
    last_alert_time: Any = None
    last_model_time: Any = None
    risk: float | None = None
    risk_explanation: list[str] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)


class HealthMonitor:
    """Feed observations with :meth:`observe` (plain values) or :meth:`observe_fhir`
    (Observations or Bundles); each returns the alert it raised, if any."""

    def __init__(self, predictor: Any = None, config: MonitorConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or MonitorConfig()
        self.patients: dict[str, _Patient] = defaultdict(_Patient)
        self.alerts: list[Alert] = []
        self._rules = signal_loss_rules(self.config.signal_loss)
        self._cut: tuple[Any, Any] = (None, None)  # (time, time - window) of the last observation
        if predictor is not None:
            columns = tuple(getattr(predictor, "columns", predictor.tasks))
            model = getattr(predictor, "model", None)
            self._risk_column = None  # a named output (survival risk at a horizon, a class) instead of a column
            task = self.config.model_task or (model.tasks[0] if hasattr(model, "heads") else columns[0])
            if hasattr(model, "heads") and (task not in columns or task not in model.heads
                                            or model.heads[task].kind != "binary"):
                from ..errors import MedmmError
                from ..models.outputs import risk_column

                candidates = [task] if self.config.model_task else list(model.tasks)
                for k, name in enumerate(candidates):  # by default: the first task that gives a risk
                    try:
                        self._risk_column = risk_column(model, name)
                        break
                    except MedmmError:
                        if k == len(candidates) - 1:
                            raise
                self._task_index = 0
            elif task not in columns:
                raise ConfigError(f"the model has no output {task!r}", hint=f"choose one of {columns}")
            else:
                self._task_index = columns.index(task)

    # ------------------------------------------------------------------ input
    def set_context(self, patient_id: str, *, notes: Any = None, ehr: Any = None, image: Any = None,
                    spo2_scale: int | None = None) -> None:
        """Register a patient's other modalities (for the model) and their SpO2 scale."""
        p = self.patients[str(patient_id)]
        for name, value in (("notes", notes), ("ehr", ehr), ("image", image)):
            if value is not None:
                p.context[name] = value
        if spo2_scale is not None:
            p.spo2_scale = int(spo2_scale)

    def observe(self, patient_id: str, time: Any, signal: str, value: Any, unit: str | None = None) -> Alert | None:
        """One observation. ``signal`` is any name medmm knows (``HR``, ``heart_rate``, ...),
        ``consciousness`` (ACVPU), ``on_oxygen`` (bool) or ``o2_flow`` (L/min; > 0 is oxygen)."""
        pid = str(patient_id)
        alerts = self._evaluate(pid, self.patients[pid], self._ingest(pid, time, signal, value, unit))
        clinical = [a for a in alerts if a.kind == "clinical"]
        return (clinical or alerts or [None])[0]

    def observe_many(self, patient_id: str, observations: Any) -> list[Alert]:
        """Observations ``(time, signal, value, unit)`` in the order given; each run of observations
        with the same time (a set of vitals charted together) is scored once, after the whole set,
        not signal by signal: NEWS2 sees the set, and the model runs once per time, not once per
        observation. A bad observation raises with ``observation_index`` set to its position."""
        pid = str(patient_id)
        p = self.patients[pid]
        alerts: list[Alert] = []
        last = None
        for k, (time, signal, value, unit) in enumerate(observations):
            try:
                t = observation_time(time)
                if last is not None and t != last:  # the previous set is complete: score it
                    alerts += self._evaluate(pid, p, last)
                last = self._ingest(pid, t, signal, value, unit)
            except Exception as exc:
                exc.observation_index = k  # type: ignore[attr-defined]
                raise
        if last is not None:
            alerts += self._evaluate(pid, p, last)
        return alerts

    def _ingest(self, patient_id: str, time: Any, signal: str, value: Any, unit: str | None) -> Any:
        """Validate one observation and add it to the patient's window; returns its time."""
        pid = str(patient_id)
        t = observation_time(time)
        sig = _canonical(signal) if isinstance(signal, str) else canonical_signal(signal)
        p = self.patients[pid]
        param = NEWS2_SIGNALS.get(sig)
        if param == "consciousness":
            from .news2 import normalise_consciousness

            self._set_latest(p, "consciousness", t, normalise_consciousness(value))
        elif param == "on_oxygen":
            if sig == "on_oxygen":
                on = parse_on_oxygen(value)
                if on is None:
                    raise SchemaError("on_oxygen has no value", column="value", hint="give yes/no, oxygen/air or 1/0")
            elif sig == "fio2":  # above room air (21%, or 0.21 as a fraction)
                v = _num(value, sig)
                on = v > (21.0 if v > 1 else 0.21)
            else:  # oxygen flow rate
                on = _num(value, sig) > 0
            self._set_latest(p, "on_oxygen", t, bool(on))
        else:
            _, sig, v, canon_unit = validate_observation(sig, value, unit)
            lost = self._signal_lost(p, sig, t, v)
            if lost is not None:
                return t
            p.obs.append((t, sig, v, canon_unit))
            if param:
                self._set_latest(p, sig, t, v)
        if self._cut[0] is not t:  # a charted set shares one time: one subtraction per set
            self._cut = (t, t - _delta(hours=self.config.window_hours))
        cutoff = self._cut[1]
        while p.obs and p.obs[0][0] < cutoff:
            p.obs.popleft()
        return t

    def observe_fhir(self, resource: dict[str, Any], *, patient_id: str | None = None) -> list[Alert]:
        """Observations from a FHIR Observation or Bundle (LOINC codes, as medmm.io.fhir reads them)."""
        from ..io.fhir import ref_id, load_bundle
        from ..io.vitals import VITAL_LOINC, canonical_signal

        if not isinstance(resource, dict) or "resourceType" not in resource:
            raise SchemaError("not a FHIR resource (no 'resourceType')", column="resourceType",
                              hint="give a FHIR R4 Observation or Bundle")
        pid = patient_id
        if pid is None:
            subjects = [ref_id(r.get("subject")) for r in _resources(resource)]
            subjects = [s for s in subjects if s]
            pid = subjects[0] if subjects else None
        bundle = load_bundle(data=resource, only={"Observation"})
        pid = pid or bundle.patient_id
        if not pid:
            raise SchemaError("the Observation names no patient", column="Observation.subject",
                              hint="give subject.reference, or the patient id in the URL")
        rows = []
        for o in sorted(bundle.observations, key=lambda o: o["time"]):
            sig = VITAL_LOINC.get(o.get("code")) or EXTRA_LOINC.get(o.get("code"))
            if sig is not None and o.get("value") is not None:
                rows.append((o["time"], canonical_signal(sig), o["value"], o.get("unit") or None))
        return self.observe_many(pid, rows)

    # ------------------------------------------------------------------ state
    def state(self, patient_id: str) -> dict[str, Any]:
        """The latest NEWS2, model risk and alert state of a patient."""
        pid = str(patient_id)
        if pid not in self.patients:
            raise KeyError(pid)
        p = self.patients[pid]
        return {"patient_id": pid, "n_observations": len(p.obs), **p.last,
                "last_alert_level": p.last_alert_level,
                "last_alert_time": None if p.last_alert_time is None else str(p.last_alert_time)}

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _set_latest(p: _Patient, key: str, t: Any, value: Any) -> None:
        old = p.latest.get(key)
        if old is None or t >= old[0]:
            p.latest[key] = (t, value)
            lost = p.lost.get(key)
            if lost is not None and t >= lost[0]:  # the signal is back
                del p.lost[key]
                p.lost_alerted.discard(key)

    def _signal_lost(self, p: _Patient, sig: str, t: Any, v: float) -> str | None:
        """Why reading ``v`` of ``sig`` at ``t`` is the device's "no signal" (None: it is valid)."""
        rule = self._rules.get(sig)
        if rule is None:
            return None
        why = None
        if rule.zero and v == 0:
            p.runs.pop(sig, None)
            why = "reading 0, the device's 'no signal' (leads or probe off, line closed or flushed)"
        elif rule.flat_s is not None:
            run = p.runs.get(sig)
            if run is not None and run[0] == v and t >= run[1]:
                run[2] += 1
                if run[2] >= 3 and (t - run[1]).total_seconds() >= rule.flat_s:
                    why = f"held at {v:g} since {run[1]} (a frozen or damped line)"
            else:
                p.runs[sig] = [v, t, 1]
        if why is None:
            return None
        old = p.latest.get(sig)
        if old is None or t >= old[0]:
            p.latest.pop(sig, None)
            if sig not in p.lost:
                p.lost[sig] = (t, why, f"{SOURCE_LABELS.get(sig, sig)} signal lost since {t}: {why}; not scored")
        return why

    def news2_of_readings(self, latest: dict[str, tuple[Any, float]], t: Any) -> tuple[News2Result, list[str]]:
        """NEWS2 at ``t`` from the latest reading of each source signal (``signal -> (time, value)``),
        by this monitor's rules (staleness, source choice and agreement): the score and its notes."""
        p = _Patient()
        p.latest.update(latest)
        return self._news2(p, t)

    def _news2(self, p: _Patient, t: Any) -> tuple[News2Result, list[str]]:
        cfg = self.config
        stale = t - _delta(hours=cfg.stale_hours)
        recent = t - _delta(minutes=cfg.source_window_minutes)
        fresh = {k: v for k, (tt, v) in p.latest.items() if tt >= stale and k in ("on_oxygen", "consciousness")}
        notes: list[str] = []
        sources: dict[str, str] = {}
        for param, srcs in NEWS2_SOURCES.items():
            cands = [(s, p.latest[s]) for s in srcs if s in p.latest and p.latest[s][0] >= stale]
            if not cands:
                continue
            pick = next(((s, tv) for s, tv in cands if tv[0] >= recent), None) or max(cands, key=lambda c: c[1][0])
            fresh[param] = pick[1][1]
            if len(srcs) > 1:
                sources[param] = SOURCE_LABELS.get(pick[0], pick[0])
                both = [(s, tv) for s, tv in cands if tv[0] >= recent]
                limit = cfg.agreement.get(param)
                if len(both) >= 2 and limit is not None:
                    (s1, (_, v1)), (s2, (_, v2)) = both[:2]
                    if abs(v1 - v2) > limit:
                        notes.append(f"{SOURCE_LABELS.get(s1, s1)} {v1:g} and {SOURCE_LABELS.get(s2, s2)} {v2:g} "
                                     f"disagree by {abs(v1 - v2):g} {_UNITS.get(param, '')} (> {limit:g}): NEWS2 uses "
                                     f"{sources[param]}; check the patient, the leads and the probe or line")
        notes += [note for _, _, note in p.lost.values()]
        on_oxygen = fresh.get("on_oxygen")
        consciousness = fresh.get("consciousness")
        if self.config.assume_normal:
            if on_oxygen is None:
                on_oxygen = False
                notes.append("oxygen not recorded: assumed on air")
            if consciousness is None:
                consciousness = "A"
                notes.append("consciousness not recorded: assumed alert")
        res = news2(resp_rate=fresh.get("resp_rate"), spo2=fresh.get("spo2"), on_oxygen=on_oxygen,
                    sbp=fresh.get("sbp"), pulse=fresh.get("pulse"), consciousness=consciousness,
                    temperature=fresh.get("temperature"), spo2_scale=p.spo2_scale or self.config.spo2_scale,
                    sources=sources)
        return res, notes

    def _model_risk(self, pid: str, p: _Patient, t: Any) -> None:
        import pandas as pd

        from ..records import Missing, PatientRecord, Vitals

        cfg = self.config
        if self.predictor is None or not cfg.use_model:
            return
        if (cfg.model_every_hours > 0 and p.last_model_time is not None
                and t - p.last_model_time < pd.Timedelta(hours=cfg.model_every_hours)):
            return
        frame = pd.DataFrame(list(p.obs), columns=["time", "signal", "value", "unit"])
        from ..io.vitals import vitals_times

        frame["time"] = vitals_times(frame["time"])
        rec = PatientRecord(pid, vitals=Vitals(frame) if len(frame) else Missing("empty"),
                            notes=p.context.get("notes", Missing()), ehr=p.context.get("ehr", Missing()),
                            image=p.context.get("image", Missing()), index_time=t)
        base = self.predictor.preprocessor.transform(rec)
        present = [m for m in self.predictor.modalities if base.get(m) is not None]
        # leave-one-modality-out: what the risk rests on
        items = [base] + [{**base, m: None} for m in present]
        values = self.predictor.predict_values(items)
        if self._risk_column is not None:
            from ..models.outputs import task_outputs

            probs = task_outputs(self.predictor.model, values)[self._risk_column]
            task = self._risk_column
        else:
            probs = values[:, self._task_index]
            task = tuple(getattr(self.predictor, "columns", self.predictor.tasks))[self._task_index]
        p.risk = float(probs[0])
        p.last_model_time = t
        expl = [f"model risk of {task} {p.risk:.2f} from {', '.join(present) or 'no modality (the prior)'}"]
        contrib = sorted(((float(probs[0] - probs[k + 1]), m) for k, m in enumerate(present)), reverse=True)
        for d, m in contrib:
            expl.append(f"{m} {'raises' if d >= 0 else 'lowers'} the risk by {abs(d):.2f}")
        absent = [m for m in self.predictor.modalities if m not in present]
        if absent:
            expl.append(f"not available to the model: {', '.join(absent)}")
        p.risk_explanation = expl

    def _evaluate(self, pid: str, p: _Patient, t: Any) -> list[Alert]:
        out = []
        technical = self._technical(pid, p, t)
        if technical is not None:
            out.append(technical)
        clinical = self._clinical(pid, p, t)
        if clinical is not None:
            out.append(clinical)
        return out

    def _technical(self, pid: str, p: _Patient, t: Any) -> Alert | None:
        new = [s for s in p.lost if s not in p.lost_alerted]
        if not new or not self.config.technical_alerts:
            return None
        p.lost_alerted.update(new)
        expl = []
        for s in new:
            since, why, _ = p.lost[s]
            param = NEWS2_SIGNALS.get(s)
            other = [o for o in NEWS2_SOURCES.get(param or "", ()) if o != s and o in p.latest]
            fallback = (f"NEWS2 uses {SOURCE_LABELS.get(other[0], other[0])}" if other
                        else f"{param} is not scored until a valid reading comes" if param else "not used")
            expl.append(f"{SOURCE_LABELS.get(s, s)} signal lost since {since}: {why}; {fallback}")
        alert = Alert(pid, t, 0, "signal-lost", "device", {}, None, expl, kind="technical")
        self.alerts.append(alert)
        return alert

    def _clinical(self, pid: str, p: _Patient, t: Any) -> Alert | None:
        import pandas as pd

        cfg = self.config
        res, assumed = self._news2(p, t)
        self._model_risk(pid, p, t)
        model_level = 0
        if p.risk is not None:
            model_level = 3 if p.risk >= cfg.model_high else 2 if p.risk >= cfg.model_threshold else 0
        level = max(res.level, model_level)
        p.last = {"time": str(t), "news2": res.to_dict(), "risk": p.risk, "level": level, "notes": list(assumed),
                  "signal_lost": {s: {"since": str(since), "why": why} for s, (since, why, _) in p.lost.items()},
                  "band": _LEVEL_NAME[level] if level == res.level or model_level == 0 else f"model-{_LEVEL_NAME[level]}"}
        if level < cfg.alert_level:
            p.last_alert_level = 0  # re-armed
            return None
        due = (level > p.last_alert_level or p.last_alert_time is None
               or t - p.last_alert_time >= pd.Timedelta(hours=cfg.cooldown_hours))
        if not due:
            return None
        source = "+".join(s for s, lv in (("news2", res.level), ("model", model_level)) if lv >= cfg.alert_level)
        expl = [f"NEWS2 {res.total} ({res.band}): {res.response}"] + res.explain()
        if res.missing:
            expl.append(f"not observed in the last {cfg.stale_hours:g} h: {', '.join(res.missing)}")
        expl += assumed + p.risk_explanation
        alert = Alert(pid, t, level, _LEVEL_NAME[level], source, res.to_dict(), p.risk, expl)
        p.last_alert_level = level
        p.last_alert_time = t
        self.alerts.append(alert)
        return alert


@lru_cache(maxsize=64)
def _delta(*, hours: float = 0.0, minutes: float = 0.0) -> Any:
    import pandas as pd

    return pd.Timedelta(hours=hours, minutes=minutes)


def _resources(resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource.get("resourceType") == "Bundle":
        return [e.get("resource") for e in resource.get("entry") or [] if isinstance(e, dict)
                and isinstance(e.get("resource"), dict)]
    return [resource]


def _num(value: Any, signal: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SchemaError(f"value {value!r} of {signal} is not a number", column="value",
                          hint="give a numeric value") from None
    if not math.isfinite(v):
        raise SchemaError(f"value {value!r} of {signal} is not finite", column="value", hint="give a finite number")
    return v


# ---------------------------------------------------------------------- replay


@dataclass
class ReplayResult:
    table: Any  # DataFrame: strategy, threshold, sensitivity, false_alarm_rate, alerts, alerts_per_patient_day
    alerts: Any  # DataFrame of every alert of every strategy
    patient_days: float
    n_patients: int
    n_positive: int


def _observation_stream(source: Any) -> tuple[Any, dict[str, dict[str, Any]], dict[str, float]]:
    """(long frame patient_id,time,signal,value,unit; context per patient; labels) from a cohort
    (manifest path or loaded records) or a long vitals CSV/Parquet with a ``patient_id`` column."""
    import pandas as pd

    from ..records import Missing

    records = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix == ".parquet":
            return pd.read_parquet(path), {}, {}
        head = pd.read_csv(path, nrows=0).columns
        if {"patient_id", "time", "signal", "value"} <= set(head):
            return pd.read_csv(path), {}, {}
        from ..cohort import load_cohort

        records = load_cohort(path, progress=False).records
    elif hasattr(source, "records"):
        records = source.records
    elif isinstance(source, list):
        records = source
    elif hasattr(source, "columns"):
        return source, {}, {}
    if records is None:
        raise SchemaError(f"cannot replay {type(source).__name__}", hint="give a manifest or a long vitals table")
    frames, context, labels = [], {}, {}
    for r in records:
        if isinstance(r.vitals, Missing):
            continue
        f = r.vitals.frame.copy()
        f["time"] = f["time"].astype("datetime64[us]")  # ns and us (de-identified dates) frames concatenate
        f.insert(0, "patient_id", r.patient_id)
        frames.append(f)
        context[r.patient_id] = {m: getattr(r, m) for m in ("notes", "ehr", "image")
                                 if not isinstance(getattr(r, m), Missing)}
        labels[r.patient_id] = dict(r.labels)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["patient_id", "time", "signal",
                                                                                       "value", "unit"])), context, labels


def replay(source: Any, *, outcomes: dict[str, float] | Any = None, task: str | None = None, predictor: Any = None,
           config: MonitorConfig | None = None, model_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7),
           news2_levels: tuple[int, ...] = (2, 3, 4), use_context: bool = True) -> ReplayResult:
    """Replay recorded vitals against outcome labels: sensitivity (share of positive patients with at
    least one alert) against alert burden (alerts per patient-day), for NEWS2 alone at each alert
    level in ``news2_levels`` and NEWS2 with the model at each threshold in ``model_thresholds``.

    ``source`` is a cohort manifest (labels and other modalities come with it) or a long vitals
    table with ``patient_id``; ``outcomes`` maps patient id to 0/1 (or a frame with
    ``patient_id`` and ``label``) and overrides the cohort's labels for ``task``.
    """
    import pandas as pd

    base = config or MonitorConfig()
    frame, context, labels = _observation_stream(source)
    frame = frame.copy()
    frame["time"] = pd.to_datetime(frame["time"])
    frame["patient_id"] = frame["patient_id"].astype(str)
    frame = frame.sort_values(["time", "patient_id"], kind="stable")
    task = task or (base.model_task or (predictor.tasks[0] if predictor is not None else None))
    if outcomes is None:
        y = {pid: lab.get(task) for pid, lab in labels.items()}
    elif hasattr(outcomes, "columns"):
        y = dict(zip(outcomes["patient_id"].astype(str), outcomes["label"]))
    else:
        y = {str(k): v for k, v in outcomes.items()}
    y = {k: float(v) for k, v in y.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    frame = frame[frame["patient_id"].isin(y)]
    if frame.empty:
        raise SchemaError("no observations of a patient with a known outcome", hint="check patient ids and labels")
    span = frame.groupby("patient_id")["time"].agg(["min", "max"])
    patient_days = float(((span["max"] - span["min"]).dt.total_seconds() / 86400.0).clip(lower=1 / 24).sum())
    positives = {k for k, v in y.items() if v >= 0.5 and k in span.index}
    negatives = {k for k, v in y.items() if v < 0.5 and k in span.index}
    from dataclasses import replace

    strategies = [("news2", lv, replace(base, alert_level=lv, use_model=False), None) for lv in news2_levels]
    if predictor is not None:
        strategies += [("news2+model", th, replace(base, alert_level=2, use_model=True, model_task=task,
                                                   model_threshold=th, model_high=max(th, base.model_high)), predictor)
                       for th in model_thresholds]
    rows, all_alerts = [], []
    for name, thr, cfg, pred in strategies:
        mon = HealthMonitor(pred, cfg)
        if use_context:
            for pid, ctx in context.items():
                if pid in y:
                    mon.set_context(pid, **ctx)
        for rec in frame.itertuples(index=False):
            try:
                mon.observe(rec.patient_id, rec.time, rec.signal, rec.value, getattr(rec, "unit", None))
            except (SchemaError, NEWS2Error):
                continue
        clinical = [a for a in mon.alerts if a.kind == "clinical"]  # technical alerts are not escalations
        alerted = {a.patient_id for a in clinical}
        rows.append({"strategy": name, "threshold": thr, "patients": len(span), "positives": len(positives),
                     "sensitivity": len(alerted & positives) / max(len(positives), 1),
                     "false_alarm_rate": len(alerted & negatives) / max(len(negatives), 1),
                     "alerts": len(clinical), "alerts_per_patient_day": len(clinical) / patient_days,
                     "technical_alerts": len(mon.alerts) - len(clinical)})
        all_alerts += [{"strategy": name, "threshold": thr, **a.to_dict()} for a in mon.alerts]
    table = pd.DataFrame(rows)
    table["sensitivity"] = table["sensitivity"].astype(float).round(4)
    return ReplayResult(table, pd.DataFrame(all_alerts), patient_days, len(span), len(positives))
