"""The consultation assistant on declared modalities beyond the four defaults: a second table
(``labs``), a second text modality (``radiology`` reports) and a second series (``icu_vitals``)
are indexed, asked about and cited with a reference naming their modality, and every citation
resolves through :meth:`Assistant.resolve`."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from medmm.assistant import ANSWERED, REFUSED, Assistant, AssistantError, Citation, LLMPhraser, check_answer
from medmm.assistant.answer import make_ref, split_ref
from medmm.records import ModalitySpec, Note, Notes, PatientRecord, Tabular, Vitals

NOW = pd.Timestamp("2024-03-02T08:00:00")
SOURCES = {"vitals": "vitals/P7.csv", "icu_vitals": "icu/P7_philips_mx800.csv", "ehr": "ehr.csv", "labs": "labs.csv",
           "notes": "notes/P7.jsonl", "radiology": "radiology/P7_ct_chest.txt"}
SPEC = ModalitySpec({"image": "image", "notes": "text", "vitals": "series", "ehr": "table", "labs": "table",
                     "radiology": "text", "icu_vitals": "series"})

# a transcribed CT report as a dictation system exports it: one line, headers run into the text
RADIOLOGY = ("CT CHEST WITH CONTRAST   CLINICAL INDICATION: Fever, raised CRP, ?source.  TECHNIQUE: Axial images "
             "through the chest after IV contrast.  FINDINGS: There is a 2.1 cm spiculated nodule in the right upper "
             "lobe. No pleural effusion. No pneumothorax. Mild bibasal atelectasis.  IMPRESSION: 1. Spiculated right "
             "upper lobe nodule, suspicious for malignancy. 2. No pleural effusion.  Dictated by: J. Doe, MD  "
             "Transcribed: 03/01/2024 14:22")
PROGRESS = ("SUBJECTIVE:\nProductive cough for three days. Short of breath on minimal exertion. Denies haemoptysis."
            "\n\n"
            "ASSESSMENT AND PLAN:\nCommunity-acquired pneumonia, on IV co-amoxiclav.\n")


def _ward_vitals() -> pd.DataFrame:
    """Four-hourly ward observations from the nurses' chart (heart rate, SpO2, temperature)."""
    rows = []
    for k, t in enumerate(pd.date_range("2024-03-01T08:00", periods=6, freq="4h")):  # 08:00 .. 04:00 next day
        rows += [(t, "heart_rate", 92.0 + 3 * k, "bpm"), (t, "spo2", 96.0 - k * 0.5, "%"),
                 (t, "temperature", 37.8 + 0.1 * k, "degC")]
    return pd.DataFrame(rows, columns=["time", "signal", "value", "unit"])


def _icu_vitals() -> pd.DataFrame:
    """The ICU bedside monitor after transfer at 03:00: hourly heart rate and SpO2 (a different
    device), an arterial line the ward has not, one dropout (NaN) as monitors export them."""
    rows = []
    for k, t in enumerate(pd.date_range("2024-03-02T03:00", periods=6, freq="1h")):  # 03:00 .. 08:00
        rows += [(t, "heart_rate", 118.0 + 2 * k, "/min"), (t, "spo2", 91.0 + k, "%"),
                 (t, "abp_sys", 96.0 + k, "mmHg")]
    rows.append((pd.Timestamp("2024-03-02T05:30"), "spo2", np.nan, "%"))
    frame = pd.DataFrame(rows, columns=["time", "signal", "value", "unit"])
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def _record() -> PatientRecord:
    ward = _ward_vitals()
    return PatientRecord(
        "P7", vitals=Vitals(ward), icu_vitals=Vitals(_icu_vitals()),
        ehr=Tabular({"age": 67, "sodium": 133.0, "hemoglobin": 11.2, "smoking": "former"},
                    {"sodium": "mmol/L", "hemoglobin": "g/dL"}),
        labs=Tabular({"crp": 87.0, "ferritin": 640.0, "albumin": 29.0, "procalcitonin": None},
                     {"crp": "mg/L", "ferritin": "ug/L", "albumin": "g/L", "procalcitonin": "ng/mL"}),
        notes=Notes([Note(PROGRESS, pd.Timestamp("2024-03-01T09:00"), "progress")]),
        radiology=Notes([Note(RADIOLOGY, pd.Timestamp("2024-03-01T14:22"), "radiology_report")]),
        index_time=NOW)


@pytest.fixture(scope="module")
def bot() -> Assistant:
    return Assistant(_record(), sources=SOURCES, modalities=SPEC)


def _resolves(bot: Assistant, answer) -> None:
    """Every citation resolves to the very item it quotes: value, time and sentence."""
    assert check_answer(answer) == [], check_answer(answer)
    assert answer.citations
    for c in answer.citations:
        item = bot.resolve(c)
        kind, modality, _ = split_ref(c.ref)
        if kind in ("V", "T", "N"):
            assert item["modality"] == c.modality == modality
        if isinstance(c.value, float):
            assert item["value"] == pytest.approx(c.value)
        if c.time is not None:
            assert pd.Timestamp(item["time"]) == pd.Timestamp(c.time)
        if c.span:
            assert item["text"] == c.text


# ----------------------------------------------------------------------------- references

def test_reference_forms_keep_the_default_ones():
    assert make_ref("V", "vitals", "12") == "V12"
    assert make_ref("T", "ehr", ":crp") == "T:crp"
    assert make_ref("N", "notes", "0:5-40") == "N0:5-40"
    assert make_ref("V", "icu_vitals", "12") == "V[icu_vitals]12"
    assert make_ref("T", "labs", ":crp") == "T[labs]:crp"
    assert make_ref("N", "radiology", "0:5-40") == "N[radiology]0:5-40"
    assert split_ref("T[labs]:crp") == ("T", "labs", ":crp")
    assert split_ref("V12") == ("V", "vitals", "12")
    assert split_ref("N0:5-40") == ("N", "notes", "0:5-40")
    assert split_ref("E3") == ("E", None, "3")


def test_every_declared_modality_is_indexed(bot):
    ix = bot.index
    assert {s.modality for s in ix.series.values()} == {"vitals", "icu_vitals"}
    assert {s.modality for s in ix.labs.values()} == {"ehr", "labs"}
    assert {s.modality for s in ix.sentences} == {"notes", "radiology"}
    assert ix.series["heart_rate"].refs[0] == "V0" and ix.series["heart_rate@icu_vitals"].refs[0].startswith(
        "V[icu_vitals]")
    spo2 = ix.series["spo2@icu_vitals"]
    assert len(spo2.values) == 6 and np.isfinite(spo2.values).all()  # the monitor's dropout is not a reading
    assert "procalcitonin@labs" not in ix.labs and "smoking" not in ix.labs  # no value; not a number


# ----------------------------------------------------------------------------- a second table

def test_value_only_in_the_second_table_is_cited_there(bot):
    a = bot.ask("What is the CRP?")
    assert a.status == ANSWERED and a.value == 87.0 and a.unit == "mg/L"
    c = a.citations[0]
    assert (c.ref, c.modality, c.source) == ("T[labs]:crp", "labs", "labs.csv")
    assert "C-reactive protein (labs)" in a.text and "87 mg/L" in a.text
    assert "[T[labs]:crp]" in a.format() and "labs.csv" in a.format()
    _resolves(bot, a)


def test_lab_outside_the_vocabulary_is_found_by_its_name(bot):
    a = bot.ask("what was the ferritin level?")
    assert a.status == ANSWERED and a.value == 640.0 and a.unit == "ug/L"
    assert [c.ref for c in a.citations] == ["T[labs]:ferritin"]
    _resolves(bot, a)
    ehr = bot.ask("latest sodium")  # the default table keeps its old reference form
    assert ehr.value == 133.0 and [c.ref for c in ehr.citations] == ["T:sodium"]
    assert ehr.citations[0].source == "ehr.csv"
    _resolves(bot, ehr)
    empty = bot.ask("what is the procalcitonin?")  # declared, but no value for this patient
    assert empty.status == REFUSED and "no procalcitonin" in empty.text


def test_lab_in_both_tables_is_reported_from_both():
    rec = _record()
    rec.ehr.values["crp"] = 12.0
    rec.ehr.units["crp"] = "mg/L"
    b = Assistant(rec, sources=SOURCES)
    a = b.ask("latest CRP")
    assert a.status == ANSWERED
    assert [(c.ref, c.value) for c in a.citations] == [("T:crp", 12.0), ("T[labs]:crp", 87.0)]
    assert "C-reactive protein was 12 mg/L" in a.text and "C-reactive protein (labs) was 87 mg/L" in a.text
    _resolves(b, a)


# ----------------------------------------------------------------------------- a second series

def test_signal_in_two_series_is_reported_from_both(bot):
    a = bot.ask("last heart rate")
    assert a.status == ANSWERED and len(a.statements) == 2
    ward, icu = a.statements
    assert ward.citations[0].ref == "V15" and ward.citations[0].value == 107.0  # 04:00 on the ward chart
    assert icu.citations[0].ref.startswith("V[icu_vitals]") and icu.citations[0].value == 128.0
    assert icu.citations[0].source == "icu/P7_philips_mx800.csv" and icu.citations[0].modality == "icu_vitals"
    assert "heart rate (icu_vitals) was 128 /min at 2024-03-02 08:00" in a.text
    _resolves(bot, a)
    assert bot.resolve(icu.citations[0])["value"] == 128.0


def test_signal_only_in_the_second_series(bot):
    a = bot.ask("highest arterial systolic pressure in the last 6 hours")
    assert a.status == ANSWERED and a.value == 101.0
    assert [c.modality for c in a.citations] == ["icu_vitals"]
    _resolves(bot, a)


def test_trend_and_mean_per_series(bot):
    a = bot.ask("is the SpO2 falling since 2024-03-01?")
    assert a.kind == "trend" and len(a.statements) == 2
    assert "SpO2 since 2024-03-01: falling" in a.text and "SpO2 (icu_vitals) since 2024-03-01: rising" in a.text
    _resolves(bot, a)
    m = bot.ask("mean spo2 in the past 6 hours")
    icu = [st for st in m.statements if st.citations[0].modality == "icu_vitals"][0]
    assert icu.derived["mean"] == pytest.approx(93.5) and len(icu.citations) == 6
    _resolves(bot, m)


def test_news2_takes_each_parameters_latest_reading_from_either_series(bot):
    a = bot.ask("what is the NEWS2 now?")
    assert a.kind == "news2"
    used = {c.label.split(" ")[0]: c for c in a.citations}
    assert a.citations and all(c.modality in ("vitals", "icu_vitals") for c in a.citations)
    hr = [c for c in a.citations if "heart rate" in c.label]
    assert [c.modality for c in hr] == ["icu_vitals"]  # 08:00 on the monitor, not 04:00 on the ward
    assert any(c.modality == "vitals" and "temperature" in c.label for c in a.citations), used  # ward only
    _resolves(bot, a)


# ----------------------------------------------------------------------------- a second text modality

def test_findings_in_the_radiology_report_cite_it(bot):
    a = bot.ask("is there a pleural effusion?")
    assert a.findings == {"pleural effusion": "negated"} and "no pleural effusion" in a.text
    assert all(c.modality == "radiology" and c.ref.startswith("N[radiology]0:") for c in a.citations)
    assert a.citations[0].source == "radiology/P7_ct_chest.txt note 0"
    assert "Radiology report (2024-03-01 14:22, findings)" in a.text  # the modality is in the note's name
    _resolves(bot, a)
    nod = bot.ask("what does the report say about the nodule?")
    assert nod.findings == {"nodule": "affirmed"} and "2.1 cm spiculated nodule" in nod.text
    _resolves(bot, nod)


def test_notes_and_radiology_are_searched_together(bot):
    a = bot.ask("any haemoptysis?")
    assert a.findings == {"haemoptysis": "negated"} and [c.ref[:2] for c in a.citations] == ["N0"]
    assert a.citations[0].source == "notes/P7.jsonl note 0" and a.citations[0].modality == "notes"
    _resolves(bot, a)
    cough = bot.ask("what do the notes say about atelectasis?")
    assert cough.status == ANSWERED and cough.citations[0].modality == "radiology"
    _resolves(bot, cough)


def test_summary_covers_every_modality(bot):
    a = bot.ask("summarise the last 24 hours")
    mods = {c.modality for c in a.citations}
    assert {"vitals", "icu_vitals", "labs", "ehr", "notes", "radiology"} <= mods
    assert "Ferritin (labs): 640 ug/L" in a.text and "dyspnea present" in a.text
    assert "Age" not in a.text  # a feature of the EHR row, not an event of the last 24 h
    _resolves(bot, a)


# ----------------------------------------------------------------------------- resolution and display

def test_a_citation_resolves_only_into_its_own_modality(bot):
    with pytest.raises(AssistantError, match="does not resolve"):
        bot.resolve(Citation("T:crp", "ehr", "ehr.csv"))  # the default EHR has no CRP
    with pytest.raises(AssistantError, match="points into modality 'labs'"):
        bot.resolve(Citation("T[labs]:crp", "ehr", "ehr.csv"))
    with pytest.raises(AssistantError, match="does not resolve"):
        bot.resolve(Citation("V[ecg_waveform]0", "ecg_waveform", "x"))  # not a modality of this record
    with pytest.raises(AssistantError, match="does not resolve"):
        bot.resolve(Citation("N[radiology]0:10-99999", "radiology", "x"))
    assert bot.resolve(Citation("T[labs]:ferritin", "labs", "labs.csv"))["unit"] == "ug/L"
    assert bot.resolve(Citation("V[vitals]0", "vitals", "x")) == bot.resolve(Citation("V0", "vitals", "x"))


def test_llm_reply_citing_a_declared_modality_verifies(bot):
    def chat(text):
        return httpx.MockTransport(lambda r: httpx.Response(200, json={"choices": [{"message": {
            "role": "assistant", "content": text}}]}))
    good = Assistant(bot.record, sources=SOURCES, phraser=LLMPhraser("http://llm/v1", "m", transport=chat(
        "The C-reactive protein in the labs table is 87 mg/L [T[labs]:crp].")))
    a = good.ask("what is the crp?")
    assert a.phrased_by == "m" and [c.ref for c in a.citations] == ["T[labs]:crp"]
    wrong = Assistant(bot.record, sources=SOURCES, phraser=LLMPhraser("http://llm/v1", "m", transport=chat(
        "The CRP is 87 mg/L [T:crp].")))  # the default table holds no CRP: not this answer's evidence
    b = wrong.ask("what is the crp?")
    assert b.phrased_by is None and "T:crp" in b.notices[0]
    prompt = LLMPhraser("http://llm/v1", "m").messages(bot.ask("what is the crp?"))[1]["content"]
    assert "\n[T[labs]:crp] C-reactive protein (labs) 87 mg/L" in prompt


def test_display_shows_the_cited_report_and_monitor(bot):
    html = bot.ask("is there a pleural effusion?")._repr_html_()
    assert "radiology note 0" in html and "<mark" in html and "No pleural effusion." in html
    html = bot.ask("last heart rate")._repr_html_()
    assert html.count("<img") == 2 and "icu_vitals (circled: cited)" in html


# ----------------------------------------------------------------------------- from a cohort's files

def test_from_manifest_reads_the_declared_labs_table(tmp_path):
    from medmm.synth import generate_cohort

    manifest = generate_cohort(tmp_path, n_patients=4, seed=5, image_size=8, missing_rate=0.0,
                               extra_modalities=("labs",), progress=False)
    labs = pd.read_csv(tmp_path / "labs.csv", dtype={"patient_id": str}).set_index("patient_id")
    pid = labs.index[0]
    b = Assistant.from_manifest(manifest, pid)
    a = b.ask("what is the CRP?")
    assert a.status == ANSWERED and a.value == pytest.approx(labs.loc[pid, "crp [mg/L]"]) and a.unit == "mg/L"
    assert (a.citations[0].ref, a.citations[0].source) == ("T[labs]:crp", "labs.csv")
    _resolves(b, a)


def test_monitor_context_keeps_declared_modalities():
    from medmm.monitor.health import HealthMonitor

    rec = _record()
    mon = HealthMonitor()
    mon.observe_many("P7", list(rec.vitals.frame.itertuples(index=False, name=None)))
    mon.set_context("P7", notes=rec.notes)
    mon.patients["P7"].context["labs"] = rec.labs  # a service that registers a declared table beside the defaults
    b = Assistant.from_monitor(mon, "P7")
    a = b.ask("what is the crp?")
    assert a.value == 87.0 and [c.ref for c in a.citations] == ["T[labs]:crp"]
    _resolves(b, a)
