"""PHI scrubbing of clinical text (the text counterpart of :mod:`medmm.deid.dicom`).

:class:`PhiScrubber` — regex scrubbing of names (titled, labelled or known from the
record), dates, phone numbers, e-mail addresses and record numbers, each switchable. A
date must be a possible date, and a number glued to others or followed by a unit, or after
a blood gas / pressure / score word, is clinical ("0.15/30", "37.5/25 mg", "7.39/42/79",
"31/14/21 mmHg", "18-20/28" are kept); a name stops at the end of its sentence.

Presidio (de-identification) installs from PyPI but needs a spaCy English model that is not
on the package index (it downloads it at run time), so the scrubber stays a set of validated
patterns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PhiScrubber", "scrub_phi"]

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


