"""The record, indexed for questions: each vital signal and lab as sorted arrays, the clinical
events (conditions, medications, procedures, encounters, imaging), and every note sentence
with its span, section and findings in context (NegEx/ConText from
:mod:`medmm.preprocess.notes_nlp`), ranked by BM25 (``rank-bm25``).

Everything is read once when the index is built; a question only slices arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.common import to_timestamp
from ..records import Missing, PatientRecord
from .vocab import LABS, SIGNAL_LABELS, STOPWORDS

__all__ = ["Series", "Sentence", "RecordIndex", "tokenize"]

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_LOINC_TO_LAB = {code: key for key, (_, codes, _, _) in LABS.items() for code in codes}
_WORD_TO_LAB = {w: key for key, (_, _, words, _) in LABS.items() for w in words}
_KIND_ORDER = ("condition", "medication", "procedure", "encounter", "imaging")


def _stem(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ses", "xes", "ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def tokenize(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """Lower-case word tokens, light plural stemming, stop words dropped."""
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if keep_stopwords or t not in STOPWORDS]


@dataclass
class Series:
    """One vital signal or lab: times (datetime64[ns], ascending), values, and each value's ref."""

    key: str
    label: str
    modality: str  # vitals | ehr
    unit: str
    times: np.ndarray
    values: np.ndarray
    refs: list[str]
    source: str
    code: str = ""
    ref_range: tuple[float, float, str] | None = None
    item_sources: list[str] | None = None  # per observation (FHIR resource ids), when known

    def source_of(self, i: int) -> str:
        return self.item_sources[i] if self.item_sources else self.source

    def window(self, start: Any = None, end: Any = None) -> np.ndarray:
        """Positions of the observations in ``[start, end]``."""
        lo = 0 if start is None else int(np.searchsorted(self.times, np.datetime64(start, "ns"), "left"))
        hi = len(self.times) if end is None else int(np.searchsorted(self.times, np.datetime64(end, "ns"), "right"))
        return np.arange(lo, max(lo, hi))


@dataclass
class Sentence:
    note: int
    start: int
    end: int
    text: str
    time: Any
    note_type: str
    section: str
    findings: list[Any] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


class RecordIndex:
    """Index of one :class:`~medmm.records.PatientRecord` (and, optionally, its EHR event table).

    Parameters
    ----------
    record:
        The patient's record.
    events:
        The patient's long EHR event table (:data:`medmm.io.ehr.EVENT_COLUMNS`, plus ``end`` and
        optionally ``source``: a FHIR resource id per row); events after the record's index
        time are left out, as the readers leave them out.
    sources:
        modality -> file the record was read from, shown in citations.
    now:
        The time questions are asked at ("the last 24 h" ends here); default the index time,
        else the latest time in the record.
    """

    def __init__(self, record: PatientRecord, *, events: Any = None, sources: dict[str, str] | None = None,
                 now: Any = None) -> None:
        import pandas as pd

        self.record = record
        self.sources = dict(sources or {})
        self.series: dict[str, Series] = {}
        self.labs: dict[str, Series] = {}
        self.events = None
        self.clinical: dict[str, list[dict[str, Any]]] = {k: [] for k in _KIND_ORDER}
        self.sentences: list[Sentence] = []
        self._bm25 = None
        cutoff = to_timestamp(record.index_time)
        self._vitals()
        self._events(events, cutoff)
        self._tabular()
        self._notes()
        latest = [s.times[-1] for s in (*self.series.values(), *self.labs.values()) if len(s.times)]
        latest += [np.datetime64(s.time, "ns") for s in self.sentences if s.time is not None]
        if now is not None:
            self.now = pd.Timestamp(now)
        elif cutoff is not None:
            self.now = cutoff
        elif latest:
            self.now = pd.Timestamp(max(latest))
        else:
            self.now = None

    # ------------------------------------------------------------------ building
    def _vitals(self) -> None:
        v = self.record.vitals
        if isinstance(v, Missing) or v is None or not len(v.frame):
            return
        frame = v.frame
        times = frame["time"].to_numpy(dtype="datetime64[ns]")
        values = frame["value"].to_numpy(dtype=float)
        signals = frame["signal"].astype(str).to_numpy()
        units = frame["unit"].astype(str).to_numpy() if "unit" in frame else np.array([""] * len(frame))
        source = self.sources.get("vitals", "record.vitals")
        for sig in np.unique(signals):
            pos = np.flatnonzero(signals == sig)
            pos = pos[np.argsort(times[pos], kind="stable")]
            ok = pos[np.isfinite(values[pos])]
            self.series[str(sig)] = Series(str(sig), SIGNAL_LABELS.get(str(sig), str(sig).replace("_", " ")),
                                           "vitals", str(units[ok[0]]) if len(ok) else "", times[ok], values[ok],
                                           [f"V{p}" for p in ok], source)

    def _events(self, events: Any, cutoff: Any) -> None:
        import pandas as pd

        if events is None or not len(events):
            return
        ev = events.reset_index(drop=True)
        ev = ev.assign(time=pd.to_datetime(ev["time"], errors="coerce"))
        if "end" in ev:
            ev["end"] = pd.to_datetime(ev["end"], errors="coerce")
        self.events = ev
        keep = ev["time"].notna() & ((ev["time"] <= cutoff) if cutoff is not None else True)
        base = self.sources.get("events", "record.events")
        srcs = ev["source"].astype(str).tolist() if "source" in ev else None
        nums = pd.to_numeric(ev["value"], errors="coerce").to_numpy(dtype=float)
        lab_rows: dict[str, list[int]] = {}
        for i, r in enumerate(ev.itertuples(index=False)):
            if not keep.iloc[i]:
                continue
            kind = str(r.kind)
            if kind in ("lab", "numeric", "vital", "observation") and np.isfinite(nums[i]):
                code = "" if r.code is None or r.code != r.code else str(r.code)
                key = _LOINC_TO_LAB.get(code) or _WORD_TO_LAB.get(str(r.name).strip().lower()) or f"code:{code or r.name}"
                lab_rows.setdefault(key, []).append(i)
            elif kind in self.clinical:
                end = getattr(r, "end", None)
                end = None if end is None or pd.isna(end) or (cutoff is not None and end > cutoff) else end
                self.clinical[kind].append({
                    "kind": kind, "time": r.time, "end": end, "code": "" if pd.isna(r.code) else str(r.code),
                    "name": "" if pd.isna(r.name) else str(r.name), "ref": f"E{i}",
                    "source": srcs[i] if srcs and srcs[i] not in ("", "nan", "None") else f"{base} row {i}",
                    "value": r.value})
        for kind in self.clinical:
            self.clinical[kind].sort(key=lambda d: d["time"])
        for key, rows in lab_rows.items():
            rows = sorted(rows, key=lambda i: ev["time"].iloc[i])
            first = ev.iloc[rows[0]]
            label = LABS[key][0] if key in LABS else (str(first["name"]) or key)
            unit = next((str(u) for u in ev["unit"].iloc[rows] if isinstance(u, str) and u), "")
            self.labs[key] = Series(key, label, "ehr", unit, ev["time"].iloc[rows].to_numpy(dtype="datetime64[ns]"),
                                    nums[rows], [f"E{i}" for i in rows],
                                    base, code=str(first["code"]), ref_range=LABS[key][3] if key in LABS else None)
            if srcs:
                self.labs[key].item_sources = [srcs[i] if srcs[i] not in ("", "nan", "None") else f"{base} row {i}"
                                          for i in rows]

    def _tabular(self) -> None:
        """Values of the EHR row (at the index time) not already known from events."""
        from ..io.ehr import parse_header

        tab = self.record.ehr
        if isinstance(tab, Missing) or tab is None:
            return
        t = self.record.index_time
        when = np.array([np.datetime64(t, "ns")] if t is not None else [np.datetime64("NaT", "ns")])
        source = self.sources.get("ehr", "record.ehr")
        for feat, value in tab.values.items():
            name, unit_h = parse_header(str(feat))
            if "__" in name:
                continue
            kind, _, code = name.partition(":")
            if not code:
                kind, code = "", name
            if kind in ("condition", "medication", "procedure") and value in (1, 1.0, True, "1"):
                if not self.clinical[kind]:
                    self.clinical.setdefault(f"_{kind}_flags", []).append(
                        {"kind": kind, "time": None, "end": None, "code": code, "name": code, "ref": f"T:{feat}",
                         "source": source, "value": value})
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                continue
            if not np.isfinite(float(value)):
                continue
            key = _LOINC_TO_LAB.get(code) or _WORD_TO_LAB.get(code.strip().lower())
            if key is None or key in self.labs:
                continue
            unit = tab.units.get(feat, "") or unit_h
            self.labs[key] = Series(key, LABS[key][0], "ehr", unit, when, np.array([float(value)]), [f"T:{feat}"],
                                    source, code=code, ref_range=LABS[key][3])
        for kind in ("condition", "medication", "procedure"):
            flags = self.clinical.pop(f"_{kind}_flags", [])
            if flags and not self.clinical[kind]:
                self.clinical[kind] = flags

    def _notes(self) -> None:
        from ..text.context import default_extractor, sentences
        from ..text.sections import split_sections

        notes = self.record.notes
        if isinstance(notes, Missing) or notes is None:
            return
        ex = default_extractor()
        for k, note in enumerate(notes.notes):
            text = note.text
            for sec in split_sections(text) or []:
                body_start = text.find(sec.text, sec.start) if sec.text else sec.start
                for off, sent in sentences(sec.text):
                    stripped = sent.strip()
                    if not stripped:
                        continue
                    a = body_start + off + (len(sent) - len(sent.lstrip()))
                    b = a + len(stripped)
                    found = ex.findings_in_sentence(text[a:b], offset=a, section=sec.name)
                    self.sentences.append(Sentence(k, a, b, stripped, note.time, note.note_type, sec.name, found,
                                                   tokenize(stripped)))

    # ------------------------------------------------------------------ queries
    def bm25_scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 (Okapi) score of every sentence for the query tokens."""
        if not self.sentences:
            return np.zeros(0)
        if self._bm25 is None:
            from rank_bm25 import BM25Okapi

            self._bm25 = BM25Okapi([s.tokens or ["_"] for s in self.sentences])
        return np.asarray(self._bm25.get_scores(tokens), dtype=float)

    def note_source(self, k: int) -> str:
        return self.sources.get("notes", "record.notes") + f" note {k}"

    @property
    def has_clinical(self) -> bool:
        return any(self.clinical.values())
