"""Images read in DataLoader workers through the on-disk cache give the in-memory dataset's batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medmm.data import MultimodalDataset
from medmm.preprocess import MultimodalPreprocessor
from medmm.preprocess.cache import VolumeCache
from medmm.preprocess.image import ImagePreprocessor
from medmm.train.datasets import CachedImageDataset


@pytest.fixture(scope="module")
def few(tiny_loaded):
    recs = [r for r in tiny_loaded.records if r.split == "train"][:8]
    return recs


def test_workers_read_images_through_the_cache(few, tiny_cohort, tmp_path):
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(few)
    tasks = ("tumor", "disease")
    mem = MultimodalDataset(few, pre, tasks)
    lazy = CachedImageDataset(few, pre, tasks, cache_dir=tmp_path / "cache")
    assert all("image" not in it["values"] for it in lazy.items)  # nothing big held in memory
    loader = torch.utils.data.DataLoader(lazy, batch_size=4, num_workers=2, collate_fn=lazy.collate)
    got = list(loader)
    want = [mem.collate(mem.items[i:i + 4]) for i in range(0, len(mem), 4)]
    assert len(got) == len(want) == 2  # 8 records in batches of 4
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
    ds = CachedImageDataset(few, pre, ("tumor",), cache_dir=tmp_path, training=True)
    ds.set_epoch(0)
    a, a2 = ds[i]["values"]["image"], ds[i]["values"]["image"]
    ds.set_epoch(1)
    b = ds[i]["values"]["image"]
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)
    plain = CachedImageDataset(few, pre, ("tumor",), cache_dir=tmp_path)
    assert not np.array_equal(plain[i]["values"]["image"], a)  # evaluation datasets are never augmented


def test_prefill_fills_the_cache_in_workers_and_resumes(few, tmp_path):
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(few)
    ds = CachedImageDataset(few, pre, ("tumor",), cache_dir=tmp_path)
    first = ds.prefill(workers=2)
    n_images = sum(r.present["image"] for r in few)
    assert first == {"images": n_images, "failed": 0, "computed": n_images}
    assert ds.prefill() == {"images": n_images, "failed": 0, "computed": 0}  # a re-run computes nothing


def test_an_image_that_vanishes_is_missing_and_reported_not_a_crash(tiny_cohort, tmp_path):
    import shutil

    from medmm.cohort import ProblemReport, load_cohort

    src = tiny_cohort.parent
    copy = tmp_path / "cohort"
    shutil.copytree(src, copy)
    cohort = load_cohort(copy / "manifest.csv", progress=False)
    recs = [r for r in cohort.records if r.present["image"]][:4]
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(recs)
    ds = CachedImageDataset(recs, pre, ("tumor",), cache_dir=tmp_path / "cache")
    gone = recs[1].image.source.path
    shutil.rmtree(gone) if Path(gone).is_dir() else Path(gone).unlink()  # deleted after validation
    report = ProblemReport()
    assert ds.prefill(report=report)["failed"] == 1
    assert len(report.errors) == 1 and report.errors[0].patient_id == recs[1].patient_id
    assert ds[1]["values"]["image"] is None and ds[0]["values"]["image"] is not None
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch.present[:, ds.modalities.index("image")].tolist() == [True, False, True, True]


def test_prefill_of_several_splits_reads_only_what_is_not_cached(tiny_loaded, tmp_path, monkeypatch):
    """One pass over the run's splits: entries already cached are found without reading an image,
    the rest computed in workers, each split's dataset sees its own results."""
    from medmm.records import ImageSource
    from medmm.train.datasets import prefill_datasets

    train = [r for r in tiny_loaded.records if r.split == "train"][:8]
    val = [r for r in tiny_loaded.records if r.split == "val"][:6]
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(train)
    n_train = sum(r.present["image"] for r in train)
    n_val = sum(r.present["image"] for r in val)
    assert CachedImageDataset(train, pre, ("tumor",), cache_dir=tmp_path).prefill()["computed"] == n_train
    made = [CachedImageDataset(rs, pre, ("tumor",), cache_dir=tmp_path) for rs in (train, val)]
    assert prefill_datasets(made, workers=2) == {"images": n_train + n_val, "failed": 0, "computed": n_val}
    assert len(VolumeCache(tmp_path)) == n_train + n_val

    def no_read(self):
        raise AssertionError(f"{self.path} read although cached")

    monkeypatch.setattr(ImageSource, "read", no_read)
    again = [CachedImageDataset(rs, pre, ("tumor",), cache_dir=tmp_path) for rs in (train, val)]
    assert prefill_datasets(again, workers=2) == {"images": n_train + n_val, "failed": 0, "computed": 0}
    i = next(k for k, r in enumerate(val) if r.present["image"])
    np.testing.assert_array_equal(again[1][i]["values"]["image"], made[1][i]["values"]["image"])


def test_a_present_only_view_keeps_the_patients_whose_image_is_read_lazily(few, tmp_path):
    """Unimodal pretraining selects the patients who have the modality: with images read lazily
    through the cache, those whose record has an image source (regression: it once found none)."""
    from medmm.train.transfer import DatasetView

    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(few)
    ds = CachedImageDataset(few, pre, ("tumor",), cache_dir=tmp_path)
    view = DatasetView.of(ds, modalities=("image",), present_only=True)
    assert len(view) == sum(r.present["image"] for r in few) > 0
    assert all(view[i]["values"]["image"] is not None for i in range(len(view)))


def _prefill_rank(rank, world, init, records, pre, cache, out):
    import json

    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    from medmm.train import datasets as D

    looked = []
    real = D._Filler.lookup
    D._Filler.lookup = lambda self, s: looked.append(s.path) or real(self, s)
    ds = D.CachedImageDataset(records, pre, ("tumor",), cache_dir=cache)
    counts = D.prefill_datasets([ds])
    dropped = [it["id"] for it in ds.items if it["image_sources"].get("image") is None]
    keys = [(it.get("image_keys") or {}).get("image") for it in ds.items]
    Path(out, f"{rank}.json").write_text(json.dumps({"counts": counts, "looked": looked, "dropped": dropped,
                                                     "keys": keys}))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_distributed_prefill_splits_the_scan_and_shares_every_status(tiny_loaded, tmp_path):
    """Two gloo ranks: each looks up only its share of the cache (no rescan after the barrier),
    and both learn which image failed on the other rank."""
    import dataclasses
    import json
    import shutil

    from medmm.records import Image, ImageSource

    recs = [r for r in tiny_loaded.records if r.split == "train" and r.present["image"]][:7]
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(recs)
    gone = tmp_path / "gone"
    shutil.copytree(recs[1].image.source.path, gone)
    recs[1] = dataclasses.replace(recs[1], modalities={**recs[1].modalities,
                                                        "image": Image(source=ImageSource.of(gone, "dicom"))})
    shutil.rmtree(gone)  # deleted between validation and training
    torch.multiprocessing.spawn(_prefill_rank, args=(2, str(tmp_path / "init"), recs, pre, str(tmp_path / "c"),
                                                     str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    assert [len(g["looked"]) for g in got] == [4, 3]  # every 2nd image from the rank, not all 7 again
    assert sorted(got[0]["looked"] + got[1]["looked"]) == sorted(r.image.source.path for r in recs)
    # each rank computed its own share (rank 1's second image is the one that is gone)
    assert [g["counts"] for g in got] == [{"images": 7, "failed": 1, "computed": 4},
                                          {"images": 7, "failed": 1, "computed": 2}]
    assert got[0]["dropped"] == got[1]["dropped"] == [recs[1].patient_id]  # rank 1's failure, known on rank 0
    # every rank knows every readable entry's key (its epochs read the other rank's patients too)
    assert got[0]["keys"] == got[1]["keys"]
    assert [k is None for k in got[0]["keys"]] == [i == 1 for i in range(7)]


def test_epochs_open_entries_by_the_prefill_s_keys(few, tmp_path, monkeypatch):
    """After the prefill, an epoch's read is one open of a known entry: the source's files are not
    stat'ed again (a DICOM series folder is ~17 stats per read, 24 s of a demo seed); an entry
    evicted since is rebuilt through the normal path."""
    import medmm.preprocess.cache as C

    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(few)
    ds = CachedImageDataset(few, pre, ("tumor",), cache_dir=tmp_path, training=False)
    ds.prefill()
    have = [i for i, it in enumerate(ds.items) if it["image_sources"].get("image") is not None]
    assert have and all("image" in ds.items[i]["image_keys"] for i in have)
    want = {i: np.array(ds[i]["values"]["image"]) for i in have}
    calls = []
    real = C.source_identity
    monkeypatch.setattr(C, "source_identity", lambda s: calls.append(s) or real(s))
    for i in have:
        np.testing.assert_array_equal(ds[i]["values"]["image"], want[i])
    assert calls == []
    gone = ds.cache.path(ds.items[have[0]]["image_keys"]["image"])
    gone.unlink()
    np.testing.assert_array_equal(ds[have[0]]["values"]["image"], want[have[0]])
    assert len(calls) == 1 and gone.exists()


def _counting_gets(ds, monkeypatch):
    calls = []
    real = ds.cache.get
    monkeypatch.setattr(ds.cache, "get", lambda key, **kw: calls.append(key) or real(key, **kw))
    return calls


def test_images_are_kept_in_memory_only_when_the_whole_run_fits_the_budget(few, tmp_path, monkeypatch):
    """Small volumes are read from the cache once and then kept (the demo's 16^3 images were
    re-opened ~60 times each, 0.3 ms a read); a run whose images do not all fit the budget
    streams every read as before, so memory stays bounded. Kept or streamed, the values and the
    training augmentation are the same."""
    from medmm.train.datasets import keep_in_memory, prefill_datasets

    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16), augment={
        "flip_prob": 0.5, "noise_prob": 1.0, "rotate_prob": 0.0, "affine_prob": 0.0, "bias_prob": 0.0,
        "gamma_prob": 0.0})).fit(few)
    tr = CachedImageDataset(few[:5], pre, ("tumor",), cache_dir=tmp_path, training=True)
    va = CachedImageDataset(few[5:], pre, ("tumor",), cache_dir=tmp_path)
    prefill_datasets([tr, va])
    have = [i for i, it in enumerate(tr.items) if it["image_sources"].get("image") is not None]
    n_images = len(have) + sum(it["image_sources"].get("image") is not None for it in va.items)
    assert have and tr.image_bytes() + va.image_bytes() == n_images * 16**3 * 4
    streamed = {}
    for epoch in (0, 1):
        tr.set_epoch(epoch)
        streamed[epoch] = [np.array(tr[i]["values"]["image"]) for i in have]
    assert not np.array_equal(streamed[0][0], streamed[1][0])  # augmented afresh each epoch

    assert not keep_in_memory([tr, va], n_images * 16**3 * 4 - 1)  # one byte short: all stream
    assert tr.memo is None and va.memo is None
    calls = _counting_gets(tr, monkeypatch)
    tr.set_epoch(0)
    for i in have:
        tr[i]
    assert len(calls) == len(have)

    assert keep_in_memory([tr, va], n_images * 16**3 * 4)
    calls.clear()
    for epoch in (0, 1, 0):
        tr.set_epoch(epoch)
        for k, i in enumerate(have):
            np.testing.assert_array_equal(tr[i]["values"]["image"], streamed[epoch][k])
    assert len(calls) == len(have)  # one read each, then kept
    assert len(tr.memo) == len(have)
    assert not keep_in_memory([tr, va], 0) and tr.memo is None  # 0: always stream


def test_a_view_reads_only_its_own_modalities_images(few, tmp_path, monkeypatch):
    """Pretraining the notes encoder goes through a view of the full dataset; it must not open
    every patient's image at every epoch (a third of the demo's pretraining time)."""
    from medmm.train.transfer import DatasetView

    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(few)
    ds = CachedImageDataset(few, pre, ("tumor",), cache_dir=tmp_path)
    ds.prefill()
    calls = _counting_gets(ds, monkeypatch)
    notes = DatasetView.of(ds, modalities=("notes",), present_only=True)
    assert len(notes) > 0
    batch = notes.collate([notes[i] for i in range(len(notes))])
    assert calls == [] and set(batch.values) == {"notes"}
    image = DatasetView.of(ds, modalities=("image",), present_only=True)
    assert all(image[i]["values"]["image"] is not None for i in range(len(image)))
    assert len(calls) == len(image) > 0
