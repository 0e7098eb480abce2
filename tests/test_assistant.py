"""The consultation assistant: each question type on records with known answers, refusals,
negation, citations that resolve, verification of a language model's reply, CLI, display, service."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from fhir_factory import patient_bundle
from medmm.assistant import (ANSWERED, PARTIAL, REFUSED, Assistant, LLMPhraser, QuestionError, check_answer)
from medmm.monitor.health import HealthMonitor
from medmm.records import Note, Notes, PatientRecord, Tabular, Vitals

NOW = pd.Timestamp("2024-03-02T08:00:00")


def _vitals_record(extra_notes=()) -> PatientRecord:
    """Six hours of SpO2 falling 98 -> 90, a temperature series with a higher value 30 h ago, and a
    NEWS2 set at 03:00 (RR 26, SBP 95, pulse 125, T 38.6 with that hour's SpO2 96.67: NEWS2 3+0+2+2+1 = 8)."""
    rows = []
    for k in range(7):  # 02:00 .. 08:00, one per hour
        rows.append((NOW - pd.Timedelta(hours=6 - k), "spo2", 98.0 - 8 * k / 6, "%"))
    rows += [(NOW - pd.Timedelta(hours=30), "temperature", 39.4, "degC"),
             (NOW - pd.Timedelta(hours=20), "temperature", 37.9, "degC"),
             (NOW - pd.Timedelta(hours=2), "temperature", 37.2, "degC"),
             (pd.Timestamp("2024-03-02T03:00"), "resp_rate", 26.0, "/min"),
             (pd.Timestamp("2024-03-02T03:00"), "sbp", 95.0, "mmHg"),
             (pd.Timestamp("2024-03-02T03:00"), "heart_rate", 125.0, "bpm"),
             (pd.Timestamp("2024-03-02T03:00"), "temperature", 38.6, "degC")]
    frame = pd.DataFrame(rows, columns=["time", "signal", "value", "unit"]).sort_values("time", kind="stable")
    frame = frame.reset_index(drop=True)
    notes = [Note("FINDINGS:\nNo evidence of mass in the liver. The kidneys enhance symmetrically.\n\n"
                  "FAMILY HISTORY:\nMother had breast cancer.\n", pd.Timestamp("2024-03-01T10:00"), "radiology"),
             Note("HPI: Short of breath overnight. Denies chest pain. A 3.2 cm nodule in the right lung.",
                  pd.Timestamp("2024-03-02T06:00"), "progress"), *extra_notes]
    return PatientRecord("P1", vitals=Vitals(frame), notes=Notes(notes),
                         ehr=Tabular({"lactate": 2.7, "sodium": 139.0, "age": 70}, {"lactate": "mmol/L",
                                                                                  "sodium": "mmol/L"}),
                         index_time=NOW)


@pytest.fixture(scope="module")
def bot() -> Assistant:
    return Assistant(_vitals_record())


@pytest.fixture(scope="module")
def fhir_bot() -> Assistant:
    return Assistant.from_bundle(data=patient_bundle("p1"), index_time="2024-06-01T12:00:00")


def _resolves(bot: Assistant, answer) -> None:
    assert check_answer(answer) == [], check_answer(answer)
    for c in answer.citations:
        item = bot.resolve(c)
        if c.modality in ("vitals",) or (c.modality == "ehr" and isinstance(c.value, float)):
            assert item["value"] == pytest.approx(c.value)
        if c.time is not None and c.modality != "monitor":
            assert pd.Timestamp(item["time"]) == pd.Timestamp(c.time)
        if c.span:
            assert item["text"] == c.text


# ----------------------------------------------------------------------------- values in a window

def test_highest_in_window_excludes_older_values(bot):
    a = bot.ask("What was the highest temperature in the past 24 h?")
    assert a.status == ANSWERED and a.kind == "stat"
    assert a.value == 38.6 and a.unit == "degC"  # 39.4 is 30 h old
    assert "38.6 degC" in a.text and "2024-03-02 03:00" in a.text
    assert [c.ref for c in a.citations] == [f"V{bot.record.vitals.frame.index[(bot.record.vitals.frame['value'] == 38.6)][0]}"]
    _resolves(bot, a)
    assert bot.ask("highest temperature ever").value == 39.4


@pytest.mark.parametrize("q,value", [("last spo2", 90.0), ("latest oxygen saturation", 90.0),
                                     ("lowest sats in the last 6 hours", 90.0), ("first SpO2", 98.0),
                                     ("What is the current lactate?", 2.7)])
def test_latest_min_first_and_paraphrases(bot, q, value):
    a = bot.ask(q)
    assert a.status == ANSWERED
    assert a.value == pytest.approx(value)
    _resolves(bot, a)


def test_mean_cites_every_reading(bot):
    a = bot.ask("average SpO2 over the last 6 hours")
    vals = 98.0 - 8 * np.arange(7) / 6
    assert a.value == pytest.approx(round(vals.mean(), 2))
    assert len(a.citations) == 7
    _resolves(bot, a)


# ----------------------------------------------------------------------------- trends

def test_trend_falling_with_slope_and_abnormal_count(bot):
    a = bot.ask("Is SpO2 falling over the last 6 hours?")
    assert a.kind == "trend" and a.status == ANSWERED
    st = a.statements[0]
    assert "falling" in a.text
    assert st.derived["slope_per_hour"] == pytest.approx(-1.333, abs=1e-3)
    vals = 98.0 - 8 * np.arange(7) / 6
    assert st.derived["n_abnormal"] == int((np.round(vals) <= 95).sum())  # NEWS2 SpO2 scale 1 scores at <= 95
    assert "98 %" in a.text and "90 %" in a.text
    _resolves(bot, a)


def test_trend_with_too_few_readings_is_partial(bot):
    a = bot.ask("is the temperature rising in the past 3 hours?")
    assert a.status in (PARTIAL, REFUSED) and "too few" in a.text


# ----------------------------------------------------------------------------- NEWS2 and alerts

def test_news2_at_a_time_and_its_drivers(bot):
    a = bot.ask("What was the NEWS2 at 03:00 and what drove it?")
    assert a.kind == "news2" and a.value == 8
    assert "spo2" not in a.text.split("driven by")[1].split("Not observed")[0]  # 96.67 % scores 0
    for part in ("resp_rate 26/min scores 3", "sbp 95 mmHg (from sbp (cuff)) scores 2",
                 "pulse 125/min (from heart_rate (ECG)) scores 2", "temperature 38.6 degC scores 1"):
        assert part in a.text
    assert "assumed alert" in a.text  # consciousness was not charted, and the answer says so
    _resolves(bot, a)


def test_why_did_you_alert_uses_the_monitors_state():
    mon = HealthMonitor()
    rec = _vitals_record()
    mon.observe_many("P1", list(rec.vitals.frame.itertuples(index=False, name=None)))
    assert mon.alerts
    bot = Assistant.from_monitor(mon, "P1")
    a = bot.ask("why did you alert at 03:00?")
    assert a.kind == "alert" and a.status == ANSWERED
    assert "NEWS2 8" in a.text and a.citations[0].ref.startswith("A")
    _resolves(bot, a)
    assert bot.ask("why did you alert at 05:17?").status == REFUSED
    assert Assistant(rec).ask("why did the monitor alert?").status in (PARTIAL, REFUSED)  # no monitor attached


# ----------------------------------------------------------------------------- FHIR: EHR events

def test_fhir_labs_honour_the_index_time(fhir_bot):
    a = fhir_bot.ask("last lactate")
    assert a.value == 2.5 and a.unit == "mmol/L"  # 9.9 on 2024-06-02 is after the index time
    assert a.citations[0].source.startswith("Bundle.entry[")
    _resolves(fhir_bot, a)
    assert fhir_bot.ask("highest lactate level").value == 2.5
    assert fhir_bot.ask("lowest lactate").value == 2.0


def test_fhir_conditions_with_dates(fhir_bot):
    a = fhir_bot.ask("What conditions does the patient have?")
    assert a.status == ANSWERED
    assert "Diabetes mellitus type 2 since 2015-03-01 (active)" in a.text
    assert "Asthma since 2010-01-01, resolved 2012-01-01" in a.text
    assert "Hypertension since 2020-01-01 (active)" in a.text  # abated only after the index time
    assert "Sepsis" not in a.text  # onset after the index time
    _resolves(fhir_bot, a)
    d = fhir_bot.ask("when was diabetes diagnosed?")
    assert "2015-03-01" in d.text and d.status == ANSWERED


def test_fhir_medications_and_encounters(fhir_bot):
    a = fhir_bot.ask("is she on metformin?")
    assert a.status == ANSWERED and "2024-02-01" in a.text
    assert fhir_bot.ask("is she on any antibiotics?").status == REFUSED  # piperacillin is after the index time
    e = fhir_bot.ask("when was the last encounter?")
    assert "2024-05-30 09:00" in e.text and "Encounter/p1-e2" in e.citations[0].source
    _resolves(fhir_bot, e)


# ----------------------------------------------------------------------------- notes

def test_negated_finding_is_never_reported_present(bot):
    a = bot.ask("Is there a mass?")
    assert a.findings == {"mass": "negated"}
    assert "no mass" in a.text and a.citations[0].status == "negated"
    c = a.citations[0]
    assert bot.record.notes.notes[0].text[c.span[0]:c.span[1]] == "No evidence of mass in the liver."
    _resolves(bot, a)


def test_family_history_and_affirmed_findings(bot):
    fam = bot.ask("any history of cancer in the notes?")
    assert fam.findings == {"cancer": "family"}
    assert "family" in fam.text
    nod = bot.ask("what do the notes say about a nodule?")
    assert nod.findings == {"nodule": "affirmed"} and "3.2 cm" in nod.text
    _resolves(bot, nod)
    sob = bot.ask("any shortness of breath?")
    assert sob.findings == {"dyspnea": "affirmed"}
    cp = bot.ask("does he have chest pain?")
    assert cp.findings == {"chest pain": "negated"}


def test_free_term_outside_the_lexicon_gets_context(bot):
    a = bot.ask("do the notes mention the kidneys?")
    assert a.status == ANSWERED and "kidneys enhance symmetrically" in a.text


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("q,text", [
    ("What is the last HbA1c?", "The record has no HbA1c results."),
    ("highest troponin in the past 24 h", "The record has no troponin results."),
    ("what is the patient's weight?", "The record has no weight measurements."),
    ("What is the capital of France?", "I cannot answer that from the record"),
    ("Should I give her antibiotics?", "I do not give treatment"),
    ("does the patient have a pneumothorax?", "The notes do not mention pneumothorax."),
    ("what medications is he on?", "The record has no medications"),
    ("what is his risk of disease?", "No model is attached"),
])
def test_refusals_say_what_is_missing(bot, q, text):
    a = bot.ask(q)
    assert a.status == REFUSED and not a.statements
    assert text in a.text


@pytest.mark.parametrize("q", ["", "   ", "???", 42])
def test_empty_or_absurd_question_is_a_clear_error(bot, q):
    with pytest.raises(QuestionError):
        bot.ask(q)


# ----------------------------------------------------------------------------- model risk


class _AdditiveModel:
    """A model whose logit adds one weight per present modality: exact Shapley values equal the
    weights, whatever the other modalities."""

    tasks = ("disease",)
    modalities = ("image", "notes", "vitals", "ehr")
    weights = {"notes": 0.8, "vitals": 1.2, "ehr": -0.5}

    def predict_records(self, records):
        out = []
        for r in records:
            z = -1.0 + sum(w for m, w in self.weights.items() if r.present[m])
            out.append([1 / (1 + np.exp(-z))])
        return np.array(out)


def test_risk_with_exact_modality_shapley_values():
    bot = Assistant(_vitals_record(), model=_AdditiveModel())
    a = bot.ask("what is the risk of disease and which modalities moved it?")
    assert a.kind == "risk" and a.status == ANSWERED
    st = a.statements[0]
    assert st.derived["risk_disease"] == pytest.approx(round(1 / (1 + np.exp(-(-1 + 0.8 + 1.2 - 0.5))), 2))
    for m, w in _AdditiveModel.weights.items():
        assert st.derived[f"shapley_{m}_disease"] == pytest.approx(w)
    assert "vitals raises it by 1.2" in a.text and "ehr lowers it by 0.5" in a.text
    _resolves(bot, a)


# ----------------------------------------------------------------------------- summary

def test_summary_of_the_last_hours(bot):
    a = bot.ask("summarise the last 6 hours")
    assert a.kind == "summary" and a.status == ANSWERED
    assert "SpO2: 7 readings, lowest 90 % at 2024-03-02 08:00" in a.text
    assert "NEWS2 at 2024-03-02 08:00" in a.text
    assert "nodule" in a.text  # the 06:00 note is inside the window; the 10:00 one of the day before is not
    assert "No evidence of mass" not in a.text
    _resolves(bot, a)


# ----------------------------------------------------------------------------- language model


def _chat(text: str):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["messages"][0]["role"] == "system" and "Evidence:\n[" in body["messages"][1]["content"]
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}}]})
    return httpx.MockTransport(handler)


def test_llm_reply_with_a_planted_wrong_number_is_rejected(bot):
    base = bot.ask("highest temperature in the past 24 h")
    ref = base.citations[0].ref
    liar = Assistant(bot.record, phraser=LLMPhraser("http://llm/v1", "m", transport=_chat(
        f"The temperature peaked at 39.6 degC on 2024-03-02 03:00 [{ref}].")))
    a = liar.ask("highest temperature in the past 24 h")
    assert a.text == base.text and a.phrased_by is None
    assert any("39.6" in n for n in a.notices)


def test_llm_reply_that_checks_out_is_used(bot):
    ref = bot.ask("highest temperature in the past 24 h").citations[0].ref
    good = Assistant(bot.record, phraser=LLMPhraser("http://llm/v1", "m", transport=_chat(
        f"In the 24 h before 2024-03-02 08:00 the temperature peaked at 38.6 degC, at 2024-03-02 03:00 [{ref}].")))
    a = good.ask("highest temperature in the past 24 h")
    assert a.phrased_by == "m" and a.text.startswith("In the 24 h") and a.citations[0].ref == ref


@pytest.mark.parametrize("reply", ["The temperature was fine.", "Peak 38.6 degC [V999]."])
def test_llm_uncited_or_foreign_citation_is_rejected(bot, reply):
    a = Assistant(bot.record, phraser=LLMPhraser("http://llm/v1", "m", transport=_chat(reply))).ask("last temperature")
    assert a.phrased_by is None and a.notices and "rejected" in a.notices[0]


def test_llm_negated_finding_phrased_as_present_is_rejected(bot):
    ref = bot.ask("is there a mass?").citations[0].ref
    a = Assistant(bot.record, phraser=LLMPhraser("http://llm/v1", "m", transport=_chat(
        f"A mass is seen in the liver [{ref}]."))).ask("is there a mass?")
    assert a.phrased_by is None and "negated" in a.notices[0] and a.findings == {"mass": "negated"}


def test_llm_endpoint_down_falls_back(bot):
    def down(request):
        raise httpx.ConnectError("connection refused")
    a = Assistant(bot.record, phraser=LLMPhraser("http://llm/v1", "m", transport=httpx.MockTransport(down))).ask(
        "last spo2")
    assert a.value == pytest.approx(90.0) and "cannot be reached" in a.notices[0]


# ----------------------------------------------------------------------------- interfaces


def test_display_marks_the_cited_sentence_and_points(bot):
    html = bot.ask("is there a mass?")._repr_html_()
    assert "<mark" in html and "No evidence of mass in the liver." in html and "negated" in html
    html = bot.ask("is spo2 falling over the last 6 hours?")._repr_html_()
    assert "<img" in html and "circled: cited" in html


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    from medmm.synth import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("ask_cohort"), n_patients=4, seed=3, image_size=8,
                           missing_rate=0.0, progress=False)


def test_cli_ask_answers_from_the_files(small_cohort, capsys):
    from medmm.cli import main

    vit = pd.read_csv(small_cohort.parent / "vitals" / "P00001.csv", parse_dates=["time"])
    hr = vit[vit["signal"] == "heart_rate"]
    assert main(["ask", str(small_cohort), "--patient", "P00001", "highest heart rate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["value"] == pytest.approx(hr["value"].max()) and out["status"] == "answered"
    assert out["statements"][0]["citations"][0]["source"] == "vitals/P00001.csv"
    assert main(["ask", str(small_cohort), "-p", "NOBODY", "last spo2"]) == 1
    assert "not in the cohort" in capsys.readouterr().err


def test_cli_interactive(small_cohort, capsys, monkeypatch):
    import io

    from medmm.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("last lactate\n\n   \nwhat is the HbA1c\nquit\n"))
    assert main(["ask", str(small_cohort), "-p", "P00002", "--interactive", "--no-evidence"]) == 0
    captured = capsys.readouterr()
    ehr = pd.read_csv(small_cohort.parent / "ehr.csv").set_index("patient_id")
    assert f"{ehr.loc['P00002', 'lactate [mmol/L]']:g} mmol/L" in captured.out
    assert "The record has no HbA1c results." in captured.out


def test_service_endpoint_shares_the_monitor_state():
    from fastapi.testclient import TestClient

    from medmm.deploy.app import create_app

    client = TestClient(create_app(None, api_keys=["k"]))
    h = {"X-API-Key": "k"}
    frame = _vitals_record().vitals.frame
    obs = [{"time": str(r.time), "signal": r.signal, "value": r.value, "unit": r.unit} for r in frame.itertuples()]
    r = client.post("/monitor/P1/observations", json=obs, headers=h)
    assert r.status_code == 200 and r.json()["alerts"]
    r = client.post("/assistant/P1/ask", json={"question": "why did you alert at 03:00?"}, headers=h)
    assert r.status_code == 200 and "NEWS2 8" in r.json()["text"]
    assert client.post("/assistant/P1/ask", json={"question": "x"}).status_code == 401
    assert client.post("/assistant/nobody/ask", json={"question": "last spo2"}, headers=h).status_code == 404
    r = client.post("/assistant/P1/ask", json={"question": "   "}, headers=h)
    assert r.status_code == 422 and "empty" in r.json()["detail"]


def test_assistant_import_is_torch_free():
    import subprocess
    import sys

    code = "import sys, medmm.assistant; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_model_explanation_masks_declared_modalities():
    """Shapley values over a record's declared modalities (``ct``, ``labs``), not the four default
    names: each subset the model scores has exactly the other declared modalities masked."""
    import numpy as np

    from medmm.assistant.engine import model_explanation
    from medmm.records import Missing, ModalitySpec, PatientRecord, Tabular

    class Additive:
        modalities = ModalitySpec({"labs": "table", "demo": "table"})
        tasks = ("y",)
        output_columns = ("y",)

        def predict_records(self, recs):
            logit = np.array([[1.0 * (not isinstance(r.labs, Missing)) + 0.5 * (not isinstance(r.demo, Missing))]
                              for r in recs])
            return 1 / (1 + np.exp(-logit))

    rec = PatientRecord("P1", modalities={"labs": Tabular({"crp": 3.0}), "demo": Tabular({"age": 50.0})})
    columns, present, probs, shap = model_explanation(Additive(), rec)
    assert present == ["labs", "demo"]
    np.testing.assert_allclose([shap["labs"][0], shap["demo"][0]], [1.0, 0.5], atol=1e-6)
