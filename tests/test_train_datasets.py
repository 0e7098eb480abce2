"""Images read in DataLoader workers through the on-disk cache give the in-memory dataset's batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.data import MultimodalDataset
from medmm.preprocess import MultimodalPreprocessor
from medmm.preprocess.cache import VolumeCache
from medmm.preprocess.image import ImagePreprocessor
from medmm.train.datasets import CachedImageDataset, image_sources


@pytest.fixture(scope="module")
def few(tiny_loaded):
    recs = [r for r in tiny_loaded.records if r.split == "train"][:8]
    return recs


def test_workers_read_images_through_the_cache(few, tiny_cohort, tmp_path):
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(few)
    tasks = ("tumor", "disease")
    mem = MultimodalDataset(few, pre, tasks)
    lazy = CachedImageDataset(few, pre, tasks, sources=image_sources(tiny_cohort), cache_dir=tmp_path / "cache")
    assert all("image" not in it["values"] for it in lazy.items)  # nothing big held in memory
    loader = torch.utils.data.DataLoader(lazy, batch_size=4, num_workers=2, collate_fn=lazy.collate)
    got = list(loader)
    want = [mem.collate(mem.items[i:i + 4]) for i in range(0, len(mem), 4)]
    for a, b in zip(got, want):
        assert torch.equal(a.present, b.present) and torch.equal(a.labels, b.labels)
        for m in b.values:
            torch.testing.assert_close(a.values[m], b.values[m], atol=1e-5, rtol=1e-5)
    n_images = sum(r.present["image"] for r in few)
    assert len(VolumeCache(tmp_path / "cache")) == n_images > 0


def test_training_augmentation_is_fixed_by_seed_epoch_and_index(few, tiny_cohort, tmp_path):
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16), augment={
        "flip_prob": 0.5, "noise_prob": 1.0, "rotate_prob": 0.0, "affine_prob": 0.0, "bias_prob": 0.0,
        "gamma_prob": 0.0})).fit(few)
    i = next(k for k, r in enumerate(few) if r.present["image"])
    ds = CachedImageDataset(few, pre, ("tumor",), sources=image_sources(tiny_cohort), cache_dir=tmp_path, training=True)
    ds.set_epoch(0)
    a, a2 = ds[i]["values"]["image"], ds[i]["values"]["image"]
    ds.set_epoch(1)
    b = ds[i]["values"]["image"]
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)
    plain = CachedImageDataset(few, pre, ("tumor",), sources=image_sources(tiny_cohort), cache_dir=tmp_path)
    assert not np.array_equal(plain[i]["values"]["image"], a)  # evaluation datasets are never augmented
