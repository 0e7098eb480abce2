"""NRRD images (``.nrrd``, ``.nhdr``) through pynrrd.

``space directions`` give the affine's columns and ``space origin`` its translation, in
the file's ``space`` (LPS, RAS, LAS or scanner-xyz, which is LPS); they are converted to
RAS+. Non-spatial axes (``kinds`` list/vector/RGB/time, or a ``none`` space direction) are
moved after the three spatial axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError
from ..records import Image

__all__ = ["read_nrrd", "write_nrrd"]

# space -> sign flips that take its coordinates to RAS
_SPACE_TO_RAS = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
    "scanner-xyz": (-1, -1, 1),
    "3d-right-handed": (1, 1, 1),
}


def read_nrrd(path: str | Path, *, dtype: Any = np.float32, **_: Any) -> Image:
    """Read an NRRD file into an :class:`Image` with a RAS+ affine."""
    import nrrd

    path = Path(path)
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except (nrrd.NRRDError, OSError, ValueError, EOFError) as exc:
        raise ReadError(
            f"not a readable NRRD file ({type(exc).__name__}: {exc})",
            path=path,
            hint="check that the file (and a .nhdr's data file) is complete",
        ) from exc
    ndim = data.ndim
    space = str(header.get("space", "") or "").lower().replace("-time", "")
    directions = header.get("space directions")
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * ndim)]
    spatial: list[int] = []
    columns: list[np.ndarray] = []
    if directions is not None:
        for axis, row in enumerate(np.asarray(directions, dtype=object)):
            vec = None if row is None else np.asarray(row, dtype=np.float64)
            if vec is not None and vec.size >= 3 and np.all(np.isfinite(vec)):
                spatial.append(axis)
                columns.append(vec[:3])
    else:
        spacings = header.get("spacings")
        for axis in range(ndim):
            if kinds[axis] in ("domain", "space") and len(spatial) < 3:
                sp = float(spacings[axis]) if spacings is not None and np.isfinite(spacings[axis]) else 1.0
                col = np.zeros(3)
                col[len(spatial)] = sp
                spatial.append(axis)
                columns.append(col)
    if not spatial or len(spatial) > 3:
        raise ReadError(
            f"cannot find the spatial axes (space directions: {directions!r}, kinds: {kinds})",
            path=path,
            column="space directions",
            hint="write the NRRD with 'space', 'space directions' and 'space origin'",
        )
    flips = np.asarray(_SPACE_TO_RAS.get(space, (1, 1, 1)), dtype=np.float64)
    if space and space not in _SPACE_TO_RAS:
        raise ReadError(
            f"unsupported NRRD space {header.get('space')!r}",
            path=path,
            column="space",
            hint=f"use one of {sorted(_SPACE_TO_RAS)}",
        )
    affine = np.eye(4)
    for c, col in enumerate(columns):
        affine[:3, c] = col * flips
    origin = header.get("space origin")
    if origin is not None:
        affine[:3, 3] = np.asarray(origin, dtype=np.float64)[:3] * flips
    other = [a for a in range(ndim) if a not in spatial]
    data = np.transpose(data, spatial + other)
    if len(spatial) < 3:
        # the missing spatial axes go before the non-spatial ones (a 2D RGB image stays RGB)
        data = np.expand_dims(data, tuple(range(len(spatial), 3)))
        # a 2D NRRD: the missing axis is the normal, 1 mm
        n = np.cross(affine[:3, 0], affine[:3, 1]) if len(spatial) == 2 else np.array([0, 0, 1.0])
        affine[:3, 2] = n / (np.linalg.norm(n) or 1.0)
    if other:
        data = data.reshape(data.shape[:3] + (-1,))
    if dtype is not None:
        data = np.asarray(data, dtype=dtype)
    meta = {
        "format": "nrrd",
        "space": header.get("space"),
        "kinds": header.get("kinds"),
        "stored_dtype": str(header.get("type")),
    }
    return Image(data=data, affine=affine, meta=meta)


def write_nrrd(image: Image, path: str | Path) -> Path:
    """Write ``image`` as NRRD in LPS space (the convention of Slicer and ITK)."""
    import nrrd

    path = Path(path)
    flips = np.array([-1.0, -1.0, 1.0])
    data = np.asarray(image.data)
    dirs: list[list[float] | None] = [list(image.affine[:3, c] * flips) for c in range(3)]
    kinds = ["domain"] * 3
    if data.ndim == 4:
        dirs.append(None)
        kinds.append("list")
    header = {
        "space": "left-posterior-superior",
        "space directions": np.array(
            [d if d is not None else [np.nan] * 3 for d in dirs], dtype=np.float64
        ),
        "space origin": image.affine[:3, 3] * flips,
        "kinds": kinds,
    }
    nrrd.write(str(path), data, header, index_order="F")
    return path
