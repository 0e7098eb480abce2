"""Vital signs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ReadError
from ..records import Vitals

__all__ = ["read_vitals_long", "LONG_COLUMNS"]

LONG_COLUMNS = ("time", "signal", "value", "unit")


def read_vitals_long(path: str | Path, **_: Any) -> Vitals:
    """Read a long-layout vitals CSV (``time, signal, value, unit``)."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype={"signal": str, "unit": str, "value": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReadError(f"not a readable CSV ({exc})", path=path, hint="check the file") from exc
    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if missing:
        raise ReadError(
            f"missing column(s) {missing}; found {list(df.columns)}",
            path=path,
            hint=f"a long vitals CSV needs the columns {list(LONG_COLUMNS)}",
        )
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = values.isna() & df["value"].notna()
    if bad.any():
        i = int(bad.idxmax())
        raise ReadError(
            f"value {df['value'].iloc[i]!r} is not a number",
            path=path,
            row=i,
            column="value",
            hint="the value column must hold numbers only; put units in the unit column",
        )
    times = pd.to_datetime(df["time"], errors="coerce", utc=False, format="ISO8601")
    bad = times.isna()
    if bad.any():
        i = int(bad.idxmax())
        raise ReadError(
            f"time {df['time'].iloc[i]!r} is not an ISO 8601 timestamp",
            path=path,
            row=i,
            column="time",
            hint="write times as YYYY-MM-DDTHH:MM:SS",
        )
    out = pd.DataFrame(
        {"time": times, "signal": df["signal"].astype(str), "value": values.astype(float),
         "unit": df["unit"].fillna("").astype(str)}
    ).dropna(subset=["value"])
    out = out.sort_values(["time", "signal"], kind="stable").reset_index(drop=True)
    if out.empty:
        raise ReadError("vitals file holds no observation", path=path, hint="remove it from the manifest")
    return Vitals(out)
