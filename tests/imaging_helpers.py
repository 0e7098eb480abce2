"""Helpers for the imaging tests: write small DICOM series with known geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def rotation(axis: tuple[float, float, float], deg: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    t = np.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


ORIENTATIONS = {
    "axial": np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]).T,  # columns: row dir, col dir, normal
    "coronal": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T,
    "sagittal": np.array([[0, 1.0, 0], [0, 0, -1], [-1, 0, 0]]).T,
    "oblique": rotation((0.3, 0.5, 0.8), 23.0),
}


def make_stored(shape: tuple[int, int, int], seed: int = 0, high: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, size=shape).astype(np.uint16)


def write_series(
    out: Path,
    stored: np.ndarray,
    *,
    rot: np.ndarray | None = None,
    spacing: tuple[float, float, float] = (0.7, 0.8, 2.5),
    origin: tuple[float, float, float] = (-40.0, -30.0, 12.0),
    positions: list[np.ndarray] | None = None,
    reverse: bool = False,
    shuffle: int | None = 0,
    transfer_syntax: str | None = None,
    slope: float | list[float] = 1.0,
    intercept: float | list[float] = -1024.0,
    bits_stored: int = 12,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    modality: str = "CT",
    series_uid: str | None = None,
    extra: dict[str, Any] | None = None,
    per_slice: list[dict[str, Any]] | None = None,
    start_instance: int = 1,
    prefix: str = "f",
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``stored`` (i, j, k) as single-frame files; returns the paths in slice order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    out.mkdir(parents=True, exist_ok=True)
    rot = ORIENTATIONS["axial"] if rot is None else rot
    row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    if reverse:
        normal = -normal
    ni, nj, nk = stored.shape
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    names = [f"{prefix}{n:04d}.dcm" for n in range(nk)]
    if shuffle is not None:
        names = list(np.random.default_rng(shuffle).permutation(names))
    paths = []
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    for k in range(nk):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = generate_uid()
        ds.PatientID = "PAT001"
        ds.PatientName = "DOE^JANE"
        ds.PatientBirthDate = "19600102"
        ds.StudyDate = "20200315"
        ds.SeriesDescription = "test series"
        ds.Modality = modality
        ds.Manufacturer = "TEST"
        ds.KVP = 120
        ds.InstanceNumber = start_instance + (nk - k if shuffle is not None else k)
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_dir, *col_dir)]
        if positions is not None:
            pos = positions[k]
        else:
            pos = np.asarray(origin) + k * spacing[2] * normal
        ds.ImagePositionPatient = [round(float(v), 6) for v in pos]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (j), column spacing (i)
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = nj, ni
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = intercept[k] if isinstance(intercept, list) else intercept
        ds.RescaleSlope = slope[k] if isinstance(slope, list) else slope
        apply_vendor_tags(ds, extra or {})
        apply_vendor_tags(ds, (per_slice or [{}] * nk)[k])
        plane = np.ascontiguousarray(stored[:, :, k].T)
        ds.PixelData = plane.astype(np.int16 if signed else np.uint16).tobytes()
        if transfer_syntax is not None and transfer_syntax != ExplicitVRLittleEndian:
            if transfer_syntax == "1.2.840.10008.1.2.1.99":  # deflate: a dataset-level syntax
                ds.file_meta.TransferSyntaxUID = transfer_syntax
            elif transfer_syntax == "1.2.840.10008.1.2":
                ds.file_meta.TransferSyntaxUID = transfer_syntax
            else:
                ds.compress(transfer_syntax, plane.astype(np.int16 if signed else np.uint16))
        p = out / names[k]
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def sitk_read(folder: Path):
    """SimpleITK's image of a series folder: ``(array[i, j, k], affine LPS index->world)``."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img).astype(np.float64).transpose(2, 1, 0)
    d = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    aff = np.eye(4)
    aff[:3, :3] = d
    aff[:3, 3] = img.GetOrigin()
    return arr, aff


def assert_same_as_sitk(image, folder: Path, tol: float = 1e-3) -> None:
    """Voxels and corner voxel centres of ``image`` equal SimpleITK's for ``folder``."""
    arr, aff_lps = sitk_read(folder)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    ours_lps = ras_to_lps @ image.affine
    m = np.linalg.inv(aff_lps) @ ours_lps  # our index -> sitk index
    assert np.allclose(m, np.round(m), atol=1e-4), m
    data = np.asarray(image.data)
    assert data.shape == arr.shape or sorted(data.shape) == sorted(arr.shape)
    idx = np.indices(data.shape).reshape(3, -1)
    sidx = np.round(m[:3, :3] @ idx + m[:3, 3:]).astype(int)
    assert np.all(sidx >= 0) and np.all(sidx < np.array(arr.shape)[:, None])
    assert np.max(np.abs(data.reshape(-1) - arr[tuple(sidx)])) <= tol
    import itertools

    for corner in itertools.product(*[(0, s - 1) for s in data.shape]):
        c = np.array([*corner, 1.0])
        ours = ours_lps @ c
        s = np.round(m @ c)
        theirs = aff_lps @ s
        assert np.max(np.abs(ours[:3] - theirs[:3])) <= tol


VENDORS = {
    "GE": "GE MEDICAL SYSTEMS",
    "Philips": "Philips Medical Systems",
    "Siemens": "SIEMENS",
    "Canon": "Canon Medical Systems",
    "Siemens-CSA": "SIEMENS",  # gradients only in the CSA image header
}


def _private(ds: Any, group: int, creator: str, elements: dict[int, tuple[str, Any]]) -> None:
    block = ds.private_block(group, creator, create=True)
    for offset, (vr, value) in elements.items():
        block.add_new(offset, vr, value)


def siemens_csa(tags: dict[str, tuple[str, list[Any]]]) -> bytes:
    """A Siemens CSA2 header (``SV10``) holding ``name -> (VR, values)``, as scanners write it."""
    import struct

    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, (vr, values) in tags.items():
        out.append(struct.pack("<64si4siii", name.encode(), len(values), vr.encode(), 0, len(values), 77))
        for v in values:
            text = (f"{v:.8f}" if isinstance(v, float) else str(v)).encode() + b"\x00"
            padded = text + b"\x00" * (-len(text) % 4)
            out.append(struct.pack("<4i", len(text), len(text), 77, len(text)) + padded)
    return b"".join(out)


def diffusion_tags(vendor: str, b: float, g_lps: np.ndarray, rot: np.ndarray, phase: str = "COL") -> dict[str, Any]:
    """Per-file header fields of one diffusion volume as ``vendor`` stores them in classic MR.

    ``g_lps`` is the gradient direction in patient (LPS) coordinates. Philips stores it in
    (0018,9089) and private tags, Siemens in (0019,100E) and its CSA image header, GE
    (private tags) and Canon (0018,9089) along the image's (frequency, phase, slice) axes,
    with the signs dcm2niix assumes.
    """
    g_lps = np.asarray(g_lps, dtype=float)
    if vendor in ("GE", "Canon"):
        r = rot.T @ g_lps
        g_ge = np.array([r[0], r[1], -r[2]]) if phase == "COL" else np.array([-r[1], r[0], -r[2]])
        if int(np.argmax(np.abs(rot[:, 2]))) == 1:  # coronal slices: y reversed
            g_ge[1] = -g_ge[1]
        if vendor == "Canon":  # the standard fields, but in GE's logical frame
            tags = {"DiffusionBValue": float(b), "InPlanePhaseEncodingDirection": phase}
            if b > 0:
                tags["DiffusionGradientOrientation"] = [float(v) for v in g_ge]
            return tags
        return {"_ge": (b, g_ge), "InPlanePhaseEncodingDirection": phase}
    if vendor.startswith("Siemens"):
        return {"_siemens" if vendor == "Siemens" else "_siemens_csa": (b, g_lps)}
    tags: dict[str, Any] = {"DiffusionBValue": float(b)}
    if b > 0:
        tags["DiffusionGradientOrientation"] = [float(v) for v in g_lps]
    if vendor == "Philips":
        tags["_philips"] = (b, g_lps)
    return tags


def apply_vendor_tags(ds: Any, tags: dict[str, Any]) -> None:
    """Set the plain and the vendor-private fields made by :func:`diffusion_tags`."""
    for key, v in tags.items():
        if key == "_ge":
            b, g = v
            _private(ds, 0x0043, "GEMS_PARM_01", {0x39: ("IS", [int(b) + 1000000000, 8, 0, 0])})
            _private(ds, 0x0019, "GEMS_ACQU_01", {0xBB: ("DS", f"{g[0]:.6f}"), 0xBC: ("DS", f"{g[1]:.6f}"),
                                                   0xBD: ("DS", f"{g[2]:.6f}")})
        elif key in ("_siemens", "_siemens_csa"):
            b, g = v
            csa = {"B_value": ("IS", [int(b)])}
            if b > 0:
                csa["DiffusionGradientDirection"] = ("FD", [float(x) for x in g])
            _private(ds, 0x0029, "SIEMENS CSA HEADER", {0x10: ("OB", siemens_csa(csa))})
            if key == "_siemens_csa":
                continue
            elements = {0x0C: ("IS", int(b))}
            if b > 0:
                elements[0x0E] = ("FD", [float(x) for x in g])
            _private(ds, 0x0019, "SIEMENS MR HEADER", elements)
        elif key == "_philips":
            b, g = v
            _private(ds, 0x2001, "Philips Imaging DD 001", {0x03: ("FL", float(b))})
            _private(ds, 0x2005, "Philips MR Imaging DD 001", {0xB0: ("FL", float(g[0])), 0xB1: ("FL", float(g[1])),
                                                               0xB2: ("FL", float(g[2]))})
        else:
            setattr(ds, key, v)


def write_4d(
    out: Path,
    volumes: list[np.ndarray],
    tags: list[dict[str, Any]],
    *,
    vendor: str = "GE",
    rot: np.ndarray | None = None,
    interleaved: bool = False,
    series_uid: str | None = None,
    **options: Any,
) -> list[list[Path]]:
    """Write a classic (one file per slice) 4D MR series: volume t gets header fields ``tags[t]``.

    Instance numbers run volume after volume, or slice after slice when ``interleaved``
    (as Philips exports); file names are shuffled. Returns the paths per volume.
    """
    from pydicom.uid import generate_uid

    series_uid = series_uid or generate_uid()
    study = generate_uid()
    nt, nk = len(volumes), volumes[0].shape[2]
    paths = []
    for t, (vol, extra) in enumerate(zip(volumes, tags)):
        per_slice = []
        for k in range(nk):
            inst = 1 + (k * nt + t if interleaved else t * nk + k)
            per_slice.append({"InstanceNumber": inst})
        base = {"Manufacturer": VENDORS[vendor], "RepetitionTime": 2000.0, "EchoTime": 80.0, **extra}
        paths.append(
            write_series(out, vol, rot=rot, modality="MR", series_uid=series_uid, study_uid=study, extra=base,
                         per_slice=per_slice, prefix=f"v{t:03d}_", shuffle=t, intercept=0.0, **options)
        )
    return paths
