"""ImagePreprocessor: reorientation, spacing, windows, z-score, sizing, training-only augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from medmm.errors import ConfigError, NotFittedError
from medmm.preprocess.image import WINDOWS, ImagePreprocessor
from medmm.records import Image


def _ct(shape=(20, 24, 16), spacing=(1.0, 1.0, 2.0), seed=0) -> Image:
    rng = np.random.default_rng(seed)
    data = np.full(shape, -1000.0, dtype=np.float32)
    data[4:16, 5:19, 3:13] = 40.0 + rng.normal(0, 5, size=(12, 14, 10))
    data[8:12, 9:13, 6:9] = 700.0
    return Image(data, np.diag([*spacing, 1.0]))


def test_default_is_ras_soft_tissue_resize() -> None:
    pre = ImagePreprocessor().fit()
    out = pre.transform(_ct())
    assert out.shape == pre.output_shape == (1, 32, 32, 32)
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_window_presets(name: str) -> None:
    level, width = WINDOWS[name]
    img = Image(np.array([level - width, level, level + width], dtype=np.float32).reshape(3, 1, 1), np.eye(4))
    pre = ImagePreprocessor(spatial_size=(3, 1, 1), window=name, size_mode="crop_pad").fit()
    np.testing.assert_allclose(pre.transform(img).ravel(), [0.0, 0.5, 1.0], atol=1e-6)


def test_reorientation_makes_lps_and_ras_agree() -> None:
    ras = _ct()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine = ras.affine @ flip
    lps_affine[:3, 3] = ras.affine[:3, :3] @ (np.array(ras.shape) - 1) * [1, 1, 0]
    lps = Image(ras.data[::-1, ::-1, :].copy(), lps_affine)
    assert lps.orientation == "LPS" and ras.orientation == "RAS"
    pre = ImagePreprocessor(size_mode="crop_pad", spatial_size=(20, 24, 16)).fit()
    np.testing.assert_allclose(pre.transform(lps), pre.transform(ras), atol=1e-6)


def test_resample_to_spacing() -> None:
    img = _ct(spacing=(1.0, 1.0, 2.0))
    pre = ImagePreprocessor(spacing=(1.0, 1.0, 1.0), size_mode="crop_pad", spatial_size=(20, 24, 32), window="bone").fit()
    out = pre.transform(img)[0]
    # the 3-slice bright block (2 mm slices) spans ~6 slices at 1 mm
    bright = np.where(out.max(axis=(0, 1)) > 0.5)[0]
    assert 5 <= len(bright) <= 7


def test_mr_zscore() -> None:
    rng = np.random.default_rng(1)
    img = Image((rng.random((16, 16, 16)) * 300 + 50).astype(np.float32), np.eye(4))
    out = ImagePreprocessor(window="zscore", size_mode="crop_pad", spatial_size=(16, 16, 16)).fit().transform(img)
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-2
    masked = img.data.copy()
    masked[:4] = 0
    out = ImagePreprocessor(window="zscore_nonzero", size_mode="crop_pad", spatial_size=(16, 16, 16)).fit().transform(
        Image(masked, np.eye(4))
    )
    assert np.all(out[0, :4] == 0) and abs(out[0, 4:].mean()) < 1e-3


def test_crop_pad_and_mask_crop() -> None:
    img = _ct()
    out = ImagePreprocessor(size_mode="crop_pad", spatial_size=(30, 10, 16)).fit().transform(img)
    assert out.shape == (1, 30, 10, 16)
    mask = np.zeros(img.shape, dtype=np.uint8)
    mask[8:12, 9:13, 6:9] = 1  # the bright block
    pre = ImagePreprocessor(size_mode="mask", spatial_size=(12, 12, 12), mask_margin=2, window="bone").fit()
    out = pre.transform(img, mask=mask)[0]
    assert out.shape == (12, 12, 12)
    assert out[4:8, 4:8, 4:7].min() > 0.5  # block centred in the crop
    with pytest.raises(ConfigError, match="mask"):
        pre.transform(img)


def test_augmentation_only_in_training_and_seeded() -> None:
    img = _ct()
    pre = ImagePreprocessor(augment={"noise_prob": 1.0, "flip_prob": 0.5}, seed=3).fit()
    base = pre.transform(img)
    np.testing.assert_array_equal(pre.transform(img), base)  # inference: deterministic
    a = ImagePreprocessor(augment=True, seed=3).fit()
    b = ImagePreprocessor(augment=True, seed=3).fit()
    c = ImagePreprocessor(augment=True, seed=4).fit()
    sa = [a.transform(img, training=True) for _ in range(3)]
    sb = [b.transform(img, training=True) for _ in range(3)]
    sc = [c.transform(img, training=True) for _ in range(3)]
    for x, y in zip(sa, sb):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(sa, sc))
    assert any(not np.array_equal(x, base) for x in sa)
    np.testing.assert_array_equal(a.augment_array(base, seed=11), b.augment_array(base, seed=11))
    full = ImagePreprocessor(augment={"elastic_prob": 1.0, "bias_prob": 1.0, "gamma_prob": 1.0}, spatial_size=(16, 16, 16)).fit()
    out = full.transform(img, training=True)
    assert out.shape == (1, 16, 16, 16) and np.all(np.isfinite(out))


def test_config_errors_and_pickle() -> None:
    with pytest.raises(NotFittedError):
        ImagePreprocessor().transform(_ct())
    with pytest.raises(ValueError):
        ImagePreprocessor(window="liver").fit()
    with pytest.raises(ConfigError):
        ImagePreprocessor(augment={"spin": 1}).fit()
    with pytest.raises(ConfigError):
        ImagePreprocessor(size_mode="zoom").fit()
    pre = ImagePreprocessor(augment=True).fit()
    pre.transform(_ct(), training=True)
    again = pickle.loads(pickle.dumps(pre))
    np.testing.assert_array_equal(again.transform(_ct()), pre.transform(_ct()))
    assert ImagePreprocessor(augment=True, seed=1).deterministic_config() == ImagePreprocessor().deterministic_config()


def test_2d_and_4d_inputs() -> None:
    pre = ImagePreprocessor(spatial_size=(8, 8, 1)).fit()
    assert pre.transform(Image(np.zeros((10, 12), np.float32), np.eye(4))).shape == (1, 8, 8, 1)
    assert pre.transform(Image(np.zeros((10, 12, 3, 2), np.float32), np.eye(4))).shape == (1, 8, 8, 1)
