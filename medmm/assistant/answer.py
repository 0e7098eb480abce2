"""What the assistant returns: an :class:`Answer` of :class:`Statement` s, each with the
:class:`Citation` s it rests on, and the numbers and dates it derived from them."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Citation", "Statement", "Answer", "fmt_value", "fmt_time", "make_ref", "split_ref", "DEFAULT_OF_REF",
           "ANSWERED", "PARTIAL", "REFUSED"]

ANSWERED, PARTIAL, REFUSED = "answered", "partial", "refused"

#: the modality a reference letter means when it names none: ``V12`` is a row of ``vitals``
DEFAULT_OF_REF: dict[str, str] = {"V": "vitals", "T": "ehr", "N": "notes"}
_REF = re.compile(r"^(?P<kind>[A-Z])(?:\[(?P<modality>[a-z][a-z0-9_]{0,31})\])?(?P<rest>.*)$", re.S)


def make_ref(kind: str, modality: str, rest: str) -> str:
    """A reference into a modality: ``V12`` for row 12 of the default ``vitals``, ``V[icu_vitals]12``
    for row 12 of another series; likewise ``T:crp`` / ``T[labs]:crp`` and ``N0:5-40`` /
    ``N[radiology]0:5-40``. The modality is named only when it is not the letter's default, so
    the references of the default modalities keep their old form."""
    if DEFAULT_OF_REF.get(kind) == modality:
        return f"{kind}{rest}"
    return f"{kind}[{modality}]{rest}"


def split_ref(ref: str) -> tuple[str, str | None, str]:
    """``(letter, modality, rest)`` of a reference: ``'T[labs]:crp'`` -> ``('T', 'labs', ':crp')``;
    the modality is the letter's default (``vitals``, ``ehr``, ``notes``) when the reference names
    none, ``None`` for the letters that have no modality (``E``, ``A``, ``M``)."""
    m = _REF.match(ref or "")
    if m is None:
        return "", None, ref
    kind = m.group("kind")
    return kind, m.group("modality") or DEFAULT_OF_REF.get(kind), m.group("rest")


def fmt_value(v: Any, decimals: int = 4) -> str:
    """A number as an answer writes it: integers bare, others to at most ``decimals`` places."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    f = float(v)
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    s = f"{f:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def fmt_time(t: Any) -> str:
    """``YYYY-MM-DD`` for a midnight (date-only) time, else ``YYYY-MM-DD HH:MM``."""
    if t is None:
        return "undated"
    import pandas as pd

    t = pd.Timestamp(t)
    if t.hour == 0 and t.minute == 0 and t.second == 0:
        return t.strftime("%Y-%m-%d")
    return t.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Citation:
    """One piece of the record a statement rests on.

    ``ref`` resolves it in the record (:meth:`medmm.assistant.Assistant.resolve`): ``V<row>`` a
    row of ``record.vitals.frame``, ``E<row>`` a row of the EHR event table, ``T:<feature>`` a
    value of the EHR row (``record.ehr``), ``N<note>:<start>-<end>`` a sentence of a note (a
    character span of ``record.notes.notes[note].text``), ``A<k>`` a health-monitor alert,
    ``M:<modality>`` a modality the model read. A row, value or sentence of a declared modality
    other than the default one names it after the letter (:func:`make_ref`):
    ``V[icu_vitals]<row>`` (a ``series``), ``T[labs]:<feature>`` (a ``table``),
    ``N[radiology]<note>:<start>-<end>`` (a ``text`` modality). ``modality`` is the modality's
    name; ``source`` is the file or FHIR resource id where known.
    """

    ref: str
    modality: str
    source: str
    time: Any = None
    label: str = ""
    value: Any = None
    unit: str = ""
    text: str = ""
    span: tuple[int, int] | None = None
    status: str = ""  # notes: affirmed / negated / possible / family / historical / hypothetical

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "modality": self.modality, "source": self.source,
                "time": None if self.time is None else str(self.time), "label": self.label,
                "value": self.value if isinstance(self.value, (int, float, str, bool)) or self.value is None
                else str(self.value), "unit": self.unit, "text": self.text,
                "span": list(self.span) if self.span else None, "status": self.status}


@dataclass
class Statement:
    """One sentence of an answer, the citations it rests on, and what it derived from them
    (``derived``: name -> number or time, e.g. a mean, a slope, a window's bounds)."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    derived: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "citations": [c.to_dict() for c in self.citations],
                "derived": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                            for k, v in self.derived.items()}}


@dataclass
class Answer:
    """The answer to one question.

    ``status`` is ``'answered'``, ``'partial'`` (part of what was asked is not in the record) or
    ``'refused'`` (nothing of it is; ``text`` says what is missing). ``kind`` names the
    question type; ``findings`` maps a note concept to its polarity for finding questions;
    ``value`` holds the main number of a value question; ``notices`` what else the user
    should know (a language model's reply rejected, say).
    """

    question: str
    text: str
    statements: list[Statement] = field(default_factory=list)
    status: str = ANSWERED
    kind: str = ""
    findings: dict[str, str] = field(default_factory=dict)
    value: Any = None
    unit: str = ""
    notices: list[str] = field(default_factory=list)
    phrased_by: str | None = None
    patient_id: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # what the question fixed: window bounds, "now"
    _assistant: Any = field(default=None, repr=False, compare=False)

    @property
    def answered(self) -> bool:
        return self.status == ANSWERED

    @property
    def citations(self) -> list[Citation]:
        seen, out = set(), []
        for s in self.statements:
            for c in s.citations:
                if c.ref not in seen:
                    seen.add(c.ref)
                    out.append(c)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "question": self.question, "status": self.status,
                "kind": self.kind, "text": self.text, "statements": [s.to_dict() for s in self.statements],
                "findings": dict(self.findings), "value": self.value if isinstance(self.value, (int, float, str))
                else None, "unit": self.unit, "notices": list(self.notices), "phrased_by": self.phrased_by}

    def __str__(self) -> str:
        return self.text

    def format(self, *, evidence: bool = True) -> str:
        """Plain text: the answer, then each statement's citations."""
        lines = [self.text]
        if evidence and self.statements:
            lines.append("")
            lines.append("Evidence:")
            for s in self.statements:
                for c in s.citations[:12]:
                    where = c.source + (f" [{c.span[0]}:{c.span[1]}]" if c.span else "")
                    lines.append(f"  [{c.ref}] {c.label} ({where})")
                if len(s.citations) > 12:
                    lines.append(f"  ... and {len(s.citations) - 12} more")
        lines.extend(f"Note: {n}" for n in self.notices)
        return "\n".join(lines)

    # ------------------------------------------------------------------ notebook display
    def _repr_html_(self) -> str:
        e = html.escape
        color = {ANSWERED: "#2a8a2a", PARTIAL: "#b07a00", REFUSED: "#a33"}[self.status]
        out = [f"<div style='font-family:sans-serif;font-size:13px'><b>Q:</b> {e(self.question)}"
               f" <span style='color:{color}'>[{e(self.status)}]</span><br><b>A:</b> {e(self.text)}"]
        if self.notices:
            out.append("<ul style='color:#a33'>" + "".join(f"<li>{e(n)}</li>" for n in self.notices) + "</ul>")
        rows = []
        for s in self.statements:
            for c in s.citations[:50]:
                rows.append(f"<tr><td><code>{e(c.ref)}</code></td><td>{e(c.modality)}</td><td>{e(fmt_time(c.time))}"
                            f"</td><td style='text-align:left'>{e(c.label)}</td><td>{e(c.source)}</td></tr>")
        if rows:
            out.append("<details open><summary>evidence</summary><table><tr><th>ref</th><th>modality</th>"
                       "<th>time</th><th>what</th><th>source</th></tr>" + "".join(rows) + "</table></details>")
        try:
            out.append(self._notes_html())
            out.append(self._vitals_html())
        except Exception as exc:  # a display must never raise
            out.append(f"<i>cannot display the evidence: {e(type(exc).__name__)}: {e(str(exc))}</i>")
        return "".join(out) + "</div>"

    def _notes_html(self) -> str:
        """Each cited note with the cited sentences marked (red: negated, green: affirmed)."""
        e = html.escape
        rec = getattr(self._assistant, "record", None)
        cites = [c for c in self.citations if c.span and split_ref(c.ref)[0] == "N"]
        if rec is None or not cites:
            return ""
        by_note: dict[tuple[str, int], list[Citation]] = {}
        for c in cites:
            _, modality, rest = split_ref(c.ref)
            by_note.setdefault((str(modality), int(rest.split(":")[0])), []).append(c)
        colors = {"negated": "#ffd0d0", "affirmed": "#c9f2c9", "possible": "#fff0a8", "family": "#d8e4ff"}
        parts = []
        for (modality, k), cs in sorted(by_note.items()):
            note = rec.modality(modality).notes[k]
            text, pos, body = note.text, 0, []
            for c in sorted(cs, key=lambda c: c.span[0]):
                a, b = c.span
                if a < pos:
                    continue
                body.append(e(text[pos:a]))
                body.append(f"<mark title='{e(c.ref)} {e(c.status)}' style='background:"
                            f"{colors.get(c.status, '#fff0a8')}'>{e(text[a:b])}</mark>")
                pos = b
            body.append(e(text[pos:]))
            where = "" if modality == "notes" else f"{e(modality)} "
            parts.append(f"<details open><summary>{where}note {k} ({e(note.note_type)}, {e(fmt_time(note.time))})"
                         f"</summary><pre style='white-space:pre-wrap'>{''.join(body)}</pre></details>")
        return "".join(parts)

    def _vitals_html(self) -> str:
        """The cited signals of each series modality plotted, the readings used marked."""
        rec = getattr(self._assistant, "record", None)
        by_mod: dict[str, list[int]] = {}
        for c in self.citations:
            kind, modality, rest = split_ref(c.ref)
            if kind == "V":
                by_mod.setdefault(str(modality), []).append(int(rest))
        if rec is None or not by_mod:
            return ""
        import pandas as pd

        from ..viz.common import figure_html
        from ..viz.vitals import plot_vitals

        out = []
        for modality, rows_at in by_mod.items():
            frame = rec.modality(modality).frame
            rows = frame.iloc[rows_at]
            signals = sorted(rows["signal"].unique().tolist())
            lo, hi = rows["time"].min(), rows["time"].max()
            pad = max((hi - lo) * 0.25, pd.Timedelta(hours=2))
            shown = frame[(frame["time"] >= lo - pad) & (frame["time"] <= hi + pad)]
            fig = plot_vitals(shown, signals=signals)
            for ax, sig in zip(fig.axes, signals):
                used = rows[rows["signal"] == sig]
                ax.plot(used["time"], used["value"], "o", ms=7, mfc="none", mec="#d62728", mew=1.5, zorder=5)
            title = "vital signs" if modality == "vitals" else html.escape(modality)
            out.append(f"<details open><summary>{title} (circled: cited)</summary>"
                       + figure_html(fig, alt=f"cited {title}") + "</details>")
        return "".join(out)
