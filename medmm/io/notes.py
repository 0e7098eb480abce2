r"""Clinical notes: plain text, note tables (JSONL / CSV / Parquet) and FHIR DocumentReference.

Every reader returns :class:`~medmm.records.Notes`, oldest note first. Table and FHIR readers
take the record's ``index_time``: a note dated after it is never returned (it would leak the
future into a prediction), and an undated note is dropped and reported when an index time is
given. Rows that cannot be used (bad JSON, text that is not UTF-8, a bad timestamp) are
reported as :class:`~medmm.problems.Problem`\ s in the ``report`` a reader is given, and
the rest of the file still loads; ``strict=True`` raises the first problem instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MedmmError, ReadError
from ..problems import ProblemReport, report_problems
from ..records import Note, Notes
from .common import parse_times, problem, to_timestamp
from .fhir import load_bundle, notes_from_document_reference

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "read_text_note",
    "read_notes_table",
    "load_notes_table",
    "read_fhir_notes",
    "notes_from_document_reference",
    "NOTE_COLUMNS",
]

#: Columns of a note table; ``note_type`` is optional.
NOTE_COLUMNS = ("patient_id", "time", "note_type", "text")
_ALIASES = {
    "subject_id": "patient_id",
    "patient": "patient_id",
    "charttime": "time",
    "chartdate": "time",
    "date": "time",
    "datetime": "time",
    "category": "note_type",
    "type": "note_type",
    "note": "text",
    "note_text": "text",
    "body": "text",
    "transcription": "text",  # MTSamples
    "report_text": "text",
}


def _scrubber(deid: Any):
    """``deid``: False/None (off), True (default :class:`PhiScrubber`), a scrubber, or its settings."""
    if not deid:
        return None
    from ..deid.text import PhiScrubber

    if deid is True:
        return PhiScrubber()
    if isinstance(deid, dict):
        return PhiScrubber(**deid)
    return deid


def read_text_note(
    path: str | Path, *, index_time: Any = None, note_type: str = "note", deid: Any = False, **_: Any
) -> Notes:
    """Read one plain-text (UTF-8) note; its time is the record's index time.

    ``deid`` scrubs PHI on read (``True``, a :class:`~medmm.deid.text.PhiScrubber`
    or its settings as a dict).
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReadError(
            f"note is not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
            path=path,
            hint="re-encode the note as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from exc
    text = text.strip()
    if not text:
        raise ReadError("note is empty", path=path, hint="remove the path from the manifest")
    scrub = _scrubber(deid)
    return Notes([Note(text=scrub(text) if scrub else text, time=index_time, note_type=note_type)])


# --------------------------------------------------------------------------- note tables


def _has_surrogates(s: Any) -> bool:
    return isinstance(s, str) and any("\udc80" <= c <= "\udcff" for c in s)


def _bad_utf8(value: str, *, path: Any, row: int, column: str) -> MedmmError:
    raw = value.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
        pos = 0
    except UnicodeDecodeError as exc:
        pos = exc.start
    return problem(
        f"{column} is not UTF-8 (byte {pos}: {raw[pos:pos + 1]!r})",
        path=path,
        row=row,
        column=column,
        hint="re-encode the notes as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
    )


def _read_jsonl(path: Path, problems: list[tuple[str | None, MedmmError]]) -> "pd.DataFrame":
    import json

    import pandas as pd

    rows, index = [], []
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh):
            if not raw.strip():
                continue
            line = raw.decode("utf-8", "surrogateescape")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append((None, problem(f"line is not valid JSON ({exc.msg} at column {exc.colno})",
                                               path=path, row=i, hint="write one JSON object per line")))
                continue
            if not isinstance(obj, dict):
                problems.append((None, problem(f"line is a JSON {type(obj).__name__}, not an object",
                                               path=path, row=i, hint="write one JSON object per line")))
                continue
            bad = [k for k, v in obj.items() if _has_surrogates(v)]
            if bad:
                pid = obj.get("patient_id", obj.get("subject_id"))
                pid = None if pid is None or _has_surrogates(pid) else str(pid)
                problems.extend((pid, _bad_utf8(obj[k], path=path, row=i, column=k)) for k in bad)
                continue
            rows.append(obj)
            index.append(i)
    return pd.DataFrame(rows, index=index)


def _read_csv(path: Path) -> "pd.DataFrame":
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=object, keep_default_na=False, na_values=[""],
                           encoding="utf-8", encoding_errors="surrogateescape")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReadError(f"not a readable CSV ({exc})", path=path, hint="check the file") from exc


def load_notes_table(path: str | Path, *, strict: bool = False, text_column: str | None = None,
                     report: ProblemReport | None = None) -> "pd.DataFrame":
    """Load a whole note table (``.jsonl``, ``.csv`` or ``.parquet``).

    Returns a frame with :data:`NOTE_COLUMNS` (``time`` naive UTC), its index the 0-based row
    of the file (line for JSONL). Unusable rows are left out and reported in ``report``
    (``strict=True`` raises the first).
    ``text_column`` names the column holding the note text when it is not ``text`` or one of
    its aliases (``note``, ``note_text``, ``body``, ``transcription``, ``report_text``).
    """
    p = Path(path)
    if not p.exists():
        raise ReadError("note table does not exist", path=p, hint="check the path")
    df, pairs = _load_cached(str(p.resolve()), p.stat().st_mtime, text_column)
    report_problems([e for _, e in pairs], report, strict=strict)
    return df


def _text_candidates(df: "pd.DataFrame") -> list[str]:
    """Columns of strings, longest mean length first (where a note's text is likely to be)."""
    lengths = {}
    for c in df.columns:
        vals = [v for v in df[c].head(200) if isinstance(v, str)]
        if vals:
            lengths[c] = sum(map(len, vals)) / len(vals)
    return sorted(lengths, key=lambda c: -lengths[c])


@lru_cache(maxsize=8)
def _load_cached(path_s: str, mtime: float,
                 text_column: str | None = None) -> tuple["pd.DataFrame", list[tuple[str | None, MedmmError]]]:
    import pandas as pd

    path = Path(path_s)
    problems: list[tuple[str | None, MedmmError]] = []
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        df = _read_jsonl(path, problems)
    elif name.endswith(".parquet"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types
            raise ReadError(f"not a readable Parquet file ({exc})", path=path, hint="check the file") from exc
    else:
        df = _read_csv(path)
    if text_column is not None:
        if text_column not in df.columns:
            raise ReadError(f"text_column {text_column!r} is not a column; found {list(df.columns)}", path=path,
                            column=text_column, hint="pass the name of the column that holds the note text")
        df = df.drop(columns=[c for c in df.columns if c == "text" and c != text_column])
        df = df.rename(columns={text_column: "text"})
    df = df.rename(columns={k: v for k, v in _ALIASES.items() if k in df.columns and v not in df.columns})
    if "text" not in df.columns:
        cands = _text_candidates(df)
        raise ReadError(
            f"no 'text' column; found {list(df.columns)}",
            path=path,
            column="text",
            hint=(f"pass text_column={cands[0]!r} (its longest text column) or the column that holds the notes"
                  if cands else f"a note table needs the columns {list(NOTE_COLUMNS)} (note_type optional)"),
        )
    for col, default in (("patient_id", None), ("note_type", "note"), ("time", None)):
        if col not in df.columns:
            df[col] = default
    df["patient_id"] = df["patient_id"].map(lambda v: None if v is None or v != v else str(v))
    keep = []
    for i, pid, text in zip(df.index, df["patient_id"], df["text"]):
        if not isinstance(text, str):
            problems.append((pid, problem("text is missing or not a string", path=path, row=int(i),
                                          column="text", hint="give every note its text")))
        elif _has_surrogates(text):
            problems.append((pid, _bad_utf8(text, path=path, row=int(i), column="text")))
        else:
            keep.append(i)
            continue
    df = df.loc[keep]
    tprob: list[MedmmError] = []
    df["time"] = parse_times(df["time"], problems=tprob, path=path, column="time")
    pid_of = dict(zip(df.index, df["patient_id"]))
    problems.extend((pid_of.get(e.row), e) for e in tprob)
    df["note_type"] = df["note_type"].fillna("note").astype(str)
    return df[list(NOTE_COLUMNS)].copy(), problems


def _to_notes(rows: "pd.DataFrame", problems: list[MedmmError], *, path: Any, index_time: Any,
              deid: Any = False, strict: bool = False, report: ProblemReport | None = None) -> Notes:
    cutoff = to_timestamp(index_time)
    if cutoff is not None:
        undated = rows["time"].isna()
        for i in rows.index[undated.to_numpy()]:
            problems.append(problem("note has no time; left out because it cannot be placed before the "
                                    "index time", path=path, row=int(i), column="time",
                                    hint="give every note its time"))
        rows = rows[~undated & (rows["time"] <= cutoff)]
    rows = rows[rows["text"].str.strip() != ""].sort_values("time", kind="stable", na_position="first")
    scrub = _scrubber(deid) or (lambda t: t)
    notes = Notes([
        Note(text=scrub(str(r.text).strip()), time=None if r.time is None or r.time != r.time else r.time,
             note_type=str(r.note_type))
        for r in rows.itertuples(index=False)
    ])
    if strict and problems:
        raise problems[0]
    if notes.notes:
        report_problems(problems, report, source=path)
    return notes


def read_notes_table(
    path: str | Path,
    *,
    patient_id: str | None = None,
    index_time: Any = None,
    strict: bool = False,
    deid: Any = False,
    text_column: str | None = None,
    report: ProblemReport | None = None,
    **_: Any,
) -> Notes:
    """Read one patient's notes from a note table (JSONL / CSV / Parquet).

    Parameters
    ----------
    path:
        The table; columns ``patient_id, time, note_type, text`` (MIMIC-style aliases such as
        ``subject_id``, ``charttime``, ``category`` are accepted).
    patient_id:
        Whose notes to return; ``None`` returns every row (a one-patient file).
    index_time:
        Notes dated after it are left out (leakage guard).
    strict:
        Raise the first problem instead of collecting it.
    deid:
        Scrub PHI on read: ``True``, a :class:`~medmm.deid.text.PhiScrubber` or its
        settings as a dict.
    text_column:
        The column holding the note text when it is neither ``text`` nor an alias (MTSamples'
        ``transcription`` is one).

    report:
        Takes the problems of this patient's rows and of rows whose patient is unknown (a
        line that is not JSON).
    """
    p = Path(path)
    if not p.exists():
        raise ReadError("note table does not exist", path=p, hint="check the path")
    df, pairs = _load_cached(str(p.resolve()), p.stat().st_mtime, text_column)
    if strict:
        if pairs:
            raise pairs[0][1]
    if patient_id is not None and df["patient_id"].notna().any():  # else: a one-patient file
        pid = str(patient_id)
        df = df[df["patient_id"] == pid]
        problems = [e for p, e in pairs if p is None or p == pid]
    else:
        problems = [e for _, e in pairs]
    notes = _to_notes(df, problems, path=path, index_time=index_time, deid=deid, strict=strict, report=report)
    if not notes.notes:
        raise ReadError(
            f"no usable note{' for patient ' + repr(patient_id) if patient_id else ''}"
            f"{' dated at or before ' + str(index_time) if index_time is not None else ''}",
            path=path,
            column="patient_id" if patient_id else None,
            hint="leave the manifest's notes_path empty for this patient",
        )
    return notes


# --------------------------------------------------------------------------- FHIR




def read_fhir_notes(
    path: str | Path,
    *,
    patient_id: str | None = None,
    index_time: Any = None,
    strict: bool = False,
    deid: Any = False,
    report: ProblemReport | None = None,
    **_: Any,
) -> Notes:
    """Read the text notes of a FHIR Bundle (or a lone DocumentReference) JSON file.

    With ``deid=True`` the names of the bundle's Patient are scrubbed too.
    """
    import pandas as pd

    bundle = load_bundle(path, only={"DocumentReference"})
    if deid is True:
        from ..deid.text import PhiScrubber

        deid = PhiScrubber(known_names=bundle.patient.get("names", []))
    problems = list(bundle.problems)
    rows = []
    for note in bundle.notes:
        rows.append({"patient_id": None, "time": note.time, "note_type": note.note_type, "text": note.text})
    if strict and problems:
        raise problems[0]
    df = pd.DataFrame(rows, columns=list(NOTE_COLUMNS))
    df["time"] = pd.to_datetime(df["time"])
    notes = _to_notes(df, problems, path=path, index_time=index_time, deid=deid, strict=strict, report=report)
    if not notes.notes:
        raise ReadError("no usable text DocumentReference", path=path,
                        hint="leave the manifest's notes_path empty for this patient")
    return notes
