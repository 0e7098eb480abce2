"""The medmm error family.

Every error medmm raises on bad input is a :class:`MedmmError`. Each carries the place
(file, row, column or tag) and a hint that says how to fix it, so a message reads as
``<where>: <what was wrong>. <how to fix it>``. Library errors (pydicom, nibabel, pandas)
are translated into these at the boundary of :mod:`medmm.io`.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "MedmmError",
    "ReadError",
    "DicomError",
    "GeometryError",
    "SchemaError",
    "ManifestError",
    "NotFittedError",
    "ConfigError",
    "EngineError",
    "UnusableInputError",
]


class MedmmError(Exception):
    """Base class of every medmm error.

    Parameters
    ----------
    message:
        What was wrong.
    path:
        The file (or folder) concerned, when there is one.
    row:
        The table row (0-based data row of a manifest or table) concerned.
    column:
        The column, field or DICOM tag concerned.
    hint:
        How to fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike | None = None,
        row: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.row = row
        self.column = column
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f". Fix: {self.hint}"
        return text

    def __reduce__(self):  # keep the keyword fields through pickling (DataLoader workers)
        return (
            _rebuild,
            (type(self), self.message, self.path, self.row, self.column, self.hint),
        )


def _rebuild(cls, message, path, row, column, hint):
    return cls(message, path=path, row=row, column=column, hint=hint)


class ReadError(MedmmError):
    """A file could not be read into a medmm record."""


class DicomError(ReadError):
    """A DICOM file or series is unreadable or inconsistent."""


class GeometryError(DicomError):
    """A series' geometry is irregular (missing slices, tilt, mixed orientation, ...)."""


class SchemaError(MedmmError):
    """A table or document does not follow its schema in ``medmm/schemas/``."""


class ManifestError(SchemaError):
    """A cohort manifest is malformed (misspelt column, bad value, missing file)."""


class NotFittedError(MedmmError, ValueError):
    """A fitted transform or model was used before ``fit``."""


class ConfigError(MedmmError, ValueError):
    """An experiment or model configuration is invalid."""


class EngineError(MedmmError):
    """Work could not run where it was sent (a Ray cluster unreachable, a node lost mid-run)."""


class UnusableInputError(SchemaError):
    """A document (a request body, a FHIR Bundle) had problems and nothing usable; ``problems``
    lists them, entry by entry."""

    def __init__(self, message: str, *, problems: list[MedmmError] | None = None, path: str | PathLike | None = None,
                 row: int | None = None, column: str | None = None, hint: str | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message, path=path, row=row, column=column, hint=hint)

    def __reduce__(self):
        return (_rebuild_unusable, (self.message, self.path, self.row, self.column, self.hint, self.problems))


def _rebuild_unusable(message, path, row, column, hint, problems):
    return UnusableInputError(message, path=path, row=row, column=column, hint=hint, problems=problems)
