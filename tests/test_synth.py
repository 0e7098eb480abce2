"""The synthetic cohort: determinism, real file formats, known geometry and a sound oracle."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from medmm.io import read_modality
from medmm.io.dicom import read_dicom_series
from medmm.synth import TASKS, all_subsets, generate_cohort


def _digest(folder):
    h = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return h


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path):
    a = generate_cohort(tmp_path / "a", n_patients=6, seed=11, image_size=8, progress=False)
    b = generate_cohort(tmp_path / "b", n_patients=6, seed=11, image_size=8, progress=False)
    c = generate_cohort(tmp_path / "c", n_patients=6, seed=12, image_size=8, progress=False)
    da, db, dc = _digest(a.parent), _digest(b.parent), _digest(c.parent)
    assert da == db
    assert da["manifest.csv"] != dc["manifest.csv"] or da["oracle.csv"] != dc["oracle.csv"]


@pytest.mark.parametrize("image_format", ["dicom", "nifti"])
def test_worker_processes_write_the_same_cohort_as_one_process(tmp_path, image_format):
    kw = dict(n_patients=9, seed=5, image_size=8, image_format=image_format, progress=False)
    one = generate_cohort(tmp_path / "one", workers=1, **kw)
    two = generate_cohort(tmp_path / "two", workers=2, **kw)  # 9 patients: uneven chunks across 2 workers
    d1, d2 = _digest(one.parent), _digest(two.parent)
    assert d1 == d2
    images = [k for k in d1 if k.startswith("images/")]
    assert len(images) >= (5 if image_format == "nifti" else 5 * 8)
    assert len(pd.read_csv(one)) == 9


def test_cli_synth_workers(tmp_path):
    from medmm.cli import main

    assert main(["synth", str(tmp_path / "c"), "--patients", "5", "--seed", "2", "--image-size", "8",
                 "--image-format", "nifti", "--workers", "2", "--quiet"]) == 0
    ref = generate_cohort(tmp_path / "r", n_patients=5, seed=2, image_size=8, image_format="nifti", progress=False)
    assert _digest(tmp_path / "c") == _digest(ref.parent)


def test_dicom_read_back_matches_the_generator_geometry(tiny_cohort):
    truth = pd.read_csv(tiny_cohort.parent / "truth.csv").set_index("patient_id")
    manifest = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    checked = oblique = 0
    for _, row in manifest[manifest["image_path"] != ""].iterrows():
        img = read_dicom_series(tiny_cohort.parent / row["image_path"])
        expected = np.array(json.loads(truth.loc[row["patient_id"], "affine_ras"]))
        np.testing.assert_allclose(img.affine, expected, atol=1e-3)
        assert img.shape == (16, 16, 16)
        # the lesion sits where the generator put it, with the contrast it drew (in HU)
        centre = np.round(json.loads(truth.loc[row["patient_id"], "lesion_centre_ijk"])).astype(int)
        contrast = truth.loc[row["patient_id"], "lesion_contrast_hu"]
        body = np.median(img.data[4:12, 4:12, 4:12])
        i, j, k = centre
        lesion = np.median(img.data[i - 1:i + 2, j - 1:j + 2, k - 1:k + 2])
        assert lesion - body == pytest.approx(contrast, abs=25)
        oblique += bool(truth.loc[row["patient_id"], "oblique"])
        checked += 1
    assert checked >= 25 and oblique >= 1


def test_dicom_files_carry_the_geometry_tags_and_shuffled_names(tiny_cohort):
    import pydicom

    manifest = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    folder = tiny_cohort.parent / manifest.loc[manifest["image_path"] != "", "image_path"].iloc[0]
    files = sorted(folder.iterdir())
    dss = [pydicom.dcmread(f) for f in files]
    for ds in dss:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                    "RescaleSlope", "RescaleIntercept", "SeriesInstanceUID", "SOPInstanceUID"):
            assert tag in ds
        assert ds.Modality == "CT" and ds.RescaleIntercept == -1024
    normal = np.cross(np.array(dss[0].ImageOrientationPatient[:3], float), np.array(dss[0].ImageOrientationPatient[3:], float))
    pos = [float(np.dot(normal, np.array(ds.ImagePositionPatient, float))) for ds in dss]
    assert pos != sorted(pos)  # name order is not slice order
    assert len({ds.SeriesInstanceUID for ds in dss}) == 1


def test_nifti_output_reads_with_the_same_affine(tmp_path):
    m = generate_cohort(tmp_path / "n", n_patients=4, seed=3, image_size=8, image_format="nifti",
                        missing_rate=0.0, progress=False)
    df = pd.read_csv(m, dtype=str)
    truth = pd.read_csv(m.parent / "truth.csv").set_index("patient_id")
    for _, row in df.iterrows():
        img = read_modality("image", m.parent / row["image_path"])
        np.testing.assert_allclose(img.affine, json.loads(truth.loc[row["patient_id"], "affine_ras"]), atol=1e-4)


def test_oracle_is_complete_and_fusion_beats_every_single_modality(tiny_cohort, tmp_path):
    from medmm.evaluate.metrics import auroc

    orc = pd.read_csv(tiny_cohort.parent / "oracle.csv")
    assert set(orc["subset"]) == set(all_subsets(include_empty=True))
    assert orc["score"].between(0, 1).all()
    assert len(orc) == 40 * len(TASKS) * 16
    # on a larger cohort the full-information oracle beats every single modality
    big = generate_cohort(tmp_path / "big", n_patients=400, seed=1, image_size=8, progress=False)
    orc = pd.read_csv(big.parent / "oracle.csv")
    labels = pd.read_csv(big).set_index("patient_id")
    for t in TASKS:
        o = orc[orc.task == t]
        y = labels.loc[o[o.subset == "none"].patient_id, f"label_{t}"].to_numpy()
        # the prior is one constant score
        assert o[o.subset == "none"]["score"].nunique() == 1
        full = auroc(y, o[o.subset == "image+notes+vitals+ehr"]["score"].to_numpy())
        for m in ("image", "notes", "vitals", "ehr"):
            single = auroc(y, o[o.subset == m]["score"].to_numpy())
            assert full > single + 0.03 or np.isnan(single)
        assert full > 0.85


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="image_format"):
        generate_cohort(tmp_path, n_patients=2, image_format="png", progress=False)
    with pytest.raises(ValueError, match="missing_rate"):
        generate_cohort(tmp_path, n_patients=2, missing_rate=1.5, progress=False)
    with pytest.raises(ValueError, match="workers"):
        generate_cohort(tmp_path, n_patients=2, workers=-1, progress=False)
