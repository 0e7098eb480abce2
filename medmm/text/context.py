"""Findings in context: NegEx / ConText over clinical note text.

:class:`FindingExtractor` — target terms with their context in the manner of NegEx /
ConText (Chapman et al. 2001, Harkema et al. 2009): negated ("no evidence of mass"),
uncertain ("possible lesion", "cannot be excluded"), historical, family and hypothetical
mentions. Triggers are the published NegEx categories (pre-/post-negation, pre-/post-
possibility, pseudo-triggers, terminations), kept as data (:data:`TRIGGERS`,
:data:`DEFAULT_TARGETS`); scope runs from the trigger to the end (or start) of the sentence,
cut at a termination term, and never crosses a section or a flattened note's ``.,``. As with
medspaCy's section attributes, mentions in a family-history section are the family's and
those in past history historical; pseudo-targets ("body mass index") are no mention.

medspacy (which implements ConText on spaCy) was not used: installing it pins ``numpy<2``
and spaCy 3.7, which would downgrade the environment's numpy 2; the trigger lists here
follow the published NegEx lexicon instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .sections import split_sections

__all__ = ["Finding", "FindingExtractor", "extract_findings", "classify_note", "finding_features",
           "DEFAULT_TARGETS", "TRIGGERS", "PSEUDO_TARGETS", "sentences", "default_extractor"]

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


def sentences(text: str) -> list[tuple[int, str]]:
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
            for off, sent in sentences(sec.text):
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


def default_extractor() -> FindingExtractor:
    """The shared :class:`FindingExtractor` with the default lexicon (built once)."""
    global _DEFAULT_EXTRACTOR
    if _DEFAULT_EXTRACTOR is None:
        _DEFAULT_EXTRACTOR = FindingExtractor()
    return _DEFAULT_EXTRACTOR


def extract_findings(text: str) -> list[Finding]:
    """Target mentions in ``text`` with the default lexicon (see :class:`FindingExtractor`)."""
    return default_extractor()(text)


def classify_note(text: str) -> dict[str, str]:
    """Per concept group, ``affirmed`` / ``possible`` / ``negated`` / ``unmentioned``."""
    return default_extractor().classify(text)


def finding_features(text: str, extractor: FindingExtractor | None = None) -> dict[str, float]:
    """One-hot of each concept group's claim in a note: ``'<group>__<claim>' -> 0.0/1.0``.

    Claims are ``affirmed``, ``possible``, ``negated``, ``unmentioned`` (see
    :meth:`FindingExtractor.classify`); a fixed-length, negation-aware note representation
    that bag-of-words features cannot give ("no evidence of mass" is not "mass").
    """
    ex = extractor or default_extractor()
    claims = ex.classify(text)
    return {f"{g}__{c}": float(claims[g] == c) for g in ex.targets
            for c in ("affirmed", "possible", "negated", "unmentioned")}


