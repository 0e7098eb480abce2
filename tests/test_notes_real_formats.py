"""Clinical notes as real corpora write them: sections, context scope and PHI scrubbing (issue 13, 11-13)."""

from __future__ import annotations

import numpy as np
import pytest

from medmm.preprocess.notes_nlp import PhiScrubber, classify_note, extract_findings, split_sections
from medmm.synth.real_notes import CLINICAL_NUMBERS, note_corpus, phi_note
from medmm.problems import ProblemReport

# An MTSamples transcription as the CSV holds it: one line, inline headings, ".," separators
MTSAMPLE = (
    "SUBJECTIVE:,  This 23-year-old white female presents with complaint of allergies.  She used to have "
    "allergies when she lived in Seattle but she thinks they are worse here.,MEDICATIONS: , None.,ALLERGIES:,  "
    "She has no known medicine allergies.,OBJECTIVE:,Vitals:  Weight was 130 pounds and blood pressure 124/78."
    ",HEENT:  Her throat was mildly erythematous without exudate.,ASSESSMENT:,  Allergic rhinitis.,PLAN:,1.  "
    "She will try Zyrtec instead of Allegra at 10:30 a.m.,2.  Samples of Nasonex two sprays in each nostril given."
)


def _names(text):
    return [s.name for s in split_sections(text)]


def test_flattened_transcription_is_split_at_its_inline_headings():
    secs = split_sections(MTSAMPLE)
    assert [s.name for s in secs] == ["subjective", "medications", "allergies", "objective", "vitals", "heent",
                                      "assessment", "plan"]
    by = {s.name: s for s in secs}
    assert by["medications"].text == "None."
    assert by["vitals"].text == "Weight was 130 pounds and blood pressure 124/78."
    assert by["plan"].text.startswith("1.  She will try Zyrtec") and "10:30" in by["plan"].text
    assert all(MTSAMPLE[s.start:s.end] == s.text for s in secs)
    assert by["allergies"].title == "ALLERGIES"


def test_markdown_and_allcaps_headings():
    md = "# Chief Complaint\nCough for 3 days.\n\n## History of Present Illness ##\nNo fever.\n\n**Plan:** Rest.\n"
    assert _names(md) == ["chief_complaint", "hpi", "plan"]
    assert split_sections(md)[1].text == "No fever."
    caps = ("HISTORY OF PRESENT ILLNESS\nThe patient is a 71-year-old man.\n\nOPERATIVE FINDINGS\nNo mass.\n\n"
            "ESTIMATED BLOOD LOSS\nMinimal.\n\n"
            "IMPRESSION:\nNormal study.\nBP 120/80.\n")
    assert _names(caps) == ["hpi", "findings", "estimated_blood_loss", "impression"]
    assert split_sections(caps)[-1].text == "Normal study.\nBP 120/80."
    # an ALL-CAPS line inside a section (no blank line before it) opens no section
    assert _names("ALLERGIES\nNKDA\nPENICILLIN\n\nPLAN\nHome.") == ["allergies", "plan"]


@pytest.mark.parametrize("text", [
    "Blood pressure: 120/80, pulse 72 at 10:30 a.m. and the patient was told: no driving.",
    "WBC 12.1.  INR: 1.1, BUN: 22, ratio 1:100,000.",
    "Dose: 5 mg.  Time: 08:45.",
    "She said that her FATHER: had cancer",  # not after a sentence boundary
])
def test_labels_inside_sentences_are_no_headings(text):
    assert _names(text) == ["body"]


def test_corpus_in_three_real_formats_is_sectioned():
    for fmt, notes in note_corpus(120, seed=3).items():
        exact = np.mean([_names(text) == names for text, names in notes])
        assert exact >= 0.95, fmt


def test_scope_ends_at_flattened_separators_and_sections():
    note = "REVIEW OF SYSTEMS:, Denies fever or chills.,ASSESSMENT:,  Sepsis with fever.,PLAN:, Cultures."
    got = [(f.text, f.section, f.polarity) for f in extract_findings(note)]
    assert got == [("fever", "ros", "negated"), ("chills", "ros", "negated"), ("Sepsis", "assessment", "affirmed"),
                   ("fever", "assessment", "affirmed")]
    # the same scope within one section, separated by ".,"
    (_, f2) = extract_findings("HPI:, No fever.,Reports chest pain and chills.")[:2]
    assert f2.text == "chest pain" and f2.polarity == "affirmed"
    assert classify_note("ROS:, No fever.,IMPRESSION:, Acutely unwell, septic.")["disease"] == "affirmed"


@pytest.mark.parametrize("text,term,family,polarity", [
    ("His father who had cancer died at 60.", "cancer", True, "affirmed"),
    ("Mother had breast cancer; patient has a mass in the liver.", "mass", False, "affirmed"),
    ("There is no other evidence of any cancer.", "cancer", False, "negated"),
    ("Denies pain in the leg, which has a mass.", "mass", False, "affirmed"),  # "which" ends a negation
])
def test_experiencer_and_negation_scope(text, term, family, polarity):
    (f,) = [f for f in extract_findings(text) if f.text.lower() == term]
    assert (f.family, f.polarity) == (family, polarity)


def test_section_sets_experiencer_and_history_and_pseudo_targets():
    note = "FAMILY HISTORY:, Colon cancer.,PAST MEDICAL HISTORY:, Breast cancer in 2009.,IMPRESSION:, No mass."
    got = {(f.section, f.family, f.historical) for f in extract_findings(note) if f.concept == "cancer"}
    assert got == {("family_history", True, False), ("pmh", False, True)}
    assert classify_note(note)["tumor"] == "affirmed"  # the history counts, the family's does not
    assert extract_findings("Body mass index 31.2. No mass effect. Muscle mass normal.") == []
    assert classify_note("Body mass index is 35.")["tumor"] == "unmentioned"


def test_scrubber_leaves_every_clinical_number_intact():
    scrub = PhiScrubber()
    damaged = [(s, scrub(s)) for s, n in CLINICAL_NUMBERS if n not in scrub(s)]
    assert damaged == []
    text = "Ortho Tri-Cyclen 0.15/30, Dyazide 37.5/25 mg, ABG 7.39/42/79, PA 31/14/21 mmHg, MMSE 18-20/28 on 3/4/2021."
    assert scrub(text) == ("Ortho Tri-Cyclen 0.15/30, Dyazide 37.5/25 mg, ABG 7.39/42/79, PA 31/14/21 mmHg, "
                           "MMSE 18-20/28 on [DATE].")


@pytest.mark.parametrize("date", ["03/04/2023", "3/4/23", "12-31-2022", "2023-03-04", "04.03.2023", "March 4, 2023",
                                  "4 March 2023", "Mar. 2023", "3/2023"])
def test_scrubber_still_finds_dates(date):
    assert PhiScrubber()(f"Seen on {date} in clinic.") == "Seen on [DATE] in clinic."


def test_scrubber_finds_date_ranges():
    assert PhiScrubber()("Admitted 2/3/2021-2/5/2021, seen 05/2019-06/2020.") == "Admitted [DATE]-[DATE], seen [DATE]-[DATE]."


@pytest.mark.parametrize("text", ["Dose 13/32/2023 units", "on 13/14/21", "the 0/12/2020 value"])
def test_impossible_dates_are_not_dates(text):
    assert "[DATE]" not in PhiScrubber()(text)


def test_name_does_not_swallow_the_next_sentence():
    scrub = PhiScrubber()
    assert scrub("Seen by Dr. X.  The patient is well.") == "Seen by [NAME].  The patient is well."
    assert scrub("Dr. Carter. He agrees.") == "[NAME]. He agrees."
    assert scrub("Dr. J. Smith saw her; Mrs. O'Brien Kelly too.") == "[NAME] saw her; [NAME] too."
    assert scrub("Electronically signed by: Carter, MD") == "Electronically signed by: [NAME], MD"
    assert scrub("Patient: Mary O'Brien. Patient: Denies fever.") == "Patient: [NAME]. Patient: Denies fever."


def test_scrubber_recall_on_a_phi_corpus():
    rng = np.random.default_rng(11)
    scrub = PhiScrubber()
    for _ in range(150):
        text, phi = phi_note(rng)
        out = scrub(text)
        assert not [p for p in phi if p in out], (text, out)
        assert "The patient is a 64-year-old" in out and "50/1000 mg" in out and "132/84" in out


# ---------------------------------------------------------------------------- note tables (item 15)


def _mtsamples_csv(tmp_path):
    import pandas as pd

    p = tmp_path / "mtsamples.csv"
    pd.DataFrame({
        "description": [" A 23-year-old white female presents with complaint of allergies.",
                        " Consult for laparoscopic gastric bypass.", " Lung nodule."],
        "medical_specialty": [" Allergy / Immunology", " Bariatrics", " Consult - History and Phy."],
        "sample_name": [" Allergic Rhinitis ", " Laparoscopic Gastric Bypass Consult - 2 ", " Lung Nodule "],
        "transcription": [MTSAMPLE, None, "HISTORY OF PRESENT ILLNESS:, A 2.1 cm nodule.,IMPRESSION:, Suspicious."],
        "keywords": ["allergy / immunology, allergic rhinitis, allergies, asthma", "", "nodule"],
    }).to_csv(p)  # MTSamples' CSV keeps the pandas index as an unnamed first column
    return p


def test_mtsamples_table_reads_its_transcription_column(tmp_path):
    from medmm.io.notes import read_notes_table

    p = _mtsamples_csv(tmp_path)
    notes_found = ProblemReport()
    notes = read_notes_table(p, report=notes_found)
    assert [n.text[:11] for n in notes.notes] == ["SUBJECTIVE:", "HISTORY OF "]
    (err,) = notes_found.problems  # the empty transcription is reported, not fatal
    assert err.row == 1 and err.column == "text"
    desc = read_notes_table(p, text_column="description")
    assert desc.notes[0].text.startswith("A 23-year-old") and len(desc.notes) == 3


def test_note_table_without_text_column_names_the_likely_one(tmp_path):
    import pandas as pd

    from medmm.errors import ReadError
    from medmm.io.notes import read_notes_table

    p = tmp_path / "reports.csv"
    pd.DataFrame({"id": ["a", "b"], "kind": ["CT", "MR"],
                  "narrative": ["FINDINGS: No mass. IMPRESSION: Normal.", "FINDINGS: 2 cm lesion."]}).to_csv(
        p, index=False)
    with pytest.raises(ReadError, match="text_column='narrative'") as ei:
        read_notes_table(p)
    assert ei.value.path == str(p) and ei.value.column == "text"
    assert [n.text for n in read_notes_table(p, text_column="narrative").notes][1] == "FINDINGS: 2 cm lesion."
    with pytest.raises(ReadError, match="'nope' is not a column"):
        read_notes_table(p, text_column="nope")
