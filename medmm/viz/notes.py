"""Clinical notes with the extracted findings highlighted: affirmed, possible and negated
mentions (NegEx/ConText, :mod:`medmm.text.context`) each in their own style."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["highlight_findings", "NotesView", "STYLES"]

STYLES = {
    "affirmed": "background:#c8f0c8;border-bottom:2px solid #2a8a2a",
    "possible": "background:#ffe8a8;border-bottom:2px dashed #b07800",
    "negated": "background:#f4d0d0;text-decoration:line-through;color:#8a2a2a",
    "other": "background:#e4e4e4;color:#555",  # family history, hypothetical
}


def _kind(f: Any) -> str:
    if f.family or f.hypothetical:
        return "other"
    return f.polarity


def highlight_findings(text: str, *, extractor: Any = None, legend: bool = True) -> str:
    """HTML of ``text`` with each finding wrapped in a styled ``<span class='finding {kind}'>``
    (``title`` gives concept, group and context flags)."""
    from ..text.context import extract_findings

    findings = extractor(text) if extractor is not None else extract_findings(text)
    findings = sorted(findings, key=lambda f: (f.start, -f.end))
    out, pos = [], 0
    for f in findings:
        if f.start < pos:  # overlapping mention: keep the first
            continue
        kind = _kind(f)
        flags = [k for k in ("negated", "uncertain", "historical", "family", "hypothetical") if getattr(f, k)]
        tip = f"{f.group}/{f.concept}: {f.polarity}" + (f" ({', '.join(flags)})" if flags else "")
        out.append(html.escape(text[pos:f.start]))
        out.append(f"<span class='finding {kind}' style='{STYLES[kind]}' title='{html.escape(tip, quote=True)}'>"
                   f"{html.escape(text[f.start:f.end])}</span>")
        pos = f.end
    out.append(html.escape(text[pos:]))
    body = "".join(out)
    key = ""
    if legend:
        key = "<div style='font-size:11px;margin-bottom:4px'>" + " ".join(
            f"<span style='{STYLES[k]};padding:0 4px'>{k}</span>" for k in ("affirmed", "possible", "negated")
        ) + f" <span style='{STYLES['other']};padding:0 4px'>family / hypothetical</span></div>"
    return (f"<div class='medmm-note'>{key}<pre style='white-space:pre-wrap;font-family:inherit;"
            f"font-size:12px;margin:0'>{body}</pre></div>")


class NotesView:
    """Notes with their findings highlighted and a per-group summary, for notebooks."""

    def __init__(self, notes: Any, *, extractor: Any = None, max_chars: int | None = None) -> None:
        self.notes = notes
        self.extractor = extractor
        self.max_chars = max_chars

    def _texts(self) -> list[tuple[str, str]]:
        items = getattr(self.notes, "notes", None)
        if items is None:
            return [("note", str(self.notes))]
        return [(f"{n.note_type}" + (f" · {n.time}" if n.time is not None else ""), n.text) for n in items]

    def findings(self):
        """Every finding as a DataFrame: ``note, concept, group, polarity, text, sentence``."""
        import pandas as pd

        from ..text.context import extract_findings

        rows = []
        for i, (_, text) in enumerate(self._texts()):
            for f in (self.extractor(text) if self.extractor else extract_findings(text)):
                rows.append({"note": i, "concept": f.concept, "group": f.group, "polarity": f.polarity,
                             "family": f.family, "hypothetical": f.hypothetical, "text": f.text,
                             "sentence": f.sentence})
        return pd.DataFrame(rows, columns=["note", "concept", "group", "polarity", "family", "hypothetical", "text",
                                           "sentence"])

    def _repr_html_(self) -> str:
        parts = []
        for i, (head, text) in enumerate(self._texts()):
            if self.max_chars and len(text) > self.max_chars:
                text = text[: self.max_chars] + " …"
            parts.append(f"<div style='margin:4px 0'><b>{html.escape(head)}</b>"
                         f"{highlight_findings(text, extractor=self.extractor, legend=(i == 0))}</div>")
        return "<div>" + "".join(parts) + "</div>"
