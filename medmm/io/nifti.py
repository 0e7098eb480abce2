"""NIfTI-1/2 images (``.nii``, ``.nii.gz``; 3D and 4D) through nibabel.

The affine follows the NIfTI rule nibabel implements: the sform when ``sform_code > 0``,
else the qform when ``qform_code > 0``, else the voxel-size-only fallback (flagged in
``meta["affine_source"]``). ``scl_slope``/``scl_inter`` are applied (a zero slope means
unscaled). Spatial units other than millimetres are converted to millimetres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError
from ..records import Image

__all__ = ["read_nifti", "write_nifti", "fsl_gradients", "write_fsl_gradients"]

_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}


def _load(path: Path) -> Any:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
    except (ImageFileError, OSError, EOFError, ValueError, TypeError) as exc:
        raise ReadError(
            f"not a readable NIfTI file ({type(exc).__name__}: {exc})",
            path=path,
            hint="check that the file is a complete .nii or .nii.gz",
        ) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair)):
        raise ReadError(
            f"{type(img).__name__} is not a NIfTI image",
            path=path,
            hint="give a .nii or .nii.gz NIfTI-1/2 file",
        )
    return img


def nifti_slicer(path: str | Path, img: Any = None, dtype: Any = np.float32) -> Any:
    """``key -> array`` reading only that part of a NIfTI file (nibabel's array proxy; ``()``
    reads all of it, exactly as :func:`read_nifti` does). ``img``: the file, already opened."""
    path = Path(path)
    state: dict[str, Any] = {"img": img}

    def read(key: Any) -> np.ndarray:
        img = state.get("img")
        if img is None:
            img = state["img"] = _load(path)
        try:
            if isinstance(key, tuple) and not key:
                return np.asarray(img.get_fdata(dtype=dtype, caching="unchanged"))
            return np.asarray(img.dataobj[key], dtype=dtype)
        except (OSError, EOFError, ValueError, TypeError) as exc:
            raise ReadError(
                f"cannot read the voxels of this NIfTI file ({type(exc).__name__}: {exc})",
                path=path,
                hint="the file changed or is truncated since it was listed; check it",
            ) from exc

    return read


def read_nifti(path: str | Path, *, dtype: Any = np.float32, lazy: bool = False, **_: Any) -> Image:
    """Read a NIfTI-1 or NIfTI-2 file into an :class:`Image` (``float32`` data by default).

    ``lazy=True`` reads the header only: the voxels stay on disk behind the image's
    ``dataobj`` proxy, which reads only the slices asked for.
    """
    from ..records import ImageProxy, ImageSource

    path = Path(path)
    img = _load(path)
    hdr = img.header
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    affine = np.array(img.affine, dtype=np.float64)
    space_unit, time_unit = hdr.get_xyzt_units()
    scale = _UNIT_TO_MM.get(space_unit, 1.0)
    if scale != 1.0:
        affine[:3, :] *= scale
    meta: dict[str, Any] = {
        "format": "nifti2" if type(img).__name__.startswith("Nifti2") else "nifti1",
        "affine_source": "sform" if sform_code > 0 else "qform" if qform_code > 0 else "fallback",
        "sform_code": sform_code,
        "qform_code": qform_code,
        "stored_dtype": str(hdr.get_data_dtype()),
        "spatial_unit": space_unit,
        "time_unit": time_unit,
        "intent": str(hdr.get_intent()[0]),
    }
    slope = getattr(img.dataobj, "slope", None)  # nibabel moves scl_* to the array proxy
    inter = getattr(img.dataobj, "inter", None)
    if slope is not None and (float(slope) != 1.0 or float(inter or 0.0) != 0.0):
        meta["scl_slope"], meta["scl_inter"] = float(slope), float(inter or 0.0)
    if len(img.shape) >= 4:
        meta["tr"] = float(hdr.get_zooms()[3])
    descrip = np.asarray(hdr["descrip"]).tobytes().decode("latin-1").strip("\x00 ")
    if descrip:
        meta["description"] = descrip
    source = ImageSource.of(path.resolve(), "nifti")
    if lazy and dtype in (None, np.float32):
        proxy = ImageProxy(source, img.shape, np.float32, slicer=nifti_slicer(path))
        return Image(proxy, affine, meta, source=source)
    data = nifti_slicer(path, img, np.float32 if dtype in (None, np.float32) else np.float64)(())
    if dtype is not None and data.dtype != np.dtype(dtype):
        data = data.astype(dtype)
    return Image(data=data, affine=affine, meta=meta, source=source if dtype in (None, np.float32) else None)


def write_nifti(image: Image, path: str | Path, *, dtype: Any = np.float32) -> Path:
    """Write ``image`` as NIfTI-1 (``.nii`` or ``.nii.gz``), sform and qform both scanner-based.

    ``dtype="auto"`` stores int16 when every value is an integer in the int16 range (as
    dcm2niix does), float32 otherwise. An affine with shear (an accepted gantry tilt) is
    kept exactly in the sform; the qform is then the nearest rigid one.
    """
    import nibabel as nib

    path = Path(path)
    data = np.asarray(image.data)
    if isinstance(dtype, str) and dtype == "auto":
        dtype = np.float32
        if data.size and np.issubdtype(data.dtype, np.number):
            lo, hi = float(np.min(data)), float(np.max(data))
            if lo >= -32768 and hi <= 32767 and np.array_equal(data, np.round(data)):
                dtype = np.int16
    data = np.asarray(data, dtype=dtype)
    img = nib.Nifti1Image(data, image.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(image.affine, code=1)
    img.set_qform(image.affine, code=1)
    desc = str(image.meta.get("SeriesDescription", "") or "")[:79] if image.meta else ""
    if desc:
        img.header["descrip"] = desc.encode("ascii", "replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def fsl_gradients(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """``(bvals [T], bvecs [3, T])`` of a diffusion image in FSL's convention.

    ``image.meta`` holds ``b_values`` and ``gradient_directions`` (RAS+ world, as the
    DICOM reader fills them). FSL wants each direction in the voxel frame of the image as
    stored, with x negated when the affine's determinant is positive (a neurological
    voxel order), which is what dcm2niix writes.
    """
    meta = image.meta or {}
    if "b_values" not in meta or "gradient_directions" not in meta:
        raise ReadError(
            "image has no diffusion gradients (meta b_values / gradient_directions)",
            hint="read a diffusion-weighted DICOM series",
        )
    bvals = np.asarray(meta["b_values"], dtype=np.float64)
    world = np.asarray(meta["gradient_directions"], dtype=np.float64).reshape(-1, 3)
    m = np.asarray(image.affine, dtype=np.float64)[:3, :3]
    vox = np.linalg.solve(m / np.linalg.norm(m, axis=0), world.T)  # (3, T)
    norms = np.linalg.norm(vox, axis=0)
    vox = np.where(norms > 1e-9, vox / np.where(norms > 1e-9, norms, 1.0), 0.0)
    if np.linalg.det(m) > 0:
        vox[0] = -vox[0]
    return bvals, vox + 0.0


def write_fsl_gradients(image: Image, nifti_path: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.bval`` and ``<stem>.bvec`` beside ``nifti_path`` (see :func:`fsl_gradients`)."""
    nifti_path = Path(nifti_path)
    name = nifti_path.name
    for suffix in (".nii.gz", ".nii", ".nrrd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    bvals, bvecs = fsl_gradients(image)
    bval_path = nifti_path.with_name(name + ".bval")
    bvec_path = nifti_path.with_name(name + ".bvec")
    bval_path.write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    bvec_path.write_text("".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in bvecs))
    return bval_path, bvec_path
