"""The affine of a stack (LPS), and resampling onto a regular, untilted grid."""

from __future__ import annotations

import numpy as np

from .frame import POS_TOL, Frame
from .stacks import slice_positions
from .values import num

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- geometry


def affine_lps(frames: list[Frame], step_vec: np.ndarray | None = None) -> np.ndarray:
    f0 = frames[0]
    iop = f0.iop
    row_sp, col_sp = f0.spacing
    if step_vec is None:
        if len(frames) > 1:
            step_vec = (frames[-1].ipp - f0.ipp) / (len(frames) - 1)
        else:
            thick = num(f0.ds.get("SpacingBetweenSlices"), None) or num(f0.ds.get("SliceThickness"), 1.0) or 1.0
            step_vec = f0.normal * thick
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_sp  # i runs along a row (column index)
    lps[:3, 1] = iop[3:] * row_sp  # j runs down a column (row index)
    lps[:3, 2] = step_vec
    lps[:3, 3] = f0.ipp
    return lps


# ------------------------------------------------------------------------------ resample


def resample_regular(vol: np.ndarray, frames: list[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """Resample a (X, Y, K[, T]) volume onto a regular grid along the slice normal.

    Each slice is first shifted in its plane so that all slices share one in-plane origin
    (gantry tilt), then slices are linearly interpolated at a regular step (the median
    step) along the normal. Returns ``(data, affine_lps)``.
    """
    from scipy import ndimage

    pos, dist = slice_positions(frames)
    f0 = frames[0]
    normal = f0.normal
    row_sp, col_sp = f0.spacing
    axes = np.stack([f0.iop[:3] * col_sp, f0.iop[3:] * row_sp], axis=1)  # (3, 2)
    fill = float(np.min(vol))
    src = vol
    inplane = (pos - pos[0]) - np.outer(dist - dist[0], normal)
    if np.abs(inplane).max() > 1e-6:
        src = np.empty_like(vol)
        for k in range(vol.shape[2]):
            shift_ij, *_ = np.linalg.lstsq(axes, inplane[k], rcond=None)
            for t in range(vol.shape[3]):
                src[:, :, k, t] = ndimage.shift(vol[:, :, k, t], shift_ij, order=1, mode="constant", cval=fill)
    steps = np.diff(dist)
    step = float(np.median(steps[steps >= POS_TOL])) if np.any(steps >= POS_TOL) else 1.0
    n_out = int(round((dist[-1] - dist[0]) / step)) + 1
    target = dist[0] + step * np.arange(n_out)
    out = np.empty((vol.shape[0], vol.shape[1], n_out, vol.shape[3]), dtype=np.float32, order="F")
    idx = np.clip(np.searchsorted(dist, target, side="right") - 1, 0, len(dist) - 2)
    for t_out, (k, d) in enumerate(zip(idx, target)):
        span = dist[k + 1] - dist[k]
        w = 0.0 if span <= 0 else float(np.clip((d - dist[k]) / span, 0.0, 1.0))
        out[:, :, t_out, :] = (1 - w) * src[:, :, k, :] + w * src[:, :, k + 1, :]
    lps = affine_lps(frames, step_vec=normal * step)
    return out, lps
