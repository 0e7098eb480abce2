"""The streaming health monitor: NEWS2 per observation, alerts with escalation and explanation, FHIR, replay."""

import numpy as np
import pandas as pd
import pytest

from medmm.errors import SchemaError
from medmm.monitor.health import HealthMonitor, MonitorConfig, replay

T0 = pd.Timestamp("2024-01-01 08:00")


def feed(mon, pid, t, **vals):
    alerts = []
    for sig, v in vals.items():
        a = mon.observe(pid, t, sig, v)
        if a is not None:
            alerts.append(a)
    return alerts


def test_normal_patient_raises_no_alert_and_state_has_news2():
    mon = HealthMonitor()
    assert feed(mon, "p1", T0, HR=72, RR=16, SpO2=97, SBP=125, Temp=37.0) == []
    st = mon.state("p1")
    assert st["news2"]["total"] == 0 and st["level"] == 0 and st["risk"] is None


def test_single_red_parameter_alerts_at_low_medium_with_explanation():
    mon = HealthMonitor()
    feed(mon, "p1", T0, HR=72, SpO2=97, SBP=125, Temp=37.0)
    alerts = feed(mon, "p1", T0 + pd.Timedelta(minutes=5), RR=26)
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.level, a.band, a.source) == (2, "low-medium", "news2")
    assert any("resp_rate 26/min scores 3" in line for line in a.explanation)
    assert any("assumed alert" in line for line in a.explanation)


def test_escalation_re_alerts_but_same_level_waits_for_cooldown():
    mon = HealthMonitor(config=MonitorConfig(cooldown_hours=4))
    feed(mon, "p", T0, HR=72, SpO2=97, SBP=125, Temp=37.0, RR=26)  # 3 -> low-medium
    assert len(mon.alerts) == 1
    feed(mon, "p", T0 + pd.Timedelta(hours=1), RR=26)  # same level, within cooldown: silent
    assert len(mon.alerts) == 1
    feed(mon, "p", T0 + pd.Timedelta(hours=1, minutes=5), HR=135, SBP=95)  # 3+3 medium, then +2 = 8 high
    assert [a.level for a in mon.alerts] == [2, 3, 4] and mon.alerts[-1].band == "high"
    feed(mon, "p", T0 + pd.Timedelta(hours=2), HR=136)  # still high, within cooldown: silent
    assert len(mon.alerts) == 3
    feed(mon, "p", T0 + pd.Timedelta(hours=6), HR=135)  # still high, cooldown passed: reminded
    assert len(mon.alerts) == 4


def test_recovery_re_arms_and_stale_values_are_dropped():
    mon = HealthMonitor(config=MonitorConfig(stale_hours=2))
    feed(mon, "p", T0, RR=26)
    assert len(mon.alerts) == 1
    feed(mon, "p", T0 + pd.Timedelta(minutes=30), RR=16)  # back to 0: re-armed
    assert mon.state("p")["level"] == 0
    feed(mon, "p", T0 + pd.Timedelta(minutes=40), RR=27)
    assert len(mon.alerts) == 2
    # three hours later the rate is stale: only the new pulse counts
    feed(mon, "p", T0 + pd.Timedelta(hours=4), HR=70)
    st = mon.state("p")
    assert "resp_rate" in st["news2"]["missing"] and st["level"] == 0


def test_units_are_converted_and_bad_input_is_a_schema_error():
    mon = HealthMonitor()
    mon.observe("p", T0, "temperature", 102.2, "degF")  # 39.0 degC -> 1
    assert mon.state("p")["news2"]["scores"]["temperature"] == 1
    with pytest.raises(SchemaError):
        mon.observe("p", T0, "heart_rate", "fast")
    with pytest.raises(SchemaError):
        mon.observe("p", T0, "spo2", 140)
    with pytest.raises(SchemaError):
        mon.observe("p", "not a time", "spo2", 95)


def test_oxygen_and_consciousness_observations():
    mon = HealthMonitor(config=MonitorConfig(assume_normal=False))
    feed(mon, "p", T0, HR=72, RR=16, SpO2=97, SBP=125, Temp=37.0)
    assert not mon.state("p")["news2"]["complete"]
    mon.observe("p", T0, "o2_flow", 2.0)
    mon.observe("p", T0, "consciousness", "V")
    st = mon.state("p")["news2"]
    assert st["complete"] and st["scores"]["air_or_oxygen"] == 2 and st["total"] == 5 and st["band"] == "medium"


def _obs(code, value, unit, t, pid="pat-9"):
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": t, "valueQuantity": {"value": value, "unit": unit}}


def test_fhir_observations_and_bundle():
    mon = HealthMonitor()
    assert mon.observe_fhir(_obs("8867-4", 80, "/min", "2024-01-01T08:00:00Z")) == []
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _obs("9279-1", 7, "/min", "2024-01-01T08:05:00Z")},
        {"resource": _obs("8310-5", 95.0, "[degF]", "2024-01-01T08:05:00Z")}]}  # 35.0 degC: 3
    alerts = mon.observe_fhir(bundle)
    # charted together, the red rate and the low temperature are scored as one set: one medium alert
    assert [(a.patient_id, a.band) for a in alerts] == [("pat-9", "medium")]
    later = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _obs("9279-1", 7, "/min", "2024-01-01T09:00:00Z")},
        {"resource": _obs("8310-5", 95.0, "[degF]", "2024-01-01T10:00:00Z")}]}
    other = HealthMonitor()
    other.observe_fhir(_obs("8867-4", 80, "/min", "2024-01-01T08:00:00Z"))
    # charted at different times: the rate alone alerts first (low-medium), the temperature escalates
    assert [a.band for a in other.observe_fhir(later)] == ["low-medium", "medium"]
    st = mon.state("pat-9")["news2"]
    assert st["scores"]["resp_rate"] == 3 and st["scores"]["temperature"] == 3 and st["band"] == "medium"
    with pytest.raises(SchemaError):
        mon.observe_fhir({"no": "type"})


def test_replay_reports_sensitivity_and_burden_per_strategy():
    rows = []
    rng = np.random.default_rng(0)
    for i in range(10):
        sick = i < 5
        for h in range(12):
            t = T0 + pd.Timedelta(hours=h)
            rr = 16 + (h * 0.9 if sick else 0) + rng.normal(0, 0.5)
            rows += [(f"p{i}", t, "resp_rate", rr, "/min"), (f"p{i}", t, "heart_rate", 75 + (4 * h if sick else 0), "bpm")]
    frame = pd.DataFrame(rows, columns=["patient_id", "time", "signal", "value", "unit"])
    res = replay(frame, outcomes={f"p{i}": int(i < 5) for i in range(10)}, news2_levels=(2, 4))
    t = res.table.set_index("threshold")
    assert t.loc[2, "sensitivity"] == 1.0 and t.loc[2, "false_alarm_rate"] == 0.0
    assert t.loc[4, "alerts"] <= t.loc[2, "alerts"]
    assert res.n_patients == 10 and res.n_positive == 5
    assert abs(res.patient_days - 10 * 11 / 24) < 1e-9
    assert t.loc[2, "alerts_per_patient_day"] == pytest.approx(t.loc[2, "alerts"] / res.patient_days)


def test_observe_many_scores_each_charted_set_once():
    """A set of vitals charted at one time is scored as a set: no alert on the partial set, one
    model evaluation per time, not per observation; a bad observation names its position."""
    from medmm.errors import MedmmError
    from medmm.monitor.health import HealthMonitor

    class CountingPredictor:
        tasks = ("disease",)
        columns = ("disease",)
        modalities = ("vitals",)

        def __init__(self):
            self.calls = 0

            class Pre:
                def transform(self, rec):
                    return {"vitals": 1.0}

            self.preprocessor = Pre()

        def predict_values(self, items):
            self.calls += 1
            return np.full((len(items), 1), 0.01)

    pred = CountingPredictor()
    mon = HealthMonitor(pred)
    t0, t1 = "2024-05-01T08:00:00", "2024-05-01T09:00:00"
    rows = [(t0, "resp_rate", 16, None), (t0, "HR", 75, None), (t0, "spo2", 97, None),
            (t1, "resp_rate", 30, None), (t1, "HR", 135, None), (t1, "spo2", 90, None)]
    alerts = mon.observe_many("P", rows)
    assert pred.calls == 2  # two charted times, not six observations
    assert len(alerts) == 1 and alerts[0].time == pd.Timestamp(t1)
    assert mon.state("P")["news2"]["scores"]["resp_rate"] == 3
    with pytest.raises(MedmmError) as err:
        mon.observe_many("P", [(t1, "HR", 80, None), (t1, "spo2", 150, None)])
    assert err.value.observation_index == 1
