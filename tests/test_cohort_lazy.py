"""The lazy Cohort: a manifest validated once, records built on access, images read on demand."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from medmm import cohort as cohort_mod
from medmm.cohort import Cohort, load_cohort
from medmm.io import read_modality
from medmm.records import Image, ImageSource, Missing


@pytest.fixture(scope="module")
def nifti_cohort(tmp_path_factory):
    from medmm.synth import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("nifti_cohort"), n_patients=12, seed=3, image_size=16,
                           image_format="nifti", progress=False)


def test_the_manifest_is_validated_once_whatever_is_done_with_the_cohort(tiny_cohort):
    before = cohort_mod.VALIDATIONS["count"]
    c = Cohort.from_manifest(tiny_cohort, progress=False)
    train = c.split("train")
    _ = [r.patient_id for r in train], c[0], c[3:5], len(c.split("test")), c.records, list(c.iter(workers=2))
    assert cohort_mod.VALIDATIONS["count"] == before + 1


def test_records_hold_no_voxels_and_pickle_small(tiny_cohort):
    c = load_cohort(tiny_cohort, progress=False)
    rec = next(r for r in c if r.present["image"])
    assert isinstance(rec.image, Image) and not rec.image.in_memory
    small = len(pickle.dumps(rec))
    voxels = rec.image.data  # read on demand, then held (nibabel's caching="fill")
    assert rec.image.in_memory and voxels.nbytes > 10_000
    assert len(pickle.dumps(rec)) < small + 4_000 < voxels.nbytes  # the source travels, not the pixels
    back = pickle.loads(pickle.dumps(rec))
    assert not back.image.in_memory
    np.testing.assert_array_equal(back.image.data, voxels)
    np.testing.assert_array_equal(back.image.affine, rec.image.affine)


@pytest.mark.parametrize("fixture", ["tiny_cohort", "nifti_cohort"])
def test_proxies_read_the_eager_readers_voxels(fixture, request):
    manifest = request.getfixturevalue(fixture)
    c = load_cohort(manifest, progress=False)
    compared = 0
    for rec in c:
        if not rec.present["image"]:
            continue
        compared += 1
        path = rec.image.source.path
        eager = read_modality("image", path)
        lazy = rec.image
        assert lazy.shape == eager.shape
        np.testing.assert_array_equal(lazy.affine, eager.affine)
        got = lazy.get_data(caching="unchanged")
        assert not lazy.in_memory
        np.testing.assert_array_equal(got, eager.data)
        np.testing.assert_array_equal(np.asarray(lazy.dataobj[2:5, :, 7]), eager.data[2:5, :, 7])
    assert compared > 0


def test_nifti_headers_are_read_without_voxels(nifti_cohort):
    c = load_cohort(nifti_cohort, progress=False)
    rec = next(r for r in c if r.present["image"])
    assert rec.image._affine is not None and rec.image.meta["format"] == "nifti1"  # header known at build time
    assert not rec.image.in_memory


def test_workers_build_the_same_records_and_report(tiny_cohort):
    a = load_cohort(tiny_cohort, progress=False)
    b = load_cohort(tiny_cohort, progress=False)
    one = list(a.iter(workers=0))
    two = list(b.iter(workers=2))
    assert [r.patient_id for r in one] == [r.patient_id for r in two]
    for x, y in zip(one, two):
        assert x.pattern == y.pattern and x.labels == y.labels and x.split == y.split
        if x.present["ehr"]:
            assert x.ehr.values == y.ehr.values
    assert [str(p) for p in a.report] == [str(p) for p in b.report]


def _same_record(x, y) -> None:
    assert (x.patient_id, x.pattern, x.labels, x.split, x.index_time) == (y.patient_id, y.pattern, y.labels, y.split,
                                                                          y.index_time)
    if x.present["notes"]:
        assert [(n.time, n.note_type, n.text) for n in x.notes.notes] == [(n.time, n.note_type, n.text)
                                                                          for n in y.notes.notes]
    if x.present["vitals"]:
        assert x.vitals.frame.equals(y.vitals.frame)
    if x.present["ehr"]:
        assert x.ehr.values == y.ehr.values
    if x.present["image"]:
        assert x.image.source == y.image.source and not x.image.in_memory and not y.image.in_memory


@pytest.mark.parametrize("workers", [1, 2])
def test_build_records_in_workers_gives_the_serial_records_order_and_report(tiny_cohort, workers):
    serial = load_cohort(tiny_cohort, progress=False)
    pooled = load_cohort(tiny_cohort, progress=False)
    built = {r.patient_id: r for r in pooled.split("train").records}  # built and kept: only the rest go to the pool
    records = pooled.build_records(workers=workers)
    assert 0 < len(built) < 40 and all(built[r.patient_id] is r for r in records if r.patient_id in built)
    expected = serial.build_records(workers=0)
    assert len(records) == len(expected) == 40 and sum(r.present["vitals"] for r in records) > 20
    for x, y in zip(expected, records):
        _same_record(x, y)
    assert pooled.records[5] is records[5]  # kept: not built again
    assert [str(p) for p in serial.report] == [str(p) for p in pooled.report]
    train = load_cohort(tiny_cohort, progress=False).split("train")
    assert [r.patient_id for r in train.build_records(workers=workers)] == train.patient_ids


def test_views_index_and_add(tiny_cohort):
    c = load_cohort(tiny_cohort, progress=False)
    tr, va = c.split("train"), c.split("val")
    both = tr + va
    assert len(both) == len(tr) + len(va)
    assert both.patient_ids == tr.patient_ids + va.patient_ids
    assert [r.patient_id for r in c.subset([2, 0])] == [c.patient_ids[2], c.patient_ids[0]]
    assert {r.split for r in tr} == {"train"}


def test_an_unreadable_image_found_by_check_is_missing_with_a_problem(tiny_cohort, tmp_path):
    import shutil

    shutil.copytree(tiny_cohort.parent, tmp_path / "c")
    c = load_cohort(tmp_path / "c" / "manifest.csv", progress=False)
    recs = c.records
    victim = next(r for r in recs if r.present["image"])
    folder = victim.image.source.path
    for f in sorted(p for p in __import__("pathlib").Path(folder).iterdir())[:1]:
        f.write_bytes(b"not a dicom file at all")  # a slice corrupted after validation
    c.check()
    assert isinstance(victim.image, Missing) and victim.image.reason == "read_error"
    assert any(p.patient_id == victim.patient_id and p.modality == "image" for p in c.report.errors)


def test_image_source_rereads_with_its_options(tiny_cohort):
    c = load_cohort(tiny_cohort, progress=False)
    rec = next(r for r in c if r.present["image"])
    src = ImageSource.of(rec.image.source.path, "dicom", irregular="accept")
    assert dict(src.options) == {"irregular": "accept"}
    np.testing.assert_array_equal(src.read().data, rec.image.get_data(caching="unchanged"))


def test_a_training_data_pass_stays_within_a_memory_budget_below_the_cohorts_voxels(tmp_path):
    """A small-scale version of bench_scale: 30 patients of 64^3 voxels (30 MB as float32) go through
    cohort building, preprocessing fit, cache fill and an epoch of reads; traced peak memory stays
    under a budget that holding the volumes would break (numpy reports its buffers to tracemalloc)."""
    import tracemalloc

    from medmm.preprocess import MultimodalPreprocessor
    from medmm.preprocess.image import ImagePreprocessor
    from medmm.synth import generate_cohort
    from medmm.train.datasets import CachedImageDataset

    manifest = generate_cohort(tmp_path / "c", n_patients=30, seed=2, image_size=64, missing_rate=0.0,
                               image_format="nifti", progress=False)
    voxel_bytes = 30 * 64**3 * 4
    budget = voxel_bytes // 4
    warm = load_cohort(manifest, progress=False)[0]  # imports (monai, nibabel, ...) are not the cohort's memory
    MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit([warm]).transform(warm)
    tracemalloc.start()
    try:
        cohort = load_cohort(manifest, progress=False)
        records = cohort.records
        pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(records)
        ds = CachedImageDataset(records, pre, ("tumor",), cache_dir=tmp_path / "cache")
        assert ds.prefill()["computed"] == 30
        for i in range(len(ds)):
            assert ds[i]["values"]["image"].shape == (1, 16, 16, 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not any(r.image.in_memory for r in records)
    assert peak < budget, f"peak {peak / 2**20:.1f} MiB >= budget {budget / 2**20:.1f} MiB"


def test_real_files_from_other_tools_read_lazily_as_eagerly(tmp_path):
    """Files medmm did not write: nibabel's scaled 4D example (scl_slope, int16 on disk) and a
    real CT slice from pydicom, through a manifest, read lazily and in parts like the eager reader."""
    import shutil
    from pathlib import Path

    import nibabel
    import pandas as pd
    from pydicom.data import get_testdata_file

    nii = Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    shutil.copy(nii, tmp_path / "a.nii.gz")
    (tmp_path / "b").mkdir()
    shutil.copy(ct, tmp_path / "b" / "slice")
    pd.DataFrame({"patient_id": ["A", "B"], "split": ["train", "test"], "image_path": ["a.nii.gz", "b"],
                  "label_x": [0, 1]}).to_csv(tmp_path / "m.csv", index=False)
    c = load_cohort(tmp_path / "m.csv", progress=False, modalities=("image",))
    a, b = c[0].image, c[1].image
    want = read_modality("image", tmp_path / "a.nii.gz")
    assert a.shape == want.shape and a.shape[3] > 1 and not a.in_memory
    np.testing.assert_array_equal(np.asarray(a.dataobj[:, :, 1, 0]), want.data[:, :, 1, 0])
    np.testing.assert_array_equal(a.get_data(caching="unchanged"), want.data)
    got = pickle.loads(pickle.dumps(b))
    np.testing.assert_array_equal(got.data, read_modality("image", tmp_path / "b").data)
    assert got.meta["Modality"] == "CT"


def test_sources_build_no_record_and_report_a_missing_file(nifti_cohort, tmp_path, monkeypatch):
    import pandas as pd

    df = pd.read_csv(nifti_cohort)
    df["image_path"] = [str((nifti_cohort.parent / p).resolve()) if isinstance(p, str) else p for p in df["image_path"]]
    with_image = df.index[df["image_path"].notna()]
    df.loc[with_image[0], "image_path"] = str(tmp_path / "gone.nii.gz")  # deleted after the manifest was written
    df.to_csv(tmp_path / "m.csv", index=False)
    cohort = Cohort.from_manifest(tmp_path / "m.csv", modalities=("image",))
    monkeypatch.setattr(cohort_mod, "row_to_record", lambda *a, **k: pytest.fail("a record was built"))
    got = cohort.sources("image")
    assert len(got) == len(with_image) - 1 and all(s.format == "nifti" for _, s in got)
    (err,) = cohort.report.errors
    assert err.patient_id == df.loc[with_image[0], "patient_id"] and "does not exist" in err.message
    monkeypatch.undo()
    lazy = {r.patient_id: r.image.source for r in load_cohort(nifti_cohort, progress=False).records
            if r.present["image"]}
    assert {pid: s for pid, s in got} == {pid: lazy[pid] for pid, _ in got}  # the cache keys training uses


def test_dicom_shape_comes_from_headers_and_a_read_for_it_keeps_the_header(tiny_cohort, monkeypatch):
    recs = [r for r in load_cohort(tiny_cohort, progress=False).records if r.present["image"]][:2]
    eager = read_modality("image", recs[0].image.source.path)
    reads: list[str] = []
    real = ImageSource.read
    monkeypatch.setattr(ImageSource, "read", lambda self: reads.append(self.path) or real(self))
    img = recs[0].image
    assert img.shape == eager.data.shape == (16, 16, 16) and reads == []  # slice headers only
    assert np.allclose(img.affine, eager.affine) and len(reads) == 1
    assert np.array_equal(img.loaded().data, eager.data) and len(reads) == 2 and not img.in_memory
    # resampling may change the grid: the shape is read, and that read's header is kept
    src = ImageSource.of(recs[1].image.source.path, "dicom", irregular="resample")
    other = Image(source=src)
    assert other.shape == (16, 16, 16) and len(reads) == 3
    assert np.allclose(other.affine, read_modality("image", src.path).affine) and other.meta and len(reads) == 3
    assert len(pickle.dumps(other)) < 20_000  # the kept header pickles, the voxels do not
