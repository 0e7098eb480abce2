"""Helpers shared by the notes, vitals, EHR and FHIR readers: problems and timestamps.

A *problem* is a :class:`~medmm.errors.ReadError` that was collected instead of raised, so
that one bad record (a malformed row, an unknown code, a non-UTF-8 note) is reported with its
file, row and field while the rest of the file still loads. Readers hand what they collected
on through one mechanism, :func:`medmm.problems.report_problems`: each reader takes
``report: ProblemReport | None`` and adds a :class:`~medmm.problems.Problem` per collected
error to it (``strict=True`` raises the first instead). Nothing is attached to the returned
value. A parsed FHIR Bundle keeps its entries' errors in ``bundle.problems`` until a reader
reports them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from os import PathLike
from typing import TYPE_CHECKING, Any

from ..errors import MedmmError, ReadError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "naive_utc",
    "problem",
    "PROBLEM_COLUMNS",
    "parse_time",
    "parse_times",
    "to_timestamp",
]

PROBLEM_COLUMNS = ("kind", "path", "row", "column", "message", "hint")


def problem(
    message: str,
    *,
    path: str | PathLike | None = None,
    row: int | None = None,
    column: str | None = None,
    hint: str | None = None,
    kind: type[MedmmError] = ReadError,
) -> MedmmError:
    """A collected (not raised) error naming the file, row and field."""
    return kind(message, path=path, row=row, column=column, hint=hint)


def to_timestamp(value: Any) -> "pd.Timestamp | None":
    """``value`` as a naive UTC :class:`pandas.Timestamp` (``None`` stays ``None``)."""
    import pandas as pd

    if value is None or (isinstance(value, float) and value != value):
        return None
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        return None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def naive_utc(values: "pd.Series") -> "pd.Series":
    """A datetime column as naive UTC (zoned values converted, naive ones taken as UTC as they are);
    :func:`to_timestamp` does the same for one value, :func:`parse_times` for text."""
    if getattr(values.dt, "tz", None) is not None:
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values


def parse_time(
    text: Any,
    *,
    problems: list[MedmmError] | None = None,
    path: str | PathLike | None = None,
    row: int | None = None,
    column: str | None = None,
) -> "pd.Timestamp | None":
    """Parse one ISO 8601 / FHIR date(time) into a naive UTC timestamp.

    Zoned times are converted to UTC; naive ones are taken as UTC. A value that cannot be
    parsed is ``None`` and, when ``problems`` is given, recorded there (else raised).
    """
    import pandas as pd

    if text is None or text == "" or (isinstance(text, float) and text != text):
        return None
    if isinstance(text, (pd.Timestamp, datetime)):
        return to_timestamp(text)
    s = str(text).strip()
    try:
        if len(s) <= 10:  # FHIR date, year-month or year
            ts = pd.Timestamp(s if len(s) > 7 else (s + "-01" if len(s) == 7 else s + "-01-01"))
        else:
            ts = pd.Timestamp(datetime.fromisoformat(s.replace("Z", "+00:00")))
    except (ValueError, TypeError, OverflowError):
        err = ReadError(
            f"{s!r} is not an ISO 8601 date or date-time",
            path=path,
            row=row,
            column=column,
            hint="write times as YYYY-MM-DDTHH:MM:SS[+hh:mm]",
        )
        if problems is None:
            raise err from None
        problems.append(err)
        return None
    if ts.tzinfo is not None:
        ts = ts.tz_convert(timezone.utc).tz_localize(None)
    return ts


def parse_times(
    values: "pd.Series",
    *,
    problems: list[MedmmError] | None = None,
    path: str | PathLike | None = None,
    column: str = "time",
    row_offset: int = 0,
) -> "pd.Series":
    """Parse a column of timestamps to naive UTC ``datetime64[ns]``.

    A fast vectorised path handles the common case (all naive or all zoned). When naive and
    zoned times are mixed, each naive row is reported (taken as UTC) so that the mix is seen;
    unparseable rows become ``NaT`` and are reported.
    """
    import pandas as pd

    s = values.astype("string")
    zoned = s.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False)
    has_time = s.str.len() > 10
    mixed = bool(zoned.any()) and bool((~zoned & has_time & s.notna()).any())
    out = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
    out = out.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    bad = out.isna() & s.notna() & (s.str.strip() != "")
    if problems is not None:
        if mixed:
            for i in s.index[(~zoned & has_time & s.notna()).to_numpy()]:
                problems.append(
                    ReadError(
                        f"naive timestamp {s[i]!r} among zoned ones; taken as UTC",
                        path=path,
                        row=int(i) + row_offset,
                        column=column,
                        hint="give every timestamp a UTC offset (e.g. +00:00)",
                    )
                )
        for i in s.index[bad.to_numpy()]:
            problems.append(
                ReadError(
                    f"{s[i]!r} is not an ISO 8601 timestamp",
                    path=path,
                    row=int(i) + row_offset,
                    column=column,
                    hint="write times as YYYY-MM-DDTHH:MM:SS[+hh:mm]",
                )
            )
    elif bad.any():
        i = int(s.index[bad.to_numpy()][0])
        raise ReadError(
            f"{s[i]!r} is not an ISO 8601 timestamp",
            path=path,
            row=i + row_offset,
            column=column,
            hint="write times as YYYY-MM-DDTHH:MM:SS[+hh:mm]",
        )
    return out
