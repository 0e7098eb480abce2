"""Clinical note text: normalisation and sections.

* :func:`normalize_text` — Unicode NFKC, line endings, control characters, whitespace.
* :func:`split_sections` — headings such as ``HPI``, ``FINDINGS``, ``IMPRESSION``,
  ``ASSESSMENT AND PLAN`` mapped to canonical section names, in the forms real notes use:
  at a line start, inline in transcriptions flattened to one line (MTSamples'
  ``'SUBJECTIVE:,  Fever.,MEDICATIONS: , None.'``), Markdown, ALL-CAPS lines without a colon.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["normalize_text", "Section", "split_sections", "SECTION_NAMES"]

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


