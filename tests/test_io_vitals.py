"""Vitals readers: long/wide tables, WFDB numerics, ECG (WFDB and DICOM), FHIR; cleaning."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from medmm.errors import ReadError
from medmm.io import read_modality
from medmm.io.vitals import (
    canonical_signal,
    clean_vitals,
    convert_unit,
    read_fhir_vitals,
    read_vitals_long,
    read_vitals_parquet,
    read_vitals_wide,
)
from medmm.io.wfdb_io import read_ecg, read_ecg_heart_rate, read_wfdb_vitals
from medmm.preprocess.vitals_summary import summarize_vitals
from medmm.problems import ProblemReport

T0 = pd.Timestamp("2024-01-01T08:00:00")


def test_synthetic_cohort_format_unchanged(tmp_path):
    """The synthetic cohort's long CSV reads as before (same values, units, order)."""
    from medmm.synth import render_vitals

    rows = render_vitals(0.5, 48, np.datetime64("2024-01-03T08:00:00"), np.random.default_rng(0))
    p = tmp_path / "v.csv"
    pd.DataFrame(rows, columns=["time", "signal", "value", "unit"]).to_csv(p, index=False)
    v_found = ProblemReport()
    v = read_modality("vitals", p, report=v_found)
    assert v_found.problems == [] and len(v) == len(rows)
    assert set(v.signals) == {"heart_rate", "resp_rate", "spo2", "sbp", "temperature"}
    assert v.units == {"heart_rate": "bpm", "resp_rate": "/min", "spo2": "%", "sbp": "mmHg", "temperature": "degC"}
    assert v.frame["time"].is_monotonic_increasing
    assert np.allclose(np.sort(v.frame["value"]), np.sort([r[2] for r in rows]))


def test_units_ranges_dedup_and_bad_rows(tmp_path):
    p = tmp_path / "v.csv"
    pd.DataFrame([
        ("2024-01-01T08:00:00", "Temp", "98.6", "degF"),
        ("2024-01-01T08:00:00", "SpO2", "0.95", "1"),
        ("2024-01-01T08:00:00", "sbp", "16", "kPa"),
        ("2024-01-01T08:00:00", "HR", "72", "bpm"),
        ("2024-01-01T08:00:00", "HR", "72", "bpm"),  # exact duplicate: dropped
        ("2024-01-01T09:00:00", "HR", "70", "bpm"),
        ("2024-01-01T09:00:00", "HR", "74", "/min"),  # conflicting: averaged and reported
        ("2024-01-01T10:00:00", "HR", "900", "bpm"),  # impossible
        ("2024-01-01T10:00:00", "temperature", "98.2", "degC"),  # impossible (looks like degF)
        ("2024-01-01T10:00:00", "sbp", "120", "furlongs"),  # unit not convertible
        ("2024-01-01T10:00:00", "HR", "fast", "bpm"),  # not a number
        ("yesterday", "HR", "60", "bpm"),  # bad time
        ("2024-01-01T11:00:00", "etco2", "35", "mmHg"),  # unknown signal: kept, unchecked
    ], columns=["time", "signal", "value", "unit"]).to_csv(p, index=False)
    v_found = ProblemReport()
    v = read_vitals_long(p, report=v_found)
    f = v.frame.set_index(["time", "signal"])["value"]
    assert f[(T0, "temperature")] == pytest.approx(37.0)
    assert f[(T0, "spo2")] == pytest.approx(95.0)
    assert f[(T0, "sbp")] == pytest.approx(120.01, abs=0.01)
    assert f[(T0 + pd.Timedelta(hours=1), "heart_rate")] == pytest.approx(72.0)
    assert (v.frame["signal"] == "heart_rate").sum() == 2
    assert f[(T0 + pd.Timedelta(hours=3), "etco2")] == 35.0
    assert set(v.frame["unit"][v.frame["signal"] == "temperature"]) == {"degC"}
    by = {(e.row, e.column): e.message for e in v_found.problems}
    assert "averaged" in by[(5, "value")]
    assert "impossible heart_rate value 900" in by[(7, "value")]
    assert "impossible temperature" in by[(8, "value")]
    assert any("degF" in (e.hint or "") for e in v_found.problems if e.row == 8)
    assert "cannot be converted" in by[(9, "unit")]
    assert "not a number" in by[(10, "value")]
    assert "not an ISO 8601" in by[(11, "time")]
    assert all(e.path == str(p) for e in v_found.problems)
    with pytest.raises(ReadError, match="averaged|impossible|converted|number|ISO"):
        read_vitals_long(p, strict=True)


def test_unit_and_name_tables():
    assert canonical_signal("HR") == "heart_rate" and canonical_signal("ABP Sys") == "abp_sys"
    assert canonical_signal("NBP Dias") == "dbp" and canonical_signal("%SpO2") == "spo2"
    assert canonical_signal("etco2") == "etco2"
    assert convert_unit("weight", "[lb_av]")(100.0) == pytest.approx(45.359237)
    assert convert_unit("height", "[in_i]")(10.0) == pytest.approx(25.4)
    assert convert_unit("temperature", "K")(310.15) == pytest.approx(37.0)
    assert convert_unit("sbp", "cm[H2O]") is not None and convert_unit("sbp", "kg") is None


def test_mixed_naive_and_zoned_times(tmp_path):
    p = tmp_path / "v.csv"
    pd.DataFrame([("2024-01-01T09:00:00+01:00", "HR", 70, "bpm"), ("2024-01-01T08:30:00", "HR", 71, "bpm")],
                 columns=["time", "signal", "value", "unit"]).to_csv(p, index=False)
    v_found = ProblemReport()
    v = read_vitals_long(p, report=v_found)
    assert list(v.frame["time"]) == [T0, T0 + pd.Timedelta(minutes=30)]
    (e,) = v_found.problems
    assert e.row == 1 and e.column == "time" and "naive" in e.message


def test_parquet_wide_and_index_time(tmp_path):
    long = pd.DataFrame({"time": pd.date_range("2024-01-01 06:00", periods=4, freq="h", tz="UTC"),
                         "signal": "heart_rate", "value": [60.0, 61, 62, 63], "unit": "bpm"})
    p = tmp_path / "v.parquet"
    long.to_parquet(p)
    v = read_modality("vitals", p, index_time="2024-01-01T08:00:00")
    assert list(v.frame["value"]) == [60.0, 61.0, 62.0]
    assert read_vitals_parquet(p).frame["time"].iloc[0] == pd.Timestamp("2024-01-01 06:00")
    w = tmp_path / "v.wide.csv"
    pd.DataFrame({"time": ["2024-01-01T08:00:00", "2024-01-01T09:00:00"], "HR [bpm]": [80, None],
                  "Temp (degF)": [100.4, 99.5], "SpO2 [%]": [97, 96]}).to_csv(w, index=False)
    v = read_modality("vitals", w)
    assert isinstance(v, type(read_vitals_wide(w)))
    got = v.frame.set_index(["time", "signal"])["value"]
    assert got[(T0, "temperature")] == pytest.approx(38.0)
    assert got[(T0 + pd.Timedelta(hours=1), "spo2")] == 96
    assert len(v) == 5


def test_wfdb_numerics_roundtrip(tmp_path):
    import wfdb

    n = 600
    t = np.arange(n)
    sig = np.c_[70 + 5 * np.sin(t / 50), 0.97 + 0.001 * np.sin(t), 16 + np.cos(t), 120 + np.sin(t)]
    sig[10, 0] = np.nan
    sig[20, 0] = 400.0
    wfdb.wrsamp("num", fs=1, units=["bpm", "1", "pm", "mmHg"], sig_name=["HR", "SpO2", "RESP", "ABP Sys"],
                p_signal=sig, fmt=["16"] * 4, write_dir=str(tmp_path), base_datetime=dt.datetime(2024, 1, 1, 8))
    v_found = ProblemReport()
    v = read_modality("vitals", tmp_path / "num.hea", report=v_found)
    counts = v.frame.groupby("signal")["value"].count().to_dict()
    assert counts == {"abp_sys": 600, "heart_rate": 598, "resp_rate": 600, "spo2": 600}
    assert v.frame.loc[v.frame["signal"] == "spo2", "value"].mean() == pytest.approx(97.0, abs=0.01)
    assert v.frame["time"].min() == T0 and v.frame["time"].max() == T0 + pd.Timedelta(seconds=599)
    (e,) = v_found.problems
    assert e.row == 20 and "impossible heart_rate" in e.message
    cut = read_wfdb_vitals(tmp_path / "num.hea", index_time=T0 + pd.Timedelta(seconds=99))
    assert cut.frame["time"].max() == T0 + pd.Timedelta(seconds=99)
    wfdb.wrsamp("nodate", fs=1, units=["bpm"], sig_name=["HR"], p_signal=sig[:, :1] * 0 + 70, fmt=["16"],
                write_dir=str(tmp_path))
    with pytest.raises(ReadError, match="no base date"):
        read_wfdb_vitals(tmp_path / "nodate.hea")
    assert read_wfdb_vitals(tmp_path / "nodate.hea", start_time=T0).frame["time"].min() == T0


def test_wfdb_ecg_heart_rate(tmp_path):
    import wfdb

    fs = 360
    tt = np.arange(fs * 20) / fs
    ecg = sum(1.2 * np.exp(-(((tt - b) / 0.012) ** 2)) for b in np.arange(0.5, 20, 0.8))  # 75 bpm
    ecg = ecg + 0.05 * np.random.default_rng(0).normal(size=tt.size)
    wfdb.wrsamp("ecg", fs=fs, units=["mV"], sig_name=["MLII"], p_signal=ecg[:, None], fmt=["16"],
                write_dir=str(tmp_path), base_datetime=dt.datetime(2024, 1, 1, 8))
    wf = read_ecg(tmp_path / "ecg.hea")
    assert wf.leads == ["MLII"] and wf.fs == 360 and wf.duration_s == pytest.approx(20)
    v = read_ecg_heart_rate(tmp_path / "ecg.hea")
    assert list(v.frame["value"]) == pytest.approx([75.0, 75.0], abs=1.0)
    assert list(v.frame["time"]) == [T0 + pd.Timedelta(seconds=10), T0 + pd.Timedelta(seconds=20)]


def test_dicom_12_lead_ecg():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm", download=False)
    wf = read_ecg(path)
    assert wf.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert wf.signal.shape == (10000, 12) and wf.fs == 1000.0 and wf.units == "mV"
    assert wf.start == pd.Timestamp("2013-01-25T10:59:19")
    assert 0.02 < float(np.std(wf.lead("II"))) < 2.0  # millivolts, not microvolts
    q = wf.qrs()
    assert 8 <= len(q) <= 12
    v = read_ecg_heart_rate(path)
    assert len(v) == 1 and v.frame["signal"][0] == "heart_rate" and 50 < v.frame["value"][0] < 75
    median_beat = read_ecg(path, group=1)
    assert median_beat.signal.shape == (1200, 12)


def _obs(code, value, unit, time="2024-01-01T08:00:00Z", category="vital-signs", components=None, display=None):
    from fhir.resources.R4B.observation import Observation

    res = {"resourceType": "Observation", "status": "final",
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                     "code": category}]}],
           "code": {"coding": [{"system": "http://loinc.org", "code": code, **({"display": display} if display else {})}]},
           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": time}
    if value is not None:
        res["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    if components:
        res["component"] = [{"code": {"coding": [{"system": "http://loinc.org", "code": c}]},
                             "valueQuantity": {"value": v, "unit": u}} for c, v, u in components]
    return Observation.model_validate(res).model_dump(mode="json")


def test_fhir_vitals_by_loinc(tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    entries = [
        _obs("8867-4", 72, "/min"),
        _obs("9279-1", 18, "/min"),
        _obs("59408-5", 0.96, "1", time="2024-01-01T08:05:00Z"),
        _obs("2708-6", 97, "%", time="2024-01-01T08:10:00Z"),
        _obs("85354-9", None, None, components=[("8480-6", 16, "kPa"), ("8462-4", 80, "mm[Hg]")]),
        _obs("8310-5", 100.4, "[degF]"),
        _obs("29463-7", 154, "[lb_av]"),
        _obs("8302-2", 70, "[in_i]"),
        _obs("99999-9", 1, "1", display="Mystery vital"),  # unknown LOINC: reported
        _obs("72514-3", 3, "{score}"),  # pain severity (Synthea)
        _obs("59576-9", 50, "%"),  # BMI percentile: known, not a signal, not a problem
        _obs("8867-4", 75, "/min", time="2024-01-01T12:00:00Z"),  # after the index time
        _obs("2339-0", 5.5, "mmol/L", category="laboratory"),  # a lab: not a vital, not a problem
    ]
    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": e} for e in entries]})
    p = tmp_path / "b.json"
    p.write_text(bundle.model_dump_json())
    v_found = ProblemReport()
    v = read_fhir_vitals(p, index_time="2024-01-01T10:00:00", report=v_found)
    got = dict(zip(v.frame["signal"] + "@" + v.frame["time"].dt.strftime("%H:%M"), v.frame["value"]))
    assert got["heart_rate@08:00"] == 72 and "heart_rate@12:00" not in got
    assert got["spo2@08:05"] == pytest.approx(96.0) and got["spo2@08:10"] == 97
    assert got["sbp@08:00"] == pytest.approx(120.0, abs=0.1) and got["dbp@08:00"] == 80
    assert got["temperature@08:00"] == pytest.approx(38.0)
    assert got["weight@08:00"] == pytest.approx(69.85, abs=0.01)
    assert got["height@08:00"] == pytest.approx(177.8)
    assert got["pain_score@08:00"] == 3
    (e,) = v_found.problems
    assert e.row == 8 and "unknown LOINC code '99999-9'" in e.message and e.column == "Observation.code"
    assert read_modality("vitals", p).frame["time"].max() == pd.Timestamp("2024-01-01T12:00:00")


def test_haim_summary_statistics():
    from medmm.records import Vitals

    times = T0 + pd.to_timedelta([0, 1, 2, 3, 50], unit="h")
    v = Vitals(pd.DataFrame({"time": times, "signal": "heart_rate", "value": [60.0, 70, 65, 80, 999],
                             "unit": "bpm"}))
    s = summarize_vitals(v, index_time=T0 + pd.Timedelta(hours=4), hours=24, signals=["heart_rate", "spo2"])
    assert s["heart_rate__count"] == 4 and s["heart_rate__last"] == 80 and s["heart_rate__max"] == 80
    assert s["heart_rate__diff"] == 20 and s["heart_rate__n_peaks"] == 1
    assert s["heart_rate__hours_since_last"] == pytest.approx(1.0)
    assert s["heart_rate__sum_abs_diff"] == 10 + 5 + 15
    assert s["heart_rate__slope_per_hour"] == pytest.approx(5.5)
    assert s["spo2__count"] == 0 and np.isnan(s["spo2__mean"])


def test_clean_vitals_keeps_index_rows():
    df = pd.DataFrame({"time": [T0, T0], "signal": ["HR", "HR"], "value": [70.0, -5.0], "unit": ["bpm", "bpm"]},
                      index=[3, 9])
    problems = []
    out = clean_vitals(df, path="x.csv", problems=problems)
    assert len(out) == 1 and problems[0].row == 9


def test_vitals_summarizer_fitted_on_train():
    from medmm.errors import NotFittedError
    from medmm.preprocess.tabular import TabularPreprocessor
    from medmm.preprocess.vitals_summary import VitalsSummarizer
    from medmm.records import Vitals
    from medmm.synth import render_vitals

    idx = np.datetime64("2024-01-03T08:00:00")
    series = [read_vitals_long_rows(render_vitals(z, 48, idx, np.random.default_rng(i)))
              for i, z in enumerate(np.linspace(-1, 1, 12))]
    series[0] = Vitals(series[0].frame[series[0].frame["signal"] != "spo2"].reset_index(drop=True))
    with pytest.raises(NotFittedError):
        VitalsSummarizer().transform(series[0])
    summ = VitalsSummarizer(stats=("last", "mean", "slope_per_hour", "count")).fit(series[:8])
    rows = [summ.transform(v, index_time=pd.Timestamp(idx)) for v in series]
    assert all(set(r.values) == set(rows[0].values) for r in rows) and len(rows[0].values) == 5 * 4
    assert rows[0].values["spo2__count"] == 0 and np.isnan(rows[0].values["spo2__mean"])
    assert rows[1].units["heart_rate__mean"] == "bpm" and "heart_rate__count" not in rows[1].units
    x = TabularPreprocessor(min_frequency=1).fit(rows[:8]).transform_many(rows[8:])
    assert x.shape[0] == 4 and np.isfinite(x).all()


def read_vitals_long_rows(rows):
    from medmm.records import Vitals

    df = pd.DataFrame(rows, columns=["time", "signal", "value", "unit"])
    df["time"] = pd.to_datetime(df["time"])
    return Vitals(clean_vitals(df))
