"""Image preprocessing with MONAI transforms.

Deterministic part (reorientation to RAS, intensity window, resize to a fixed grid) runs on
every image; nothing here is fitted on data, but the class follows the fit/transform
contract so that a cohort's preprocessors are handled alike and saved with the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import NotFittedError
from ..records import Image

__all__ = ["ImagePreprocessor", "WINDOWS"]

#: CT window presets as (level, width) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


class ImagePreprocessor:
    """Turn an :class:`~medmm.records.Image` into a ``float32 [1, X, Y, Z]`` array.

    Parameters
    ----------
    spatial_size:
        Output grid (voxels) after reorientation to RAS.
    window:
        A CT window preset name from :data:`WINDOWS`, a ``(low, high)`` HU pair, or
        ``"zscore"`` (per-image z-score, for MR).
    """

    def __init__(self, *, spatial_size: tuple[int, int, int] = (32, 32, 32), window: Any = "soft_tissue") -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.window = window

    def _range(self) -> tuple[float, float] | None:
        if self.window == "zscore":
            return None
        if isinstance(self.window, str):
            level, width = WINDOWS[self.window]
            return level - width / 2, level + width / 2
        lo, hi = self.window
        return float(lo), float(hi)

    def fit(self, images: list[Image] | None = None) -> "ImagePreprocessor":
        if isinstance(self.window, str) and self.window not in WINDOWS and self.window != "zscore":
            raise ValueError(f"unknown window {self.window!r}; use one of {sorted(WINDOWS)} or 'zscore'")
        self.fitted_ = True
        return self

    def transform(self, image: Image) -> np.ndarray:
        if not getattr(self, "fitted_", False):
            raise NotFittedError("ImagePreprocessor is not fitted", hint="call fit() first")
        import torch
        from monai.data import MetaTensor
        from monai.transforms import Orientation, Resize

        data = np.asarray(image.data, dtype=np.float32)
        if data.ndim == 4:  # time/echo axis: keep the first volume
            data = data[..., 0]
        if data.ndim == 2:
            data = data[..., None]
        t = MetaTensor(torch.from_numpy(np.ascontiguousarray(data))[None], affine=torch.as_tensor(image.affine))
        t = Orientation(axcodes="RAS")(t)
        rng = self._range()
        if rng is None:
            t = (t - t.mean()) / (t.std() + 1e-6)
        else:
            lo, hi = rng
            t = ((t.clamp(lo, hi) - lo) / (hi - lo))
        t = Resize(spatial_size=self.spatial_size, mode="trilinear")(t)
        return np.asarray(t.as_tensor().numpy(), dtype=np.float32)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (1, *self.spatial_size)
