"""NEWS2 (RCP 2017 Chart 1 and Chart 4), tested at every band edge."""

import pytest

from medmm.monitor.news2 import (
    NEWS2Error,
    news2,
    response_band,
    round_to_chart,
    score_air_or_oxygen,
    score_consciousness,
    score_pulse,
    score_respiration_rate,
    score_spo2,
    score_systolic_bp,
    score_temperature,
)

# (value, expected score): both sides of every Chart 1 band edge
RESP = [(0, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (60, 3)]
SPO2_1 = [(50, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
SBP = [(40, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3), (300, 3)]
PULSE = [(20, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2),
         (131, 3), (220, 3)]
TEMP = [(30.0, 3), (35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2),
        (42.0, 2)]


@pytest.mark.parametrize("value,expected", RESP)
def test_respiration_rate_edges(value, expected):
    assert score_respiration_rate(value) == expected


@pytest.mark.parametrize("value,expected", SPO2_1)
def test_spo2_scale1_edges(value, expected):
    assert score_spo2(value, scale=1) == expected
    # scale 1 does not depend on oxygen (that is scored as its own parameter)
    assert score_spo2(value, scale=1, on_oxygen=True) == expected


@pytest.mark.parametrize("value,on_air,on_o2", [
    (70, 3, 3), (83, 3, 3), (84, 2, 2), (85, 2, 2), (86, 1, 1), (87, 1, 1), (88, 0, 0), (92, 0, 0),
    (93, 0, 1), (94, 0, 1), (95, 0, 2), (96, 0, 2), (97, 0, 3), (100, 0, 3),
])
def test_spo2_scale2_edges(value, on_air, on_o2):
    assert score_spo2(value, scale=2, on_oxygen=False) == on_air
    assert score_spo2(value, scale=2, on_oxygen=True) == on_o2


@pytest.mark.parametrize("value,expected", SBP)
def test_systolic_bp_edges(value, expected):
    assert score_systolic_bp(value) == expected


@pytest.mark.parametrize("value,expected", PULSE)
def test_pulse_edges(value, expected):
    assert score_pulse(value) == expected


@pytest.mark.parametrize("value,expected", TEMP)
def test_temperature_edges(value, expected):
    assert score_temperature(value) == expected


def test_air_oxygen_and_acvpu():
    assert score_air_or_oxygen(False) == 0 and score_air_or_oxygen(True) == 2
    assert score_consciousness("A") == 0 and score_consciousness("alert") == 0
    for level in ("C", "V", "P", "U", "new confusion", "voice", "pain", "unresponsive"):
        assert score_consciousness(level) == 3
    with pytest.raises(NEWS2Error, match="ACVPU"):
        score_consciousness("drowsy")


@pytest.mark.parametrize("fn,value,expected", [
    # values between bands are rounded half up to the chart's resolution, then scored
    (score_respiration_rate, 20.49, 0), (score_respiration_rate, 20.5, 2), (score_respiration_rate, 8.5, 1),
    (score_respiration_rate, 11.5, 0), (score_respiration_rate, 24.5, 3),
    (score_spo2, 95.5, 0), (score_spo2, 95.49, 1), (score_spo2, 91.5, 2),
    (score_systolic_bp, 90.5, 2), (score_systolic_bp, 90.4, 3), (score_systolic_bp, 219.5, 3),
    (score_pulse, 90.5, 1), (score_pulse, 90.49, 0), (score_pulse, 40.5, 1), (score_pulse, 130.5, 3),
    (score_temperature, 38.05, 1), (score_temperature, 38.049, 0), (score_temperature, 35.04, 3),
    (score_temperature, 35.05, 1), (score_temperature, 39.05, 2),
])
def test_rounding_policy_between_bands(fn, value, expected):
    assert fn(value) == expected


def test_round_to_chart_is_decimal_half_up():
    assert str(round_to_chart(38.05, 1)) == "38.1"  # the float 38.05 is 38.04999...; rounds as written
    assert str(round_to_chart(2.5)) == "3"  # not banker's rounding
    with pytest.raises(NEWS2Error):
        round_to_chart("abc")
    with pytest.raises(NEWS2Error):
        round_to_chart(float("nan"))


def test_impossible_values_are_errors():
    with pytest.raises(NEWS2Error, match="outside"):
        score_spo2(120)
    with pytest.raises(NEWS2Error, match="outside"):
        score_temperature(98.6)  # Fahrenheit passed as Celsius
    with pytest.raises(NEWS2Error):
        score_spo2(95, scale=3)


@pytest.mark.parametrize("total,max_single,band", [
    (0, 0, "none"), (1, 1, "low"), (4, 2, "low"), (3, 3, "low-medium"), (4, 3, "low-medium"),
    (5, 2, "medium"), (6, 3, "medium"), (7, 2, "high"), (7, 3, "high"), (20, 3, "high"),
])
def test_chart4_bands(total, max_single, band):
    assert response_band(total, max_single) == band


def test_aggregate_normal_patient_and_single_red_score():
    normal = dict(resp_rate=16, spo2=97, on_oxygen=False, sbp=120, pulse=70, consciousness="A", temperature=37.0)
    r = news2(**normal)
    assert (r.total, r.band, r.complete, r.level) == (0, "none", True, 0)
    # one parameter scoring 3 and nothing else: urgent ward-based response, not 'low'
    r = news2(**{**normal, "consciousness": "V"})
    assert (r.total, r.band, r.red_parameters) == (3, "low-medium", ["consciousness"])
    assert "consciousness V scores 3" in r.explain()


def test_aggregate_sums_every_parameter():
    r = news2(resp_rate=22, spo2=93, on_oxygen=True, sbp=105, pulse=115, consciousness="A", temperature=38.5)
    assert r.scores == {"resp_rate": 2, "spo2": 2, "air_or_oxygen": 2, "sbp": 1, "pulse": 2,
                        "consciousness": 0, "temperature": 1}
    assert (r.total, r.band, r.risk) == (10, "high", "high")
    r = news2(resp_rate=22, spo2=95, on_oxygen=False, sbp=115, pulse=95, consciousness="A", temperature=37)
    assert (r.total, r.band) == (4, "low")
    r = news2(resp_rate=22, spo2=95, on_oxygen=False, sbp=105, pulse=95, consciousness="A", temperature=37)
    assert (r.total, r.band) == (5, "medium")


def test_scale2_patient_on_oxygen():
    r = news2(resp_rate=18, spo2=97, on_oxygen=True, sbp=130, pulse=80, consciousness="A", temperature=37,
              spo2_scale=2)
    assert r.scores["spo2"] == 3 and r.scores["air_or_oxygen"] == 2 and r.band == "medium"
    r1 = news2(resp_rate=18, spo2=97, on_oxygen=True, sbp=130, pulse=80, consciousness="A", temperature=37)
    assert r1.scores["spo2"] == 0


def test_missing_parameters_are_listed_not_scored():
    r = news2(resp_rate=26, pulse=80)
    assert r.total == 3 and not r.complete
    assert set(r.missing) == {"spo2", "air_or_oxygen", "sbp", "consciousness", "temperature"}
    assert r.to_dict()["missing"] == r.missing
