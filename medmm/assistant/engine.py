"""The deterministic question engine: a question is parsed into a query (what kind, about
what, over which window), the query runs on the :class:`~medmm.assistant.index.RecordIndex`,
and every statement of the answer cites the rows it used. Nothing is guessed: what the record
does not hold is refused in plain words."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MedmmError
from .answer import ANSWERED, PARTIAL, REFUSED, Answer, Citation, Statement, fmt_time, fmt_value
from .index import RecordIndex, Series, tokenize
from .vocab import CONDITIONS, LABS, MEDICATION_CLASS_WORDS, MEDICATION_CLASSES, SIGNAL_GROUPS, SIGNAL_TERMS

__all__ = ["QuestionError", "Query", "parse_question", "answer_query", "CAPABILITIES"]

CAPABILITIES = ("the latest, lowest, highest or mean of a vital sign or lab in a time window; whether a vital sign "
                "or lab is rising or falling; NEWS2 at a time and what drove it; why the monitor alerted; "
                "conditions, medications, procedures, encounters and imaging with dates; what the notes say about "
                "a finding; the model's risk and which modalities moved it; a summary of the last hours or days")


class QuestionError(MedmmError, ValueError):
    """A question the assistant cannot even parse (empty, too long, not text)."""


# --------------------------------------------------------------------------- parsing

_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty-four": 24, "twenty four": 24,
                 "thirty": 30, "forty-eight": 48, "forty eight": 48, "seventy-two": 72, "few": 3, "several": 3}
_UNIT_HOURS = {"min": 1 / 60, "mins": 1 / 60, "minute": 1 / 60, "minutes": 1 / 60, "h": 1, "hr": 1, "hrs": 1,
               "hour": 1, "hours": 1, "d": 24, "day": 24, "days": 24, "wk": 168, "wks": 168, "week": 168,
               "weeks": 168, "month": 730.5, "months": 730.5, "mo": 730.5, "year": 8766, "years": 8766, "y": 8766}
_NUM = r"(?P<n>\d+(?:\.\d+)?|" + "|".join(sorted(map(re.escape, _NUMBER_WORDS), key=len, reverse=True)) + r")"
_UNIT = r"(?P<unit>" + "|".join(sorted(_UNIT_HOURS, key=len, reverse=True)) + r")"
_WINDOW = re.compile(
    r"\b(?:(?:in|over|during|within|for|from)\s+)?(?:the\s+)?(?:past|last|previous|preceding|recent|prior)\s+"
    + r"(?:" + _NUM + r"\s*)?" + _UNIT + r"\b"
    + r"|\b(?:in|over|within|during)\s+(?:the\s+)?" + _NUM.replace("?P<n>", "?P<n2>") + r"\s*"
    + _UNIT.replace("?P<unit>", "?P<unit2>") + r"\b", re.I)
_DATE = r"\d{4}-\d{2}-\d{2}"
_CLOCK = r"(?:[01]?\d|2[0-3])(?::[0-5]\d|\s*(?:am|pm)|h[0-5]\d)"
_AT = re.compile(rf"\b(?:at|around|on|by)\s+(?P<date>{_DATE})?(?:[ T]?(?P<clock>{_CLOCK}))?\b"
                 rf"|\b(?:at|around|by)\s+(?P<clock2>{_CLOCK}|[01]?\d:[0-5]\d|[01]\d[0-5]\d)\b", re.I)
_SINCE = re.compile(rf"\bsince\s+(?P<date>{_DATE})\b", re.I)
_BETWEEN = re.compile(rf"\bbetween\s+(?P<a>{_DATE}(?:[ T]\d{{2}}:\d{{2}})?)\s+and\s+(?P<b>{_DATE}(?:[ T]\d{{2}}:\d{{2}})?)",
                      re.I)

_STATS = [
    ("max", r"\b(?:highest|max|maximum|maximal|peak|top|largest|worst high)\b"),
    ("min", r"\b(?:lowest|min|minimum|minimal|nadir|smallest|lowest ever)\b"),
    ("mean", r"\b(?:mean|average|avg|typical)\b"),
    ("count", r"\bhow many\b|\bnumber of\b|\bcount of\b"),
    ("first", r"\b(?:first|earliest|initial)\b"),
    ("range", r"\brange\b"),
]
_TREND = re.compile(r"\b(?:trend\w*|ris(?:e|es|ing)|increas\w*|fall(?:s|ing)?|drop(?:s|ping)?|decreas\w*|declin\w*|"
                    r"going (?:up|down)|improv\w*|worsen\w*|deteriorat\w*|stable|steady|chang(?:e|es|ing)|"
                    r"getting (?:better|worse)|slope|direction)\b", re.I)
_ADVICE = re.compile(r"\b(?:should (?:i|we|he|she|they|the patient)|recommend\w*|what dose|which dose|how much .* give|"
                     r"prescribe|treat(?:ment)? (?:for|of|plan)|how (?:do|should) (?:i|we) treat|what to do|advise|"
                     r"advice|diagnose|prognosis|will (?:he|she|the patient) (?:die|survive|recover))\b", re.I)
_RISK = re.compile(r"\b(?:risk|probabilit\w*|likelihood|chance|model\w*|predict\w*|predicted)\b", re.I)
_ALERT = re.compile(r"\b(?:alert\w*|alarm\w*|escalat\w*|trigger\w*|why did (?:you|the monitor)|page[ds]?)\b", re.I)
_NEWS = re.compile(r"\bnews\s*-?\s*2?\b(?!paper)|\bearly warning\b", re.I)
_SUMMARY = re.compile(r"\b(?:summar\w*|overview|recap|what happened|brief me|sum up|handover|hand-over|update me)\b",
                      re.I)
_KINDS = [
    ("condition", r"\b(?:conditions?|diagnos[ie]s|problems?|problem list|comorbidit\w*|medical history|"
                  r"past medical history|pmh|illness(?:es)?|disease(?:s)?)\b"),
    ("medication", r"\b(?:medications?|meds|medicines?|drugs?|prescriptions?|prescribed|taking|on any|"
                   r"started on|therapy|therapies)\b"),
    ("procedure", r"\b(?:procedures?|operations?|surger(?:y|ies)|operated)\b"),
    ("encounter", r"\b(?:encounters?|visits?|admissions?|admitted|appointments?|seen in|hospitali[sz]\w*|"
                  r"attendances?)\b"),
    ("imaging", r"\b(?:imaging|scans?|ct|mri|x-?rays?|ultrasound|imaging stud(?:y|ies))\b"),
]
_NOTES = re.compile(r"\b(?:notes?|documented|mention\w*|written|radiology|report\w*|say|says|said|describ\w*|"
                    r"findings?|impression|history of|family history|sign(?:s)? of|evidence of|complain\w*|"
                    r"symptoms?)\b", re.I)
_HAS = re.compile(r"\b(?:is there|are there|any|does (?:he|she|the patient|they) have|has (?:he|she|the patient) "
                  r"(?:got|had)|did (?:he|she|the patient) have|have|has|had|with|signs? of|evidence of|history of)\b",
                  re.I)
_INTENT_WORDS = set(tokenize("highest lowest maximum minimum mean average latest last first earliest trend rising "
                             "falling increasing decreasing dropping improving worsening stable value level result "
                             "results reading readings measurement measurements value values level levels show "
                             "does have has had is there are any signs sign evidence history family mention "
                             "documented notes say said describe described find finding findings impression "
                             "condition conditions diagnosis diagnoses medication medications problem",
                             keep_stopwords=True))


@dataclass
class Query:
    """A parsed question."""

    kind: str  # stat trend news2 alert clinical finding risk summary refuse advice
    question: str
    stat: str = "latest"
    targets: list[tuple[str, str]] = field(default_factory=list)  # (namespace, key): ("vitals", "spo2") ...
    missing: list[str] = field(default_factory=list)  # named targets the record lacks (labels)
    start: Any = None
    end: Any = None
    window_hours: float | None = None
    window_text: str = ""
    at: Any = None
    clock: str | None = None
    clinical_kind: str | None = None
    term: str = ""
    term_words: tuple[str, ...] = ()


def _hours(n: str | None, unit: str) -> float:
    k = 1.0 if n is None else (float(n) if n[0].isdigit() else float(_NUMBER_WORDS[n.lower()]))
    return k * _UNIT_HOURS[unit.lower()]


def _phrase_in(phrase: str, text: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(phrase).replace(r"\ ", r"\s+") + r"(?![\w-])", text) is not None


def _find_targets(q: str, ix: RecordIndex) -> tuple[list[tuple[str, str]], list[str]]:
    """Vital signals and labs named in the question (longest names first); the named ones the
    record lacks are returned by label."""
    found: list[tuple[str, str]] = []
    missing: list[str] = []
    taken: list[tuple[int, int]] = []

    def claim(phrase: str) -> bool:
        for m in re.finditer(r"(?<![\w-])" + re.escape(phrase).replace(r"\ ", r"\s+") + r"(?![\w-])", q):
            if not any(a < m.end() and m.start() < b for a, b in taken):
                taken.append((m.start(), m.end()))
                return True
        return False

    by_signal: dict[str, list[str]] = {}  # signal -> its index keys, one per series modality
    for k, s in ix.series.items():
        by_signal.setdefault(s.key, []).append(k)
    by_lab: dict[str, list[str]] = {}  # lab -> its index keys, one per table modality (and the events)
    for k, s in ix.labs.items():
        by_lab.setdefault(s.key, []).append(k)

    def signals_held(sig: str) -> list[str]:
        """The index keys of ``sig`` in every series modality (heart rate stands in for pulse
        rate, and back, in a modality that has only the other)."""
        alt = {"heart_rate": ("heart_rate", "pulse_rate"), "pulse_rate": ("pulse_rate", "heart_rate")}.get(sig, (sig,))
        out: list[str] = []
        modalities = list(dict.fromkeys(ix.series[k].modality for s in alt for k in by_signal.get(s, [])))
        for m in modalities:
            out += next(([k] for s in alt for k in by_signal.get(s, []) if ix.series[k].modality == m), [])
        return out

    names: list[tuple[str, str, Any]] = []
    for group, sigs in SIGNAL_GROUPS.items():
        names.append((group, "group", sigs))
    for sig, words in SIGNAL_TERMS.items():
        for w in words:
            names.append((w, "vitals", sig))
    for key, (_label, codes, words, _) in LABS.items():
        for w in (*words, *codes):
            names.append((w, "lab", key))
    for s in ix.labs.values():
        if s.key not in LABS:
            names.append((s.key.replace("_", " "), "lab", s.key))
            if s.code:
                names.append((s.code.lower(), "lab", s.key))
    from .vocab import SIGNAL_LABELS

    for sig in by_signal:
        names.append((sig.replace("_", " "), "vitals", sig))
        if sig in SIGNAL_LABELS and sig not in SIGNAL_TERMS:  # abp_sys: "arterial systolic pressure"
            names.append((SIGNAL_LABELS[sig].lower(), "vitals", sig))
    names.sort(key=lambda x: -len(x[0]))
    for phrase, ns, key in names:
        if not phrase or not claim(phrase):
            continue
        if ns == "group":
            have = [k for s in key for k in signals_held(s)]
            if have:
                found.extend(("vitals", k) for k in have)
            else:
                missing.append(phrase)
        elif ns == "vitals":
            have = signals_held(key)
            if have:
                found.extend(("vitals", k) for k in have)
            else:
                missing.append(SIGNAL_LABELS.get(key, key))
        else:
            if key in by_lab:
                found.extend(("lab", k) for k in by_lab[key])
            else:
                missing.append(LABS[key][0] if key in LABS else key)
    out, seen = [], set()
    for t in found:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out, list(dict.fromkeys(missing))


def _parse_time(q: str, ix: RecordIndex) -> tuple[Any, str | None]:
    import pandas as pd

    m = _AT.search(q)
    if not m:
        return None, None
    date = m.group("date")
    clock = m.group("clock") or m.group("clock2")
    if not date and not clock:
        return None, None
    hh = mm = 0
    if clock:
        c = clock.lower().replace(" ", "")
        mm_ = re.match(r"(\d{1,2})(?::|h)?(\d{2})?(am|pm)?$", c)
        if mm_ is None:
            return None, None
        hh, mm = int(mm_.group(1)), int(mm_.group(2) or 0)
        if mm_.group(3) == "pm" and hh < 12:
            hh += 12
        if mm_.group(3) == "am" and hh == 12:
            hh = 0
    if date:
        return pd.Timestamp(date) + pd.Timedelta(hours=hh, minutes=mm), None
    now = ix.now
    if now is None:
        return None, f"{hh:02d}:{mm:02d}"
    t = now.normalize() + pd.Timedelta(hours=hh, minutes=mm)
    if t > now:
        t -= pd.Timedelta(days=1)
    return t, f"{hh:02d}:{mm:02d}"


def _parse_window(q: str, ix: RecordIndex, query: Query) -> str:
    """Set the query's window from the question; returns the question with it removed."""
    import pandas as pd

    now = ix.now
    m = next((m for m in _WINDOW.finditer(q) if (m.group("n") or m.group("n2"))
              or (m.group("unit") or m.group("unit2") or "").lower() in ("hour", "day", "week", "month", "year")), None)
    if m and now is not None:
        n, unit = (m.group("n"), m.group("unit")) if m.group("unit") else (m.group("n2"), m.group("unit2"))
        hours = _hours(n, unit)
        query.window_hours = hours
        query.start, query.end = now - pd.Timedelta(hours=hours), now
        query.window_text = f"in the {fmt_value(hours)} h before {fmt_time(now)}" if hours < 24 * 14 or \
            hours % 24 else f"in the {fmt_value(hours / 24)} days before {fmt_time(now)}"
        return q[:m.start()] + " " + q[m.end():]
    m = _BETWEEN.search(q)
    if m:
        query.start, query.end = pd.Timestamp(m.group("a")), pd.Timestamp(m.group("b"))
        if len(m.group("b")) == 10:
            query.end += pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
        query.window_text = f"between {fmt_time(query.start)} and {fmt_time(query.end)}"
        return q[:m.start()] + " " + q[m.end():]
    m = _SINCE.search(q)
    if m and now is not None:
        query.start, query.end = pd.Timestamp(m.group("date")), now
        query.window_text = f"since {fmt_time(query.start)}"
        return q[:m.start()] + " " + q[m.end():]
    if now is not None and re.search(r"\btoday\b", q):
        query.start, query.end = now.normalize(), now
        query.window_text = f"on {fmt_time(query.start)} (today)"
        return re.sub(r"\btoday\b", " ", q)
    if now is not None and re.search(r"\byesterday\b", q):
        query.start = now.normalize() - pd.Timedelta(days=1)
        query.end = now.normalize() - pd.Timedelta(seconds=1)
        query.window_text = f"on {fmt_time(query.start)} (yesterday)"
        return re.sub(r"\byesterday\b", " ", q)
    m = re.search(rf"\bon\s+({_DATE})\b(?![ T]\d)", q)
    if m:
        query.start = pd.Timestamp(m.group(1))
        query.end = query.start + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
        query.window_text = f"on {fmt_time(query.start)}"
        return q[:m.start()] + " " + q[m.end():]
    return q


def _content_words(q: str) -> list[str]:
    return [t for t in tokenize(q) if t not in _INTENT_WORDS and not t.isdigit() and len(t) > 1]


def parse_question(question: Any, ix: RecordIndex) -> Query:
    """The :class:`Query` a question asks."""
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, got {type(question).__name__}",
                            hint="ask a question in words, e.g. 'last blood pressure'")
    text = " ".join(question.split())
    if not text or not re.search(r"[A-Za-z]", text):
        raise QuestionError("the question is empty" if not text else f"{question!r} is not a question",
                            hint="ask a question in words, e.g. 'highest temperature in the past 24 h'")
    if len(text) > 1000:
        raise QuestionError(f"the question is {len(text)} characters long (at most 1000)",
                            hint="ask one short question at a time")
    q = text.lower().replace("’", "'")
    query = Query(kind="refuse", question=text)
    if _ADVICE.search(q):
        query.kind = "advice"
        return query
    rest = _parse_window(q, ix, query)
    at, clock = _parse_time(rest, ix)
    query.at, query.clock = at, clock
    if _ALERT.search(q):
        query.kind = "alert"
        return query
    if _NEWS.search(q):
        query.kind = "news2"
        return query
    if _RISK.search(q) and not re.search(r"\brisk factors?\b", q):
        query.kind = "risk"
        query.term = next((t for t in ("tumor", "tumour", "disease", "cancer", "deterioration") if t in q), "")
        return query
    if _SUMMARY.search(q):
        query.kind = "summary"
        return query
    targets, missing = _find_targets(rest, ix)
    query.targets, query.missing = targets, missing
    if targets or missing:
        query.kind = "trend" if _TREND.search(rest) else "stat"
        for name, pat in _STATS:
            if re.search(pat, rest):
                query.stat = name
                break
        return query
    for kind, pat in _KINDS:
        if re.search(pat, rest):
            query.kind, query.clinical_kind = "clinical", kind
            break
    cond = _condition_named(rest, ix)
    med = _medication_named(rest, ix)
    if cond:
        query.kind, query.clinical_kind, query.term, query.term_words = "clinical", "condition", cond[0], cond[1]
        return query
    if med:
        query.kind, query.clinical_kind, query.term, query.term_words = "clinical", "medication", med[0], med[1]
        return query
    if query.kind == "clinical":
        words = _content_words(re.sub(_KINDS[[k for k, _ in _KINDS].index(query.clinical_kind)][1], " ", rest))
        if words and query.clinical_kind in ("condition", "medication", "procedure"):
            query.term, query.term_words = " ".join(words), tuple(words)
        return query
    concept = _finding_concept(rest)
    words = _content_words(rest)
    if concept or (words and (_NOTES.search(rest) or _HAS.search(rest))):
        query.kind = "finding"
        if concept:
            query.term, query.term_words = concept[0], concept[1]
        else:
            query.term, query.term_words = " ".join(words), tuple(words)
        return query
    return query


def _finding_concept(q: str) -> tuple[str, tuple[str, ...]] | None:
    from ..preprocess.notes_nlp import DEFAULT_TARGETS

    best = None
    for concepts in DEFAULT_TARGETS.values():
        for concept, syns in concepts.items():
            for s in syns:
                if len(s) > 2 and _phrase_in(s, q) and (best is None or len(s) > len(best[1])):
                    best = (concept, s)
    return (best[0].replace("_", " "), ("__concept__", best[0])) if best else None


def _condition_named(q: str, ix: RecordIndex) -> tuple[str, tuple[str, ...]] | None:
    for key, (label, _codes, words) in CONDITIONS.items():
        if any(_phrase_in(w, q) for w in words):
            return label, ("__condition__", key)
    for row in ix.clinical.get("condition", []):
        name = row["name"].lower()
        words = [w for w in tokenize(name) if len(w) > 3]
        if words and any(_phrase_in(w, q) for w in words):
            return row["name"], tuple(words)
    return None


def _medication_named(q: str, ix: RecordIndex) -> tuple[str, tuple[str, ...]] | None:
    for w, cls in MEDICATION_CLASS_WORDS.items():
        if _phrase_in(w, q):
            return w, ("__class__", cls)
    for row in ix.clinical.get("medication", []):
        words = [w for w in tokenize(row["name"]) if len(w) > 3 and not w.isdigit()]
        hit = [w for w in words if _phrase_in(w, q)]
        if hit:
            return hit[0], (hit[0],)
    for subs in MEDICATION_CLASSES.values():
        for s in subs:
            if _phrase_in(s, q):
                return s, (s,)
    m = re.search(r"\b(?:on|taking|prescribed|given|receiving|started on)\s+([a-z][a-z-]{3,})\b", q)
    if m and m.group(1) not in ("the", "any", "some", "oxygen", "air"):
        return m.group(1), (m.group(1),)
    return None


# --------------------------------------------------------------------------- answering


def _refuse(query: Query, text: str, kind: str | None = None) -> Answer:
    return Answer(question=query.question, text=text, status=REFUSED, kind=kind or query.kind)


def _cite_series(s: Series, i: int) -> Citation:
    t = s.times[i]
    import pandas as pd

    ts = None if np.isnat(t) else pd.Timestamp(t)
    v = float(s.values[i])
    return Citation(ref=s.refs[i], modality=s.modality, source=s.source_of(i), time=ts,
                    label=f"{s.label} {fmt_value(v)} {s.unit}".rstrip() + (f" at {fmt_time(ts)}" if ts is not None else ""),
                    value=v, unit=s.unit)


def _series_of(ix: RecordIndex, target: tuple[str, str]) -> Series:
    return ix.series[target[1]] if target[0] == "vitals" else ix.labs[target[1]]


def _window_derived(query: Query) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if query.start is not None:
        d["window_start"] = query.start
        d["window_end"] = query.end
    if query.window_hours is not None:
        d["window_hours"] = query.window_hours
        if query.window_hours >= 24:
            d["window_days"] = query.window_hours / 24
    return d


def _with_unit(v: float, unit: str) -> str:
    return f"{fmt_value(v)} {unit}".rstrip()


def _when(s: Series, i: int) -> str:
    return "" if np.isnat(s.times[i]) else f" at {fmt_time(s.times[i])}"


def answer_stat(query: Query, ix: RecordIndex) -> Answer:
    statements: list[Statement] = []
    gaps: list[str] = [f"The record has no {m} results." if any(m == v[0] for v in LABS.values())
                       else f"The record has no {m} measurements." for m in query.missing]
    first_value = None
    unit = ""
    for target in query.targets:
        s = _series_of(ix, target)
        pos = s.window(query.start, query.end)
        where = f" {query.window_text}" if query.window_text else ""
        if not len(pos):
            last = len(s.times) - 1
            gaps.append(f"The record has no {s.label}{where}.")
            if last >= 0 and query.start is not None and s.times[last] < np.datetime64(query.start, "ns"):
                statements.append(Statement(f"The last {s.label} before that was {_with_unit(s.values[last], s.unit)}"
                                            f"{_when(s, last)}.", [_cite_series(s, last)]))
            continue
        vals = s.values[pos]
        stat = query.stat
        derived = _window_derived(query)
        if stat in ("latest", "first", "max", "min"):
            k = {"latest": len(pos) - 1, "first": 0, "max": int(np.argmax(vals)), "min": int(np.argmin(vals))}[stat]
            i = int(pos[k])
            word = {"latest": "latest" if query.start is None else "last", "first": "first", "max": "highest",
                    "min": "lowest"}[stat]
            text = f"The {word} {s.label}{where} was {_with_unit(s.values[i], s.unit)}{_when(s, i)}."
            cites = [_cite_series(s, i)]
            value = float(s.values[i])
        elif stat == "mean":
            value = round(float(np.mean(vals)), 2)
            derived["mean"] = value
            derived["n"] = len(pos)
            text = (f"The mean {s.label}{where} was {_with_unit(value, s.unit)} over {len(pos)} readings "
                    f"({fmt_time(s.times[pos[0]])} to {fmt_time(s.times[pos[-1]])}).")
            cites = [_cite_series(s, int(i)) for i in pos]
        elif stat == "count":
            value = len(pos)
            derived["n"] = value
            text = (f"The record has {value} {s.label} readings{where} ({fmt_time(s.times[pos[0]])} to "
                    f"{fmt_time(s.times[pos[-1]])}).")
            cites = [_cite_series(s, int(i)) for i in pos]
        else:  # range
            lo, hi = int(pos[int(np.argmin(vals))]), int(pos[int(np.argmax(vals))])
            value = (float(s.values[lo]), float(s.values[hi]))
            text = (f"The {s.label}{where} ranged from {_with_unit(s.values[lo], s.unit)}{_when(s, lo)} to "
                    f"{_with_unit(s.values[hi], s.unit)}{_when(s, hi)}.")
            cites = [_cite_series(s, lo), _cite_series(s, hi)]
        statements.append(Statement(text, cites, derived))
        if first_value is None:
            first_value, unit = value, s.unit
    return _assemble(query, statements, gaps, value=first_value, unit=unit)


def _assemble(query: Query, statements: list[Statement], gaps: list[str], *, value: Any = None, unit: str = "",
              findings: dict[str, str] | None = None) -> Answer:
    answered = [s for s in statements if s.citations]
    body = " ".join(s.text for s in statements)
    if not answered or (not query.targets and gaps and not findings and query.kind in ("stat", "trend")):
        text = " ".join(gaps) or "The record holds nothing that answers this question."
        if statements:
            text += " " + body
        status = PARTIAL if statements else REFUSED
        return Answer(query.question, text, statements, status, query.kind, findings or {}, value, unit)
    status = PARTIAL if gaps else ANSWERED
    text = ((" ".join(gaps) + " ") if gaps else "") + body
    return Answer(query.question, text, statements, status, query.kind, findings or {}, value, unit)


def _abnormal(s: Series, v: float) -> bool | None:
    """Whether a reading is abnormal: a NEWS2 sub-score above 0 for a NEWS2 vital sign, outside
    the reference interval for a lab in its unit; ``None`` when neither applies."""
    if s.kind == "series":
        from ..monitor.health import NEWS2_SIGNALS
        from ..monitor.news2 import score_pulse, score_respiration_rate, score_spo2, score_systolic_bp, score_temperature

        fn = {"resp_rate": score_respiration_rate, "spo2": score_spo2, "sbp": score_systolic_bp, "pulse": score_pulse,
              "temperature": score_temperature}.get(NEWS2_SIGNALS.get(s.key, ""))
        if fn is None:
            return None
        try:
            return fn(v) > 0
        except Exception:
            return None
    rr = s.ref_range
    if rr is None or rr[2].lower() != (s.unit or "").lower():
        return None
    return not rr[0] <= v <= rr[1]


def answer_trend(query: Query, ix: RecordIndex) -> Answer:
    from scipy.stats import linregress

    statements: list[Statement] = []
    gaps = [f"The record has no {m} readings." for m in query.missing]
    for target in query.targets:
        s = _series_of(ix, target)
        pos = s.window(query.start, query.end)
        where = f" {query.window_text}" if query.window_text else ""
        if len(pos) < 3:
            gaps.append(f"The record has {len(pos)} {s.label} reading{'s' if len(pos) != 1 else ''}{where}: "
                        "too few for a trend.")
            if len(pos):
                statements.append(Statement(" ".join(f"{s.label} {_with_unit(s.values[i], s.unit)}{_when(s, int(i))}."
                                                     for i in pos), [_cite_series(s, int(i)) for i in pos],
                                            {"n": len(pos)}))
            continue
        t0 = s.times[pos[0]]
        hours = (s.times[pos] - t0).astype("timedelta64[s]").astype(float) / 3600.0
        vals = s.values[pos]
        if np.ptp(hours) == 0:
            gaps.append(f"All {s.label} readings{where} are at one time: no trend.")
            continue
        fit = linregress(hours, vals)
        slope, p = round(float(fit.slope), 3), float(fit.pvalue)
        direction = ("no clear trend" if not p < 0.05 or slope == 0 else "rising" if slope > 0 else "falling")
        flags = [_abnormal(s, float(v)) for v in vals]
        derived = {**_window_derived(query), "slope_per_hour": slope, "p_value": round(p, 3), "n": len(pos)}
        text = (f"{s.label[0].upper() + s.label[1:]}{where}: {direction} (slope {fmt_value(slope, 3)} {s.unit}/h, "
                f"p = {fmt_value(round(p, 3), 3)}, {len(pos)} readings), from {_with_unit(vals[0], s.unit)}"
                f"{_when(s, int(pos[0]))} to {_with_unit(vals[-1], s.unit)}{_when(s, int(pos[-1]))}.")
        if any(f is not None for f in flags):
            n_ab = int(sum(bool(f) for f in flags))
            derived["n_abnormal"] = n_ab
            rule = "score in NEWS2" if s.kind == "series" else "are outside the reference interval"
            text += f" {n_ab} of {len(pos)} readings {rule}."
        statements.append(Statement(text, [_cite_series(s, int(i)) for i in pos], derived))
    return _assemble(query, statements, gaps)


# ----------------------------------------------------------------------------- NEWS2

def _news2_at(ix: RecordIndex, t: Any, config: Any) -> tuple[Any, list[str], list[Citation]] | None:
    """NEWS2 at ``t`` from the latest reading of each parameter in the ``stale_hours`` before it,
    scored by the health monitor's own rules; the readings used are cited."""
    import pandas as pd

    from ..monitor.health import NEWS2_SIGNALS, HealthMonitor

    mon = HealthMonitor(None, config)
    stale = np.datetime64(t - pd.Timedelta(hours=mon.config.stale_hours), "ns")
    tt = np.datetime64(t, "ns")
    used: dict[str, tuple[Any, Series, int]] = {}
    for s in ix.series.values():
        sig = s.key
        param = NEWS2_SIGNALS.get(sig)
        if param is None or param in ("consciousness", "on_oxygen") or not len(s.times):
            continue
        k = int(np.searchsorted(s.times, tt, "right")) - 1
        if k < 0 or s.times[k] < stale:
            continue
        if sig not in used or s.times[k] > used[sig][0]:  # one signal in two series: its latest reading
            used[sig] = (s.times[k], s, k)  # by source: the monitor picks between ECG/pleth, line/cuff
    if not used:
        return None
    latest = {sig: (pd.Timestamp(when), float(s.values[k])) for sig, (when, s, k) in used.items()}
    res, notes = mon.news2_of_readings(latest, pd.Timestamp(t))
    chosen = {v.split(" ")[0] for v in (getattr(res, "sources", None) or {}).values()}
    cites = [_cite_series(s, k) for sig, (_, s, k) in used.items()
             if NEWS2_SIGNALS[sig] not in (getattr(res, "sources", None) or {}) or sig in chosen]
    return res, notes, cites


def answer_news2(query: Query, ix: RecordIndex, monitor: Any = None) -> Answer:
    from ..monitor.health import MonitorConfig

    if ix.now is None or not ix.series:
        return _refuse(query, "The record has no vital signs, so NEWS2 cannot be computed.")
    t = query.at or ix.now
    got = _news2_at(ix, t, monitor.config if monitor is not None else MonitorConfig())
    if got is None:
        return _refuse(query, f"The record has no NEWS2 vital sign in the 12 h before {fmt_time(t)}.")
    res, notes, cites = got
    drivers = res.explain()
    text = (f"NEWS2 at {fmt_time(t)} was {res.total} ({res.band} band; clinical risk {res.risk}). "
            + (f"It was driven by: {'; '.join(drivers)}." if drivers else "No parameter scored.")
            + (f" Not observed: {', '.join(res.missing)}." if res.missing else "")
            + (f" {'; '.join(notes).capitalize()}." if notes else ""))
    stale = monitor.config.stale_hours if monitor is not None else MonitorConfig().stale_hours
    st = Statement(text, cites, {"news2": res.total, "at": t, "stale_hours": stale,
                                 **{f"score_{k}": v for k, v in res.scores.items()}})
    ans = _assemble(query, [st], [], value=res.total)
    if res.missing:
        ans.status = PARTIAL if any(m not in ("consciousness", "air_or_oxygen") for m in res.missing) else ANSWERED
    return ans


def answer_alert(query: Query, ix: RecordIndex, monitor: Any, patient_id: str) -> Answer:
    import pandas as pd

    if monitor is None:
        ans = answer_news2(query, ix, None)
        if ans.status == REFUSED:
            ans.text = "No health monitor is attached, so there are no alerts to explain. " + ans.text
            return ans
        ans.text = "No health monitor is attached, so no alert is recorded; from the record: " + ans.text
        ans.status, ans.kind = PARTIAL, "alert"
        return ans
    alerts = [(k, a) for k, a in enumerate(monitor.alerts) if str(a.patient_id) == str(patient_id)]
    if not alerts:
        return _refuse(query, f"The monitor raised no alert for patient {patient_id}.")
    chosen = None
    if query.clock is not None:
        hh, mm = map(int, query.clock.split(":"))
        hits = [(k, a) for k, a in alerts if pd.Timestamp(a.time).hour == hh and abs(pd.Timestamp(a.time).minute - mm) <= 1]
        chosen = hits[-1] if hits else None
    elif query.at is not None:
        hits = [(k, a) for k, a in alerts if abs(pd.Timestamp(a.time) - query.at) <= pd.Timedelta(minutes=1)]
        chosen = hits[-1] if hits else None
    else:
        chosen = alerts[-1]
    if chosen is None:
        times = ", ".join(fmt_time(a.time) for _, a in alerts[-5:])
        return _refuse(query, f"The monitor raised no alert at {query.clock or fmt_time(query.at)}; "
                              f"its alerts for this patient were at {times}.")
    k, a = chosen
    cite = Citation(ref=f"A{k}", modality="monitor", source="HealthMonitor.alerts", time=pd.Timestamp(a.time),
                    label=f"{a.band} alert (level {a.level}, {a.source}) at {fmt_time(a.time)}",
                    value=a.level, text="\n".join(a.explanation))
    cites = [cite]
    got = _news2_at(ix, pd.Timestamp(a.time), monitor.config) if ix.series else None
    if got is not None:
        cites += got[2]
    text = (f"At {fmt_time(a.time)} the monitor raised a {a.band} alert (level {a.level}, from {a.source}) because "
            + "; ".join(a.explanation) + ".")
    derived = {"level": a.level, "news2": a.news2.get("total"), "stale_hours": monitor.config.stale_hours}
    if a.risk is not None:
        derived["risk"] = a.risk
    return _assemble(query, [Statement(text, cites, derived)], [], value=a.level)


# ----------------------------------------------------------------------------- clinical

_KIND_LABEL = {"condition": "conditions", "medication": "medications", "procedure": "procedures",
               "encounter": "encounters", "imaging": "imaging studies"}


def _cite_event(ix: RecordIndex, row: dict[str, Any]) -> Citation:
    import pandas as pd

    t = None if row["time"] is None or pd.isna(row["time"]) else pd.Timestamp(row["time"])
    name = row["name"] or row["code"]
    end = row.get("end")
    return Citation(ref=row["ref"], modality=row.get("modality", "ehr"), source=row["source"], time=t,
                    label=f"{row['kind']} {name}" + (f" ({row['code']})" if row["code"] and row["code"] != name else "")
                    + (f" from {fmt_time(t)}" if t is not None else "") + (f" to {fmt_time(end)}" if end is not None else ""),
                    value=row["code"], text=name)


def _event_text(row: dict[str, Any]) -> str:
    import pandas as pd

    name = row["name"] or row["code"]
    kind = row["kind"]
    if row["time"] is None or pd.isna(row["time"]):
        return f"{name} (recorded in the EHR row; no date)"
    if kind == "condition":
        return f"{name} since {fmt_time(row['time'])}" + (f", resolved {fmt_time(row['end'])}" if row["end"] is not None
                                                        else " (active)")
    if kind == "medication":
        return f"{name} prescribed {fmt_time(row['time'])}"
    if kind == "encounter":
        cls = {"AMB": "ambulatory", "IMP": "inpatient", "EMER": "emergency", "ACUTE": "inpatient acute",
               "HH": "home health", "VR": "virtual"}.get(str(row["code"]).upper(), row["code"] or "")
        what = f"{cls} encounter" if cls else "encounter"
        if row["name"] and row["name"] != row["code"]:
            what += f" ({row['name']})"
        return f"{what} on {fmt_time(row['time'])}" + (f" to {fmt_time(row['end'])}" if row["end"] is not None else "")
    if kind == "imaging":
        return f"{row['code'] or 'imaging'} study on {fmt_time(row['time'])}"
    return f"{name} on {fmt_time(row['time'])}"


def _matches(row: dict[str, Any], words: tuple[str, ...]) -> bool:
    if not words:
        return True
    if words[0] == "__condition__":
        label, codes, syns = CONDITIONS[words[1]]
        name = row["name"].lower()
        return row["code"] in codes or any(_phrase_in(s, name) for s in syns if len(s) > 2)
    if words[0] == "__class__":
        name = row["name"].lower()
        return any(s in name for s in MEDICATION_CLASSES[words[1]])
    text = (row["name"] + " " + row["code"]).lower()
    toks = set(tokenize(text))
    return all(w in toks or w in text for w in words)


def answer_clinical(query: Query, ix: RecordIndex) -> Answer:
    kind = query.clinical_kind or "condition"
    rows = [r for r in ix.clinical.get(kind, [])]
    if query.start is not None:
        rows = [r for r in rows if r["time"] is not None and query.start <= r["time"] <= query.end]
    label = _KIND_LABEL[kind]
    where = f" {query.window_text}" if query.window_text else ""
    if query.term:
        hits = [r for r in rows if _matches(r, query.term_words)]
        notes_ans = answer_finding(query, ix) if kind == "condition" and ix.sentences else None
        if not hits:
            if notes_ans is not None and notes_ans.statements:
                notes_ans.text = f"The EHR lists no {query.term}{where}. " + notes_ans.text
                notes_ans.kind = "clinical"
                return notes_ans
            noun = {"condition": "condition", "medication": "prescription", "procedure": "procedure"}.get(kind, kind)
            return _refuse(query, f"The record has no {query.term} {noun}{where}" +
                           (" and the notes do not mention it." if kind == "condition" and ix.sentences else "."))
        statements = [Statement(_event_text(r)[0].upper() + _event_text(r)[1:] + ".", [_cite_event(ix, r)])
                      for r in hits]
        ans = _assemble(query, statements, [])
        if notes_ans is not None and notes_ans.statements:
            ans.statements += notes_ans.statements
            ans.text += " In the notes: " + notes_ans.text
            ans.findings = notes_ans.findings
        return ans
    if not rows:
        if not ix.has_clinical:
            return _refuse(query, f"The record has no {label}{where}: it holds no EHR events (conditions, "
                                  "medications, procedures, encounters).")
        return _refuse(query, f"The record has no {label}{where}.")
    latest_only = re.search(r"\b(?:last|latest|most recent|recent)\b", query.question.lower()) and kind in (
        "encounter", "imaging", "procedure") and query.start is None
    if latest_only:
        rows = rows[-1:]
    if kind == "condition":
        active = [r for r in rows if r["end"] is None]
        resolved = [r for r in rows if r["end"] is not None]
        statements = []
        if active:
            statements.append(Statement("Active: " + "; ".join(_event_text(r) for r in active) + ".",
                                        [_cite_event(ix, r) for r in active]))
        if resolved:
            statements.append(Statement("Resolved: " + "; ".join(_event_text(r) for r in resolved) + ".",
                                        [_cite_event(ix, r) for r in resolved]))
        return _assemble(query, statements, [])
    shown = rows[-20:]
    head = (f"The {'latest ' if latest_only else ''}{label[:-1] if latest_only else label}{where}: " if latest_only or
            len(rows) <= 20 else f"The {len(shown)} most recent of {len(rows)} {label}{where}: ")
    st = Statement(head + "; ".join(_event_text(r) for r in shown) + ".", [_cite_event(ix, r) for r in shown],
                   {"n": len(rows), "shown": len(shown), **_window_derived(query)})
    return _assemble(query, [st], [])


# ----------------------------------------------------------------------------- notes

_POLARITY_WORDS = {"affirmed": "present", "negated": "negated (stated absent)", "possible": "possible (uncertain)",
                   "historical": "historical (a past history)", "family": "in a family member, not the patient",
                   "hypothetical": "hypothetical (a conditional mention)"}
_RANK = {"affirmed": 5, "possible": 4, "historical": 3, "negated": 2, "hypothetical": 1, "family": 0}


def _polarity(f: Any) -> str:
    if f.family:
        return "family"
    if f.hypothetical:
        return "hypothetical"
    if f.negated:
        return "negated"
    if f.uncertain:
        return "possible"
    if f.historical:
        return "historical"
    return "affirmed"


_EXTRACTORS: dict[str, Any] = {}


def _note_name(note_type: str) -> str:
    name = (note_type or "note").replace("_", " ")
    name = name[0].upper() + name[1:]
    return name if name.lower().endswith(("note", "report", "summary")) else f"{name} note"


def _in_modality(modality: str, note_type: str = "") -> str:
    """`` in <modality>`` for a text modality other than the default ``notes`` whose name the
    note's type does not already say (a ``radiology`` report needs no ``in radiology``)."""
    if modality == "notes" or modality.replace("_", " ") in _note_name(note_type).lower():
        return ""
    return f" in {modality}"


def _extractor_for(phrase: str) -> Any:
    from ..preprocess.notes_nlp import FindingExtractor

    if phrase not in _EXTRACTORS:
        syns = {phrase, phrase + "s", phrase + "es"} if not phrase.endswith("s") else {phrase, phrase[:-1]}
        _EXTRACTORS[phrase] = FindingExtractor(targets={"query": {phrase: tuple(syns)}})
        if len(_EXTRACTORS) > 256:
            _EXTRACTORS.pop(next(iter(_EXTRACTORS)))
    return _EXTRACTORS[phrase]


def answer_finding(query: Query, ix: RecordIndex) -> Answer:
    """What the notes say of a finding, each mention with its negation / uncertainty / family /
    history status (NegEx/ConText); a negated mention is reported as negated, never as present."""
    term = query.term or " ".join(query.term_words)
    if not ix.sentences:
        return _refuse(query, f"The record has no notes, so nothing is documented about {term}.", "finding")
    hits: list[tuple[Any, Any]] = []  # (sentence index, finding)
    words = query.term_words
    if words and words[0] == "__concept__":
        for k, s in enumerate(ix.sentences):
            for f in s.findings:
                if f.concept == words[1]:
                    hits.append((k, f))
    else:
        phrase_words = list(words if words and not words[0].startswith("__") else tokenize(term))
        if words and words[0] == "__condition__":
            syns = [w for w in CONDITIONS[words[1]][2] if len(w) > 2]
            phrases = syns
        else:
            phrases = [" ".join(phrase_words)]
        scores = ix.bm25_scores(tokenize(" ".join(phrases)))
        order = np.argsort(-scores, kind="stable")
        for k in order:  # BM25 ranks; a sentence must hold every word of the phrase (BM25's IDF is 0 for a
            s = ix.sentences[int(k)]  # word in half of a small note set, so the score alone cannot gate)
            for ph in phrases:
                toks = tokenize(ph)
                if toks and all(t in s.tokens for t in toks):
                    ex = _extractor_for(ph)
                    fs = ex.findings_in_sentence(s.text, offset=s.start, section=s.section)
                    if not fs:  # a stemmed match the literal extractor missed: context of the whole sentence
                        fs = [f for f in ex.findings_in_sentence(s.text.replace(ph + "s", ph), offset=s.start,
                                                                 section=s.section)]
                    if fs:
                        hits.append((int(k), fs[0]))
                    else:
                        from ..preprocess.notes_nlp import Finding

                        hits.append((int(k), Finding(ph, "query", ph, s.start, s.end, s.text, s.section)))
                    break
    if not hits:
        return _refuse(query, f"The notes do not mention {term}.", "finding")
    seen: set[int] = set()
    statements = []
    polarities: list[str] = []
    for k, f in sorted(hits, key=lambda h: (ix.sentences[h[0]].note, ix.sentences[h[0]].start)):
        if k in seen:
            continue
        seen.add(k)
        s = ix.sentences[k]
        pol = _polarity(f)
        polarities.append(pol)
        when = fmt_time(s.time) if s.time is not None else "undated"
        section = s.section.replace("_", " ")
        cite = Citation(ref=s.ref, modality=s.modality, source=ix.note_source(s.note, s.modality),
                        time=s.time, label=f"{s.note_type} {when}, {section}: \"{s.text}\"", text=s.text,
                        span=(s.start, s.end), status=pol)
        statements.append(Statement(f"{_note_name(s.note_type)}{_in_modality(s.modality, s.note_type)} ({when}, {section}): "
                                    f"\"{s.text}\" - {term} {_POLARITY_WORDS[pol]}.", [cite]))
    top = max(polarities, key=lambda p: _RANK[p])
    patient_pols = {p for p in polarities if p != "family"}
    if top == "affirmed":
        head = f"The notes report {term}."
    elif top == "possible":
        head = f"The notes describe {term} as possible, not confirmed."
    elif top == "historical":
        head = f"The notes mention {term} as past history."
    elif top == "negated":
        head = f"The notes state there is no {term}."
    elif top == "hypothetical":
        head = f"The notes mention {term} only hypothetically."
    else:
        head = f"The notes mention {term} only in the family history, not in the patient."
    if "family" in polarities and patient_pols:
        head += f" A family history of {term} is also noted."
    if top == "affirmed" and "negated" in polarities:
        head += " Other mentions are negated."
    ans = _assemble(query, statements, [], findings={term: top})
    ans.text = head + " " + " ".join(st.text for st in statements)
    ans.kind = "finding"
    return ans


# ----------------------------------------------------------------------------- model risk

def model_explanation(model: Any, record: Any) -> tuple[tuple[str, ...], list[str], np.ndarray, dict[str, np.ndarray]]:
    """The model's probability per output column on ``record`` and exact Shapley values of each
    present modality on the logit (every subset of the present modalities is scored once).

    ``model`` is a :class:`~medmm.deploy.runtime.Predictor` or a
    :class:`~medmm.models.multimodal.MultimodalModel`. Returns ``(columns, present, probs, shapley)``.
    """
    from itertools import combinations
    from math import factorial

    from ..records import Missing

    columns = tuple(getattr(model, "columns", None) or getattr(model, "output_columns", None) or model.tasks)
    modalities = tuple(getattr(model, "modalities", None) or record.modalities)  # the declared ones, any names
    present = [m for m in modalities if not isinstance(record.modalities.get(m, Missing()), Missing)]
    subsets = [s for r in range(len(present) + 1) for s in combinations(present, r)]
    if hasattr(model, "predict_values") and hasattr(model, "preprocessor"):
        base = model.preprocessor.transform(record)
        present = [m for m in present if base.get(m) is not None]
        subsets = [s for r in range(len(present) + 1) for s in combinations(present, r)]
        items = [{m: (base.get(m) if m in s else None) for m in base} for s in subsets]
        probs = np.asarray(model.predict_values(items), dtype=float)
    else:
        recs = [record.masked(*[m for m in modalities if m not in s and m in record.modalities]) for s in subsets]
        probs = np.asarray(model.predict_records(recs), dtype=float)
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    value = {frozenset(s): logit[i] for i, s in enumerate(subsets)}
    n = len(present)
    shap: dict[str, np.ndarray] = {}
    for m in present:
        others = [x for x in present if x != m]
        phi = np.zeros(logit.shape[1])
        for r in range(n):
            w = factorial(r) * factorial(n - r - 1) / factorial(n)
            for s in combinations(others, r):
                phi += w * (value[frozenset((*s, m))] - value[frozenset(s)])
        shap[m] = phi
    return columns, present, probs[-1], shap


def answer_risk(query: Query, ix: RecordIndex, model: Any) -> Answer:
    if model is None:
        return _refuse(query, "No model is attached, so the record has no model risk. Pass a trained model "
                              "(medmm ask --model DIR) to ask about it.")
    columns, present, probs, shap = model_explanation(model, ix.record)
    cols = [k for k, c in enumerate(columns) if not query.term or query.term.replace("tumour", "tumor") in c]
    cols = cols or list(range(len(columns)))
    statements = []
    cites = [Citation(ref=f"M:{m}", modality=m, source=ix.sources.get(m, f"record.{m}"), label=f"{m} (model input)")
             for m in present]
    for k in cols:
        p = round(float(probs[k]), 2)
        contrib = sorted(((round(float(shap[m][k]), 2), m) for m in present), key=lambda x: -abs(x[0]))
        parts = [f"{m} {'raises' if d >= 0 else 'lowers'} it by {fmt_value(abs(d), 2)}" for d, m in contrib]
        absent = [m for m in getattr(model, "modalities", ()) if m not in present]
        text = (f"The model's risk of {columns[k]} is {fmt_value(p, 2)} from {', '.join(present) or 'no modality (the prior)'}"
                + (f"; on the logit scale (exact Shapley values over modalities) {', '.join(parts)}" if parts else "")
                + (f"; not available: {', '.join(absent)}" if absent else "") + ".")
        derived = {f"risk_{columns[k]}": p, **{f"shapley_{m}_{columns[k]}": d for d, m in contrib}}
        statements.append(Statement(text, list(cites), derived))
    ans = _assemble(query, statements, [], value=round(float(probs[cols[0]]), 2))
    if not present:
        ans.status = PARTIAL
    return ans


# ----------------------------------------------------------------------------- summary

def answer_summary(query: Query, ix: RecordIndex, monitor: Any = None) -> Answer:
    import pandas as pd

    if ix.now is None:
        return _refuse(query, "The record holds no dated data to summarise.")
    if query.start is None:
        query.start, query.end, query.window_hours = ix.now - pd.Timedelta(hours=24), ix.now, 24.0
        query.window_text = f"in the 24 h before {fmt_time(ix.now)}"
    statements: list[Statement] = []
    for s in list(ix.series.values()) + list(ix.labs.values()):
        pos = s.window(query.start, query.end)
        if not len(pos) or (s.kind == "table" and s.key not in LABS and not s.unit):  # age: not an event
            continue
        vals = s.values[pos]
        lo, hi, last = int(pos[int(np.argmin(vals))]), int(pos[int(np.argmax(vals))]), int(pos[-1])
        if len(pos) == 1:
            text = f"{s.label[0].upper() + s.label[1:]}: {_with_unit(s.values[last], s.unit)}{_when(s, last)}."
        else:
            text = (f"{s.label[0].upper() + s.label[1:]}: {len(pos)} readings, lowest {_with_unit(s.values[lo], s.unit)}"
                    f"{_when(s, lo)}, highest {_with_unit(s.values[hi], s.unit)}{_when(s, hi)}, last "
                    f"{_with_unit(s.values[last], s.unit)}{_when(s, last)}.")
        statements.append(Statement(text, [_cite_series(s, int(i)) for i in pos], {"n": len(pos)}))
    for kind in ("encounter", "condition", "medication", "procedure", "imaging"):
        rows = [r for r in ix.clinical.get(kind, []) if r["time"] is not None and query.start <= r["time"] <= query.end]
        if rows:
            statements.append(Statement(f"{_KIND_LABEL[kind].capitalize()}: " + "; ".join(_event_text(r) for r in rows)
                                        + ".", [_cite_event(ix, r) for r in rows]))
    for s in ix.sentences:
        if s.time is None or not (query.start <= s.time <= query.end):
            continue
        for f in s.findings[:1]:
            pol = _polarity(f)
            cite = Citation(ref=s.ref, modality=s.modality, source=ix.note_source(s.note, s.modality),
                            time=s.time, label=f"{s.note_type} {fmt_time(s.time)}: \"{s.text}\"", text=s.text,
                            span=(s.start, s.end), status=pol)
            statements.append(Statement(f"{_note_name(s.note_type)}{_in_modality(s.modality, s.note_type)} ({fmt_time(s.time)}): "
                                        f"\"{s.text}\" - "
                                        f"{f.concept.replace('_', ' ')} {_POLARITY_WORDS[pol]}.", [cite]))
    if ix.series:
        from ..monitor.health import MonitorConfig

        got = _news2_at(ix, query.end, monitor.config if monitor is not None else MonitorConfig())
        if got is not None:
            res, _, cites = got
            statements.append(Statement(f"NEWS2 at {fmt_time(query.end)}: {res.total} ({res.band} band).", cites,
                                        {"news2": res.total}))
    if not statements:
        return _refuse(query, f"The record has nothing dated {query.window_text}.")
    for st in statements:
        st.derived.update(_window_derived(query))
    ans = _assemble(query, statements, [])
    ans.text = f"Summary {query.window_text}: " + ans.text
    return ans


def answer_query(query: Query, ix: RecordIndex, *, model: Any = None, monitor: Any = None,
                 patient_id: str = "") -> Answer:
    """Run a parsed query on the index."""
    if query.kind == "advice":
        return _refuse(query, "I only report what the record documents; I do not give treatment, dosing or "
                              "diagnostic advice. Ask what the record shows instead.")
    if query.kind == "refuse":
        return _refuse(query, f"I cannot answer that from the record. I can answer: {CAPABILITIES}.")
    handler = {"stat": lambda: answer_stat(query, ix), "trend": lambda: answer_trend(query, ix),
               "news2": lambda: answer_news2(query, ix, monitor),
               "alert": lambda: answer_alert(query, ix, monitor, patient_id),
               "clinical": lambda: answer_clinical(query, ix), "finding": lambda: answer_finding(query, ix),
               "risk": lambda: answer_risk(query, ix, model),
               "summary": lambda: answer_summary(query, ix, monitor)}[query.kind]
    ans = handler()
    if query.kind == "stat" and not query.targets:
        ans.status = REFUSED
    return ans
