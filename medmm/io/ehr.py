"""Tabular EHR."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ReadError
from ..records import Tabular

__all__ = ["read_ehr_wide", "parse_header"]

_UNIT = re.compile(r"^\s*(?P<name>.*?)\s*\[(?P<unit>[^\]]*)\]\s*$")


def parse_header(column: str) -> tuple[str, str]:
    """Split a column header ``'name [unit]'`` into ``(name, unit)`` (unit ``''`` if none)."""
    m = _UNIT.match(column)
    return (m["name"], m["unit"]) if m else (column.strip(), "")


@lru_cache(maxsize=8)
def _load_table(path: str, mtime: float):
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReadError(f"not a readable CSV ({exc})", path=path, hint="check the file") from exc
    if "patient_id" not in df.columns:
        raise ReadError(
            f"no 'patient_id' column; found {list(df.columns)}",
            path=path,
            hint="a wide EHR table needs one row per patient keyed by 'patient_id'",
        )
    dup = df["patient_id"].duplicated()
    if dup.any():
        raise ReadError(
            f"patient {df['patient_id'][dup].iloc[0]!r} has several rows",
            path=path,
            row=int(dup.idxmax()),
            column="patient_id",
            hint="keep one row per patient (aggregate events first)",
        )
    return df.set_index("patient_id")


def read_ehr_wide(path: str | Path, *, patient_id: str, **_: Any) -> Tabular:
    """Read one patient's row of a wide EHR CSV; headers may carry units as ``name [unit]``."""
    import pandas as pd

    p = Path(path)
    table = _load_table(str(p.resolve()), p.stat().st_mtime)
    if patient_id not in table.index:
        raise ReadError(
            f"no row for patient {patient_id!r}",
            path=path,
            column="patient_id",
            hint="add the patient's row or leave the manifest's ehr_path empty",
        )
    row = table.loc[patient_id]
    values: dict[str, Any] = {}
    units: dict[str, str] = {}
    for col, v in row.items():
        name, unit = parse_header(str(col))
        values[name] = None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
        if unit:
            units[name] = unit
    return Tabular(values=values, units=units)
