"""``medmm.read_image``: any supported image file or folder to an :class:`~medmm.records.Image`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..records import Image

__all__ = ["read_image", "image_format"]


def image_format(path: str | Path) -> str:
    """``'dicom'``, ``'nifti'`` or ``'nrrd'``: from the suffix, else from the file's first bytes."""
    from . import infer_format

    return infer_format("image", path)


def read_image(path: str | Path, **options: Any) -> Image:
    """Read a DICOM series folder, DICOMDIR, single DICOM file, NIfTI or NRRD file.

    ``options`` go to the format's reader: for DICOM ``series_uid``, ``irregular``
    (``"error"``/``"accept"``/``"resample"``), ``volume`` (one volume of a 4D series) and
    ``deidentify``; see
    :func:`medmm.io.dicom.read_dicom`, :func:`medmm.io.nifti.read_nifti` and
    :func:`medmm.io.nrrd.read_nrrd`. This is :func:`medmm.io.read_modality` for ``"image"``.
    """
    from . import read_modality

    return read_modality("image", path, **options)
