"""Checking that every number and date of a statement is in its evidence.

A statement's text may hold only numbers and dates that are (a) a cited value, time or piece
of cited text (a note sentence, a medication's name, a unit, an alert's explanation), or (b)
one of the statement's ``derived`` figures (a mean, a slope, a window's bounds). A number
matches when it is the evidence rounded to the places the text shows.
"""

from __future__ import annotations

import re
from typing import Any

from .answer import Answer, Statement, fmt_time

__all__ = ["unsupported", "check_answer", "numbers_in", "dates_in"]

_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?\b")
_CLOCK = re.compile(r"\b\d{1,2}:\d{2}\b")
_NUMBER = re.compile(r"(?<![\w.^/])[-+]?\d+(?:\.\d+)?(?![\w^]|\.\d)")


def dates_in(text: str) -> list[str]:
    return _DATE.findall(text)


def numbers_in(text: str) -> list[str]:
    """The numbers of ``text`` that are not part of a date, a clock time, a word (SpO2) or a unit."""
    text = _CLOCK.sub(" ", _DATE.sub(" ", text))
    return _NUMBER.findall(text)


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def _matches(num: str, values: list[float]) -> bool:
    x = float(num)
    tol = 0.5 * 10 ** (-_decimals(num)) + 1e-9
    return any(abs(x - v) <= tol or abs(abs(x) - abs(v)) <= tol for v in values)


def _time_forms(t: Any) -> set[str]:
    import pandas as pd

    try:
        ts = pd.Timestamp(t)
    except (TypeError, ValueError):
        return set()
    if ts is pd.NaT:
        return set()
    return {fmt_time(ts), ts.strftime("%Y-%m-%d"), ts.strftime("%Y-%m-%d %H:%M"), ts.strftime("%Y-%m-%dT%H:%M"),
            ts.strftime("%Y-%m-%d %H:%M:%S"), ts.strftime("%Y-%m-%dT%H:%M:%S"), ts.strftime("%H:%M")}


def _evidence(st: Statement, extra: dict[str, Any] | None = None) -> tuple[list[float], set[str], str]:
    values: list[float] = []
    times: set[str] = set()
    texts: list[str] = []

    def add(v: Any) -> None:
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            values.append(float(v))
        elif hasattr(v, "strftime") or (isinstance(v, str) and _DATE.fullmatch(v.strip())):
            times.update(_time_forms(v))
        elif isinstance(v, str):
            texts.append(v)

    for c in st.citations:
        add(c.value)
        if c.time is not None:
            times.update(_time_forms(c.time))
        texts += [c.text, c.unit, c.label]
    for v in {**st.derived, **(extra or {})}.values():
        add(v)
    blob = "\n".join(t for t in texts if t)
    for n in numbers_in(blob):
        values.append(float(n))
    for d in dates_in(blob):
        times.update(_time_forms(d))
    return values, times, blob


def unsupported(text: str, st: Statement, *, extra: dict[str, Any] | None = None) -> list[str]:
    """Numbers and dates of ``text`` that ``st``'s evidence does not hold (empty when all are)."""
    values, times, blob = _evidence(st, extra)
    bad = []
    for d in dates_in(text):
        if d not in times and d.replace("T", " ") not in times and d[:16] not in times:
            bad.append(d)
    for c in _CLOCK.findall(_DATE.sub(" ", text)):
        if c not in times and c.zfill(5) not in times:
            bad.append(c)
    for n in numbers_in(text):
        if not _matches(n, values) and n not in blob:
            bad.append(n)
    return bad


def check_answer(answer: Answer) -> list[str]:
    """Every problem of an answer: statements without citations, numbers or dates not in their
    evidence. Empty for a sound answer."""
    problems = []
    union = Statement("", [c for st in answer.statements for c in st.citations],
                      {**{f"{k}_{i}": v for i, st in enumerate(answer.statements) for k, v in st.derived.items()},
                       **answer.context})
    bad = unsupported(answer.text, union, extra={f"q{i}": float(n) for i, n in enumerate(numbers_in(answer.question))})
    if bad:
        problems.append(f"answer text: {', '.join(bad)} not in its evidence")
    for k, st in enumerate(answer.statements):
        if not st.citations:
            problems.append(f"statement {k} has no citation")
        bad = unsupported(st.text, st)
        if bad:
            problems.append(f"statement {k}: {', '.join(bad)} not in its evidence")
    return problems
