"""Readers: one module per source kind, behind one registry.

A reader is a function ``read(path, **context) -> Image | Notes | Vitals | Tabular`` that
raises a :class:`~medmm.errors.ReadError` (naming the file and the fix) on bad input.
Readers are registered by ``(kind, format)``, the kind being one of
:data:`~medmm.records.KINDS` (``image``, ``text``, ``series``, ``table``), so every modality of a
kind (a CT and a PET series, a demographics and a labs table) reads through the same readers.
The default modality names are accepted where a kind is expected (``notes`` for ``text``,
``vitals`` for ``series``, ``ehr`` for ``table``). The registry stores dotted paths so that heavy
libraries are imported only when a reader is used.

``context`` carries what a reader may need beyond the path: ``patient_id`` (to pick a
patient's rows out of a cohort-wide table) and ``index_time`` (the prediction time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MedmmError, ReadError

__all__ = ["register_reader", "get_reader", "read_modality", "infer_format", "list_readers", "lazy_image", "kind_of"]

#: a default modality name given where a kind is expected
_KIND_OF_NAME = {"image": "image", "notes": "text", "vitals": "series", "ehr": "table"}
_KINDS = ("image", "text", "series", "table")


def kind_of(modality_or_kind: str) -> str:
    """The reader kind of a kind or a default modality name (``notes`` -> ``text``)."""
    if modality_or_kind in _KINDS:
        return modality_or_kind
    try:
        return _KIND_OF_NAME[modality_or_kind]
    except KeyError:
        raise ReadError(f"{modality_or_kind!r} is neither a modality kind nor a default modality",
                        hint=f"give a kind ({', '.join(_KINDS)}); a declared modality reads through its kind's "
                             "readers") from None


# (kind, format) -> "module:function" or a callable
_READERS: dict[tuple[str, str], str | Callable[..., Any]] = {
    ("image", "dicom"): "medmm.io.dicom:read_dicom",
    ("image", "nifti"): "medmm.io.nifti:read_nifti",
    ("image", "nrrd"): "medmm.io.nrrd:read_nrrd",
    ("text", "text"): "medmm.io.notes:read_text_note",
    ("series", "long_csv"): "medmm.io.vitals:read_vitals_long",
    ("table", "wide_csv"): "medmm.io.ehr:read_ehr_wide",
    ("text", "table"): "medmm.io.notes:read_notes_table",
    ("text", "jsonl"): "medmm.io.notes:read_notes_table",
    ("text", "fhir"): "medmm.io.notes:read_fhir_notes",
    ("series", "long_parquet"): "medmm.io.vitals:read_vitals_parquet",
    ("series", "wide_csv"): "medmm.io.vitals:read_vitals_wide",
    ("series", "fhir"): "medmm.io.vitals:read_fhir_vitals",
    ("series", "wfdb"): "medmm.io.wfdb_io:read_wfdb_vitals",
    ("series", "ecg_wfdb"): "medmm.io.wfdb_io:read_ecg_heart_rate",
    ("series", "ecg_dicom"): "medmm.io.wfdb_io:read_ecg_heart_rate",
    ("table", "wide_parquet"): "medmm.io.ehr:read_ehr_wide",
    ("table", "long_csv"): "medmm.io.ehr:read_ehr_long",
    ("table", "long_parquet"): "medmm.io.ehr:read_ehr_long",
    ("table", "fhir"): "medmm.io.ehr:read_ehr_fhir",
}

# (kind, path suffix) -> format; the first match wins, longest suffix first
_EXTENSIONS: dict[tuple[str, str], str] = {
    ("image", ".nii.gz"): "nifti",
    ("image", ".nii"): "nifti",
    ("image", ".nrrd"): "nrrd",
    ("image", ".nhdr"): "nrrd",
    ("image", ".dcm"): "dicom",
    ("text", ".txt"): "text",
    ("series", ".csv"): "long_csv",
    ("table", ".csv"): "wide_csv",
    ("text", ".jsonl"): "jsonl",
    ("text", ".ndjson"): "jsonl",
    ("text", ".csv"): "table",
    ("text", ".parquet"): "table",
    ("text", ".json"): "fhir",
    ("series", ".parquet"): "long_parquet",
    ("series", ".wide.csv"): "wide_csv",
    ("series", ".json"): "fhir",
    ("series", ".hea"): "wfdb",
    ("series", ".ecg.dcm"): "ecg_dicom",
    ("table", ".parquet"): "wide_parquet",
    ("table", ".events.csv"): "long_csv",
    ("table", ".events.parquet"): "long_parquet",
    ("table", ".json"): "fhir",
}


def register_reader(
    kind: str, fmt: str, *, extensions: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the reader of ``fmt`` files for modalities of ``kind`` (a decorator)."""
    kind = kind_of(kind)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _READERS[(kind, fmt)] = fn
        for ext in extensions:
            _EXTENSIONS[(kind, ext.lower())] = fmt
        return fn

    return deco


def list_readers() -> list[tuple[str, str]]:
    """All registered ``(kind, format)`` pairs."""
    return sorted(_READERS)


def get_reader(kind: str, fmt: str) -> Callable[..., Any]:
    kind = kind_of(kind)
    try:
        target = _READERS[(kind, fmt)]
    except KeyError:
        known = sorted(f for m, f in _READERS if m == kind)
        raise ReadError(
            f"no reader for {kind} format {fmt!r}",
            hint=f"use one of {known} or register one with medmm.io.register_reader",
        ) from None
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
        _READERS[(kind, fmt)] = target
    return target


def _sniff_image(path: Path) -> str | None:
    """An image file's format from its first bytes (``None`` when unknown)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError:
        return None
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"NRRD":
        return "nrrd"
    if head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00") or head[4:8] == b"n+2\x00":
        return "nifti"
    if "." not in path.name:
        return "dicom"  # DICOM without a preamble (old exports); the reader decides
    return None


def infer_format(modality: str, path: str | Path, *, name: str | None = None) -> str:
    """The format of ``path`` for a kind (or default modality), from its suffix; ``name`` is
    the modality's name, for the hint.

    An image folder or DICOMDIR is DICOM, and an image file with an unknown suffix (or none,
    as DICOM files often have) is recognised from its first bytes.
    """
    name = name or modality
    modality = kind_of(modality)
    p = Path(path)
    if modality == "image" and (p.is_dir() or p.name.upper() == "DICOMDIR"):
        return "dicom"
    name = p.name.lower()
    for (mod, ext), fmt in sorted(_EXTENSIONS.items(), key=lambda kv: -len(kv[0][1])):
        if mod == modality and name.endswith(ext):
            return fmt
    if modality == "image" and p.is_file():
        sniffed = _sniff_image(p)
        if sniffed is not None:
            return sniffed
    known = sorted(ext for m, ext in _EXTENSIONS if m == modality)
    raise ReadError(
        f"cannot tell the {name} format of this file",
        path=path,
        hint=f"give a file ending in one of {known}, or set the '{name}_format' column",
    )


def read_modality(modality: str, path: str | Path, fmt: str | None = None, *, name: str | None = None,
                  **context: Any) -> Any:
    """Read one modality's file(s) with the reader registered for its kind (``modality`` is a
    kind or a default modality name; ``name`` the modality's own name, for messages).

    Library errors that escape a reader are translated to :class:`ReadError` naming the file.
    """
    name = name or modality
    modality = kind_of(modality)
    path = Path(path)
    if not path.exists():
        raise ReadError(
            f"{name} file does not exist",
            path=path,
            hint="check the path in the manifest (relative paths are resolved against the "
            "manifest's folder)",
        )
    fmt = fmt or infer_format(modality, path, name=name)
    reader = get_reader(modality, fmt)
    try:
        value = reader(path, **context)
    except MedmmError:
        raise
    except Exception as exc:  # translate library errors at the boundary
        raise ReadError(
            f"could not read {name} ({fmt}): {type(exc).__name__}: {exc}",
            path=path,
            hint=f"check that the file is a valid {fmt} file",
        ) from exc
    if modality == "image" and getattr(value, "source", False) is None:
        value.source = image_source(path, fmt, context)
    return value


#: reader options an image source may keep: plain values only (a source is re-read elsewhere)
_PLAIN = (str, int, float, bool, type(None))


def image_source(path: Path, fmt: str, options: dict[str, Any]) -> Any:
    """The :class:`~medmm.records.ImageSource` that re-reads ``path`` as it was read, or
    ``None`` when an option is not a plain value (a de-identifier object, say)."""
    from ..records import ImageSource

    keep = {k: v for k, v in options.items() if k not in ("patient_id", "index_time", "report")}
    if not all(isinstance(v, _PLAIN) for v in keep.values()):
        return None
    return ImageSource.of(Path(path).resolve(), fmt, **keep)


def lazy_image(path: str | Path, fmt: str | None = None, *, name: str = "image", **options: Any) -> Any:
    """An :class:`~medmm.records.Image` that holds no voxels yet.

    NIfTI files have their header read now (cheap: the voxels stay behind a proxy that reads
    only the slices asked for); other formats are not opened until the image is used, when
    the whole image is read and its header kept. A missing file raises :class:`ReadError`
    now; an unreadable one when it is first used.
    """
    from ..records import Image, ImageSource

    path = Path(path)
    if not path.exists():
        raise ReadError(f"{name} file does not exist", path=path,
                        hint="check the path in the manifest (relative paths are resolved against the "
                        "manifest's folder)")
    fmt = fmt or infer_format("image", path, name=name)
    get_reader("image", fmt)  # an unknown format fails now
    if fmt == "nifti" and not options:
        from .nifti import read_nifti

        return read_nifti(path, lazy=True)
    return Image(source=ImageSource.of(path.resolve(), fmt, **options))
