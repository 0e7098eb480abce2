"""Clinical notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ReadError
from ..records import Note, Notes

__all__ = ["read_text_note"]


def read_text_note(path: str | Path, *, index_time: Any = None, note_type: str = "note", **_: Any) -> Notes:
    """Read one plain-text (UTF-8) note; its time is the record's index time."""
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
    return Notes([Note(text=text, time=index_time, note_type=note_type)])
