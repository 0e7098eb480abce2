"""NIfTI-1/2 and NRRD reading and writing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmm.schemas import load_schema
from medmm.errors import ReadError
from medmm.io.image import read_image
from medmm.io.nifti import read_nifti, write_nifti
from medmm.io.nrrd import read_nrrd, write_nrrd
from medmm.records import Image

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
NIFTI_FILES = ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii", "standard.nii.gz"]

AFFINE = np.array(
    [[0.9, 0.1, 0.0, -20.0], [-0.05, 1.1, 0.2, 10.0], [0.0, -0.15, 2.5, 35.0], [0, 0, 0, 1.0]]
)


@pytest.mark.parametrize("name", NIFTI_FILES)
def test_nibabel_test_files_give_nibabels_affine(name: str) -> None:
    path = NIB_DATA / name
    if not path.exists():
        pytest.skip(f"{name} not shipped")
    img = read_image(path)
    ref = nib.load(str(path))
    np.testing.assert_allclose(img.affine, ref.affine)
    np.testing.assert_allclose(img.data, ref.get_fdata(), rtol=1e-6)
    assert img.data.dtype == np.float32
    assert img.meta["format"] == ("nifti2" if "nifti2" in name else "nifti1")


def test_4d_kept() -> None:
    img = read_nifti(NIB_DATA / "example4d.nii.gz")
    assert img.data.ndim == 4 and img.shape[3] == 2
    assert img.meta["tr"] > 0


def _save(tmp_path: Path, name: str, *, sform: int, qform: int, slope: float | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, np.eye(4))
    s_aff = AFFINE.copy()
    q_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    q_aff[:3, 3] = [1, 2, 3]
    img.set_sform(s_aff, code=sform)
    img.set_qform(q_aff, code=qform)
    path = tmp_path / name
    nib.save(img, str(path))
    if slope is not None:  # patch scl_slope/scl_inter (bytes 112-119 of a .nii) as is
        raw = bytearray(path.read_bytes())
        raw[112:120] = np.array([slope, -5.0], dtype="<f4").tobytes()
        path.write_bytes(bytes(raw))
    return path, s_aff, q_aff


def test_sform_qform_precedence(tmp_path: Path) -> None:
    p, s_aff, q_aff = _save(tmp_path, "both.nii.gz", sform=2, qform=1)
    img = read_image(p)
    np.testing.assert_allclose(img.affine, s_aff, atol=1e-6)
    assert img.meta["affine_source"] == "sform"
    p, s_aff, q_aff = _save(tmp_path, "qonly.nii", sform=0, qform=1)
    img = read_image(p)
    np.testing.assert_allclose(img.affine, q_aff, atol=1e-6)
    assert img.meta["affine_source"] == "qform"
    p, *_ = _save(tmp_path, "none.nii", sform=0, qform=0)
    img = read_image(p)
    assert img.meta["affine_source"] == "fallback"
    np.testing.assert_allclose(img.affine, nib.load(str(p)).affine)


def test_scaling(tmp_path: Path) -> None:
    p, *_ = _save(tmp_path, "scaled.nii", sform=1, qform=1, slope=2.0)
    img = read_image(p)
    raw = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    np.testing.assert_allclose(img.data, raw * 2.0 - 5.0)
    assert img.meta["scl_slope"] == 2.0
    p, *_ = _save(tmp_path, "zero.nii", sform=1, qform=1, slope=0.0)  # zero slope: unscaled
    np.testing.assert_allclose(read_image(p).data, raw)


def test_nifti2_and_units(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((3, 4, 5, 2)).astype(np.float32)
    img = nib.Nifti2Image(data, AFFINE)
    img.header.set_xyzt_units("meter", "sec")
    nib.save(img, str(tmp_path / "m.nii"))
    out = read_image(tmp_path / "m.nii")
    assert out.meta["format"] == "nifti2"
    np.testing.assert_allclose(out.affine[:3, :], AFFINE[:3, :] * 1000.0)
    np.testing.assert_array_equal(out.data, data)


def test_write_roundtrip(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(-1000, 2000, size=(6, 7, 8)).astype(np.float32)
    image = Image(data, AFFINE, {"SeriesDescription": "t1"})
    write_nifti(image, tmp_path / "o.nii.gz", dtype="auto")
    back = nib.load(str(tmp_path / "o.nii.gz"))
    assert back.get_data_dtype() == np.int16
    assert int(back.header["sform_code"]) == 1 and int(back.header["qform_code"]) == 1
    np.testing.assert_allclose(back.affine, AFFINE)
    again = read_image(tmp_path / "o.nii.gz")
    np.testing.assert_array_equal(again.data, data)
    write_nifti(Image(data + 0.5, AFFINE), tmp_path / "f.nii")
    assert nib.load(str(tmp_path / "f.nii")).get_data_dtype() == np.float32


def test_bad_nifti(tmp_path: Path) -> None:
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(ReadError) as exc:
        read_image(tmp_path / "bad.nii.gz")
    assert "bad.nii.gz" in str(exc.value) and "Fix:" in str(exc.value)
    p, *_ = _save(tmp_path, "cut.nii", sform=1, qform=1)
    p.write_bytes(p.read_bytes()[:400])
    with pytest.raises(ReadError):
        read_image(p)


# -------------------------------------------------------------------------------- NRRD


def test_nrrd_roundtrip_and_simpleitk(tmp_path: Path) -> None:
    data = np.random.default_rng(2).random((5, 6, 7)).astype(np.float32)
    write_nrrd(Image(data, AFFINE), tmp_path / "a.nrrd")
    img = read_image(tmp_path / "a.nrrd")
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-9)
    np.testing.assert_array_equal(img.data, data)
    sitk = pytest.importorskip("SimpleITK")
    s = sitk.ReadImage(str(tmp_path / "a.nrrd"))
    for ijk in [(0, 0, 0), (4, 5, 6), (2, 0, 6)]:
        lps = np.array(s.TransformIndexToPhysicalPoint(ijk))
        ras = img.world_coordinates(np.array(ijk))[0]
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-6)
        assert sitk.GetArrayFromImage(s)[ijk[::-1]] == data[ijk]


def test_nrrd_ras_space_and_list_axis(tmp_path: Path) -> None:
    import nrrd

    data = np.random.default_rng(3).random((3, 4, 5, 6)).astype(np.float32)  # (list, i, j, k)
    header = {
        "space": "right-anterior-superior",
        "space directions": np.array([[np.nan] * 3, [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]]),
        "space origin": np.array([10.0, 20.0, 30.0]),
        "kinds": ["list", "domain", "domain", "domain"],
    }
    nrrd.write(str(tmp_path / "v.nrrd"), data, header, index_order="F")
    img = read_nrrd(tmp_path / "v.nrrd")
    assert img.shape == (4, 5, 6, 3)
    np.testing.assert_allclose(img.affine, [[1, 0, 0, 10], [0, 2, 0, 20], [0, 0, 3, 30], [0, 0, 0, 1]])
    np.testing.assert_array_equal(img.data, np.moveaxis(data, 0, -1))


def test_nrrd_2d_rgb_keeps_channels(tmp_path: Path) -> None:
    import nrrd

    data = np.random.default_rng(4).integers(0, 255, (3, 5, 4)).astype(np.uint8)  # (rgb, i, j)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.array([[np.nan] * 3, [0.5, 0, 0], [0, 0.7, 0]]),
        "kinds": ["RGB-color", "domain", "domain"],
    }
    nrrd.write(str(tmp_path / "rgb.nrrd"), data, header, index_order="F")
    img = read_nrrd(tmp_path / "rgb.nrrd")
    assert img.shape == (5, 4, 1, 3)  # one slice, three channels (not three slices)
    np.testing.assert_array_equal(img.data[:, :, 0, :], np.moveaxis(data, 0, -1))
    np.testing.assert_allclose(np.diag(img.affine)[:3], [-0.5, -0.7, 1.0])


def test_nrrd_registered_and_bad(tmp_path: Path) -> None:
    from medmm.io import infer_format, read_modality

    assert infer_format("image", "x.nrrd") == "nrrd"
    write_nrrd(Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), tmp_path / "z.nrrd")
    assert read_modality("image", tmp_path / "z.nrrd").shape == (2, 3, 4)
    (tmp_path / "bad.nrrd").write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2\n\n")
    with pytest.raises(ReadError) as exc:
        read_image(tmp_path / "bad.nrrd")
    assert "bad.nrrd" in str(exc.value)


def test_meta_follows_schema(tmp_path: Path) -> None:

    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema("image_meta.schema.json")
    jsonschema.validate(read_image(NIB_DATA / "example4d.nii.gz").meta, schema)
    write_nrrd(Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), tmp_path / "z.nrrd")
    jsonschema.validate(read_image(tmp_path / "z.nrrd").meta, schema)
