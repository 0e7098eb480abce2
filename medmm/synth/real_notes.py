"""Clinical notes in the shapes real corpora have, with known truth.

Generated here (nothing is downloaded), after the habits of public sets:

* :func:`transcription_note` — an MTSamples-style transcription flattened to one line: inline
  ALL-CAPS headings (``'SUBJECTIVE:,  Fever.,MEDICATIONS: , None.'``), numbered lists, exam
  sub-headings, times and ratios with colons, lower-case labels that are no headings;
* :func:`markdown_note` — Markdown headings (``'# Chief Complaint'``, ``'**Plan:**'``);
* :func:`allcaps_note` — ALL-CAPS headings on their own line, with or without a colon;
* :data:`CLINICAL_NUMBERS` — doses, blood gases, pressures and scores that look like dates;
* :func:`phi_note` — a note holding names, dates, phone numbers, IDs and e-mails, returned
  with the PHI strings it holds.

Each note generator returns ``(text, section names in order)``; the names are the canonical
names of :data:`medmm.preprocess.notes_nlp.SECTION_NAMES`, or the slug of an unknown title.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["transcription_note", "markdown_note", "allcaps_note", "phi_note", "CLINICAL_NUMBERS", "note_corpus"]

# (heading as written, expected section name, contents to pick from)
_SECTIONS: dict[str, list[tuple[str, str, list[str]]]] = {
    "soap": [
        ("SUBJECTIVE", "subjective", [
            "This 23-year-old white female presents with complaint of allergies.",
            "The patient is a 56-year-old male seen today for follow-up of hypertension. He reports a cough for "
            "3 days, no fever, no chills. He ran out of his lisinopril about 2 weeks ago.",
            "Patient states: I have been tired since Tuesday. She denies chest pain or shortness of breath."]),
        ("MEDICATIONS", "medications", [
            "None.", "Ortho Tri-Cyclen 0.15/30 and Allegra.",
            "1. Lisinopril 20 mg daily.,2. Janumet 50/1000 mg b.i.d.,3. Aspirin 81 mg daily.",
            "Dyazide 37.5/25 mg one tablet daily, Norco 5/325 one to two q.4-6h. p.r.n. pain."]),
        ("ALLERGIES", "allergies", ["No known drug allergies.", "PENICILLIN (rash).", "NKDA."]),
        ("OBJECTIVE", "objective", [
            "{{Vitals|vitals}}: Weight was 130 pounds and blood pressure 124/78. "
            "{{HEENT|heent}}: Her throat was mildly erythematous without exudate.",
            "Temperature 98.6, pulse 72, respirations 16, blood pressure 132/84, O2 sat 97% on room air at 10:30."]),
        ("ASSESSMENT", "assessment", [
            "Allergic rhinitis.", "1. Hypertension, poorly controlled.,2. Upper respiratory infection.",
            "Body mass index 31.2; obesity."]),
        ("PLAN", "plan", [
            "She will try Zyrtec instead of Allegra. Return in 2 weeks.",
            "Restart lisinopril. Recheck BP in 4 weeks. Call if fever develops."]),
    ],
    "consult": [
        ("REASON FOR CONSULTATION", "chief_complaint", ["Abnormal chest x-ray.", "Evaluation of a liver mass."]),
        ("HISTORY OF PRESENT ILLNESS", "hpi", [
            "The patient is a 64-year-old woman with a 30 pack-year history of smoking who was found to have a "
            "2.1 cm nodule in the right upper lobe. She denies hemoptysis, weight loss or night sweats.",
            "This is a 71-year-old gentleman with hepatitis C who was noted on ultrasound to have a lesion. "
            "There is no other evidence of any cancer."]),
        ("PAST MEDICAL HISTORY", "pmh", [
            "Significant for COPD, hypertension and breast cancer in 2009, status post lumpectomy.",
            "1. Diabetes mellitus type 2.,2. Coronary artery disease, status post CABG x3.,3. Gout."]),
        ("PAST SURGICAL HISTORY", "psh", ["Appendectomy, cholecystectomy.", "None."]),
        ("FAMILY HISTORY", "family_history", [
            "Father who had colon cancer at age 60. Mother with hypertension.",
            "Noncontributory.", "Her sister had breast cancer; brother is healthy."]),
        ("SOCIAL HISTORY", "social_history", [
            "She smokes one pack per day. Drinks alcohol socially. Lives with her husband.",
            "Retired machinist, quit smoking 10 years ago."]),
        ("REVIEW OF SYSTEMS", "ros", [
            "Negative except as noted above.",
            "{{CONSTITUTIONAL|constitutional}}: No fevers or chills.,{{RESPIRATORY|respiratory}}: Cough as above.,"
            "{{CARDIAC|cardiac}}: No chest pain."]),
        ("PHYSICAL EXAMINATION", "physical_exam", ["Well-developed, well-nourished, in no acute distress."]),
        ("VITAL SIGNS", "vitals", ["Blood pressure 142/88, pulse 88, respirations 18, temperature 98.1."]),
        ("HEENT", "heent", ["Normocephalic, atraumatic. Pupils equal, round and reactive to light."]),
        ("LUNGS", "lungs", ["Decreased breath sounds at the right base.", "Clear to auscultation bilaterally."]),
        ("LABORATORY DATA", "labs", [
            "WBC 12.1, hemoglobin 11.2, platelets 250. ABG 7.39/42/79 on 2 L. INR: 1.1.",
            "Sodium 134, potassium 4.1, BUN 22, creatinine 1.3. PA pressures 31/14/21 mmHg."]),
        ("IMPRESSION", "impression", [
            "Right upper lobe nodule, suspicious for malignancy.",
            "Liver lesion, possibly hepatocellular carcinoma; cannot be excluded."]),
        ("RECOMMENDATIONS", "plan", [
            "1. PET/CT scan.,2. CT-guided biopsy.,3. Follow up with Dr. X.",
            "Triple-phase CT of the liver and AFP. Discussed with the patient at length."]),
    ],
    "operative": [
        ("PREOPERATIVE DIAGNOSIS", "preoperative_diagnosis", ["Right inguinal hernia.", "Cholelithiasis."]),
        ("POSTOPERATIVE DIAGNOSIS", "postoperative_diagnosis", ["Same.", "Right indirect inguinal hernia."]),
        ("PROCEDURE PERFORMED", "technique", ["Laparoscopic cholecystectomy.",
                                              "Right inguinal hernia repair with mesh."]),
        ("ANESTHESIA", "anesthesia", ["General endotracheal.", "Local with 1% lidocaine with epinephrine 1:100,000."]),
        ("ESTIMATED BLOOD LOSS", "estimated_blood_loss", ["Minimal.", "Less than 25 mL."]),
        ("COMPLICATIONS", "complications", ["None."]),
        ("INDICATIONS FOR PROCEDURE", "indication", [
            "The patient is a 45-year-old female with symptomatic cholelithiasis.",
            "This 62-year-old man has had a reducible right groin bulge for 6 months."]),
        ("DESCRIPTION OF PROCEDURE", "technique", [
            "The patient was brought to the operating room and placed supine. After induction of general "
            "anesthesia, the abdomen was prepped and draped in the usual sterile fashion. At 08:45 the "
            "incision was made. No mass or other abnormality was found.",
            "The patient was identified in the holding area. Time out was performed. The sac was dissected free "
            "and ligated with 2-0 Vicryl. The mesh was secured with 3-0 Prolene."]),
        ("SPECIMENS", "specimens", ["Gallbladder to pathology.", "None."]),
        ("CONDITION", "condition", ["Stable to the recovery room."]),
    ],
    "discharge": [
        ("ADMISSION DIAGNOSIS", "admission_diagnosis", ["Community-acquired pneumonia.", "Sepsis."]),
        ("DISCHARGE DIAGNOSES", "discharge_diagnosis", [
            "1. Community-acquired pneumonia, resolved.,2. Hypoxia.,3. Chronic obstructive pulmonary disease."]),
        ("HOSPITAL COURSE", "hospital_course", [
            "The patient was admitted with fever and shortness of breath and started on ceftriaxone and "
            "azithromycin. Blood cultures were negative. Her oxygen requirement improved and she was weaned to "
            "room air by hospital day 3.",
            "He was admitted to the ICU for sepsis. Lactate 4.1 improved to 1.8. MMSE 18-20/28 on day 2, "
            "improving with treatment of the infection."]),
        ("DISCHARGE MEDICATIONS", "medications", [
            "1. Levofloxacin 750 mg daily for 5 more days.,2. Albuterol 2 puffs q.4h. p.r.n.",
            "Same as admission, plus prednisone taper."]),
        ("DISPOSITION", "plan", ["Home with services.", "Skilled nursing facility."]),
        ("FOLLOWUP", "followup", ["With primary care in 1 week.", "With Dr. Y in 2 weeks."]),
    ],
}
_KINDS = tuple(_SECTIONS)
_TITLE_CASE = {"SUBJECTIVE": "Subjective", "MEDICATIONS": "Medications", "ALLERGIES": "Allergies",
               "ASSESSMENT": "Assessment", "PLAN": "Plan", "HISTORY OF PRESENT ILLNESS": "History of Present Illness",
               "PAST MEDICAL HISTORY": "Past Medical History", "FAMILY HISTORY": "Family History",
               "SOCIAL HISTORY": "Social History", "REVIEW OF SYSTEMS": "Review of Systems",
               "PHYSICAL EXAMINATION": "Physical Examination", "IMPRESSION": "Impression",
               "HOSPITAL COURSE": "Hospital Course", "VITAL SIGNS": "Vital Signs"}
_MD_TITLE = {**_TITLE_CASE, "REASON FOR CONSULTATION": "Reason for Consultation", "HEENT": "HEENT",
             "LUNGS": "Lungs", "LABORATORY DATA": "Laboratory Data", "RECOMMENDATIONS": "Recommendations"}


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


_SUB = re.compile(r"\{\{([^|}]+)\|([^}]+)\}\}")  # an exam / ROS sub-heading inside a section: {{TITLE|name}}


def _sections(rng: np.random.Generator, kind: str | None = None) -> list[tuple[str, list[str], str]]:
    """``(title, section names it opens, body)``: the names are the section's, then its sub-headings'."""
    kind = kind or _KINDS[int(rng.integers(len(_KINDS)))]
    table = _SECTIONS[kind]
    keep = [s for s in table if rng.random() < 0.85]
    if len(keep) < 2:
        keep = table[:2]
    out = []
    for title, name, contents in keep:
        body = _pick(rng, contents)
        out.append((title, [name] + [m.group(2) for m in _SUB.finditer(body)], _SUB.sub(r"\1", body)))
    return out


def _names(secs: list[tuple[str, list[str], str]]) -> list[str]:
    return [n for _, names, _ in secs for n in names]


def _flatten(text: str) -> str:
    """A sentence list as MTSamples flattens it: sentences joined by ``.,``."""
    return text.replace(". ", ".,")


def transcription_note(rng: np.random.Generator, kind: str | None = None) -> tuple[str, list[str]]:
    """An MTSamples-style note flattened to one line, with inline headings."""
    secs = _sections(rng, kind)
    after_heading = [":,  ", ": , ", ":,", ": ", ":  ,"]
    between = [",", ".,", ", ", " ,"]
    parts = []
    for k, (title, _, body) in enumerate(secs):
        if title in _TITLE_CASE and rng.random() < 0.15:
            title = _TITLE_CASE[title]
        body = body if rng.random() < 0.5 else _flatten(body)
        sep = "" if k == 0 else _pick(rng, between)
        if sep and not parts[-1].endswith("."):
            sep = "." + sep.lstrip(".")
        parts.append(sep + title + _pick(rng, after_heading) + body)
    text = "".join(parts)
    if rng.random() < 0.3:
        text = "SAMPLE NAME: " + _pick(rng, ["Allergic Rhinitis", "Lung Nodule Consult", "Lap Chole"]) + " ,   " + text
        return text, ["sample_name"] + _names(secs)
    return text, _names(secs)


def markdown_note(rng: np.random.Generator, kind: str | None = None) -> tuple[str, list[str]]:
    """A note with Markdown headings (``#``/``##``, or ``**Bold:**`` labels)."""
    kind = kind or _pick(rng, ["soap", "consult", "discharge"])
    secs = _sections(rng, kind)
    bold = rng.random() < 0.3
    lines = []
    if rng.random() < 0.4:
        lines.append("Progress note generated from the clinic template.\n")
    for title, _, body in secs:
        t = _MD_TITLE.get(title, title.title())
        if bold:
            lines.append(f"**{t}:** {body}")
        else:
            lines.append(f"{'#' * int(rng.integers(1, 4))} {t}\n{body.replace('.,', '.' + chr(10))}\n")
    names = _names(secs)
    return "\n".join(lines), (["preamble"] + names if lines[0].startswith("Progress") else names)


def allcaps_note(rng: np.random.Generator, kind: str | None = None) -> tuple[str, list[str]]:
    """ALL-CAPS headings on their own line, with or without a colon, as EHR exports print them."""
    secs = _sections(rng, kind)
    colon = rng.random() < 0.5
    blocks = []
    for title, _, body in secs:
        body = body.replace(".,", ".\n")
        blocks.append(f"{title}{':' if colon else ''}\n{body}")
    return "\n\n".join(blocks) + "\n", _names(secs)


def note_corpus(n: int = 300, *, seed: int = 0) -> dict[str, list[tuple[str, list[str]]]]:
    """``{'transcription': [...], 'markdown': [...], 'allcaps': [...]}``, ``n`` notes each."""
    rng = np.random.default_rng(seed)
    return {"transcription": [transcription_note(rng) for _ in range(n)],
            "markdown": [markdown_note(rng) for _ in range(n)],
            "allcaps": [allcaps_note(rng) for _ in range(n)]}


#: clinical numbers that a date pattern would take: (snippet, the number that must survive)
CLINICAL_NUMBERS: list[tuple[str, str]] = [
    ("Ortho Tri-Cyclen 0.15/30 one tablet daily", "0.15/30"),
    ("Seasonique 0.15/30 mg", "0.15/30"),
    ("Dyazide 37.5/25 mg daily", "37.5/25"),
    ("Maxzide 75/50 mg", "75/50"),
    ("Janumet 4/1000 mg b.i.d.", "4/1000"),
    ("Janumet 50/1000 mg b.i.d.", "50/1000"),
    ("Norco 5/325 one to two q.4-6h. p.r.n.", "5/325"),
    ("Percocet 10/325 mg", "10/325"),
    ("Advair 250/50 one puff b.i.d.", "250/50"),
    ("Symbicort 160/4.5 two puffs", "160/4.5"),
    ("Sinemet 25/100 t.i.d.", "25/100"),
    ("Lotrel 5/20 daily", "5/20"),
    ("Hyzaar 50/12.5 mg", "50/12.5"),
    ("Bactrim DS 800/160 b.i.d.", "800/160"),
    ("Augmentin 875/125 b.i.d.", "875/125"),
    ("ABG 7.39/42/79 on 2 L nasal cannula", "7.39/42/79"),
    ("arterial blood gas 7.28/55/61/25", "7.28/55/61/25"),
    ("ABG: 7.45/32/88", "7.45/32/88"),
    ("VBG 7.31/48", "7.31/48"),
    ("PA pressures 31/14/21 mmHg", "31/14/21"),
    ("RA 8, RV 42/8, PA 42/20/28 mmHg, wedge 18", "42/20/28"),
    ("PA pressures of 10/12/14", "10/12/14"),
    ("pulmonary artery pressure 45/22/30 mm Hg", "45/22/30"),
    ("ventilator settings 500/14/5/0.4", "500/14/5/0.4"),
    ("MMSE 18-20/28", "18-20/28"),
    ("MMSE 24/30", "24/30"),
    ("MoCA score 21/30", "21/30"),
    ("Apgars 8/9", "8/9"),
    ("GCS 15/15", "15/15"),
    ("strength 5/5 in all extremities", "5/5"),
    ("2/6 systolic ejection murmur", "2/6"),
    ("pain 7/10", "7/10"),
    ("reflexes 2+/4 and symmetric", "2+/4"),
    ("visual acuity 20/40 OD, 20/25 OS", "20/40"),
    ("blood pressure 124/78", "124/78"),
    ("BP 10/12/14 mmHg", "10/12/14"),
    ("lidocaine with epinephrine 1:100,000", "1:100,000"),
    ("2.5/5 mL of the suspension", "2.5/5"),
    ("insulin 70/30, 12 units", "70/30"),
    ("diluted 1/2000", "1/2000"),
    ("G2 P1-0-1-1", "P1-0-1-1"),
    ("TLC 4.5/7.0 L", "4.5/7.0"),
    ("CD4 count 350/12%", "350/12"),
    ("IOP 14/16 mmHg", "14/16"),
    ("nicotine patch 21/14/7 taper", "21/14/7"),
]

_FIRST = ["John", "Mary", "Ann", "Robert", "Linda", "Carlos", "Mei", "Olusegun", "Fatima", "Piotr"]
_LAST = ["Carter", "Smith", "Nguyen", "Okafor", "Kowalski", "Garcia", "O'Brien", "Lee", "Schmidt", "Patel"]


def phi_note(rng: np.random.Generator) -> tuple[str, list[str]]:
    """A note with PHI in the places it hides, and the PHI strings (each must be scrubbed)."""
    first, last = _pick(rng, _FIRST), _pick(rng, _LAST)
    doc = _pick(rng, _LAST)
    month = int(rng.integers(1, 13))
    day = int(rng.integers(1, 29))
    year = int(rng.integers(1995, 2026))
    d1 = _pick(rng, [f"{month:02d}/{day:02d}/{year}", f"{month}/{day}/{str(year)[2:]}", f"{year}-{month:02d}-{day:02d}",
                     f"{month}-{day}-{year}", f"{day:02d}.{month:02d}.{year}"])
    names = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December"]
    d2 = _pick(rng, [f"{names[month - 1]} {day}, {year}", f"{day} {names[month - 1]} {year}",
                     f"{names[month - 1][:3]}. {year}", f"{month}/{year}"])
    phone = _pick(rng, [f"({rng.integers(200, 999)}) {rng.integers(200, 999)}-{rng.integers(1000, 9999)}",
                        f"{rng.integers(200, 999)}-{rng.integers(200, 999)}-{rng.integers(1000, 9999)}",
                        f"{rng.integers(200, 999)}.{rng.integers(200, 999)}.{rng.integers(1000, 9999)}"])
    mrn = str(rng.integers(10**6, 10**9))
    email = f"{first.lower()}.{last.lower().replace(chr(39), '')}@example.org"
    dr = _pick(rng, [f"Dr. {doc}", f"Dr {doc}", f"Dr. {first[0]}. {doc}", "Dr. X"])  # X: MTSamples' placeholder
    stop = _pick(rng, [".  ", ". ", ".\n"])
    body = (f"Patient: {first} {last}, MRN: {mrn}. Seen on {d1} by {dr}{stop}The patient is a 64-year-old woman "
            f"with a 2.1 cm nodule, BP 132/84, Janumet 50/1000 mg b.i.d. Follow-up {d2}; call {phone} or "
            f"e-mail {email}. Electronically signed by: {doc}, MD")
    phi = [first, last, mrn, d1, d2, phone, email, doc]
    return body, phi
