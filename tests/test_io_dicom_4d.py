"""Real-world DICOM habits: classic 4D MR (DTI, fMRI, field maps), several blocking problems,
palette colour in big endian, gzip-compressed files and series numbers in `dicom ls`."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medmm.schemas

from medmm.errors import DicomError, GeometryError
from medmm.io.dicom import DicomWarning, list_series
from medmm.io.image import read_image

from imaging_helpers import ORIENTATIONS, diffusion_tags, make_stored, write_4d, write_series

pydicom = pytest.importorskip("pydicom")

DCM2NIIX = Path(sys.executable).parent / "dcm2niix"
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])

#: (b, gradient in patient LPS): two b0 volumes, one b-value over several directions, b=2000
DTI = [
    (0.0, (0.0, 0.0, 0.0)),
    (1000.0, (1.0, 0.0, 0.0)),
    (1000.0, (0.0, 0.6, 0.8)),
    (0.0, (0.0, 0.0, 0.0)),
    (1000.0, (0.0, 0.0, 1.0)),
    (2000.0, (0.48, -0.6, 0.64)),
]


def _volumes(n: int, shape: tuple[int, int, int] = (8, 6, 4)) -> list[np.ndarray]:
    return [make_stored(shape, seed=10 + t) for t in range(n)]


def _write_dti(folder: Path, vendor: str, orientation: str = "axial", phase: str = "COL") -> list[np.ndarray]:
    rot = ORIENTATIONS[orientation]
    vols = _volumes(len(DTI))
    tags = [diffusion_tags(vendor, b, np.array(g), rot, phase) for b, g in DTI]
    write_4d(folder, vols, tags, vendor=vendor, rot=rot, interleaved=vendor == "Philips")
    return vols


def _same_direction(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to sign (a diffusion direction and its opposite are the same measurement)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.allclose(a, b, atol=2e-3) or np.allclose(a, -b, atol=2e-3))


# --------------------------------------------------------------------------------- DTI


@pytest.mark.parametrize("vendor", ["GE", "Philips", "Canon", "Siemens", "Siemens-CSA"])
@pytest.mark.parametrize("orientation", ["axial", "oblique", "coronal"])
def test_classic_dti_is_4d_with_gradients(tmp_path: Path, vendor: str, orientation: str) -> None:
    vols = _write_dti(tmp_path, vendor, orientation)
    img = read_image(tmp_path)
    assert img.shape == (8, 6, 4, len(DTI))
    for t, vol in enumerate(vols):  # volumes in acquisition order, each one intact
        np.testing.assert_array_equal(img.data[..., t], vol.astype(np.float32))
    assert img.meta["b_values"] == [b for b, _ in DTI]
    for (_b, g), got in zip(DTI, img.meta["gradient_directions"]):
        np.testing.assert_allclose(got, np.array(g) * LPS_TO_RAS, atol=1e-4)
    assert "diffusion" in img.meta["volume_key"] and not img.meta["problems"]


def test_ge_phase_encoding_along_rows_swaps_the_logical_axes(tmp_path: Path) -> None:
    _write_dti(tmp_path / "col", "GE", "oblique", "COL")
    _write_dti(tmp_path / "row", "GE", "oblique", "ROW")
    col, row = read_image(tmp_path / "col"), read_image(tmp_path / "row")
    np.testing.assert_allclose(col.meta["gradient_directions"], row.meta["gradient_directions"], atol=1e-4)
    raw = pydicom.dcmread(next((tmp_path / "row").glob("v001_*")))
    assert float(raw[0x0019, 0x10BB].value) != pytest.approx(
        float(pydicom.dcmread(next((tmp_path / "col").glob("v001_*")))[0x0019, 0x10BB].value)
    )


def test_implicit_vr_private_tags_are_read(tmp_path: Path) -> None:
    """In implicit VR files private tags arrive as raw bytes (VR UN)."""
    vols = _write_dti(tmp_path, "Philips")
    for p in tmp_path.iterdir():
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        for tag in ((0x0018, 0x9087), (0x0018, 0x9089)):  # only the private copies remain
            if tag in ds:
                del ds[tag]
        ds.save_as(p, implicit_vr=True, little_endian=True)
    img = read_image(tmp_path)
    assert img.meta["b_values"] == [b for b, _ in DTI]
    np.testing.assert_array_equal(img.data[..., 5], vols[5])
    np.testing.assert_allclose(img.meta["gradient_directions"][2], np.array(DTI[2][1]) * LPS_TO_RAS, atol=1e-4)


def test_volume_option_picks_one_volume(tmp_path: Path) -> None:
    vols = _write_dti(tmp_path, "GE")
    one = read_image(tmp_path, volume=2)
    assert one.shape == (8, 6, 4)
    np.testing.assert_array_equal(one.data, vols[2])
    assert one.meta["volume"] == 2 and one.meta["n_volumes"] == len(DTI)
    assert one.meta["b_values"] == [1000.0]
    last = read_image(tmp_path, volume=-1)
    np.testing.assert_array_equal(last.data, vols[-1])
    with pytest.raises(DicomError) as exc:
        read_image(tmp_path, volume=6)
    assert "6 volume(s)" in str(exc.value) and "from 0 to 5" in str(exc.value)
    with pytest.raises(DicomError, match="volume must be an int"):
        read_image(tmp_path, volume="2")


# -------------------------------------------------------------------------------- fMRI


def test_ge_fmri_volumes_told_apart_by_instance_number_only(tmp_path: Path) -> None:
    vols = _volumes(3)
    # GE: every slice has its own acquisition time, volumes differ only in InstanceNumber
    tags = [{"AcquisitionNumber": 1} for _ in vols]
    paths = write_4d(tmp_path, vols, tags, vendor="GE", rot=ORIENTATIONS["oblique"])
    for t, vol_paths in enumerate(paths):
        for k, p in enumerate(vol_paths):
            ds = pydicom.dcmread(p)
            ds.AcquisitionTime = f"1200{t:02d}.{k:02d}"
            ds.save_as(p)
    img = read_image(tmp_path)
    assert img.shape == (8, 6, 4, 3) and img.meta["volume_key"] == "instance"
    for t, vol in enumerate(vols):
        np.testing.assert_array_equal(img.data[..., t], vol)
    assert "b_values" not in img.meta


def test_philips_fmri_interleaved_by_temporal_position(tmp_path: Path) -> None:
    vols = _volumes(4)
    tags = [{"TemporalPositionIdentifier": t + 1, "NumberOfTemporalPositions": 4} for t in range(4)]
    write_4d(tmp_path, vols, tags, vendor="Philips", interleaved=True)
    img = read_image(tmp_path)
    assert img.shape == (8, 6, 4, 4) and img.meta["volume_key"] == "temporal"
    assert img.meta["volume_labels"] == [1, 2, 3, 4]
    for t, vol in enumerate(vols):
        np.testing.assert_array_equal(img.data[..., t], vol)


def test_accept_never_keeps_volume_zero_silently(tmp_path: Path) -> None:
    vols = _volumes(3)
    write_4d(tmp_path, vols, [{} for _ in vols], vendor="GE")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomWarning)
        img = read_image(tmp_path, irregular="accept")
    assert img.shape == (8, 6, 4, 3)
    # a volume missing a slice cannot be told apart by order: an error, or a warning when accepted
    victim = next(p for p in tmp_path.iterdir() if p.name.startswith("v002_"))
    victim.unlink()
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    assert "duplicate slice position" in str(exc.value) and "instance order" in str(exc.value)
    with pytest.warns(DicomWarning, match="duplicate"):
        assert read_image(tmp_path, irregular="accept").shape == (8, 6, 4)


# --------------------------------------------------------------------------- field maps


def _write_fieldmap(folder: Path, vendor: str) -> dict[tuple[str, int], np.ndarray]:
    from pydicom.uid import generate_uid

    uid = generate_uid()
    truth = {}
    image_types = {
        "Philips": {"M": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], "P": ["ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"]},
        "Siemens": {"M": ["ORIGINAL", "PRIMARY", "M", "ND"], "P": ["ORIGINAL", "PRIMARY", "P", "ND"]},
    }[vendor]
    n = 0
    for part in ("M", "P"):
        for echo in (1, 2):
            vol = make_stored((8, 6, 4), seed=40 + n, high=4096)
            truth[(part, echo)] = vol
            write_series(folder, vol, modality="MR", series_uid=uid, prefix=f"{part}{echo}_", shuffle=n,
                         start_instance=100 * n + 1, intercept=0.0,
                         extra={"ImageType": image_types[part], "EchoNumbers": echo, "EchoTime": 4.9 + 2.46 * (echo - 1),
                                "SeriesNumber": 7, "Manufacturer": vendor})
            n += 1
    return truth


@pytest.mark.parametrize("vendor", ["Philips", "Siemens"])
def test_fieldmap_magnitude_and_phase_are_separate_multi_echo_stacks(tmp_path: Path, vendor: str) -> None:
    truth = _write_fieldmap(tmp_path, vendor)
    stacks = list_series(tmp_path)
    assert sorted(s.kind for s in stacks) == ["magnitude", "phase"]
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    text = str(exc.value)
    assert "magnitude" in text and "phase" in text and "image type" in text and "series_uid" in text
    for s in stacks:
        img = read_image(tmp_path, series_uid=s.id)
        assert img.shape == (8, 6, 4, 2) and img.meta["volume_key"] == "echo"
        assert img.meta["image_kind"] == s.kind
        part = "M" if s.kind == "magnitude" else "P"
        for t, echo in enumerate((1, 2)):
            np.testing.assert_array_equal(img.data[..., t], truth[(part, echo)])


def test_ge_private_image_type_splits_magnitude_and_phase(tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    uid = generate_uid()
    vols = {}
    for code, seed in ((0, 1), (1, 2)):
        vols[code] = make_stored((6, 5, 3), seed=seed)
        paths = write_series(tmp_path, vols[code], modality="MR", series_uid=uid, prefix=f"t{code}_",
                             start_instance=1 + 10 * code, extra={"Manufacturer": "GE MEDICAL SYSTEMS"})
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x2F, "SS", code)
            ds.save_as(p)
    stacks = {s.kind: s for s in list_series(tmp_path)}
    assert set(stacks) == {"magnitude", "phase"}
    np.testing.assert_array_equal(read_image(tmp_path, series_uid=stacks["phase"].id).data, vols[1] - 1024.0)


# -------------------------------------------------------------------- several problems


def test_geometry_error_names_every_blocking_problem(tmp_path: Path) -> None:
    step, tilt = 2.0, np.tan(np.radians(12))
    pos = [np.array([0.0, tilt * k * step, k * step]) for k in range(8) if k != 5]
    write_series(tmp_path, make_stored((6, 5, len(pos))), positions=pos, series_uid="1.2.3.99")
    with pytest.raises(GeometryError) as exc:
        read_image(tmp_path)
    text = str(exc.value)
    assert "gantry tilt 12.00 deg" in text and "1 missing slice" in text
    assert "untilted grid" in text and "interpolate onto a regular grid" in text


# ------------------------------------------------------------ series number, gzip, ls


def test_one_uid_two_series_numbers_are_two_stacks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from medmm.cli import main

    uid = "1.2.3.77"
    a, b = make_stored((6, 5, 4), seed=1), make_stored((6, 5, 4), seed=2)
    write_series(tmp_path, a, series_uid=uid, prefix="a", extra={"SeriesNumber": 3})
    write_series(tmp_path, b, series_uid=uid, prefix="b", extra={"SeriesNumber": 4}, start_instance=1)
    stacks = list_series(tmp_path)
    assert len(stacks) == 2 and all(s.shape == (6, 5, 4) and not s.problems for s in stacks)
    assert main(["dicom", "ls", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()[1:]
    assert len(rows) == 2 and all(" 6x5x4 " in r for r in rows) and "duplicate" not in out
    assert "series 3" in rows[0] + rows[1] and "series 4" in rows[0] + rows[1]
    with pytest.raises(GeometryError, match="mixed series number"):
        read_image(tmp_path)
    got = {pydicom.dcmread(read_image(tmp_path, series_uid=s.id).meta["files"][0]).SeriesNumber: s.id for s in stacks}
    np.testing.assert_array_equal(read_image(tmp_path, series_uid=got[4]).data, b - 1024.0)


def test_ls_names_gzipped_dicom_and_how_to_read_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from medmm.cli import main

    paths = write_series(tmp_path, make_stored((6, 5, 3)))
    with open(paths[0], "rb") as fin, gzip.open(tmp_path / "extra.dcm.gz", "wb") as fout:
        fout.write(fin.read())
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["dicom", "ls", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "extra.dcm.gz" in err and "gzip-compressed DICOM" in err and "gunzip" in err
    assert "1 file(s) skipped: not DICOM" in err
    img = read_image(tmp_path)
    assert any("gzip-compressed DICOM" in s for s in img.meta["skipped_files"])


# ------------------------------------------------------------------- palette, big endian


def _palette_big_endian(tmp_path: Path) -> tuple[Path, Path]:
    from pydicom.data import get_testdata_file

    src = get_testdata_file("examples_palette.dcm", download=False)
    ds = pydicom.dcmread(src)
    for colour in ("Red", "Green", "Blue"):  # OW data are stored in the file's byte order
        el = ds[f"{colour}PaletteColorLookupTableData"]
        el.value = np.frombuffer(el.value, "<u2").astype(">u2").tobytes()
    ds["PixelData"].VR = "OB"  # 8-bit pixels: bytes, not swapped words
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    out = tmp_path / "palette_be.dcm"
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    return Path(src), out


def test_palette_colour_big_endian_has_the_right_values(tmp_path: Path) -> None:
    src, be = _palette_big_endian(tmp_path)
    little, big = read_image(src), read_image(be)
    assert big.meta["channels"] == "RGB"
    np.testing.assert_array_equal(big.data, little.data)
    ds = pydicom.dcmread(src)
    lut = np.frombuffer(ds.RedPaletteColorLookupTableData, "<u2")
    assert big.data[..., 0].max() == lut.max() > 255


def test_palette_lut_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    src, be = _palette_big_endian(tmp_path)
    ds = pydicom.dcmread(be)
    ds.RedPaletteColorLookupTableData = ds.RedPaletteColorLookupTableData[:100]
    pydicom.dcmwrite(be, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    with pytest.raises(DicomError) as exc:
        read_image(be)
    assert "RedPaletteColorLookupTableData" in str(exc.value) and be.name in str(exc.value)


# ---------------------------------------------------------------- against dcm2niix, 4D


def _dcm2niix(folder: Path, out: Path) -> tuple[object, np.ndarray | None, np.ndarray | None]:
    import nibabel as nib

    out.mkdir()
    subprocess.run([str(DCM2NIIX), "-z", "y", "-f", "x", "-o", str(out), str(folder)],
                   capture_output=True, check=True, timeout=60)
    nii = nib.load(str(next(out.glob("*.nii.gz"))))
    bval = next(out.glob("*.bval"), None)
    bvec = next(out.glob("*.bvec"), None)
    return nii, (np.loadtxt(bval) if bval else None), (np.loadtxt(bvec) if bvec else None)


def _world_bvecs(affine: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    """FSL bvecs (3, T) back to RAS world directions (T, 3)."""
    m = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    v = np.array(bvecs, dtype=float).reshape(3, -1)
    if np.linalg.det(affine[:3, :3]) > 0:
        v[0] = -v[0]
    return (m @ v).T


def _world_matched(a, b) -> np.ndarray:
    """b's voxels at a's voxel positions (the grids must coincide), per volume."""
    m = np.linalg.inv(b.affine) @ a.affine
    assert np.allclose(m, np.round(m), atol=1e-3), m
    da, db = np.asarray(a.get_fdata()), np.asarray(b.get_fdata())
    idx = np.indices(da.shape[:3]).reshape(3, -1)
    j = np.round(m[:3, :3] @ idx + m[:3, 3:]).astype(int)
    return db[tuple(j)].reshape(*da.shape[:3], *db.shape[3:])


@pytest.mark.skipif(not DCM2NIIX.exists(), reason="dcm2niix is not installed")
@pytest.mark.parametrize(
    "case", ["GE-dti", "Philips-dti", "Canon-dti", "Siemens-dti", "GE-fmri", "GE-dti-row", "GE-dti-coronal",
             "GE-dti-coronal-row"]
)
def test_4d_convert_matches_dcm2niix(tmp_path: Path, case: str) -> None:
    import nibabel as nib

    from medmm.cli import main

    vendor, kind = case.split("-")[:2]
    if kind == "dti":
        orientation = "coronal" if "coronal" in case else "oblique"
        _write_dti(tmp_path / "dcm", vendor, orientation, "ROW" if case.endswith("row") else "COL")
    else:
        write_4d(tmp_path / "dcm", _volumes(3), [{} for _ in range(3)], vendor=vendor, rot=ORIENTATIONS["oblique"])
    assert main(["convert", str(tmp_path / "dcm"), str(tmp_path / "medmm.nii.gz")]) == 0
    ours = nib.load(str(tmp_path / "medmm.nii.gz"))
    ref, bval, bvec = _dcm2niix(tmp_path / "dcm", tmp_path / "ref")
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(ours.get_fdata()), _world_matched(ours, ref))
    if kind == "fmri":
        assert bval is None and not (tmp_path / "medmm.bval").exists()
        return
    our_bval = np.loadtxt(tmp_path / "medmm.bval")
    np.testing.assert_allclose(our_bval, bval)
    ours_w = _world_bvecs(ours.affine, np.loadtxt(tmp_path / "medmm.bvec"))
    ref_w = _world_bvecs(ref.affine, bvec)
    for b, a, r in zip(our_bval, ours_w, ref_w):
        assert _same_direction(a, r) if b > 0 else np.allclose(a, 0), (a, r)
    # and our FSL bvecs are in dcm2niix's voxel frame when the grids agree
    if np.allclose(ours.affine, ref.affine, atol=1e-3):
        for b, a, r in zip(our_bval, np.loadtxt(tmp_path / "medmm.bvec").T, bvec.T):
            assert b == 0 or _same_direction(a, r)


def test_convert_volume_option_and_bval_files(tmp_path: Path) -> None:
    import nibabel as nib

    from medmm.cli import main

    vols = _write_dti(tmp_path / "dcm", "Siemens")
    assert main(["convert", str(tmp_path / "dcm"), str(tmp_path / "v4.nii.gz"), "--volume", "4"]) == 0
    one = nib.load(str(tmp_path / "v4.nii.gz"))
    assert one.shape == (8, 6, 4)
    np.testing.assert_array_equal(one.get_fdata(), vols[4])
    assert np.loadtxt(tmp_path / "v4.bval") == 1000.0
    assert main(["convert", str(tmp_path / "dcm"), str(tmp_path / "bad.nii.gz"), "--volume", "9"]) == 1


# ------------------------------------------------- enhanced per-frame values, fast path


def _frames_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch):
    from medmm.io.dicom import perframe as _perframe
    from medmm.io.dicom import collect_frames

    fast, _ = collect_frames(path)
    assert getattr(fast[0].ds, "_medmm_per_frame", None) is not None  # the byte walker ran

    def refuse(*_a, **_k):
        raise _perframe.PerFrameParseError("forced")

    monkeypatch.setattr(_perframe, "read_per_frame", refuse)
    slow, _ = collect_frames(path)
    assert getattr(slow[0].ds, "_medmm_per_frame", None) is None
    monkeypatch.undo()
    return fast, slow


def _assert_same_frames(fast, slow) -> None:
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a.ipp, b.ipp)
        np.testing.assert_allclose(a.iop, b.iop)
        assert a.spacing == b.spacing and a.slope == b.slope and a.intercept == b.intercept
        assert a.keys == b.keys and a.stack_id == b.stack_id and a.geometry == b.geometry


def _philips_enhanced(path: Path, n: int = 12, implicit: bool = False) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_imaging import write_enhanced

    write_enhanced(path, n, 16)
    if implicit:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=True, little_endian=True)


@pytest.mark.parametrize("implicit", [False, True])
def test_enhanced_fast_per_frame_values_equal_pydicom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      implicit: bool) -> None:
    path = tmp_path / "enh.dcm"
    _philips_enhanced(path, implicit=implicit)
    fast, slow = _frames_both_ways(path, monkeypatch)
    _assert_same_frames(fast, slow)
    assert fast[3].keys["kind"] == "magnitude" and fast[3].keys["diffusion"] == (0.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(fast[3].ipp, [-64.0, -100.0 + 0.6 * 3, 64.0])
    assert fast[3].keys["dimension"] == (1, 4) and fast[3].stack_id == "1"


def test_enhanced_fast_path_on_a_real_philips_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = Path(__import__("nibabel").__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
    if not src.exists():
        pytest.skip("nibabel enhanced MR test file not present")
    path = tmp_path / "mprage.dcm"
    path.write_bytes(gzip.decompress(src.read_bytes()))
    fast, slow = _frames_both_ways(path, monkeypatch)
    _assert_same_frames(fast, slow)


def test_enhanced_damaged_per_frame_sequence_falls_back_to_pydicom(tmp_path: Path) -> None:
    """A sequence length that disagrees with its items: the walker gives up, pydicom reads it."""
    path = tmp_path / "enh.dcm"
    _philips_enhanced(path, n=4)
    good = read_image(path)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"\x00\x52\x30\x92SQ\x00\x00")
    assert at > 0
    length = int.from_bytes(raw[at + 8 : at + 12], "little")
    if length == 0xFFFFFFFF:  # undefined length: break the first item's header instead
        item = raw.find(b"\xfe\xff\x00\xe0", at)
        raw[item + 4 : item + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    else:
        raw[at + 8 : at + 12] = (length + 2).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    from io import BytesIO

    from medmm.io.dicom.perframe import PerFrameParseError, read_per_frame

    with pytest.raises(PerFrameParseError):
        read_per_frame(BytesIO(bytes(raw[at:])), implicit=False)
    try:
        again = read_image(path)
    except DicomError:
        return  # pydicom refuses it too: an error naming the file, never wrong geometry
    np.testing.assert_array_equal(again.data, good.data)
    np.testing.assert_allclose(again.affine, good.affine)


@pytest.mark.parametrize("case", ["GE-dti", "Siemens-dti", "GE-fmri"])
def test_4d_convert_matches_dicom2nifti(tmp_path: Path, case: str) -> None:
    """dicom2nifti reads GE and Siemens 4D (not classic Philips DTI: 'NOT_A_VOLUME')."""
    import warnings

    import nibabel as nib

    dicom2nifti = pytest.importorskip("dicom2nifti")
    from medmm.cli import main

    vendor, kind = case.split("-")
    if kind == "dti":
        _write_dti(tmp_path / "dcm", vendor, "oblique")
    else:
        write_4d(tmp_path / "dcm", _volumes(3), [{} for _ in range(3)], vendor=vendor, rot=ORIENTATIONS["oblique"])
    assert main(["convert", str(tmp_path / "dcm"), str(tmp_path / "medmm.nii.gz")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = dicom2nifti.dicom_series_to_nifti(str(tmp_path / "dcm"), str(tmp_path / "d2n.nii.gz"),
                                                   reorient_nifti=False)
    ours, ref = nib.load(str(tmp_path / "medmm.nii.gz")), nib.load(str(tmp_path / "d2n.nii.gz"))
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(ours.get_fdata()), _world_matched(ours, ref))
    if kind == "dti" and vendor == "Siemens":
        # b-values only: dicom2nifti scales GE's (0043,1039), 10^9 offset included, by |g|^2,
        # and its bvecs for classic Siemens files disagree with dcm2niix's (which ours match,
        # see test_4d_convert_matches_dcm2niix)
        np.testing.assert_allclose(np.loadtxt(tmp_path / "medmm.bval"), result["BVAL"])


def test_4d_meta_and_ls_follow_their_schemas(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    jsonschema = pytest.importorskip("jsonschema")
    from medmm.cli import main

    root = Path(medmm.schemas.__file__).parent
    _write_dti(tmp_path / "dti", "GE")
    _write_fieldmap(tmp_path / "fmap", "Philips")
    meta_schema = json.loads((root / "image_meta.schema.json").read_text())
    jsonschema.validate(read_image(tmp_path / "dti").meta, meta_schema)
    jsonschema.validate(read_image(tmp_path / "dti", volume=1).meta, meta_schema)
    ls_schema = json.loads((root / "dicom_ls.schema.json").read_text())
    assert main(["dicom", "ls", "--json", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for row in rows:
        jsonschema.validate(row, ls_schema)
    assert sorted(r["image_kind"] for r in rows) == ["", "magnitude", "phase"]
    assert sorted(r["volumes"] for r in rows) == ["diffusion+instance", "echo", "echo"]
