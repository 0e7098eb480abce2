"""Request bodies to :class:`~medmm.records.PatientRecord` s through :mod:`medmm.io.json_record`,
and the service's input errors (422 bodies)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import MedmmError, SchemaError, UnusableInputError

if TYPE_CHECKING:
    from ...records import PatientRecord
    from .schemas import PatientIn


def record_from_json(p: PatientIn) -> PatientRecord:
    """The record of a validated JSON body; a bad observation or note is :class:`Unprocessable`
    naming its index and field (``vitals[3].unit: ...``)."""
    from ...io.json_record import record_from_json as convert

    try:
        return convert(p.model_dump(), source="body")
    except SchemaError as exc:
        raise Unprocessable(_field_message(exc)) from None


def record_from_fhir(doc: dict[str, Any]) -> tuple[PatientRecord, list[dict[str, Any]]]:
    """The record of a FHIR Bundle and the problems of the entries left out of it, as 422 items.

    Raises :class:`Unusable` when there are problems and nothing usable: a prediction from the
    prior alone would hide that every entry was refused.
    """
    from ...io.json_record import record_from_fhir as convert

    try:
        record, problems = convert(doc)
    except UnusableInputError as exc:
        raise Unusable([problem_out(e) for e in exc.problems]) from None
    return record, [problem_out(e) for e in problems]


def _field_message(e: MedmmError) -> str:
    text = f"{e.column}: {e.message}" if e.column else e.message
    return text + (f". Fix: {e.hint}" if e.hint else "")


def problem_out(e: MedmmError) -> dict[str, Any]:
    loc: list[Any] = ["body"]
    if e.row is not None:
        loc += ["entry", e.row]
    if e.column:
        loc.append(e.column)
    return {"loc": loc, "msg": e.message, "hint": e.hint}


class Unprocessable(Exception):
    pass


class Unusable(Exception):
    """No entry of the input could be used; ``problems`` says why, entry by entry."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems
