"""Clinical task types: what a label is, which columns hold it, and how it is checked.

A task is declared in the experiment config's ``model.tasks`` (the same mapping that chooses the
heads, :mod:`medmm.models.heads`)::

    model:
      tasks:
        tumor: binary
        grade: {kind: multiclass, classes: [G1, G2, G3]}
        sbp_next: {kind: regression, unit: mmHg}
        comorbid: {kind: multilabel, labels: [chf, copd]}
        death: {kind: survival, method: cox, horizon: 1825, horizons: [365, 1095], time_unit: days}

==============  ===========================================  ============================================
kind            manifest columns                             label values
==============  ===========================================  ============================================
``binary``      ``label_<task>``                             0 / 1
``multiclass``  ``label_<task>``                             a class name of ``classes``, or its index 0..K-1
``multilabel``  ``label_<task>.<label>`` per label           0 / 1 each
``regression``  ``label_<task>``                             a number, in ``unit``
``survival``    ``label_<task>.time``, ``label_<task>.event``  follow-up time >= 0; 1 event, 0 censored
==============  ===========================================  ============================================

A survival task may name other label columns with ``time`` / ``event`` (``time: followup``
reads ``label_followup``). ``horizon`` censors administratively: a patient followed beyond it
is censored at the horizon, so an event after the horizon never counts (:meth:`TaskSpec.censor`).
``horizons`` are the times at which risk is reported and evaluated (default: the horizon).
:func:`validate_task_labels` checks a manifest's label columns against the declared types.

A manifest can carry its own task types in the ``tasks:`` section of its sidecar
``<manifest stem>.modalities.yaml`` (schema ``medmm/schemas/modalities.schema.json``)::

    tasks:
      grade: {kind: multiclass, classes: [G1, G2, G3]}
      death: {kind: survival, horizon: 1825}

The experiment config's ``model.tasks`` wins over it, task by task (:func:`merge_task_declarations`).
A multiclass column may hold the class names (``G2``): :func:`encode_class_labels` maps them to
their indices when the manifest is read, and a value that is no declared class is a
:class:`~medmm.errors.ManifestError` naming the row, the column, the value and the classes. When
every class name is itself a number (``classes: [1, 2, 3]``), a value is read as a name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import ConfigError

__all__ = ["TASK_KINDS", "SURVIVAL_METHODS", "TaskSpec", "task_specs", "validate_task_labels", "check_task_labels",
           "read_task_declarations", "merge_task_declarations", "encode_class_labels"]

TASK_KINDS = ("binary", "multiclass", "multilabel", "regression", "survival")
SURVIVAL_METHODS = ("cox", "discrete")
#: head kinds registered for survival (``survival`` picks by ``method``)
SURVIVAL_HEADS = ("survival", "cox", "discrete_time")

_OPTIONS = {
    "binary": set(),
    "multiclass": {"classes", "n_classes", "label_smoothing"},
    "multilabel": {"labels", "n_labels"},
    "regression": {"unit", "loss"},
    "survival": {"time", "event", "horizon", "horizons", "time_unit", "method", "n_bins", "ties"},
}
_HEAD_OPTIONS = {"dropout", "project"}


@dataclass(frozen=True)
class TaskSpec:
    """One task: its kind and what its labels mean (see the module docstring)."""

    name: str
    kind: str = "binary"
    classes: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    unit: str | None = None
    time: str | None = None
    event: str | None = None
    horizon: float | None = None
    horizons: tuple[float, ...] = ()
    time_unit: str = "days"
    method: str = "cox"
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_config(cls, name: str, spec: Any) -> "TaskSpec":
        """The spec of ``model.tasks[name]``: a kind (``"binary"``) or ``{"kind": ..., **options}``."""
        opts = {} if isinstance(spec, str) else dict(spec or {})
        kind = spec if isinstance(spec, str) else opts.pop("kind", "binary")
        if kind in SURVIVAL_HEADS:
            if kind != "survival":
                opts.setdefault("method", "cox" if kind == "cox" else "discrete")
            kind = "survival"
        if kind not in TASK_KINDS:
            raise ConfigError(f"task {name!r}: unknown kind {kind!r}", column=f"model.tasks.{name}",
                              hint=f"use one of {TASK_KINDS}")
        unknown = sorted(set(opts) - _OPTIONS[kind] - _HEAD_OPTIONS)
        if unknown:
            raise ConfigError(f"task {name!r} ({kind}) has no option {unknown}", column=f"model.tasks.{name}",
                              hint=f"options of a {kind} task: {sorted(_OPTIONS[kind] | _HEAD_OPTIONS)}")
        classes = tuple(str(c) for c in opts.get("classes") or ())
        if kind == "multiclass":
            n = opts.get("n_classes")
            if not classes and not n:
                raise ConfigError(f"multiclass task {name!r} needs its classes", column=f"model.tasks.{name}",
                                  hint="give classes: [name0, name1, ...] (label k is classes[k]) or n_classes")
            if classes and n and int(n) != len(classes):
                raise ConfigError(f"task {name!r}: n_classes {n} but {len(classes)} classes",
                                  column=f"model.tasks.{name}", hint="give one of the two")
            classes = classes or tuple(str(k) for k in range(int(n or 0)))
            if len(classes) < 2:
                raise ConfigError(f"multiclass task {name!r} needs at least 2 classes", column=f"model.tasks.{name}")
        labels = tuple(str(x) for x in opts.get("labels") or ())
        if kind == "multilabel" and not labels:
            labels = tuple(str(k) for k in range(int(opts.get("n_labels") or 0)))
            if not labels:
                raise ConfigError(f"multilabel task {name!r} needs labels", column=f"model.tasks.{name}",
                                  hint="give labels: [a, b, ...] (columns label_<task>.<label>)")
        horizon = opts.get("horizon")
        horizons = tuple(float(h) for h in (opts.get("horizons") or ()))
        if kind == "survival":
            method = opts.get("method", "cox")
            if method not in SURVIVAL_METHODS:
                raise ConfigError(f"task {name!r}: survival method {method!r} is not supported",
                                  column=f"model.tasks.{name}.method", hint=f"use one of {SURVIVAL_METHODS}")
            if horizon is not None and float(horizon) <= 0:
                raise ConfigError(f"task {name!r}: horizon {horizon} is not positive", column=f"model.tasks.{name}")
            if method == "discrete" and horizon is None:
                raise ConfigError(f"discrete-time survival task {name!r} needs a horizon",
                                  column=f"model.tasks.{name}.horizon",
                                  hint="the time axis 0..horizon is cut into n_bins intervals")
            if any(h <= 0 or (horizon is not None and h > float(horizon)) for h in horizons):
                raise ConfigError(f"task {name!r}: horizons {list(horizons)} must lie in (0, horizon]",
                                  column=f"model.tasks.{name}.horizons")
        return cls(name=name, kind=kind, classes=classes, labels=labels, unit=opts.get("unit"),
                   time=opts.get("time"), event=opts.get("event"),
                   horizon=None if horizon is None else float(horizon), horizons=horizons,
                   time_unit=str(opts.get("time_unit", "days")), method=str(opts.get("method", "cox")),
                   options=opts)

    # ------------------------------------------------------------------ columns
    @property
    def time_column(self) -> str:
        return self.time or f"{self.name}.time"

    @property
    def event_column(self) -> str:
        return self.event or f"{self.name}.event"

    def label_columns(self) -> list[str]:
        """The record label keys this task reads (manifest columns are ``label_`` + each)."""
        if self.kind == "multilabel":
            return [f"{self.name}.{x}" for x in self.labels]
        if self.kind == "survival":
            return [self.time_column, self.event_column]
        return [self.name]

    def manifest_columns(self) -> list[str]:
        return [f"label_{c}" for c in self.label_columns()]

    @property
    def eval_horizons(self) -> tuple[float, ...]:
        """Times at which risk is reported: ``horizons``, else the horizon, else none."""
        if self.horizons:
            return self.horizons
        return (self.horizon,) if self.horizon is not None else ()

    # ------------------------------------------------------------------ labels
    def censor(self, time: ArrayLike, event: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Administrative censoring at ``horizon``: follow-up beyond it is cut there and an event
        after it becomes censored (no-op without a horizon)."""
        t = np.asarray(time, dtype=float).copy()
        e = np.asarray(event, dtype=float).copy()
        if self.horizon is not None:
            beyond = t > self.horizon
            t[beyond] = self.horizon
            e[beyond] = 0.0
        return t, e

    def check_column(self, column: str, values: Any) -> list[tuple[str, int | None, str]]:
        """``(severity, row, message)`` for each value of label column ``column`` that does not fit."""
        v = np.asarray([np.nan if x is None else x for x in values], dtype=object)
        out: list[tuple[str, int | None, str]] = []
        num = np.full(len(v), np.nan)
        for i, x in enumerate(v):
            if self.kind == "multiclass" and x is not None and not (isinstance(x, float) and np.isnan(x)):
                k = self.class_index(x)
                if k is None:
                    out.append(("error", i, f"{x!r} is not a class of task {self.name!r} (classes "
                                f"{list(self.classes)}, or their index 0..{len(self.classes) - 1})"))
                else:
                    num[i] = k
                continue
            try:
                num[i] = float(x)
            except (TypeError, ValueError):
                out.append(("error", i, f"{self.kind} label {x!r} is not a number"))
        known = ~np.isnan(num)
        if self.kind in ("binary", "multilabel") or (self.kind == "survival" and column == self.event_column):
            bad = known & ~np.isin(num, (0.0, 1.0))
            what = "an event indicator (1 event, 0 censored)" if self.kind == "survival" else "0 or 1"
            out += [("error", int(i), f"label {num[i]:g} is not {what}") for i in np.flatnonzero(bad)]
        elif self.kind == "multiclass":
            bad = known & ~np.isin(num, np.arange(len(self.classes), dtype=float))
            out += [("error", int(i), f"label {num[i]:g} is not a class index 0..{len(self.classes) - 1} "
                     f"(classes {list(self.classes)})") for i in np.flatnonzero(bad)]
            if known.any():
                missing = sorted(set(range(len(self.classes))) - set(num[known].astype(int)))
                if missing:
                    out.append(("warning", None, f"classes {[self.classes[k] for k in missing]} have no patient"))
        elif self.kind == "survival":
            bad = known & ((num < 0) | ~np.isfinite(num))
            out += [("error", int(i), f"follow-up time {num[i]:g} is negative or infinite") for i in np.flatnonzero(bad)]
        elif self.kind == "regression":
            bad = known & ~np.isfinite(num)
            out += [("error", int(i), f"regression target {num[i]:g} is not finite") for i in np.flatnonzero(bad)]
            if known.sum() > 2 and np.isin(num[known], (0.0, 1.0)).all():
                out.append(("warning", None, "every value is 0 or 1: is this a binary task?"))
        return out

    def class_index(self, value: Any) -> int | None:
        """The class index of a multiclass label cell: a class name (names win when they look like
        numbers), or an integral index in range; ``None`` when it is neither."""
        text = str(value).strip()
        names = {c.strip(): k for k, c in enumerate(self.classes)}
        if text in names:
            return names[text]
        try:
            num = float(text)
        except ValueError:
            return None
        if all(_is_number(c) for c in self.classes):
            hit = [k for k, c in enumerate(self.classes) if float(c) == num]
            return hit[0] if hit else None
        return int(num) if num.is_integer() and 0 <= num < len(self.classes) else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "multiclass":
            d["classes"] = list(self.classes)
        if self.kind == "multilabel":
            d["labels"] = list(self.labels)
        if self.kind == "regression" and self.unit:
            d["unit"] = self.unit
        if self.kind == "survival":
            d.update(method=self.method, time=self.time_column, event=self.event_column, horizon=self.horizon,
                     horizons=list(self.eval_horizons), time_unit=self.time_unit)
        return d


def task_specs(tasks: Mapping[str, Any] | Sequence[str] | None) -> dict[str, TaskSpec]:
    """``{task: TaskSpec}`` of a ``model.tasks`` mapping (a list of names means binary tasks)."""
    specs = tasks if isinstance(tasks, Mapping) else {t: "binary" for t in tasks or ()}
    return {t: TaskSpec.from_config(t, s) for t, s in specs.items()}


def validate_task_labels(frame: Any, tasks: Any, *, report: Any = None, source: str | None = None) -> Any:
    """Check a manifest table's label columns against the declared task types.

    Every problem (a missing column, a value of the wrong type, a class index out of range, a
    negative follow-up, an event indicator that is not 0/1, a survival row with only one of its
    two columns) is added to ``report`` (a :class:`~medmm.cohort.ProblemReport`, made when not
    given), which is returned.
    """
    from .problems import ProblemReport

    report = report if report is not None else ProblemReport(source=source)
    specs = task_specs(tasks) if not all(isinstance(s, TaskSpec) for s in dict(tasks).values()) else dict(tasks)
    cols = set(frame.columns)
    ids = frame["patient_id"].tolist() if "patient_id" in cols else [None] * len(frame)
    for spec in specs.values():
        for c in spec.manifest_columns():
            if c not in cols:
                close = [x for x in cols if str(x).startswith(f"label_{spec.name}")]
                report.add("error", f"{spec.kind} task {spec.name!r} needs the column {c!r}"
                           + (f" (the manifest has {sorted(close)})" if close else ""), column=c)
                continue
            for sev, row, msg in spec.check_column(c[len("label_"):], frame[c].tolist()):
                report.add(sev, msg, row=row, column=c, patient_id=ids[row] if row is not None else None)
        if spec.kind == "survival" and all(c in cols for c in spec.manifest_columns()):
            tc, ec = spec.manifest_columns()
            t_known = frame[tc].notna().to_numpy()
            e_known = frame[ec].notna().to_numpy()
            for i in np.flatnonzero(t_known != e_known):
                report.add("error", f"survival task {spec.name!r}: only one of {tc!r} and {ec!r} is given; give "
                           "both (time and event) or neither", row=int(i), column=tc if not t_known[i] else ec,
                           patient_id=ids[i])
    return report


def check_task_labels(frame: Any, tasks: Any, *, source: str | None = None) -> None:
    """:func:`validate_task_labels`, raising a :class:`~medmm.errors.ManifestError` listing the errors."""
    from .errors import ManifestError

    rep = validate_task_labels(frame, tasks, source=source)
    if rep.errors:
        lines = "; ".join(str(p) for p in rep.errors[:8])
        more = f" (and {len(rep.errors) - 8} more)" if len(rep.errors) > 8 else ""
        raise ManifestError(f"{len(rep.errors)} label problem(s): {lines}{more}", path=source,
                            hint="fix the label columns, or declare the tasks' kinds in model.tasks")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_task_declarations(side: Any) -> dict[str, Any]:
    """The ``tasks:`` section of a manifest's sidecar file ``side`` (``<stem>.modalities.yaml``,
    :func:`medmm.cohort.sidecar_path`), each checked as :meth:`TaskSpec.from_config` does; ``{}``
    without one."""
    from pathlib import Path

    import yaml

    from .errors import ManifestError

    if side is None:
        return {}
    try:
        doc = yaml.safe_load(Path(side).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read the sidecar: {exc}", path=side) from exc
    tasks = doc.get("tasks") if isinstance(doc, dict) else None
    if not tasks:
        return {}
    if not isinstance(tasks, dict):
        raise ManifestError("the sidecar's `tasks` section is not a mapping", path=side,
                            hint="write `tasks: {grade: {kind: multiclass, classes: [G1, G2, G3]}}`")
    try:
        task_specs(tasks)
    except ConfigError as exc:
        raise ManifestError(f"sidecar tasks: {exc.message if hasattr(exc, 'message') else exc}", path=side,
                            column=getattr(exc, "column", None), hint=getattr(exc, "hint", None)) from exc
    return dict(tasks)


def merge_task_declarations(declared: Any, config: Any, names: Any = None) -> dict[str, Any]:
    """The tasks to train: the config's ``model.tasks`` when given (it wins), else the manifest's
    declarations; ``names`` (the config's ``tasks`` list) keeps those, a name neither declares
    being a binary task."""
    declared = dict(declared or {})
    if isinstance(config, (list, tuple)):
        config = {t: "binary" for t in config}
    merged = {**declared, **dict(config or {})} if config else declared
    if names:
        return {t: merged.get(t, "binary") for t in names}
    return merged


def encode_class_labels(frame: Any, tasks: Any, *, source: Any = None, errors: str = "raise") -> Any:
    """``frame`` with each multiclass label column's class names replaced by their indices (a copy
    when anything changes). A value that is no declared class raises a
    :class:`~medmm.errors.ManifestError` naming the row, the column, the value and the classes
    (``errors="keep"`` leaves it as it is, for :func:`validate_task_labels` to report)."""
    from .errors import ManifestError

    specs = tasks if all(isinstance(s, TaskSpec) for s in dict(tasks).values()) else task_specs(tasks)
    out = frame
    for spec in specs.values():
        col = f"label_{spec.name}"
        if spec.kind != "multiclass" or col not in frame.columns:
            continue
        values = frame[col].tolist()
        codes: list[Any] = []
        for i, x in enumerate(values):
            if x is None or (isinstance(x, float) and np.isnan(x)) or str(x).strip() == "":
                codes.append(None)
                continue
            k = spec.class_index(x)
            if k is None and errors == "keep":
                codes.append(x)
                continue
            if k is None:
                pid = frame["patient_id"].iloc[i] if "patient_id" in frame.columns else None
                raise ManifestError(f"{x!r} is not a class of task {spec.name!r} (patient {pid})", path=source,
                                    row=i, column=col,
                                    hint=f"use one of the declared classes {list(spec.classes)} (or its index "
                                         f"0..{len(spec.classes) - 1}), or add the class to the task's `classes`")
            codes.append(str(k))
        if out is frame:
            out = frame.copy()
        out[col] = codes
    return out
