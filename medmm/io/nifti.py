"""NIfTI-1/2 images through nibabel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError
from ..records import Image

__all__ = ["read_nifti", "write_nifti"]


def read_nifti(path: str | Path, **_: Any) -> Image:
    """Read a NIfTI file; the affine is nibabel's (sform, else qform), scaling applied."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (ImageFileError, OSError, EOFError, ValueError) as exc:
        raise ReadError(
            f"not a readable NIfTI file ({exc})",
            path=path,
            hint="check that the file is a complete .nii or .nii.gz",
        ) from exc
    hdr = img.header
    meta: dict[str, Any] = {"format": type(img).__name__}
    descrip = hdr.get("descrip") if hasattr(hdr, "get") else None
    if descrip is not None:
        meta["description"] = bytes(np.asarray(descrip)).decode("latin-1").strip("\x00 ")
    return Image(data=data, affine=np.asarray(img.affine), meta=meta)


def write_nifti(image: Image, path: str | Path) -> Path:
    """Write ``image`` as NIfTI-1 (``.nii`` or ``.nii.gz``)."""
    import nibabel as nib

    path = Path(path)
    nib.save(nib.Nifti1Image(np.asarray(image.data, dtype=np.float32), image.affine), str(path))
    return path
