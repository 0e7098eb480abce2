"""``medmm.read_image``: any supported image file or folder to an :class:`~medmm.records.Image`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MedmmError, ReadError
from ..records import Image

__all__ = ["read_image", "image_format"]

_SUFFIXES = {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd"}


def image_format(path: str | Path) -> str:
    """``'dicom'``, ``'nifti'`` or ``'nrrd'``: from the suffix, else from the file's first bytes."""
    p = Path(path)
    if p.is_dir() or p.name.upper() == "DICOMDIR":
        return "dicom"
    name = p.name.lower()
    for suffix, fmt in sorted(_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    try:
        with open(p, "rb") as fh:
            head = fh.read(352)
    except OSError as exc:
        raise ReadError(f"cannot open the file ({exc})", path=p, hint="check the path") from exc
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"NRRD":
        return "nrrd"
    if head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00") or head[4:8] in (b"n+2\x00",):
        return "nifti"
    if name.endswith(".dcm") or "." not in name:
        return "dicom"  # DICOM without a preamble (old exports); the reader decides
    raise ReadError(
        "cannot tell the image format",
        path=p,
        hint="give a DICOM file or folder, a .nii/.nii.gz or a .nrrd/.nhdr file",
    )


def read_image(path: str | Path, **options: Any) -> Image:
    """Read a DICOM series folder, DICOMDIR, single DICOM file, NIfTI or NRRD file.

    ``options`` go to the format's reader: for DICOM ``series_uid``, ``irregular``
    (``"error"``/``"accept"``/``"resample"``) and ``deidentify``; see
    :func:`medmm.io.dicom.read_dicom`, :func:`medmm.io.nifti.read_nifti` and
    :func:`medmm.io.nrrd.read_nrrd`.
    """
    p = Path(path)
    if not p.exists():
        raise ReadError("image path does not exist", path=p, hint="check the path")
    fmt = image_format(p)
    if fmt == "dicom":
        from .dicom import read_dicom as reader
    elif fmt == "nifti":
        from .nifti import read_nifti as reader
    else:
        from .nrrd import read_nrrd as reader
    try:
        return reader(p, **options)
    except MedmmError:
        raise
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TypeError) and "unexpected keyword" in str(exc):
            raise
        raise ReadError(
            f"could not read {fmt} image: {type(exc).__name__}: {exc}",
            path=p,
            hint=f"check that the file is a valid {fmt} image",
        ) from exc
