"""One vitals-observation validator: files (clean_vitals), the monitor and the service agree."""

from __future__ import annotations

import pandas as pd
import pytest

from medmm.errors import SchemaError
from medmm.io.vitals import clean_vitals, validate_observation
from medmm.monitor.health import HealthMonitor

# as charted by a bedside monitor export: vendor names, mixed units, a degF temperature, a
# fraction SpO2, a mis-keyed heart rate and a unit nobody can convert
ROWS = [
    ("2024-03-01T08:00:00+01:00", "HR", "88", "bpm"),
    ("2024-03-01T08:00:00+01:00", "Temp", "100.4", "degF"),
    ("2024-03-01T08:00:00+01:00", "SpO2", "0.95", "1"),
    ("2024-03-01T08:05:00", "NIBP Sys", "16", "kPa"),
    ("2024-03-01T08:10:00", "HR", "880", "bpm"),
    ("2024-03-01T08:10:00", "RR", "18", "furlongs"),
    ("2024-03-01T08:15:00", "Temp", "99.1", "Cel"),
]


def _frame() -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=["time", "signal", "value", "unit"])
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601").dt.tz_localize(None)
    df["value"] = df["value"].astype(float)
    return df


def test_one_observation_is_checked_as_a_file_row_is() -> None:
    problems: list = []
    cleaned = clean_vitals(_frame(), problems=problems)
    kept = {(r.signal, round(r.value, 6), r.unit) for r in cleaned.itertuples()}
    for time, signal, value, unit in ROWS:
        try:
            obs = validate_observation(signal, value, unit, time=time)
        except SchemaError as exc:
            assert exc.column in ("value", "unit")
            continue
        assert (obs.signal, round(obs.value, 6), obs.unit) in kept
    assert len(cleaned) == 4 and len(problems) == 3
    assert validate_observation("Temp", "100.4", "degF").value == pytest.approx(38.0)
    assert validate_observation("NIBP Sys", 16, "kPa").value == pytest.approx(120.0, abs=0.1)
    assert validate_observation("HR", 88, "bpm", time="2024-03-01T08:00:00+01:00").time == pd.Timestamp(
        "2024-03-01T07:00:00")


@pytest.mark.parametrize(("signal", "value", "unit", "column", "match"), [
    ("HR", 880, "bpm", "value", "physiologically impossible"),
    ("Temp", 99.1, "Cel", "value", "degF"),
    ("RR", 18, "furlongs", "unit", "cannot be converted"),
    ("HR", "eighty", None, "value", "not a number"),
    ("HR", float("nan"), None, "value", "not finite"),
    ("HR", True, None, "value", "not a number"),
])
def test_a_bad_observation_names_its_field(signal, value, unit, column, match) -> None:
    with pytest.raises(SchemaError, match=match) as info:
        validate_observation(signal, value, unit)
    assert info.value.column == column
    mon = HealthMonitor()  # the monitor rejects it the same way
    with pytest.raises(SchemaError) as again:
        mon.observe("p1", "2024-03-01T08:00:00", signal, value, unit)
    assert again.value.column == column


def test_a_time_that_is_not_a_time() -> None:
    with pytest.raises(SchemaError, match="not a time") as info:
        validate_observation("HR", 80, "bpm", time="yesterday-ish")
    assert info.value.column == "time"
