"""DICOM reading: geometry against SimpleITK, transfer syntaxes, real files, bad cases, CLI."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import medmm.schemas

from medmm.errors import DicomError, GeometryError, ReadError
from medmm.io.dicom import DicomWarning, list_series, read_dicom, read_dicom_series
from medmm.io.image import read_image

from imaging_helpers import ORIENTATIONS, assert_same_as_sitk, make_stored, write_series

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NICOM_DATA = Path(__import__("nibabel").__file__).parent / "nicom" / "tests" / "data"


def _testdata(name: str) -> str:
    return get_testdata_file(name, download=False)


# ------------------------------------------------------------------ geometry vs SimpleITK


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_simpleitk(tmp_path: Path, orientation: str, reverse: bool) -> None:
    pytest.importorskip("SimpleITK")
    write_series(tmp_path, make_stored((12, 10, 7)), rot=ORIENTATIONS[orientation], reverse=reverse, shuffle=3)
    img = read_image(tmp_path)
    assert img.shape == (12, 10, 7)
    assert img.data.dtype == np.float32
    assert_same_as_sitk(img, tmp_path)
    assert img.meta["Modality"] == "CT" and img.meta["KVP"] == 120
    assert img.meta["StudyDate"] == "20200315" and img.meta["SeriesDescription"] == "test series"


def test_slices_ordered_by_position_not_instance_number(tmp_path: Path) -> None:
    stored = make_stored((6, 5, 8))
    write_series(tmp_path, stored, shuffle=7)
    img = read_dicom(tmp_path)
    np.testing.assert_array_equal(img.data, stored.astype(np.float32) - 1024)
    assert np.allclose(img.affine[:3, 2], [0, 0, 2.5])


COMPRESSED = {
    "rle": "1.2.840.10008.1.2.5",
    "jpeg2000_lossless": "1.2.840.10008.1.2.4.90",
    "deflate": "1.2.840.10008.1.2.1.99",
    "implicit": "1.2.840.10008.1.2",
}


@pytest.mark.parametrize("syntax", sorted(COMPRESSED))
def test_transfer_syntaxes_match_uncompressed_and_simpleitk(tmp_path: Path, syntax: str) -> None:
    from pydicom.pixels import get_encoder

    uid = COMPRESSED[syntax]
    if syntax in ("rle", "jpeg2000_lossless") and not get_encoder(uid).is_available:
        pytest.skip(f"no encoder for {syntax}")
    stored = make_stored((64, 48, 3), seed=1)  # OpenJPEG needs >= 32 px per side
    write_series(tmp_path / "plain", stored, rot=ORIENTATIONS["oblique"])
    write_series(tmp_path / syntax, stored, rot=ORIENTATIONS["oblique"], transfer_syntax=uid)
    ts = pydicom.dcmread(next((tmp_path / syntax).iterdir())).file_meta.TransferSyntaxUID
    assert ts == uid
    a, b = read_dicom(tmp_path / "plain"), read_dicom(tmp_path / syntax)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine)
    pytest.importorskip("SimpleITK")
    assert_same_as_sitk(b, tmp_path / syntax)


def test_per_slice_rescale(tmp_path: Path) -> None:
    stored = make_stored((4, 4, 3), seed=2, high=1000)
    slopes, inters = [1.0, 2.0, 0.5], [-1024.0, -10.0, 3.0]
    write_series(tmp_path, stored, slope=slopes, intercept=inters, shuffle=None)
    img = read_dicom(tmp_path)
    for k in range(3):
        np.testing.assert_allclose(img.data[:, :, k], stored[:, :, k] * slopes[k] + inters[k])


def test_bits_stored_masking_and_signed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4096, size=(5, 4, 3))
    garbage = (true | (rng.integers(0, 16, size=true.shape) << 12)).astype(np.uint16)
    write_series(tmp_path / "u", garbage, bits_stored=12, intercept=0.0)
    np.testing.assert_array_equal(read_dicom(tmp_path / "u").data, true)

    signed_true = rng.integers(-2048, 2048, size=(5, 4, 3))
    raw = (signed_true & 0xFFF) | (rng.integers(0, 16, size=signed_true.shape) << 12)  # junk above bit 11
    write_series(tmp_path / "s", raw.astype(np.uint16).view(np.int16), bits_stored=12, signed=True, intercept=0.0)
    np.testing.assert_array_equal(read_dicom(tmp_path / "s").data, signed_true)


def test_monochrome1_inverted(tmp_path: Path) -> None:
    stored = make_stored((4, 4, 2), high=4096)
    write_series(tmp_path, stored, photometric="MONOCHROME1", intercept=0.0, bits_stored=12)
    img = read_dicom(tmp_path)
    np.testing.assert_array_equal(img.data, 4095.0 - stored)
    assert img.meta["monochrome1_inverted"] is True
    np.testing.assert_array_equal(read_dicom(tmp_path, invert_monochrome1=False).data, stored)


# ------------------------------------------------------------------------ real files


MR_SMALL = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]


def test_mr_small_every_transfer_syntax_identical() -> None:
    ref = read_image(_testdata("MR_small.dcm"))
    assert ref.shape == (64, 64, 1)
    assert ref.meta["Modality"] == "MR"
    for name in MR_SMALL[1:]:
        if not Path(TEST_FILES / name).exists():
            continue
        img = read_image(_testdata(name))
        np.testing.assert_array_equal(img.data, ref.data, err_msg=name)
        np.testing.assert_allclose(img.affine, ref.affine, err_msg=name)
    ds = pydicom.dcmread(_testdata("MR_small.dcm"))
    np.testing.assert_array_equal(ref.data[:, :, 0], ds.pixel_array.T)


def test_ct_small_rescaled_to_hu() -> None:
    img = read_image(_testdata("CT_small.dcm"))
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    expected = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(img.data[:, :, 0], expected)
    assert img.meta["Manufacturer"] == ds.Manufacturer


def test_extensionless_dicom_file_is_inferred_and_read(tmp_path: Path) -> None:
    from medmm.io import infer_format, read_modality
    from medmm.io.image import image_format

    path = tmp_path / "IM0001"
    shutil.copy(_testdata("CT_small.dcm"), path)
    assert infer_format("image", path) == image_format(path) == "dicom"
    a, b = read_modality("image", path), read_image(path)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.shape[:2] == pydicom.dcmread(path).pixel_array.T.shape
    with pytest.raises(ReadError, match="cannot tell"):
        infer_format("image", tmp_path / "missing.xyz")


def test_dicomdir_ct_series_loads_as_volume() -> None:
    folder = TEST_FILES / "dicomdirtests" / "98892001" / "CT5N"
    img = read_image(folder)
    assert img.shape == (16, 16, 5)
    assert img.meta["Modality"] == "CT"
    pytest.importorskip("SimpleITK")
    assert_same_as_sitk(img, folder)
    # the whole DICOMDIR tree lists its series and reads one by UID
    stacks = list_series(TEST_FILES / "dicomdirtests" / "DICOMDIR")
    uid = img.meta["SeriesInstanceUID"]
    assert uid in {s.id for s in stacks}
    again = read_image(TEST_FILES / "dicomdirtests", series_uid=uid)
    np.testing.assert_array_equal(again.data, img.data)


def test_radiograph_is_2d() -> None:
    folder = TEST_FILES / "dicomdirtests" / "77654033" / "CR1"
    img = read_image(folder)
    assert img.data.ndim == 2
    assert img.meta["Modality"] == "CR"


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_siemens_mosaic_split_into_slices(tmp_path: Path) -> None:
    from nibabel.nicom import dicomwrappers

    src = NICOM_DATA / "siemens_dwi_1000.dcm.gz"
    if not src.exists():
        pytest.skip("nibabel mosaic test file not present")
    f = tmp_path / "mosaic.dcm"
    with gzip.open(src) as fin, open(f, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    img = read_image(f)
    wrapper = dicomwrappers.wrapper_from_file(str(f))
    ref = wrapper.get_data()  # (rows, cols, slices), scaled
    assert img.meta["mosaic"] is True
    assert img.shape == (ref.shape[1], ref.shape[0], ref.shape[2])
    np.testing.assert_allclose(img.data, ref.transpose(1, 0, 2), atol=1e-3)
    # nibabel's affine maps (row, col, slice) to LPS; ours maps (col, row, slice) to RAS
    ours = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    swap = np.eye(4)[[1, 0, 2, 3]]
    np.testing.assert_allclose(ours @ swap, wrapper.affine, atol=1e-3)


def _enhanced_from_classic(
    paths: list[Path], out: Path, order: list[int], temporal: list[int] | None = None
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dss = [pydicom.dcmread(p) for p in paths]
    dss = [dss[i] for i in order]
    d0 = dss[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for kw in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "Modality", "Manufacturer",
               "SeriesDescription", "KVP", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        setattr(ds, kw, d0.get(kw))
    ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(dss)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = d0.PixelSpacing
    pm.SliceThickness = d0.SliceThickness
    po = Dataset()
    po.ImageOrientationPatient = d0.ImageOrientationPatient
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for i, d in enumerate(dss):
        fg = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = d.ImagePositionPatient
        fg.PlanePositionSequence = Sequence([pp])
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = d.RescaleSlope, d.RescaleIntercept, "HU"
        fg.PixelValueTransformationSequence = Sequence([pvt])
        fc = Dataset()
        fc.StackID, fc.InStackPositionNumber = "1", i + 1
        if temporal is not None:
            fc.TemporalPositionIndex = temporal[order[i]]
        fg.FrameContentSequence = Sequence([fc])
        frames.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = b"".join(d.PixelData for d in dss)
    ds.save_as(out, enforce_file_format=True)


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_enhanced_multiframe_equals_classic(tmp_path: Path, orientation: str) -> None:
    stored = make_stored((10, 8, 6), seed=4)
    paths = write_series(tmp_path / "classic", stored, rot=ORIENTATIONS[orientation], shuffle=None,
                         slope=[1.0, 1.0, 2.0, 1.0, 1.0, 0.5], intercept=-1000.0)
    _enhanced_from_classic(paths, tmp_path / "enhanced.dcm", order=[3, 0, 5, 1, 4, 2])
    classic = read_image(tmp_path / "classic")
    enhanced = read_image(tmp_path / "enhanced.dcm")
    assert enhanced.meta["enhanced"] is True
    np.testing.assert_array_equal(enhanced.data, classic.data)
    np.testing.assert_allclose(enhanced.affine, classic.affine, atol=1e-6)


def test_enhanced_multiframe_time_series_is_4d(tmp_path: Path) -> None:
    t0, t1 = make_stored((6, 5, 4), seed=8), make_stored((6, 5, 4), seed=9)
    p0 = write_series(tmp_path / "t0", t0, shuffle=None)
    p1 = write_series(tmp_path / "t1", t1, shuffle=None)
    order = [5, 0, 7, 2, 1, 4, 6, 3]
    _enhanced_from_classic(p0 + p1, tmp_path / "dyn.dcm", order=order, temporal=[1] * 4 + [2] * 4)
    img = read_image(tmp_path / "dyn.dcm")
    assert img.shape == (6, 5, 4, 2) and img.meta["volume_key"] == "temporal"
    np.testing.assert_array_equal(img.data[..., 0], t0 - 1024.0)
    np.testing.assert_array_equal(img.data[..., 1], t1 - 1024.0)
    np.testing.assert_allclose(img.affine, read_image(tmp_path / "t0").affine)


def test_real_enhanced_mr_geometry_and_values(tmp_path: Path) -> None:
    src = NICOM_DATA / "philips_mprage.dcm.gz"
    if not src.exists():
        pytest.skip("nibabel enhanced MR test file not present")
    f = tmp_path / "mprage.dcm"
    with gzip.open(src) as fin, open(f, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    img = read_image(f)
    ds = pydicom.dcmread(f)
    frames = ds.PerFrameFunctionalGroupsSequence
    ipp = np.array([fr.PlanePositionSequence[0].ImagePositionPatient for fr in frames], dtype=float)
    iop = np.array(frames[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    order = np.argsort(ipp @ np.cross(iop[:3], iop[3:]))
    assert img.shape == (ds.Columns, ds.Rows, len(frames))
    lps = np.diag([-1.0, -1, 1, 1]) @ img.affine
    for k in (0, 50, len(frames) - 1):  # every slice sits at its frame's ImagePositionPatient
        np.testing.assert_allclose((lps @ [0, 0, k, 1])[:3], ipp[order[k]], atol=1e-3)
    pvt = frames[0].PixelValueTransformationSequence[0]
    k = len(frames) // 2
    expected = ds.pixel_array[order[k]].T * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    np.testing.assert_allclose(img.data[:, :, k], expected, rtol=1e-6)


def test_multi_echo_becomes_4d(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    e1, e2 = make_stored((6, 5, 4), seed=5), make_stored((6, 5, 4), seed=6)
    write_series(tmp_path, e1, modality="MR", series_uid=uid, extra={"EchoNumbers": 1, "EchoTime": 5.0}, shuffle=1)
    write_series(tmp_path / "e2", e2, modality="MR", series_uid=uid, extra={"EchoNumbers": 2, "EchoTime": 10.0},
                 shuffle=2, start_instance=100)
    img = read_image(tmp_path)
    assert img.shape == (6, 5, 4, 2)
    assert img.meta["volume_key"] == "echo"
    np.testing.assert_array_equal(img.data[..., 0], e1 - 1024.0)
    np.testing.assert_array_equal(img.data[..., 1], e2 - 1024.0)


# ------------------------------------------------------------------------- bad cases


def _positions(n: int, step: float, drop: tuple[int, ...] = (), tilt: float = 0.0) -> list[np.ndarray]:
    return [np.array([0.0, tilt * k * step, k * step]) for k in range(n) if k not in drop]


def _expect(exc: pytest.ExceptionInfo, *words: str) -> None:
    text = str(exc.value)
    assert isinstance(exc.value, ReadError)
    for w in words:
        assert w in text, (w, text)


def test_missing_slice(tmp_path: Path) -> None:
    pos = _positions(8, 2.0, drop=(4,))
    stored = make_stored((6, 5, len(pos)))
    write_series(tmp_path, stored, positions=pos, series_uid="1.2.3.4")
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    _expect(exc, "1.2.3.4", "missing slice", "irregular='resample'", "irregular='accept'")
    with pytest.warns(DicomWarning, match="missing"):
        img = read_image(tmp_path, irregular="resample")
    assert img.shape == (6, 5, 8)
    np.testing.assert_allclose(img.data[:, :, 4], (img.data[:, :, 3] + img.data[:, :, 5]) / 2, atol=1e-3)
    np.testing.assert_allclose(img.spacing, (0.7, 0.8, 2.0))
    with pytest.warns(DicomWarning):
        acc = read_image(tmp_path, irregular="accept")
    assert acc.shape == (6, 5, 7)


def test_irregular_spacing(tmp_path: Path) -> None:
    zs = [0.0, 2.0, 4.0, 6.5, 8.0, 10.0]
    write_series(tmp_path, make_stored((5, 5, 6)), positions=[np.array([0, 0, z]) for z in zs], series_uid="1.2.3.5")
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    _expect(exc, "1.2.3.5", "irregular slice spacing", "irregular=")


def test_gantry_tilt(tmp_path: Path) -> None:
    # a smooth field sampled on tilted slices: resampling must recover it on the regular grid
    n, step, tilt = 10, 2.0, np.tan(np.radians(15))
    pos = _positions(n, step, tilt=tilt)
    ii, jj = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    field = lambda x, y, z: 1000 + 3 * x + 2 * y + 5 * z  # noqa: E731  (LPS mm)
    stored = np.stack([field(ii * 0.7 + p[0], jj * 0.8 + p[1], p[2]) for p in pos], axis=-1).round().astype(np.uint16)
    write_series(tmp_path, stored, positions=pos, intercept=0.0, series_uid="1.2.3.6", bits_stored=16)
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    _expect(exc, "1.2.3.6", "gantry tilt 15.00 deg", "irregular='resample'")
    with pytest.warns(DicomWarning):
        acc = read_image(tmp_path, irregular="accept")
    # accepted: the sheared affine puts every voxel where its slice was
    lps = np.diag([-1.0, -1, 1, 1]) @ acc.affine
    world = lps @ np.array([3, 4, 7, 1.0])
    assert np.allclose(world[:3], pos[7] + [3 * 0.7, 4 * 0.8, 0], atol=1e-4)
    with pytest.warns(DicomWarning):
        res = read_image(tmp_path, irregular="resample")
    lps = np.diag([-1.0, -1, 1, 1]) @ res.affine
    assert np.allclose(lps[:3, 2], [0, 0, step])
    for i, j, k in [(2, 10, 3), (10, 12, 6), (15, 15, 8)]:
        x, y, z = (lps @ np.array([i, j, k, 1.0]))[:3]
        assert abs(res.data[i, j, k] - field(x, y, z)) < 1.5


def test_duplicate_positions(tmp_path: Path) -> None:
    pos = _positions(5, 2.0)
    pos = pos + [pos[2]]
    write_series(tmp_path, make_stored((5, 5, 6)), positions=pos, series_uid="1.2.3.7")
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    _expect(exc, "1.2.3.7", "duplicate slice position", "irregular='accept'")
    with pytest.warns(DicomWarning):
        assert read_image(tmp_path, irregular="accept").shape == (5, 5, 5)


def test_mixed_orientation_and_size(tmp_path: Path) -> None:
    uid = "1.2.3.8"
    write_series(tmp_path / "ax", make_stored((6, 6, 5)), series_uid=uid)
    write_series(tmp_path / "cor", make_stored((6, 6, 3)), rot=ORIENTATIONS["coronal"], series_uid=uid)
    write_series(tmp_path / "small", make_stored((4, 4, 2)), origin=(0, 0, 100), series_uid=uid)
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    _expect(exc, uid, "3 stacks", "mixed orientation", "series_uid='<uid>:<n>'", "irregular='accept'")
    ids = sorted(s.id for s in list_series(tmp_path))
    assert ids == [f"{uid}:1", f"{uid}:2", f"{uid}:3"]
    assert read_image(tmp_path, series_uid=f"{uid}:2").shape == (6, 6, 3)
    with pytest.warns(DicomWarning):
        assert read_image(tmp_path, irregular="accept").shape == (6, 6, 5)


def test_several_series_need_a_choice(tmp_path: Path) -> None:
    write_series(tmp_path / "a", make_stored((4, 4, 2)), series_uid="1.2.3.9")
    write_series(tmp_path / "b", make_stored((4, 4, 3)), series_uid="1.2.3.10")
    with pytest.raises(DicomError) as exc:
        read_image(tmp_path)
    _expect(exc, "2 series", "series_uid", "1.2.3.9")
    assert read_dicom_series(tmp_path, series_uid="1.2.3.10").shape == (4, 4, 3)
    with pytest.raises(DicomError, match="not found"):
        read_image(tmp_path, series_uid="9.9")


def test_not_dicom_and_truncated(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DicomError, match="no DICOM image"):
        read_dicom(tmp_path)
    src = Path(_testdata("MR_small.dcm")).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(src[: len(src) - 1000])
    with pytest.raises(DicomError) as exc:
        read_image(tmp_path / "cut.dcm")
    assert "cut.dcm" in str(exc.value)


def test_registry_reader_still_works(tmp_path: Path) -> None:
    from medmm.io import read_modality

    write_series(tmp_path, make_stored((4, 4, 3)))
    img = read_modality("image", tmp_path, patient_id="P1")
    assert img.shape == (4, 4, 3)


# --------------------------------------------------------------------- de-identification


def test_deidentification(tmp_path: Path) -> None:
    from medmm.io.deid import Deidentifier, deidentify_path

    stored = make_stored((6, 5, 4))
    write_series(tmp_path / "in", stored, extra={"InstitutionName": "St Elsewhere", "OtherPatientIDs": "X9"})
    out = deidentify_path(tmp_path / "in", tmp_path / "out", salt="s3cret")
    assert len(out) == 4
    originals = {pydicom.dcmread(p).ImagePositionPatient[2]: pydicom.dcmread(p) for p in (tmp_path / "in").iterdir()}
    deid = Deidentifier(salt="s3cret")
    series = set()
    for p in out:
        ds = pydicom.dcmread(p)
        orig = originals[ds.ImagePositionPatient[2]]
        assert ds.PatientName != "DOE^JANE" and "DOE" not in str(ds.PatientName)
        assert not ds.get("PatientBirthDate") and "InstitutionName" not in ds and "OtherPatientIDs" not in ds
        assert "SeriesDescription" not in ds and ds.get("PatientSex") == orig.get("PatientSex")
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPInstanceUID == deid.uid(orig.SOPInstanceUID) != orig.SOPInstanceUID
        assert ds.StudyDate == deid._shift_date("20200315", deid.shift_days("PAT001")) != "20200315"
        assert ds.PixelData == orig.PixelData
        series.add(ds.SeriesInstanceUID)
    assert len(series) == 1
    img = read_image(tmp_path / "out")
    np.testing.assert_array_equal(img.data, read_image(tmp_path / "in").data)
    on_read = read_image(tmp_path / "in", deidentify=True)
    assert on_read.meta["PatientID"].startswith("ANON") and "files" not in on_read.meta
    assert on_read.meta["SeriesInstanceUID"] != read_image(tmp_path / "in").meta["SeriesInstanceUID"]


# ------------------------------------------------------------------------------- CLI


def test_cli_ls_convert_deid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import nibabel as nib

    from medmm.cli import main

    write_series(tmp_path / "ct", make_stored((8, 6, 5)), rot=ORIENTATIONS["oblique"], series_uid="1.2.3.11")
    pos = _positions(6, 2.0, drop=(3,))
    write_series(tmp_path / "bad", make_stored((4, 4, len(pos))), positions=pos, series_uid="1.2.3.12")
    assert main(["dicom", "ls", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("UID")
    lines = {line.split()[0]: line for line in out[1:]}
    assert "8x6x5" in lines["1.2.3.11"] and "CT" in lines["1.2.3.11"] and "oblique" in lines["1.2.3.11"]
    assert "missing slice" in lines["1.2.3.12"]

    nii = tmp_path / "ct.nii.gz"
    assert main(["convert", str(tmp_path), str(nii), "--series", "1.2.3.11"]) == 0
    ref = read_image(tmp_path / "ct")
    back = nib.load(str(nii))
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(back.get_fdata(), ref.data)
    assert int(back.header["sform_code"]) == 1 and int(back.header["qform_code"]) == 1

    assert main(["convert", str(tmp_path / "bad"), str(tmp_path / "bad.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "1.2.3.12" in err and "missing slice" in err and "irregular" in err
    assert main(["convert", str(tmp_path / "bad"), str(tmp_path / "bad.nii.gz"), "--irregular", "resample"]) == 0

    assert main(["dicom", "deid", str(tmp_path / "ct"), str(tmp_path / "anon"), "--salt", "k"]) == 0
    assert len(list((tmp_path / "anon").rglob("*.dcm"))) == 5


# ------------------------------------------------------------- against dcm2niix / dicom2nifti


def _world_max_diff(a, b) -> float:
    """Max |a - b| over voxels matched by world position (the grids must coincide)."""
    m = np.linalg.inv(b.affine) @ a.affine
    assert np.allclose(m, np.round(m), atol=1e-3), m
    da, db = np.asarray(a.get_fdata()), np.asarray(b.get_fdata())
    idx = np.indices(da.shape[:3]).reshape(3, -1)
    j = np.round(m[:3, :3] @ idx + m[:3, 3:]).astype(int)
    return float(np.abs(da.reshape(-1) - db[tuple(j)]).max())


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "oblique"])
def test_convert_matches_dcm2niix_and_dicom2nifti(tmp_path: Path, orientation: str) -> None:
    import subprocess
    import sys

    import nibabel as nib

    from medmm.cli import main

    exe = Path(sys.executable).parent / "dcm2niix"
    refs = []
    write_series(tmp_path / "s", make_stored((12, 10, 7)), rot=ORIENTATIONS[orientation], reverse=True)
    assert main(["convert", str(tmp_path / "s"), str(tmp_path / "medmm.nii.gz")]) == 0
    ours = nib.load(str(tmp_path / "medmm.nii.gz"))
    if exe.exists():
        (tmp_path / "d").mkdir()
        subprocess.run([str(exe), "-z", "y", "-f", "x", "-o", str(tmp_path / "d"), str(tmp_path / "s")],
                       capture_output=True, check=True, timeout=60)
        refs.append(next((tmp_path / "d").glob("*.nii.gz")))
    try:
        import dicom2nifti

        dicom2nifti.dicom_series_to_nifti(str(tmp_path / "s"), str(tmp_path / "d2n.nii.gz"), reorient_nifti=False)
        refs.append(tmp_path / "d2n.nii.gz")
    except ImportError:
        pass
    if not refs:
        pytest.skip("neither dcm2niix nor dicom2nifti is installed")
    for ref in refs:
        assert _world_max_diff(ours, nib.load(str(ref))) <= 1e-3, ref


# ------------------------------------------------------- more real files shipped with pydicom

REAL_FILES = {
    # name: (expected data shape, rescale applied by medmm)
    "JPGExtended.dcm": (256, 1024),
    "JPEG2000.dcm": (256, 1024),
    "JPEGLSNearLossless_16.dcm": (10, 50),
    "image_dfl.dcm": (512, 512),  # deflated explicit VR little endian
    "693_J2KI.dcm": (512, 512, 1),
    "J2K_pixelrep_mismatch.dcm": (512, 512, 1),
    "liver_1frame.dcm": (512, 512, 1),  # enhanced (segmentation) multi-frame
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_compressed_files_equal_pydicom(name: str) -> None:
    if not (TEST_FILES / name).exists():
        pytest.skip(f"{name} not shipped")
    path = _testdata(name)
    img = read_image(path)
    assert img.shape == REAL_FILES[name]
    ds = pydicom.dcmread(path)
    ref = pydicom.pixels.apply_rescale(ds.pixel_array, ds) if "RescaleSlope" in ds else ds.pixel_array
    data = img.data if img.data.ndim == 2 else img.data[:, :, 0]
    np.testing.assert_allclose(data, np.asarray(ref, dtype=np.float64).T, atol=1e-3)


def test_rt_dose_scaled_to_gray() -> None:
    path = _testdata("rtdose.dcm")
    img = read_image(path)
    ds = pydicom.dcmread(path)
    assert img.shape == (ds.Columns, ds.Rows, ds.NumberOfFrames)
    offsets = np.asarray(ds.GridFrameOffsetVector, dtype=float)
    np.testing.assert_allclose(
        img.data, ds.pixel_array.transpose(2, 1, 0)[:, :, np.argsort(offsets)] * float(ds.DoseGridScaling), rtol=1e-6
    )


@pytest.mark.parametrize("name", ["examples_rgb_color.dcm", "SC_rgb_jpeg.dcm", "examples_ybr_color.dcm"])
def test_colour_images_as_rgb_channels(name: str) -> None:
    img = read_image(_testdata(name))
    ds = pydicom.dcmread(_testdata(name))
    arr = ds.pixel_array  # pydicom converts YBR to RGB
    assert img.meta["channels"] == "RGB"
    if arr.ndim == 3:
        np.testing.assert_array_equal(img.data[:, :, 0, :], arr.transpose(1, 0, 2))
    else:
        np.testing.assert_array_equal(img.data[:, :, 0, :, :], arr.transpose(2, 1, 0, 3))


def test_unreadable_compression_names_the_fix() -> None:
    if not (TEST_FILES / "JPEG-lossy.dcm").exists():
        pytest.skip("file not shipped")
    try:
        ds = pydicom.dcmread(_testdata("JPEG-lossy.dcm"))
        ds.pixel_array
        decodable = True
    except Exception:  # noqa: BLE001 - 12-bit JPEG extended: no installed plugin decodes it
        decodable = False
    if decodable:  # a plugin that decodes it: then medmm reads what pydicom decodes
        img = read_image(_testdata("JPEG-lossy.dcm"))
        assert img.data.size == ds.pixel_array.size
    else:
        with pytest.raises(DicomError) as err:
            read_image(_testdata("JPEG-lossy.dcm"))
        assert "PixelData" in str(err.value) and "pylibjpeg" in str(err.value)


def test_meta_and_ls_follow_their_schemas(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    jsonschema = pytest.importorskip("jsonschema")
    from medmm.cli import main

    root = Path(medmm.schemas.__file__).parent
    write_series(tmp_path / "s", make_stored((6, 5, 4)), series_uid="1.2.3.13")
    meta_schema = json.loads((root / "image_meta.schema.json").read_text())
    jsonschema.validate(read_image(tmp_path / "s").meta, meta_schema)
    jsonschema.validate(read_image(tmp_path / "s", deidentify=True).meta, meta_schema)
    assert main(["dicom", "ls", "--json", str(tmp_path)]) == 0
    ls_schema = json.loads((root / "dicom_ls.schema.json").read_text())
    for line in capsys.readouterr().out.splitlines():
        jsonschema.validate(json.loads(line), ls_schema)


def test_enhanced_without_plane_geometry_is_a_time_series(tmp_path: Path) -> None:
    stored = make_stored((6, 5, 3), seed=10)
    paths = write_series(tmp_path / "c", stored, shuffle=None)
    _enhanced_from_classic(paths, tmp_path / "e.dcm", order=[0, 1, 2])
    ds = pydicom.dcmread(tmp_path / "e.dcm")
    for fg in ds.PerFrameFunctionalGroupsSequence:
        del fg.PlanePositionSequence
    del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    ds.save_as(tmp_path / "e.dcm")
    img = read_image(tmp_path / "e.dcm")
    assert img.shape == (6, 5, 1, 3) and img.meta["volume_key"] == "frame"
    assert "geometry" in img.meta
    np.testing.assert_array_equal(img.data[:, :, 0, 2], stored[:, :, 2] - 1024.0)


def test_modality_lut_sequence_applied(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    stored = (np.arange(4 * 3 * 2).reshape(4, 3, 2) % 8).astype(np.uint16)
    paths = write_series(tmp_path, stored, shuffle=None, bits_stored=16)
    lut = (np.arange(8) ** 2 + 100).astype(np.uint16)
    for p in paths:
        ds = pydicom.dcmread(p)
        del ds.RescaleSlope, ds.RescaleIntercept
        item = Dataset()
        item.LUTDescriptor = [8, 0, 16]
        item.ModalityLUTType = "US"
        item.LUTData = lut.tobytes()
        ds.ModalityLUTSequence = Sequence([item])
        ds.save_as(p)
    img = read_image(tmp_path)
    np.testing.assert_array_equal(img.data, lut[stored])


def test_localizer_in_the_volume_series_is_ignored(tmp_path: Path) -> None:
    uid = "1.2.3.14"
    vol = make_stored((8, 8, 6))
    write_series(tmp_path / "ct", vol, series_uid=uid)
    write_series(tmp_path / "scout", make_stored((8, 8, 1)), rot=ORIENTATIONS["coronal"], series_uid=uid,
                 extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, start_instance=50)
    img = read_image(tmp_path)
    assert img.shape == (8, 8, 6)
    assert any("localizer" in p for p in img.meta["problems"])
    np.testing.assert_array_equal(img.data, vol - 1024.0)


def test_truncated_slice_names_series_and_file(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_stored((8, 8, 4)), series_uid="1.2.3.15", shuffle=None)
    paths[2].write_bytes(paths[2].read_bytes()[:-50])
    with pytest.raises(DicomError) as exc:
        read_image(tmp_path)
    _expect(exc, "1.2.3.15", paths[2].name, "shorter", "replace")
