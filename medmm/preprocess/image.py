"""Image preprocessing with MONAI transforms.

Deterministic part (every image, cacheable): reorientation (RAS by default), optional
resampling to a target spacing, intensity (a CT window preset, an HU range, or MR z-score),
then the fixed output grid: resize, centre crop/pad, or crop around a mask and pad. Nothing
here is fitted on data, but the class follows the fit/transform contract so that a cohort's
preprocessors are handled alike and saved with the model.

Random part (training only): flips, small rotations, affine, elastic deformation, Gaussian
noise, bias field and gamma, each with its own probability, from a seeded MONAI Compose.
``transform(image)`` applies only the deterministic part; ``transform(image,
training=True)`` adds augmentation. :meth:`deterministic_config` is what a cache key may
depend on (augmentation settings are not part of it).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from ..errors import ConfigError, NotFittedError
from ..records import Image

__all__ = ["ImagePreprocessor", "WINDOWS", "DEFAULT_AUGMENT", "SIZE_MODES"]

#: CT window presets as (level, width) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

#: How the output grid is reached: resize (interpolate), crop_pad (centre crop or pad at
#: native resolution) or mask (crop around the mask's bounding box, then crop/pad).
SIZE_MODES = ("resize", "crop_pad", "mask")

#: Augmentation probabilities and ranges used when ``augment=True``.
DEFAULT_AUGMENT: dict[str, Any] = {
    "flip_prob": 0.5,  # per spatial axis
    "rotate_prob": 0.3,
    "rotate_deg": 10.0,
    "affine_prob": 0.3,
    "scale": 0.1,
    "translate_vox": 2.0,
    "elastic_prob": 0.0,  # costly on large grids; opt in
    "elastic_sigma": (5.0, 7.0),
    "elastic_magnitude": (20.0, 60.0),
    "noise_prob": 0.2,
    "noise_std": 0.02,
    "bias_prob": 0.2,
    "bias_coeff": (0.0, 0.1),
    "gamma_prob": 0.2,
    "gamma": (0.8, 1.25),
}


class ImagePreprocessor:
    """Turn an :class:`~medmm.records.Image` into a ``float32 [1, X, Y, Z]`` array.

    Parameters
    ----------
    spatial_size:
        Output grid (voxels).
    window:
        A CT window preset name from :data:`WINDOWS`, a ``(low, high)`` HU pair (scaled to
        0..1 and clipped), ``"zscore"`` (per-image z-score, for MR) or
        ``"zscore_nonzero"`` (z-score over non-zero voxels, e.g. skull-stripped MR).
    orientation:
        Axis codes to reorient to (``None`` keeps the stored orientation).
    spacing:
        Target voxel size in mm, resampled with MONAI ``Spacing`` before sizing (``None``
        keeps the native spacing).
    size_mode:
        One of :data:`SIZE_MODES`.
    mask_margin:
        Voxels kept around the mask's bounding box when ``size_mode="mask"``.
    augment:
        ``False``, ``True`` (use :data:`DEFAULT_AUGMENT`) or a dict overriding some of it.
        Applied only by ``transform(..., training=True)``.
    seed:
        Seed of the augmentation random state.
    """

    def __init__(
        self,
        *,
        spatial_size: tuple[int, int, int] = (32, 32, 32),
        window: Any = "soft_tissue",
        orientation: str | None = "RAS",
        spacing: tuple[float, float, float] | float | None = None,
        size_mode: str = "resize",
        mask_margin: int = 4,
        augment: bool | dict[str, Any] = False,
        seed: int = 0,
    ) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.window = window
        self.orientation = orientation
        self.spacing = spacing
        self.size_mode = size_mode
        self.mask_margin = mask_margin
        self.augment = augment
        self.seed = seed

    # ----------------------------------------------------------------------- config

    def _range(self) -> tuple[float, float] | None:
        if isinstance(self.window, str) and self.window.startswith("zscore"):
            return None
        if isinstance(self.window, str):
            level, width = WINDOWS[self.window]
            return level - width / 2, level + width / 2
        lo, hi = self.window
        return float(lo), float(hi)

    def _augment_params(self) -> dict[str, Any] | None:
        if not self.augment:
            return None
        params = dict(DEFAULT_AUGMENT)
        if isinstance(self.augment, dict):
            unknown = set(self.augment) - set(DEFAULT_AUGMENT)
            if unknown:
                raise ConfigError(
                    f"unknown augmentation settings {sorted(unknown)}",
                    column="augment",
                    hint=f"use keys among {sorted(DEFAULT_AUGMENT)}",
                )
            params.update(self.augment)
        return params

    def deterministic_config(self) -> dict[str, Any]:
        """Settings that determine the deterministic output (a cache key's config part)."""
        return {
            "spatial_size": list(self.spatial_size),
            "window": list(self.window) if isinstance(self.window, (tuple, list)) else self.window,
            "orientation": self.orientation,
            "spacing": list(np.atleast_1d(self.spacing).astype(float)) if self.spacing is not None else None,
            "size_mode": self.size_mode,
            "mask_margin": self.mask_margin if self.size_mode == "mask" else None,
        }

    def fit(self, images: list[Image] | None = None) -> "ImagePreprocessor":
        if isinstance(self.window, str) and self.window not in WINDOWS and self.window not in ("zscore", "zscore_nonzero"):
            raise ValueError(f"unknown window {self.window!r}; use one of {sorted(WINDOWS)} or 'zscore'")
        if self.size_mode not in SIZE_MODES:
            raise ConfigError(
                f"unknown size_mode {self.size_mode!r}", column="size_mode", hint=f"use one of {SIZE_MODES}"
            )
        if len(self.spatial_size) != 3 or min(self.spatial_size) < 1:
            raise ConfigError("spatial_size must be three positive ints", column="spatial_size")
        self._augment_params()
        self.fitted_ = True
        return self

    # -------------------------------------------------------------------- transform

    def transform(self, image: Image, *, mask: Image | np.ndarray | None = None, training: bool = False) -> np.ndarray:
        """The preprocessed ``float32 [1, X, Y, Z]`` array; augmented only if ``training``."""
        out = self.transform_deterministic(image, mask=mask)
        if training and self.augment:
            out = self.augment_array(out)
        return out

    def transform_deterministic(self, image: Image, *, mask: Image | np.ndarray | None = None) -> np.ndarray:
        """Reorient, resample, window/normalise and size one image (no randomness)."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError("ImagePreprocessor is not fitted", hint="call fit() first")
        import torch
        from monai.data import MetaTensor
        from monai.transforms import (
            CropForegroundd,
            NormalizeIntensity,
            Orientationd,
            Resize,
            ResizeWithPadOrCrop,
            ScaleIntensityRange,
            Spacingd,
        )

        if isinstance(image, Image):
            image = image.loaded()  # a lazy image is read here, its voxels not kept by the record
        data = np.asarray(image.data, dtype=np.float32)
        if data.ndim == 4:  # time/echo axis: keep the first volume
            data = data[..., 0]
        if data.ndim == 2:
            data = data[..., None]
        affine = torch.as_tensor(image.affine)
        item: dict[Hashable, Any] = {"image": MetaTensor(torch.from_numpy(np.ascontiguousarray(data))[None], affine=affine)}
        keys = ["image"]
        if self.size_mode == "mask":
            if mask is None:
                raise ConfigError(
                    "size_mode='mask' needs a mask", column="mask", hint="pass transform(image, mask=...)"
                )
            m = np.asarray(mask.data if isinstance(mask, Image) else mask, dtype=np.float32)
            if m.ndim == 2:
                m = m[..., None]
            if m.shape[:3] != data.shape[:3]:
                raise ConfigError(
                    f"mask shape {m.shape} differs from image shape {data.shape}",
                    column="mask",
                    hint="give a mask on the image's voxel grid",
                )
            item["mask"] = MetaTensor(torch.from_numpy(np.ascontiguousarray(m[..., :1] if m.ndim == 4 else m))[None], affine=affine)
            keys.append("mask")
        if self.orientation:
            item = Orientationd(keys=keys, axcodes=self.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))(item)
        if self.spacing is not None:
            modes = ["bilinear", "nearest"][: len(keys)]
            item = Spacingd(keys=keys, pixdim=self.spacing, mode=modes, padding_mode="border")(item)
        t: Any = item["image"]  # a MetaTensor through every step (monai types their output as Tensor | ndarray)
        rng = self._range()
        if rng is None:
            t = NormalizeIntensity(nonzero=self.window == "zscore_nonzero")(t)
        else:
            t = ScaleIntensityRange(a_min=rng[0], a_max=rng[1], b_min=0.0, b_max=1.0, clip=True)(t)
        if self.size_mode == "resize":
            t = Resize(spatial_size=self.spatial_size, mode="trilinear")(t)
        elif self.size_mode == "crop_pad":
            t = ResizeWithPadOrCrop(spatial_size=self.spatial_size)(t)
        else:
            item["image"] = t
            item = CropForegroundd(
                keys=["image"], source_key="mask", select_fn=lambda x: x > 0, margin=self.mask_margin,
                allow_smaller=True,
            )(item)
            t = ResizeWithPadOrCrop(spatial_size=self.spatial_size)(item["image"])
        arr = t.as_tensor().numpy() if hasattr(t, "as_tensor") else np.asarray(t)
        return np.ascontiguousarray(arr, dtype=np.float32)

    # ------------------------------------------------------------------ augmentation

    def _augmenter(self) -> Any:
        aug = getattr(self, "_aug", None)
        if aug is None:
            from monai.transforms import (
                Compose,
                Rand3DElastic,
                RandAdjustContrast,
                RandAffine,
                RandBiasField,
                RandFlip,
                RandGaussianNoise,
                RandomizableTransform,
                RandRotate,
            )

            p = self._augment_params() or {}
            rad = np.radians(p["rotate_deg"])
            steps: list[RandomizableTransform] = [RandFlip(prob=p["flip_prob"], spatial_axis=a) for a in range(3)]
            steps += [
                RandRotate(range_x=rad, range_y=rad, range_z=rad, prob=p["rotate_prob"], padding_mode="border"),
                RandAffine(
                    prob=p["affine_prob"],
                    scale_range=(p["scale"],) * 3,
                    translate_range=(p["translate_vox"],) * 3,
                    padding_mode="border",
                ),
            ]
            if p["elastic_prob"] > 0:
                steps.append(
                    Rand3DElastic(
                        sigma_range=tuple(p["elastic_sigma"]),
                        magnitude_range=tuple(p["elastic_magnitude"]),
                        prob=p["elastic_prob"],
                        padding_mode="border",
                    )
                )
            steps += [
                RandGaussianNoise(prob=p["noise_prob"], std=p["noise_std"]),
                RandBiasField(prob=p["bias_prob"], coeff_range=tuple(p["bias_coeff"])),
                RandAdjustContrast(prob=p["gamma_prob"], gamma=tuple(p["gamma"])),
            ]
            aug = Compose(steps)
            aug.set_random_state(seed=self.seed)
            self._aug = aug
        return aug

    def augment_array(self, array: np.ndarray, *, seed: int | None = None) -> np.ndarray:
        """Randomly augment a preprocessed ``[1, X, Y, Z]`` array (a cached one, say).

        The random state advances with each call from ``seed`` given at construction;
        pass ``seed`` to draw a reproducible augmentation for one sample (e.g. from the
        epoch and sample index, so DataLoader workers do not repeat each other).
        """
        import torch

        aug = self._augmenter()
        if seed is not None:
            aug.set_random_state(seed=int(seed) % (2**32))
        out = aug(torch.as_tensor(np.array(array, dtype=np.float32, copy=True)))
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32))

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Settings as JSON (nothing here is fitted on data besides the checked flag)."""
        window = list(self.window) if isinstance(self.window, (tuple, list)) else self.window
        spacing = np.atleast_1d(self.spacing).astype(float).tolist() if self.spacing is not None else None
        params = {"spatial_size": list(self.spatial_size), "window": window, "orientation": self.orientation,
                  "spacing": spacing, "size_mode": self.size_mode, "mask_margin": int(self.mask_margin),
                  "augment": self.augment, "seed": int(self.seed)}
        return {"params": params, "fitted": bool(getattr(self, "fitted_", False))}, {}

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> "ImagePreprocessor":
        p = dict(state["params"])
        if isinstance(p.get("window"), list):
            p["window"] = tuple(p["window"])
        if isinstance(p.get("spacing"), list):
            p["spacing"] = tuple(p["spacing"]) if len(p["spacing"]) > 1 else p["spacing"][0]
        obj = cls(**p)
        return obj.fit() if state.get("fitted") else obj

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_aug", None)  # rebuilt lazily (keeps pickles small and MONAI-version free)
        return state

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (1, *self.spatial_size)
