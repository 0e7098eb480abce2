"""Issue 13, items 6-10: real bedside data's habits, on fixtures written as PhysioNet writes them.

MIMIC numerics records (minute numerics, integer samples with gain 1, the WFDB invalid sample
-32768 for gaps, de-identified dates in the 2700s-2900s, ``fs`` written 0.0166666667), a
multi-segment record with a gap segment, the monitor's zeros and frozen arterial lines, ECG
vs pleth and arterial vs cuff, a 125 Hz waveform record read as vitals.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from medmm.errors import ConfigError, ReadError
from medmm.io.vitals import SignalLoss, read_vitals_long
from medmm.io.wfdb_io import is_ecg_lead, read_wfdb_vitals, sample_times
from medmm.monitor.health import HealthMonitor, MonitorConfig
from medmm.monitor.news2 import NEWS2Error, news2
from medmm.problems import ProblemReport

wfdb = pytest.importorskip("wfdb")

BASE = dt.datetime(2750, 3, 4, 10, 0)  # a MIMIC-shifted admission
NAN16 = -32768  # WFDB's invalid sample in format 16


def write_numerics(path, name, channels: dict[str, tuple[str, np.ndarray]], *, fs=0.0166666667, base=BASE):
    """A MIMIC-style numerics record: format 16, gain 1, baseline 0, NaN as -32768."""
    names = list(channels)
    d = np.column_stack([np.where(np.isnan(v), NAN16, np.round(v)).astype(int) for _, v in channels.values()])
    wfdb.wrsamp(name, fs=fs, units=[u for u, _ in channels.values()], sig_name=names, d_signal=d,
                fmt=["16"] * len(names), adc_gain=[1.0] * len(names), baseline=[0] * len(names),
                base_date=base.date(), base_time=base.time(), write_dir=str(path))
    return path / f"{name}.hea"


# --------------------------------------------------------------------------- 6: shifted dates


def test_mimic_shifted_dates_read_exactly(tmp_path):
    n = 1936
    hr = 80 + np.round(5 * np.sin(np.arange(n) / 40))
    hea = write_numerics(tmp_path, "p000123-2750-03-04-10-00n",
                         {"HR": ("bpm", hr), "SpO2": ("%", np.full(n, 97.0)), "RESP": ("pm", np.full(n, 16.0))})
    assert "0.0166666667" in hea.read_text().splitlines()[0]
    v_found = ProblemReport()
    v = read_wfdb_vitals(hea, report=v_found)
    f = v.frame
    assert f["time"].dtype == "datetime64[us]"
    hr_rows = f[f["signal"] == "heart_rate"]
    # sample k at base + k minutes exactly: fs 0.0166666667 Hz is read as 1/60 Hz, no float drift
    assert hr_rows["time"].iloc[-1] == pd.Timestamp("2750-03-04T10:00") + pd.Timedelta(minutes=n - 1)
    assert (hr_rows["time"].diff().dropna() == pd.Timedelta(minutes=1)).all()
    assert hr_rows["value"].to_numpy() == pytest.approx(hr)
    assert set(f["signal"]) == {"heart_rate", "spo2", "resp_rate"} and v_found.problems == []
    cut = read_wfdb_vitals(hea, index_time="2750-03-04T11:00:00")
    assert cut.frame["time"].max() == pd.Timestamp("2750-03-04T11:00")


def test_sample_times_are_exact_where_floats_drift():
    start = pd.Timestamp("2024-01-01T08:00")
    t = sample_times(start, 150_001, 0.0166666667)
    assert t[-1] == np.datetime64("2024-01-01T08:00") + np.timedelta64(150_000, "m")
    naive = start + pd.to_timedelta(150_000 / 0.0166666667, unit="s")  # the float way is 18 ms off
    assert abs((naive - pd.Timestamp(t[-1])).total_seconds()) > 0.01
    t = sample_times(start, 150_001, 128.0)
    assert t[-1] == np.datetime64("2024-01-01T08:00") + np.timedelta64(1171875, "ms")  # 150000/128 s
    assert sample_times(pd.Timestamp("2899-12-31T23:59:59"), 3, 1.0)[-1] == np.datetime64("2900-01-01T00:00:01")


def test_multi_segment_record_with_gap_and_far_date(tmp_path):
    from wfdb.io.record import MultiRecord

    seg = {"HR": ("bpm", np.array([80.0, 81, 82, 83])), "ABPSys": ("mmHg", np.array([120.0, 121, 119, 122]))}
    write_numerics(tmp_path, "s1", seg, base=BASE)
    write_numerics(tmp_path, "s2", seg, base=BASE)
    m = MultiRecord(record_name="multi", n_sig=2, fs=0.0166666667, seg_name=["s1", "~", "s2"], seg_len=[4, 3, 4],
                    sig_len=11, base_date=dt.date(2871, 5, 6), base_time=dt.time(23, 58))
    m.n_seg = 3
    m.wrheader(write_dir=str(tmp_path))
    v = read_wfdb_vitals(tmp_path / "multi.hea")
    hr = v.frame[v.frame["signal"] == "heart_rate"]
    t0 = pd.Timestamp("2871-05-06T23:58")
    assert list(hr["time"]) == [t0 + pd.Timedelta(minutes=k) for k in (0, 1, 2, 3, 7, 8, 9, 10)]
    assert list(hr["value"]) == [80, 81, 82, 83] * 2


def test_shifted_record_enters_a_cohort_through_the_manifest(tmp_path):
    from medmm.cohort import load_cohort
    from medmm.preprocess.vitals import VitalsPreprocessor
    from medmm.records import Missing

    n = 600
    write_numerics(tmp_path, "a", {"HR": ("bpm", np.full(n, 88.0)), "SpO2": ("%", np.full(n, 95.0))})
    write_numerics(tmp_path, "b", {"HR": ("bpm", np.full(n, 70.0)), "SpO2": ("%", np.full(n, 99.0))},
                   base=dt.datetime(2930, 1, 2, 3, 4))
    pd.DataFrame({"patient_id": ["A", "B"], "split": ["train", "test"],
                  "index_time": ["2750-03-04T18:00:00", "2930-01-02T09:00:00"],
                  "vitals_path": ["a.hea", "b.hea"]}).to_csv(tmp_path / "manifest.csv", index=False)
    cohort = load_cohort(tmp_path / "manifest.csv", progress=False, modalities=("vitals",))
    records, report = cohort.records, cohort.report
    assert not report.errors, [str(e) for e in report.errors]
    by = {r.patient_id: r for r in records}
    assert not isinstance(by["A"].vitals, Missing)
    fa = by["A"].vitals.frame
    assert fa["time"].max() == pd.Timestamp("2750-03-04T18:00")  # cut at the index time
    pre = VitalsPreprocessor(hours=8, step_hours=2).fit([by["A"].vitals, by["B"].vitals])
    x = pre.transform(by["B"].vitals, index_time=by["B"].index_time)
    # 01:00-09:00 in 2 h bins; observed (both signals) from 03:04 on, nothing after the index time
    assert x.shape == (4, 6) and x[:, 2:4].tolist() == [[0, 0], [1, 1], [1, 1], [1, 1]]


# --------------------------------------------------------------------------- 7: device zeros


def _icu_numerics(n=1936, seed=0):
    rng = np.random.default_rng(seed)
    hr = np.round(84 + rng.normal(0, 2, n))
    hr[300:340] = 0  # ECG leads off
    pulse = np.round(hr + rng.normal(0, 1, n))
    pulse[300:340] = np.round(84 + rng.normal(0, 1, 40))
    spo2 = np.round(np.clip(96 + rng.normal(0, 1, n), 90, 100))
    spo2[1000:1012] = 0  # probe off
    abp = np.zeros(n)  # 1,929 of 1,936 ABPSys minutes are 0
    abp[[10, 11, 12, 500, 501, 502, 503]] = [118, 121, 119, 124, 122, 120, 123]
    nbp = np.full(n, np.nan)
    nbp[30::60] = np.round(122 + rng.normal(0, 4, len(nbp[30::60])))
    return {"HR": ("bpm", hr), "PULSE": ("bpm", pulse), "SpO2": ("%", spo2), "ABPSys": ("mmHg", abp),
            "NBPSys": ("mmHg", nbp)}


def test_device_zeros_are_signal_loss_reported_once_per_signal(tmp_path):
    hea = write_numerics(tmp_path, "zeros", _icu_numerics())
    v_found = ProblemReport()
    v = read_wfdb_vitals(hea, report=v_found)
    counts = v.frame.groupby("signal").size().to_dict()
    assert counts["abp_sys"] == 7 and counts["heart_rate"] == 1936 - 40 and counts["spo2"] == 1936 - 12
    assert (v.frame["value"] > 0).all()
    msgs = {e.column: e.message for e in v_found.problems}
    assert len(v_found.problems) == 3  # one per signal with zeros, not one per sample
    assert msgs["sig_name[3]"].startswith("1,929 of 1,936 abp_sys readings are 0")
    assert "in 3 run(s)" in msgs["sig_name[3]"]
    assert msgs["sig_name[0]"].startswith("40 of 1,936 heart_rate readings are 0")
    hr_problem = next(e for e in v_found.problems if e.column == "sig_name[0]")
    assert hr_problem.row == 300 and "signal_loss" in hr_problem.hint
    with pytest.raises(ReadError, match="heart_rate readings are 0"):
        read_wfdb_vitals(hea, strict=True)
    # configurable per signal: keep ABP zeros (a study of line flushes), or turn the rules off
    kept = read_wfdb_vitals(hea, signal_loss={"ABPSys": False})
    assert (kept.frame["signal"] == "abp_sys").sum() == 1936
    assert (kept.frame["signal"] == "heart_rate").sum() == 1896
    raw_found = ProblemReport()
    raw = read_wfdb_vitals(hea, signal_loss=None, report=raw_found)
    assert raw_found.problems == [] and (raw.frame["value"] == 0).sum() == 1929 + 40 + 12
    with pytest.raises(ConfigError, match="signal_loss"):
        read_wfdb_vitals(hea, signal_loss={"HR": "yes"})


def test_frozen_arterial_line_is_a_flatline_but_a_paced_heart_rate_is_not(tmp_path):
    n = 120
    rng = np.random.default_rng(1)
    abp = np.round(120 + rng.normal(0, 4, n))
    abp[40:70] = 131  # held 30 minutes: frozen transducer
    cvp = np.round(8 + rng.normal(0, 1, n))
    cvp[90:100] = 0  # a CVP of 0 mmHg is real
    hea = write_numerics(tmp_path, "flat", {"HR": ("bpm", np.full(n, 70.0)), "ABPSys": ("mmHg", abp),
                                            "CVP": ("mmHg", cvp)})
    v_found = ProblemReport()
    v = read_wfdb_vitals(hea, report=v_found)
    f = v.frame
    assert (f["signal"] == "heart_rate").sum() == n  # paced at 70 for two hours: physiological
    abp_t = f.loc[f["signal"] == "abp_sys", "time"]
    t0 = pd.Timestamp(BASE)
    assert len(abp_t) == n - 30 and not abp_t.between(t0 + pd.Timedelta(minutes=40),
                                                        t0 + pd.Timedelta(minutes=69)).any()
    assert (f["signal"] == "cvp").sum() == n
    (p,) = v_found.problems
    assert p.message.startswith("30 of 120 abp_sys readings hold one value for 900 s") and p.row == 40
    strict_found = ProblemReport()
    strict = read_wfdb_vitals(hea, signal_loss={"abp_sys": SignalLoss(flat_s=3600)}, report=strict_found)
    assert strict_found.problems == [] and (strict.frame["signal"] == "abp_sys").sum() == n


def test_exported_monitor_csv_opts_in_to_device_rules(tmp_path):
    p = tmp_path / "export.csv"
    pd.DataFrame({"time": pd.date_range("2024-01-01", periods=6, freq="min").astype(str),
                  "signal": "HR", "value": [80, 0, 0, 82, 81, 0], "unit": "bpm"}).to_csv(p, index=False)
    assert len(read_vitals_long(p)) == 6  # a charted table: a 0 is the clinician's entry
    dev_found = ProblemReport()
    dev = read_vitals_long(p, signal_loss="device", report=dev_found)
    assert list(dev.frame["value"]) == [80, 82, 81]
    (e,) = dev_found.problems
    assert e.row == 1 and "3 of 6 heart_rate readings are 0" in e.message and "in 2 run(s)" in e.message


def test_monitor_never_escalates_on_zero_readings(tmp_path):
    hea = write_numerics(tmp_path, "zeros", _icu_numerics())
    raw = read_wfdb_vitals(hea, signal_loss=None).frame  # what the bedside monitor streams
    mon = HealthMonitor()
    alerts = mon.observe_many("bed-7", raw.itertuples(index=False, name=None))
    clinical = [a for a in alerts if a.kind == "clinical"]
    technical = [a for a in alerts if a.kind == "technical"]
    assert clinical == []  # the old monitor escalated on ABPSys 0 (sbp score 3) from the first minute
    lost = [line for a in technical for line in a.explanation]
    assert sum("abp_sys (arterial line) signal lost" in x for x in lost) == 3  # lost, back, lost, back, lost
    assert sum("heart_rate (ECG) signal lost" in x for x in lost) == 1
    hr_lost = next(x for x in lost if x.startswith("heart_rate"))
    assert "NEWS2 uses pulse_rate (pleth)" in hr_lost and "2750-03-04 15:00:00" in hr_lost
    assert all(a.level == 0 and a.band == "signal-lost" and a.news2 == {} for a in technical)
    st = mon.state("bed-7")
    assert st["news2"]["sources"]["sbp"] == "sbp (cuff)" and st["news2"]["scores"]["sbp"] == 0
    assert set(st["signal_lost"]) == {"abp_sys"}


def test_monitor_flatline_and_zero_fall_back_and_recover():
    mon = HealthMonitor()
    t0 = pd.Timestamp("2024-01-01T08:00")
    for k in range(20):
        mon.observe_many("p", [(t0 + pd.Timedelta(minutes=k), "ABPSys", 150, "mmHg"),
                               (t0 + pd.Timedelta(minutes=k), "HR", 80, "bpm")])
        if k == 14:  # held 14 minutes: still a reading
            st = mon.state("p")
            assert st["news2"]["sources"]["sbp"] == "abp_sys (arterial line)" and st["news2"]["values"]["sbp"] == 150
    st = mon.state("p")
    # held 150 for 15 minutes: frozen, not scored; no cuff yet, so sbp is missing, not 150
    assert "abp_sys" in st["signal_lost"] and "sbp" in st["news2"]["missing"]
    tech = [a for a in mon.alerts if a.kind == "technical"]
    assert len(tech) == 1 and "held at 150" in tech[0].explanation[0]
    mon.observe("p", t0 + pd.Timedelta(minutes=21), "ABPSys", 95)
    st = mon.state("p")
    assert st["signal_lost"] == {} and st["news2"]["scores"]["sbp"] == 2


# --------------------------------------------------------------------------- 8: conflicting sources


def test_ecg_heart_rate_preferred_and_disagreement_flagged():
    mon = HealthMonitor()
    t = pd.Timestamp("2024-01-01T08:00")
    mon.observe_many("p", [(t, "PULSE", 84, "bpm"), (t, "HR", 132, "bpm"), (t, "RR", 16, None),
                           (t, "SpO2", 97, None), (t, "NBPSys", 125, None), (t, "Temp", 37.0, None)])
    st = mon.state("p")
    n2 = st["news2"]
    assert n2["sources"]["pulse"] == "heart_rate (ECG)" and n2["values"]["pulse"] == 132 and n2["scores"]["pulse"] == 3
    assert "pulse 132/min (from heart_rate (ECG)) scores 3" in n2["explanation"]
    (dis,) = [x for x in st["notes"] if "disagree" in x]
    assert dis.startswith("heart_rate (ECG) 132 and pulse_rate (pleth) 84 disagree by 48 bpm (> 10)")
    (alert,) = mon.alerts
    assert any("disagree by 48" in x for x in alert.explanation)
    # within 10 bpm: no flag; the pleth is used once the ECG has no valid recent reading
    mon.observe_many("p", [(t + pd.Timedelta(minutes=1), "HR", 0, "bpm"), (t + pd.Timedelta(minutes=1), "PULSE", 90, "bpm")])
    st = mon.state("p")
    assert st["news2"]["sources"]["pulse"] == "pulse_rate (pleth)" and st["news2"]["values"]["pulse"] == 90
    assert not any("disagree" in x for x in st["notes"])


def test_arterial_preferred_while_recent_then_newer_cuff():
    mon = HealthMonitor()
    t = pd.Timestamp("2024-01-01T08:00")
    mon.observe_many("p", [(t, "ABPSys", 96, "mmHg"), (t, "NBPSys", 124, "mmHg")])
    st = mon.state("p")
    assert st["news2"]["sources"]["sbp"] == "abp_sys (arterial line)" and st["news2"]["scores"]["sbp"] == 2
    assert any("abp_sys (arterial line) 96 and sbp (cuff) 124 disagree by 28 mmHg (> 20)" in x for x in st["notes"])
    # the arterial line's last valid reading is 40 min old, the cuff's is fresh: the cuff is used
    mon.observe("p", t + pd.Timedelta(minutes=40), "NBPSys", 118)
    st = mon.state("p")
    assert st["news2"]["sources"]["sbp"] == "sbp (cuff)" and st["news2"]["values"]["sbp"] == 118
    cfg = MonitorConfig(source_window_minutes=60)
    mon = HealthMonitor(config=cfg)
    mon.observe_many("p", [(t, "ABPSys", 96, "mmHg"), (t + pd.Timedelta(minutes=40), "NBPSys", 118, "mmHg")])
    assert mon.state("p")["news2"]["sources"]["sbp"] == "abp_sys (arterial line)"


# --------------------------------------------------------------------------- 9: leads, waveforms


@pytest.mark.parametrize("name,unit,expected", [
    ("II", "mV", True), ("V", "mV", True), ("AVR", "mV", True), ("MCL1", "mV", True), ("MCL", None, True),
    ("ECG 1", "mV", True), ("ECG1", None, True), ("ECG", "mV", True), ("EKG", None, True),
    ("ECG II", "mV", True), ("Lead II", None, True), ("MLII", "mV", True), ("V4R", None, True),
    ("D3", None, True), ("CM5", None, True), ("II+", None, True),
    ("PLETH", "NU", False), ("PPG", None, False), ("ABP", "mmHg", False), ("RESP", "pm", False),
    ("ECG HR", "bpm", False), ("HR", "bpm", False), ("1", None, False), ("PULSE", "bpm", False),
    ("ECG", "bpm", False), ("II", "mmHg", False),
])
def test_ecg_lead_names(name, unit, expected):
    assert is_ecg_lead(name, unit) is expected


def test_waveform_record_read_as_vitals_gives_derived_hr_not_samples(tmp_path):
    fs, secs = 125, 300  # 4 channels x 37,500 samples: 150,000 samples
    tt = np.arange(fs * secs) / fs
    beats = np.arange(0.4, secs, 60 / 72)  # 72 bpm
    ecg = np.zeros_like(tt)
    for b in beats:
        i = int(round(b * fs))
        ecg[max(i - 3, 0):i + 4] += 1.2 * np.exp(-((np.arange(max(i - 3, 0), min(i + 4, len(tt))) - i) / 1.5) ** 2)
    ecg += 0.03 * np.random.default_rng(0).normal(size=tt.size)
    pleth = 50 + 20 * np.sin(2 * np.pi * 1.2 * tt)
    abp = 90 + 30 * np.clip(np.sin(2 * np.pi * 1.2 * tt), 0, None)
    resp = 0.5 * np.sin(2 * np.pi * 0.25 * tt) - 0.2  # negative values: once one problem per sample
    wfdb.wrsamp("3000003_0001", fs=fs, units=["mV", "NU", "mmHg", "pm"], sig_name=["II", "PLETH", "ABP", "RESP"],
                p_signal=np.column_stack([ecg, pleth, abp, resp]), fmt=["16"] * 4, write_dir=str(tmp_path),
                base_date=dt.date(2750, 3, 4), base_time=dt.time(10, 0))
    v_found = ProblemReport()
    v = read_wfdb_vitals(tmp_path / "3000003_0001.hea", report=v_found)
    assert v.signals == ["heart_rate"] and len(v) == secs // 10
    assert v.frame["value"].to_numpy() == pytest.approx(72.0, abs=1.5)
    assert v.frame["time"].iloc[0] == pd.Timestamp("2750-03-04T10:00:10")
    assert v.frame["time"].iloc[-1] == pd.Timestamp("2750-03-04T10:05:00")
    assert len(v_found.problems) == 3
    assert {e.column for e in v_found.problems} == {"sig_name[1]", "sig_name[2]", "sig_name[3]"}
    assert all("125 Hz waveform, not a vital-sign numeric" in e.message for e in v_found.problems)


def test_waveform_record_without_ecg_is_a_clear_error(tmp_path):
    fs = 125
    tt = np.arange(fs * 20) / fs
    wfdb.wrsamp("plethonly", fs=fs, units=["NU"], sig_name=["PLETH"], p_signal=(50 + np.sin(tt))[:, None],
                fmt=["16"], write_dir=str(tmp_path), base_datetime=dt.datetime(2024, 1, 1))
    with pytest.raises(ReadError, match="no vital-sign channel.*PLETH"):
        read_wfdb_vitals(tmp_path / "plethonly.hea")


# --------------------------------------------------------------------------- 10: news2 inputs


@pytest.mark.parametrize("value,expected", [("no", 0), ("No", 0), ("air", 0), ("room air", 0), (0, 0), (False, 0),
                                            ("yes", 2), ("O2", 2), ("oxygen", 2), (1, 2), (True, 2)])
def test_news2_on_oxygen_is_parsed_like_the_monitor(value, expected):
    r = news2(on_oxygen=value)
    assert r.scores["air_or_oxygen"] == expected
    mon = HealthMonitor(config=MonitorConfig(assume_normal=False))
    mon.observe("p", "2024-01-01T08:00", "on_oxygen", value)
    assert mon.state("p")["news2"]["scores"]["air_or_oxygen"] == expected


@pytest.mark.parametrize("kwargs,match", [
    ({"on_oxygen": "maybe"}, "neither oxygen nor air"),
    ({"on_oxygen": 2}, "neither oxygen nor air"),
    ({"on_oxygen": float("nan")}, "neither oxygen nor air"),
    ({"resp_rate": True}, "resp_rate=True is a bool"),
    ({"pulse": np.bool_(False)}, "pulse=.* is a bool"),
    ({"temperature": float("nan")}, "temperature nan is not a finite number"),
    ({"spo2": np.float64("nan")}, "spo2 nan is not a finite number"),
    ({"sbp": "high"}, "sbp 'high' is not a number"),
    ({"spo2_scale": True}, "scale True does not exist"),
])
def test_news2_refuses_bools_nan_and_garbage(kwargs, match):
    with pytest.raises(NEWS2Error, match=match):
        news2(**kwargs)


def test_news2_numeric_strings_score_as_numbers():
    r = news2(resp_rate="21", temperature="38.05", pulse=" 130 ")
    assert r.scores == {"resp_rate": 2, "temperature": 1, "pulse": 2}
    assert r.values["resp_rate"] == 21.0 and r.missing == ["spo2", "air_or_oxygen", "sbp", "consciousness"]


def test_replay_counts_escalations_not_technical_alerts():
    from medmm.monitor.health import replay

    t = pd.date_range("2750-03-04T10:00", periods=30, freq="min")
    rows = [(pid, x, "HR", hr, "bpm") for pid, hr in (("sick", 135.0), ("well", 0.0)) for x in t]
    rows += [(pid, x, "RR", 16.0, None) for pid in ("sick", "well") for x in t]
    frame = pd.DataFrame(rows, columns=["patient_id", "time", "signal", "value", "unit"])
    res = replay(frame, outcomes={"sick": 1, "well": 0}, news2_levels=(2,))
    row = res.table.iloc[0]
    # "well" has only HR 0 (leads off): a technical alert, not a false alarm
    assert row["sensitivity"] == 1.0 and row["false_alarm_rate"] == 0.0
    assert row["alerts"] == 1 and row["technical_alerts"] == 1
