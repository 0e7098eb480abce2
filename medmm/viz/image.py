"""Image viewer: three orthogonal slices in radiological display orientation, window presets,
and a mask or lesion overlay."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import figure_html, new_figure

__all__ = ["WINDOW_PRESETS", "ImageViewer", "show_image", "to_ras", "window_limits", "sphere_mask"]

#: CT window presets: name -> (level, width) in Hounsfield units
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40, 80),
    "subdural": (75, 215),
    "stroke": (40, 40),
    "soft_tissue": (40, 400),
    "mediastinum": (50, 350),
    "liver": (60, 160),
    "lung": (-600, 1500),
    "bone": (400, 1800),
}


def window_limits(data: np.ndarray, window: str | tuple[float, float] | None) -> tuple[float, float]:
    """Display limits ``(vmin, vmax)`` from a preset name, ``(level, width)`` or ``'auto'``
    (the 1st and 99th percentiles, for MR and anything without calibrated units)."""
    if window is None or window == "auto":
        finite = data[np.isfinite(data)]
        if not finite.size:
            return 0.0, 1.0
        lo, hi = np.percentile(finite, [1, 99])
        return float(lo), float(hi if hi > lo else lo + 1)
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            from ..errors import ConfigError

            raise ConfigError(f"unknown window preset {window!r}", hint=f"use one of {sorted(WINDOW_PRESETS)}, "
                              "'auto' or (level, width)")
        window = WINDOW_PRESETS[window]
    level, width = window
    return float(level - width / 2), float(level + width / 2)


def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Data reordered (axis swaps and flips only, no resampling) so that its axes run to
    R, A, S as closely as the affine allows; returns it and its voxel spacing."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt("RAS")
    tr = nib.orientations.ornt_transform(ornt, target)
    out = nib.orientations.apply_orientation(np.asarray(data), tr)
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    order = [int(a) for a in tr[:, 0]]
    sp = [0.0, 0.0, 0.0]
    for src, dst in enumerate(order):
        sp[dst] = float(spacing[src])
    return out, (sp[0], sp[1], sp[2])


def sphere_mask(shape: tuple[int, ...], centre: Any, radius: float, spacing: Any = None) -> np.ndarray:
    """A boolean ball on a voxel grid: ``centre`` in voxel indices (i, j, k), ``radius`` in
    voxels, or in millimetres when ``spacing`` (mm per voxel along i, j, k) is given."""
    c = np.asarray(centre, dtype=float)[:3]
    sp = np.ones(3) if spacing is None else np.asarray(spacing, dtype=float)[:3]
    g = np.indices(tuple(shape)[:3], dtype=float)
    d2 = sum(((g[a] - c[a]) * sp[a]) ** 2 for a in range(3))
    return d2 <= float(radius) ** 2


class ImageViewer:
    """Orthogonal slices (axial, coronal, sagittal) of an :class:`~medmm.records.Image`.

    Parameters
    ----------
    image:
        A medmm ``Image`` (or anything with ``data`` and ``affine``), or a 3D array.
    window:
        A preset of :data:`WINDOW_PRESETS`, ``(level, width)`` or ``'auto'``.
    mask:
        An overlay with the image's voxel grid (array or ``Image``): a segmentation or a
        lesion mask, drawn in colour with its outline.
    lesion:
        ``(centre_ijk, radius_voxels)``: a ball drawn as the mask (instead of ``mask``).
    point:
        Voxel ``(i, j, k)`` (image's own axes) where the three planes cross; default the
        mask's centre of mass, else the volume centre.
    """

    def __init__(self, image: Any, *, window: str | tuple[float, float] | None = "auto", mask: Any = None,
                 lesion: tuple[Any, float] | None = None, point: tuple[int, int, int] | None = None,
                 title: str | None = None) -> None:
        data = np.asarray(getattr(image, "data", image), dtype=np.float32)
        if data.ndim == 4:
            data = data[..., 0]
        if data.ndim != 3:
            from ..errors import ConfigError

            raise ConfigError(f"the viewer shows 3D volumes; got shape {data.shape}")
        affine = np.asarray(getattr(image, "affine", np.eye(4)), dtype=float)
        self.window = window
        self.title = title
        if lesion is not None:
            mask = sphere_mask(data.shape, lesion[0], lesion[1])
        m = None
        if mask is not None:
            m = np.asarray(getattr(mask, "data", mask))
            if m.ndim == 4:
                m = m[..., 0]
            if m.shape != data.shape:
                from ..errors import ConfigError

                raise ConfigError(f"mask shape {m.shape} differs from the image's {data.shape}",
                                  hint="give a mask on the image's voxel grid")
        if point is None:
            if m is not None and np.any(m > 0):
                point = tuple(int(round(c)) for c in np.argwhere(m > 0).mean(axis=0))
            else:
                point = tuple(s // 2 for s in data.shape)
        marker = np.zeros(data.shape, dtype=np.uint8)
        marker[tuple(int(np.clip(p, 0, s - 1)) for p, s in zip(point, data.shape))] = 1
        self.data, self.spacing = to_ras(data, affine)
        self.mask = to_ras(m, affine)[0] if m is not None else None
        self.point = tuple(int(v[0]) for v in np.nonzero(to_ras(marker, affine)[0]))
        self.vmin, self.vmax = window_limits(self.data, window)

    def slices(self) -> dict[str, tuple[np.ndarray, np.ndarray | None, float]]:
        """``{plane: (2D image rows-up, mask or None, aspect)}`` for axial, coronal, sagittal."""
        i, j, k = self.point
        sx, sy, sz = self.spacing
        d, m = self.data, self.mask

        def take(a, plane):
            if a is None:
                return None
            return {"axial": a[:, :, k], "coronal": a[:, j, :], "sagittal": a[i, :, :]}[plane].T

        return {
            "axial": (take(d, "axial"), take(m, "axial"), sy / sx),
            "coronal": (take(d, "coronal"), take(m, "coronal"), sz / sx),
            "sagittal": (take(d, "sagittal"), take(m, "sagittal"), sz / sy),
        }

    def figure(self, *, size: float = 3.2):
        """A matplotlib Figure with the three planes (radiological convention: patient's
        right on the left of axial and coronal views)."""
        fig = new_figure(figsize=(3 * size, size + 0.4))
        axes = fig.subplots(1, 3)
        for ax, (plane, (img, msk, aspect)) in zip(axes, self.slices().items()):
            shown = img[:, ::-1] if plane in ("axial", "coronal") else img  # R on the viewer's left
            ax.imshow(shown, cmap="gray", vmin=self.vmin, vmax=self.vmax, origin="lower", aspect=aspect,
                      interpolation="nearest")
            if msk is not None and np.any(msk > 0):
                mk = msk[:, ::-1] if plane in ("axial", "coronal") else msk
                ax.imshow(np.ma.masked_where(mk <= 0, mk), cmap="autumn", alpha=0.45, origin="lower",
                          aspect=aspect, interpolation="nearest")
                ax.contour((mk > 0).astype(float), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(plane, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        if self.title:
            fig.suptitle(self.title, fontsize=10)
        window = self.window if isinstance(self.window, str) else f"L/W {self.window}"
        fig.text(0.5, 0.01, f"window {window}: [{self.vmin:.0f}, {self.vmax:.0f}]", ha="center", fontsize=8)
        return fig

    def _repr_html_(self) -> str:
        return figure_html(self.figure(), alt="image slices")


def show_image(image: Any, **kwargs: Any):
    """The three orthogonal slices as a matplotlib Figure (see :class:`ImageViewer`)."""
    return ImageViewer(image, **kwargs).figure()
