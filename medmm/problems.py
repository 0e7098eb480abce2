"""One problem type for every layer: a reader's dropped row, a DICOM stack's geometry, a cohort's
bad cell or unreadable file, an audit finding. A :class:`ProblemReport` collects them."""

from __future__ import annotations

import html
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import MedmmError

__all__ = ["Problem", "ProblemReport", "report_problems"]


@dataclass
class Problem:
    """One problem found in a cohort."""

    severity: str  # "error", "warning" or "info"
    message: str
    row: int | None = None
    column: str | None = None
    path: str | None = None
    patient_id: str | None = None
    modality: str | None = None
    kind: str | None = None  # a machine-readable class: a DICOM stack's "tilt", "missing", ...; an audit check
    hint: str | None = None  # how to fix it

    @classmethod
    def from_error(cls, exc: MedmmError, severity: str = "warning", **where: Any) -> "Problem":
        """The problem an error collected instead of raised describes (its file, row, column, hint)."""
        fields = {"path": exc.path, "row": exc.row, "column": exc.column, "hint": exc.hint,
                  "kind": type(exc).__name__, **where}
        return cls(severity, exc.message, **fields)

    def located(self, **where: Any) -> "Problem":
        """This problem moved to a larger frame (a manifest's row, say): the old row, column and path
        go into the message so they are not lost."""
        at = [w for w in (self.path, f"row {self.row}" if self.row is not None else None,
                          f"column {self.column!r}" if self.column else None) if w]
        message = f"{', '.join(at)}: {self.message}" if at else self.message
        return replace(self, message=message, **where)

    def to_error(self) -> MedmmError:
        """This problem as the :class:`ReadError` strict mode raises."""
        from .errors import ReadError

        return ReadError(self.message, path=self.path, row=self.row, column=self.column, hint=self.hint)

    def __str__(self) -> str:
        where = [w for w in (
            f"row {self.row}" if self.row is not None else None,
            f"patient {self.patient_id}" if self.patient_id else None,
            f"column {self.column!r}" if self.column else None,
        ) if w]
        return f"[{self.severity}] {', '.join(where)}: {self.message}" if where else f"[{self.severity}] {self.message}"


class ProblemReport:
    """The problems found while validating or loading a cohort."""

    def __init__(self, problems: list[Problem] | None = None, source: str | None = None) -> None:
        self.problems: list[Problem] = list(problems or [])
        self.source = source

    def add(self, severity: str, message: str, **where: Any) -> None:
        self.problems.append(Problem(severity, message, **where))

    def add_error(self, exc: MedmmError, **where: Any) -> None:
        where.setdefault("path", exc.path)
        where.setdefault("column", exc.column)
        self.problems.append(Problem("error", str(exc), **where))

    def extend(self, problems: Iterable[Problem]) -> None:
        self.problems.extend(problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def to_frame(self):
        import pandas as pd

        cols = ["severity", "message", "row", "column", "path", "patient_id", "modality", "kind", "hint"]
        return pd.DataFrame([asdict(p) for p in self.problems], columns=cols)

    def __str__(self) -> str:
        head = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        if self.source:
            head = f"{self.source}: {head}"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def _repr_html_(self) -> str:
        if not self.problems:
            return "<p>No problems found.</p>"
        colour = {"error": "#a33", "warning": "#b07800"}
        cols = ["severity", "message", "row", "column", "patient_id", "modality", "path"]
        head = "".join(f"<th>{c}</th>" for c in cols)
        rows = "".join(
            "<tr>" + "".join(
                f"<td style='text-align:left;{'color:' + colour.get(p.severity, '#222') + ';font-weight:bold' if c == 'severity' else ''}'>"
                f"{html.escape('' if getattr(p, c) is None else str(getattr(p, c)))}</td>" for c in cols) + "</tr>"
            for p in sorted(self.problems, key=lambda p: (p.severity != "error", p.row if p.row is not None else -1))
        )
        return (f"<p><b style='color:{colour['error'] if self.errors else '#2a8a2a'}'>{len(self.errors)} error(s)</b>, "
                f"<b style='color:{colour['warning']}'>{len(self.warnings)} warning(s)</b>"
                + (f" in {html.escape(self.source)}" if self.source else "")
                + f"</p><table><tr>{head}</tr>{rows}</table>")


def report_problems(errors: Sequence[MedmmError], report: ProblemReport | None, *, strict: bool = False,
                    severity: str = "warning", source: Any = None) -> None:
    """How a reader hands on what it collected instead of raising: ``strict`` raises the first
    error; otherwise each becomes a :class:`Problem` in ``report``. With no report to take them,
    one warning says how many there were, so nothing is dropped unseen."""
    if not errors:
        return
    if strict:
        raise errors[0]
    if report is not None:
        report.extend(Problem.from_error(e, severity) for e in errors)
        return
    warnings.warn(f"{source or errors[0].path or 'reader'}: {len(errors)} problem(s), first: {errors[0]}; "
                  "pass report=ProblemReport() to collect them", stacklevel=3)
