"""Readers: one module per source kind, behind one registry.

A reader is a function ``read(path, **context) -> Image | Notes | Vitals | Tabular`` that
raises a :class:`~medmm.errors.ReadError` (naming the file and the fix) on bad input.
Readers are registered by ``(modality, format)``; the registry stores dotted paths so that
heavy libraries are imported only when a reader is used.

``context`` carries what a reader may need beyond the path: ``patient_id`` (to pick a
patient's rows out of a cohort-wide table) and ``index_time`` (the prediction time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MedmmError, ReadError

__all__ = ["register_reader", "get_reader", "read_modality", "infer_format", "list_readers", "lazy_image"]

# (modality, format) -> "module:function" or a callable
_READERS: dict[tuple[str, str], str | Callable[..., Any]] = {
    ("image", "dicom"): "medmm.io.dicom:read_dicom",
    ("image", "nifti"): "medmm.io.nifti:read_nifti",
    ("image", "nrrd"): "medmm.io.nrrd:read_nrrd",
    ("notes", "text"): "medmm.io.notes:read_text_note",
    ("vitals", "long_csv"): "medmm.io.vitals:read_vitals_long",
    ("ehr", "wide_csv"): "medmm.io.ehr:read_ehr_wide",
    ("notes", "table"): "medmm.io.notes:read_notes_table",
    ("notes", "jsonl"): "medmm.io.notes:read_notes_table",
    ("notes", "fhir"): "medmm.io.notes:read_fhir_notes",
    ("vitals", "long_parquet"): "medmm.io.vitals:read_vitals_parquet",
    ("vitals", "wide_csv"): "medmm.io.vitals:read_vitals_wide",
    ("vitals", "fhir"): "medmm.io.vitals:read_fhir_vitals",
    ("vitals", "wfdb"): "medmm.io.wfdb_io:read_wfdb_vitals",
    ("vitals", "ecg_wfdb"): "medmm.io.wfdb_io:read_ecg_heart_rate",
    ("vitals", "ecg_dicom"): "medmm.io.wfdb_io:read_ecg_heart_rate",
    ("ehr", "wide_parquet"): "medmm.io.ehr:read_ehr_wide",
    ("ehr", "long_csv"): "medmm.io.ehr:read_ehr_long",
    ("ehr", "long_parquet"): "medmm.io.ehr:read_ehr_long",
    ("ehr", "fhir"): "medmm.io.ehr:read_ehr_fhir",
}

# (modality, path suffix) -> format; the first match wins, longest suffix first
_EXTENSIONS: dict[tuple[str, str], str] = {
    ("image", ".nii.gz"): "nifti",
    ("image", ".nii"): "nifti",
    ("image", ".nrrd"): "nrrd",
    ("image", ".nhdr"): "nrrd",
    ("image", ".dcm"): "dicom",
    ("notes", ".txt"): "text",
    ("vitals", ".csv"): "long_csv",
    ("ehr", ".csv"): "wide_csv",
    ("notes", ".jsonl"): "jsonl",
    ("notes", ".ndjson"): "jsonl",
    ("notes", ".csv"): "table",
    ("notes", ".parquet"): "table",
    ("notes", ".json"): "fhir",
    ("vitals", ".parquet"): "long_parquet",
    ("vitals", ".wide.csv"): "wide_csv",
    ("vitals", ".json"): "fhir",
    ("vitals", ".hea"): "wfdb",
    ("vitals", ".ecg.dcm"): "ecg_dicom",
    ("ehr", ".parquet"): "wide_parquet",
    ("ehr", ".events.csv"): "long_csv",
    ("ehr", ".events.parquet"): "long_parquet",
    ("ehr", ".json"): "fhir",
}


def register_reader(
    modality: str, fmt: str, *, extensions: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the reader of ``fmt`` files for ``modality`` (a decorator)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _READERS[(modality, fmt)] = fn
        for ext in extensions:
            _EXTENSIONS[(modality, ext.lower())] = fmt
        return fn

    return deco


def list_readers() -> list[tuple[str, str]]:
    """All registered ``(modality, format)`` pairs."""
    return sorted(_READERS)


def get_reader(modality: str, fmt: str) -> Callable[..., Any]:
    try:
        target = _READERS[(modality, fmt)]
    except KeyError:
        known = sorted(f for m, f in _READERS if m == modality)
        raise ReadError(
            f"no reader for {modality} format {fmt!r}",
            hint=f"use one of {known} or register one with medmm.io.register_reader",
        ) from None
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
        _READERS[(modality, fmt)] = target
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


def infer_format(modality: str, path: str | Path) -> str:
    """The format of ``path`` for ``modality``, from its suffix.

    An image folder or DICOMDIR is DICOM, and an image file with an unknown suffix (or none,
    as DICOM files often have) is recognised from its first bytes.
    """
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
        f"cannot tell the {modality} format of this file",
        path=path,
        hint=f"give a file ending in one of {known}, or set the '{modality}_format' column",
    )


def read_modality(modality: str, path: str | Path, fmt: str | None = None, **context: Any) -> Any:
    """Read one modality's file(s) with the registered reader.

    Library errors that escape a reader are translated to :class:`ReadError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(
            f"{modality} file does not exist",
            path=path,
            hint="check the path in the manifest (relative paths are resolved against the "
            "manifest's folder)",
        )
    fmt = fmt or infer_format(modality, path)
    reader = get_reader(modality, fmt)
    try:
        value = reader(path, **context)
    except MedmmError:
        raise
    except Exception as exc:  # translate library errors at the boundary
        raise ReadError(
            f"could not read {modality} ({fmt}): {type(exc).__name__}: {exc}",
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

    keep = {k: v for k, v in options.items() if k not in ("patient_id", "index_time")}
    if not all(isinstance(v, _PLAIN) for v in keep.values()):
        return None
    return ImageSource.of(Path(path).resolve(), fmt, **keep)


def lazy_image(path: str | Path, fmt: str | None = None, **options: Any) -> Any:
    """An :class:`~medmm.records.Image` that holds no voxels yet.

    NIfTI files have their header read now (cheap: the voxels stay behind a proxy that reads
    only the slices asked for); other formats are not opened until the image is used, when
    the whole image is read and its header kept. A missing file raises :class:`ReadError`
    now; an unreadable one when it is first used.
    """
    from ..records import Image, ImageSource

    path = Path(path)
    if not path.exists():
        raise ReadError("image file does not exist", path=path,
                        hint="check the path in the manifest (relative paths are resolved against the "
                        "manifest's folder)")
    fmt = fmt or infer_format("image", path)
    get_reader("image", fmt)  # an unknown format fails now
    if fmt == "nifti" and not options:
        from .nifti import read_nifti

        return read_nifti(path, lazy=True)
    return Image(source=ImageSource.of(path.resolve(), fmt, **options))
