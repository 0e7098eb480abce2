"""DICOM series to :class:`~medmm.records.Image`.

Slices are grouped by SeriesInstanceUID and ordered by ImagePositionPatient projected on
the slice normal (never by file name or InstanceNumber). The affine is built from
ImageOrientationPatient, PixelSpacing and the positions, in DICOM's LPS and then flipped
to RAS+. Stored values are rescaled to real-world units (HU for CT) slice by slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DicomError, GeometryError
from ..records import Image

__all__ = ["read_dicom", "read_dicom_series", "slice_normal"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Header fields copied into ``Image.meta`` when present.
META_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesDescription",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "StudyDate",
    "KVP",
    "SliceThickness",
    "BodyPartExamined",
    "PatientID",
)


def slice_normal(iop: Any) -> np.ndarray:
    """The unit normal (LPS) of a slice with ImageOrientationPatient ``iop``."""
    iop = np.asarray(iop, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DicomError("folder holds no files", path=path, hint="point at a DICOM series folder")
    return files


def read_dicom(path: str | Path, *, series_uid: str | None = None, **_: Any) -> Image:
    """Read a DICOM series folder (or a single DICOM file) into an :class:`Image`."""
    return read_dicom_series(path, series_uid=series_uid)


def read_dicom_series(path: str | Path, *, series_uid: str | None = None) -> Image:
    """Read the series under ``path`` into an HU (or rescaled) float32 volume with its affine."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    headers = []
    for f in _files_of(path):
        try:
            ds = pydicom.dcmread(f)
        except InvalidDicomError as exc:
            raise DicomError(
                f"not a DICOM file ({exc})",
                path=f,
                hint="remove non-DICOM files from the series folder",
            ) from exc
        if "PixelData" not in ds:
            continue
        headers.append((f, ds))
    if not headers:
        raise DicomError("no DICOM image in this path", path=path, hint="check the folder")

    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in headers})
    if series_uid is not None:
        headers = [(f, ds) for f, ds in headers if str(ds.get("SeriesInstanceUID")) == series_uid]
        if not headers:
            raise DicomError(
                f"series {series_uid} not found", path=path, hint=f"choose one of {uids}"
            )
    elif len(uids) > 1:
        raise DicomError(
            f"folder holds {len(uids)} series",
            path=path,
            hint=f"pass series_uid= one of {uids}",
        )

    first = headers[0][1]
    if len(headers) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError(
            "multi-frame DICOM is not supported by this reader yet",
            path=headers[0][0],
            hint="export the series as single-frame files",
        )
    for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if tag not in first:
            raise GeometryError(
                f"missing {tag}; the geometry cannot be built",
                path=headers[0][0],
                column=tag,
                hint="only images with patient geometry are supported",
            )

    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    for f, ds in headers:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=np.float64), iop, atol=1e-4):
            raise GeometryError(
                "mixed slice orientations in one series",
                path=f,
                column="ImageOrientationPatient",
                hint="split the series by orientation (series_uid) before reading",
            )
    normal = slice_normal(iop)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in headers])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    headers = [headers[i] for i in order]
    positions, dist = positions[order], dist[order]

    if len(headers) > 1:
        steps = np.diff(dist)
        if np.any(steps < 1e-3):
            dup = headers[int(np.argmin(steps)) + 1][0]
            raise GeometryError(
                "duplicate slice positions",
                path=dup,
                column="ImagePositionPatient",
                hint="remove duplicated slices or split the series",
            )
        if np.ptp(steps) > max(1e-2, 0.01 * float(np.median(steps))):
            raise GeometryError(
                f"irregular slice spacing (steps from {steps.min():.3g} to {steps.max():.3g} mm); "
                "slices may be missing",
                path=path,
                column="ImagePositionPatient",
                hint="check for missing slices",
            )
        step_vec = (positions[-1] - positions[0]) / (len(positions) - 1)
        if np.linalg.norm(np.cross(step_vec / np.linalg.norm(step_vec), normal)) > 1e-3:
            raise GeometryError(
                "slice positions are not along the slice normal (gantry tilt)",
                path=path,
                column="ImagePositionPatient",
                hint="resample the series to a regular grid",
            )
    else:
        thick = float(first.get("SliceThickness", 1.0) or 1.0)
        step_vec = normal * thick

    rows, cols = int(first.Rows), int(first.Columns)
    vol = np.empty((cols, rows, len(headers)), dtype=np.float32)
    for k, (f, ds) in enumerate(headers):
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise GeometryError(
                f"slice size {ds.Rows}x{ds.Columns} differs from {rows}x{cols}",
                path=f,
                hint="split the series by size before reading",
            )
        try:
            arr = ds.pixel_array
        except Exception as exc:
            raise DicomError(
                f"pixel data cannot be decoded ({exc})",
                path=f,
                column="PixelData",
                hint="install pylibjpeg and its plugins for compressed transfer syntaxes",
            ) from exc
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        vol[:, :, k] = (arr.astype(np.float32) * slope + intercept).T

    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_spacing  # i runs along a row (column index)
    lps[:3, 1] = iop[3:] * row_spacing  # j runs down a column (row index)
    lps[:3, 2] = step_vec
    lps[:3, 3] = positions[0]
    meta = {t: _plain(first.get(t)) for t in META_TAGS if t in first}
    meta["n_files"] = len(headers)
    return Image(data=vol, affine=LPS_TO_RAS @ lps, meta=meta)


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
