"""The record, indexed for questions: each vital signal and lab as sorted arrays, the clinical
events (conditions, medications, procedures, encounters, imaging), and every note sentence
with its span, section and findings in context (NegEx/ConText from
:mod:`medmm.preprocess.notes_nlp`), ranked by BM25 (``rank-bm25``).

Every declared modality is read by its kind, not only the default names: each ``series``
modality (``vitals``, ``icu_vitals`` ...) gives signals, each ``table`` (``ehr``, ``labs`` ...)
gives lab and feature values, each ``text`` modality (``notes``, ``radiology`` ...) gives
sentences. A signal or lab held by two modalities is two :class:`Series`, each citing its own
modality (:func:`~medmm.assistant.answer.make_ref`).

Everything is read once when the index is built; a question only slices arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.common import to_timestamp
from ..records import DEFAULT_KINDS, Missing, Notes, PatientRecord, Tabular, Vitals
from .answer import make_ref
from .vocab import LABS, SIGNAL_LABELS, STOPWORDS

__all__ = ["Series", "Sentence", "RecordIndex", "tokenize", "modalities_of_kind"]

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_LOINC_TO_LAB = {code: key for key, (_, codes, _, _) in LABS.items() for code in codes}
_WORD_TO_LAB = {w: key for key, (_, _, words, _) in LABS.items() for w in words}
_KIND_ORDER = ("condition", "medication", "procedure", "encounter", "imaging")


def pd_numeric(values: Any) -> np.ndarray:
    """A column as floats, anything that is not a number NaN."""
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def _feature_key(name: str) -> str:
    """A feature's key for questions: lower case, words joined by ``_`` (``Ferritin`` -> ``ferritin``)."""
    return "_".join(_TOKEN.findall(name.lower()))


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


_VALUE_OF_KIND = {"series": Vitals, "table": Tabular, "text": Notes}


def modalities_of_kind(record: PatientRecord, kind: str, spec: Any = None) -> list[str]:
    """The names of ``record``'s present modalities of ``kind`` (``series``, ``table``, ``text``),
    in the record's order: a name's kind is taken from ``spec`` (a
    :class:`~medmm.records.ModalitySpec` or mapping) where it declares it, else from the
    default names, else from the value held; a value that is not of its kind's type is left out."""
    declared = dict(getattr(spec, "kinds", None) or spec or {})
    want = _VALUE_OF_KIND[kind]
    out = []
    for name, value in record.modalities.items():
        if isinstance(value, Missing) or value is None:
            continue
        k = declared.get(name) or DEFAULT_KINDS.get(name)
        if (k is None or k == kind) and isinstance(value, want):
            out.append(name)
    return out


@dataclass
class Series:
    """One vital signal or lab of one modality: times (datetime64[ns], ascending), values, and
    each value's ref. ``key`` is the signal or lab (``heart_rate``, ``crp``); ``kind`` is
    ``'series'`` for a signal of a series modality, ``'table'`` for a lab or feature value."""

    key: str
    label: str
    modality: str  # vitals, ehr (also the EHR events) or any declared series / table modality
    unit: str
    times: np.ndarray
    values: np.ndarray
    refs: list[str]
    source: str
    code: str = ""
    ref_range: tuple[float, float, str] | None = None
    item_sources: list[str] | None = None  # per observation (FHIR resource ids), when known
    kind: str = "table"

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
    modality: str = "notes"

    @property
    def ref(self) -> str:
        """``N<note>:<start>-<end>``, the modality named when it is not ``notes``."""
        return make_ref("N", self.modality, f"{self.note}:{self.start}-{self.end}")


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
    modalities:
        The cohort's declared modalities (a :class:`~medmm.records.ModalitySpec` or a mapping
        ``name -> kind``); default: each name's kind from the default names or the value held.

    ``series`` and ``labs`` are keyed by signal / lab for the default ``vitals`` / ``ehr`` (and
    the EHR events), by ``<signal>@<modality>`` for the other modalities.
    """

    def __init__(self, record: PatientRecord, *, events: Any = None, sources: dict[str, str] | None = None,
                 now: Any = None, modalities: Any = None) -> None:
        import pandas as pd

        self.record = record
        self.sources = dict(sources or {})
        self.spec = modalities
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
    def modalities_of_kind(self, kind: str) -> list[str]:
        """The record's present modalities of ``kind`` (see :func:`modalities_of_kind`)."""
        return modalities_of_kind(self.record, kind, self.spec)

    def source_of(self, modality: str) -> str:
        """The file a modality was read from, else ``record.<modality>``."""
        return self.sources.get(modality, f"record.{modality}")

    @staticmethod
    def _key(key: str, modality: str, default: str) -> str:
        return key if modality == default else f"{key}@{modality}"

    @staticmethod
    def _label(label: str, modality: str, default: str) -> str:
        return label if modality == default else f"{label} ({modality})"

    def _vitals(self) -> None:
        for modality in self.modalities_of_kind("series"):
            self._series_modality(modality, self.record.modality(modality))

    def _series_modality(self, modality: str, v: Any) -> None:
        if not len(v.frame):
            return
        frame = v.frame
        times = frame["time"].to_numpy(dtype="datetime64[ns]")
        values = pd_numeric(frame["value"])
        signals = frame["signal"].astype(str).to_numpy()
        units = frame["unit"].astype(str).to_numpy() if "unit" in frame else np.array([""] * len(frame))
        source = self.source_of(modality)
        for sig in np.unique(signals):
            pos = np.flatnonzero(signals == sig)
            pos = pos[np.argsort(times[pos], kind="stable")]
            ok = pos[np.isfinite(values[pos]) & ~np.isnat(times[pos])]
            label = self._label(SIGNAL_LABELS.get(str(sig), str(sig).replace("_", " ")), modality, "vitals")
            self.series[self._key(str(sig), modality, "vitals")] = Series(
                str(sig), label, modality, str(units[ok[0]]) if len(ok) else "", times[ok], values[ok],
                [make_ref("V", modality, str(p)) for p in ok], source, kind="series")

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
        """Values of each table modality's row (at the index time): labs by their LOINC code or
        name, other numeric features by name; a default-EHR lab already known from the dated
        events is left to them."""
        flags: dict[str, list[dict[str, Any]]] = {"condition": [], "medication": [], "procedure": []}
        for modality in self.modalities_of_kind("table"):
            self._table_modality(modality, self.record.modality(modality), flags)
        for kind, rows in flags.items():
            if rows and not self.clinical[kind]:
                self.clinical[kind] = rows

    def _table_modality(self, modality: str, tab: Any, flags: dict[str, list[dict[str, Any]]]) -> None:
        from ..io.ehr import parse_header

        t = self.record.index_time
        when = np.array([np.datetime64(t, "ns")] if t is not None else [np.datetime64("NaT", "ns")])
        source = self.source_of(modality)
        for feat, value in tab.values.items():
            name, unit_h = parse_header(str(feat))
            if "__" in name:
                continue
            kind, _, code = name.partition(":")
            if not code:
                kind, code = "", name
            ref = make_ref("T", modality, f":{feat}")
            if kind in flags and value in (1, 1.0, True, "1"):
                if not self.clinical[kind]:
                    flags[kind].append({"kind": kind, "time": None, "end": None, "code": code, "name": code,
                                        "ref": ref, "source": source, "value": value, "modality": modality})
                continue
            if kind in flags or isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                continue
            if not np.isfinite(float(value)):
                continue
            unit = tab.units.get(feat, "") or unit_h
            key = _LOINC_TO_LAB.get(code) or _WORD_TO_LAB.get(code.strip().lower())
            if key is None:  # another measurement: by its name; a unitless 0/1 is an indicator, not a value
                key = _feature_key(code)
                if not key or (not unit and float(value) in (0.0, 1.0)):
                    continue
            label = LABS[key][0] if key in LABS else code.replace("_", " ")
            index_key = self._key(key, modality, "ehr")
            if index_key in self.labs:  # the default EHR's events hold this lab, dated; or a duplicate feature
                continue
            self.labs[index_key] = Series(key, self._label(label, modality, "ehr"), modality, unit, when,
                                          np.array([float(value)]), [ref], source, code=code,
                                          ref_range=LABS[key][3] if key in LABS else None)

    def _notes(self) -> None:
        from ..text.context import default_extractor, sentences
        from ..text.sections import split_sections

        ex = None
        for modality in self.modalities_of_kind("text"):
            notes = self.record.modality(modality)
            ex = ex or default_extractor()
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
                        self.sentences.append(Sentence(k, a, b, stripped, note.time, note.note_type, sec.name,
                                                       found, tokenize(stripped), modality))

    # ------------------------------------------------------------------ queries
    def bm25_scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 (Okapi) score of every sentence for the query tokens."""
        if not self.sentences:
            return np.zeros(0)
        if self._bm25 is None:
            from rank_bm25 import BM25Okapi

            self._bm25 = BM25Okapi([s.tokens or ["_"] for s in self.sentences])
        return np.asarray(self._bm25.get_scores(tokens), dtype=float)

    def note_source(self, k: int, modality: str = "notes") -> str:
        return self.source_of(modality) + f" note {k}"

    @property
    def has_clinical(self) -> bool:
        return any(self.clinical.values())
