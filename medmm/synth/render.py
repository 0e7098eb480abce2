"""Latent evidence rendered into real files: a CT-like DICOM series, a PET NIfTI, a note, vital signs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np




# --------------------------------------------------------------------------- rendering


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    theta = math.radians(rng.uniform(5.0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(theta) * k + (1 - math.cos(theta)) * (k @ k)


def render_volume(z: float, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """A CT-like volume in HU (voxel axes i, j, k) with a lesion whose contrast encodes ``z``."""
    g = np.indices((size, size, size), dtype=np.float32)
    c = (size - 1) / 2.0
    body = (((g[0] - c) / (0.42 * size)) ** 2 + ((g[1] - c) / (0.36 * size)) ** 2) <= 1.0
    vol = np.full((size, size, size), -1000.0, dtype=np.float32)
    vol[body] = 40.0
    spine = (((g[0] - c) / (0.07 * size)) ** 2 + ((g[1] - (c + 0.24 * size)) / (0.07 * size)) ** 2) <= 1.0
    vol[spine] = 650.0
    radius = max(2.0, size / 6.5)
    for _ in range(100):
        centre = rng.uniform(0.25 * size, 0.75 * size, size=3)
        centre[2] = rng.uniform(radius + 1, size - radius - 2)
        if body[tuple(np.round(centre).astype(int))] and not spine[tuple(np.round(centre).astype(int))]:
            break
    lesion = ((g[0] - centre[0]) ** 2 + (g[1] - centre[1]) ** 2 + (g[2] - centre[2]) ** 2) <= radius**2
    lesion &= body & ~spine
    contrast = 60.0 * float(z)
    vol[lesion] += contrast
    vol += rng.normal(0.0, 15.0, size=vol.shape).astype(np.float32)
    return vol, {"centre_ijk": centre.round(3).tolist(), "radius": radius, "contrast_hu": contrast}


def write_dicom_series(
    out: Path,
    vol_hu: np.ndarray,
    affine_lps: np.ndarray,
    pid: str,
    rng: np.random.Generator,
    study_date: str,
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    out.mkdir(parents=True, exist_ok=True)
    seed_str = f"{pid}-{int(rng.integers(1 << 62))}"
    study_uid = generate_uid(entropy_srcs=[seed_str, "study"])
    series_uid = generate_uid(entropy_srcs=[seed_str, "series"])
    frame_uid = generate_uid(entropy_srcs=[seed_str, "frame"])
    ni, nj, nk = vol_hu.shape
    col_dir = affine_lps[:3, 0] / np.linalg.norm(affine_lps[:3, 0])
    row_dir = affine_lps[:3, 1] / np.linalg.norm(affine_lps[:3, 1])
    col_spacing = float(np.linalg.norm(affine_lps[:3, 0]))
    row_spacing = float(np.linalg.norm(affine_lps[:3, 1]))
    slice_step = float(np.linalg.norm(affine_lps[:3, 2]))
    stored = np.clip(np.round(vol_hu + 1024.0), 0, 4095).astype(np.uint16)
    names: list[str] = []
    while len(names) < nk:  # random names: sorting them says nothing about slice order
        name = f"IM{int(rng.integers(10**8)):08d}.dcm"
        if name not in names:
            names.append(name)
    for k in range(nk):
        sop_uid = generate_uid(entropy_srcs=[seed_str, "sop", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = pid
        ds.PatientName = f"SYNTH^{pid}"
        ds.StudyDate = study_date
        ds.Modality = "CT"
        ds.Manufacturer = "MEDMM-SYNTH"
        ds.SeriesDescription = "synthetic abdomen CT"
        ds.BodyPartExamined = "ABDOMEN"
        ds.KVP = 120
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(rng.integers(1, 10_000))  # deliberately unrelated to position
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*col_dir, *row_dir)]
        pos = affine_lps[:3, 3] + k * affine_lps[:3, 2]
        ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
        ds.PixelSpacing = [round(row_spacing, 6), round(col_spacing, 6)]
        ds.SliceThickness = round(slice_step, 6)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = nj, ni
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = j, columns = i
        ds.save_as(out / names[k], enforce_file_format=True)


TUMOR_TEXT = {
    "affirmed": [
        "A {size} cm enhancing mass is seen in the {organ}.",
        "There is a solid lesion in the {organ} concerning for malignancy.",
        "Findings are consistent with a neoplasm of the {organ}.",
    ],
    "possible": [
        "Possible small lesion in the {organ}; malignancy cannot be excluded.",
        "Indeterminate nodule in the {organ}, suspicious for tumor.",
    ],
    "negated": [
        "No evidence of mass in the {organ}.",
        "No suspicious lesion is identified in the {organ}.",
        "The {organ} is negative for malignancy.",
    ],
}
DISEASE_TEXT = {
    "affirmed": [
        "Patient reports worsening shortness of breath and new confusion overnight.",
        "Increasing oxygen requirement and lethargy noted by nursing staff.",
        "Febrile with rigors and appears acutely unwell.",
    ],
    "possible": [
        "Possibly mild dyspnea on exertion; family question early confusion.",
        "May be more drowsy than usual, unclear if clinically significant.",
    ],
    "negated": [
        "Denies shortness of breath, chest pain or confusion.",
        "No fever and no dyspnea reported.",
        "Patient denies any new symptoms and is breathing comfortably.",
    ],
}
FILLER_TEXT = [
    "Bowel loops are unremarkable.",
    "The kidneys enhance symmetrically.",
    "No free fluid.",
    "Mild degenerative change of the lumbar spine.",
    "Gallbladder is unremarkable.",
]


def render_note(
    pid_age: int, sex: str, tumor_cat: str, disease_cat: str, rng: np.random.Generator
) -> str:
    organ = str(rng.choice(["liver", "left kidney", "pancreas", "right kidney"]))
    pick = lambda opts: str(opts[int(rng.integers(len(opts)))])  # noqa: E731
    who = "man" if sex == "M" else "woman"
    hpi = f"{pid_age}-year-old {who} admitted for assessment."
    if disease_cat != "unmentioned":
        hpi += " " + pick(DISEASE_TEXT[disease_cat])
    findings = [pick(FILLER_TEXT)]
    if tumor_cat != "unmentioned":
        findings.append(pick(TUMOR_TEXT[tumor_cat]).format(size=round(float(rng.uniform(1, 5)), 1), organ=organ))
    findings.append(pick(FILLER_TEXT))
    if tumor_cat in ("affirmed", "possible"):
        impression = "Recommend multidisciplinary review and tissue sampling."
    else:
        impression = "No acute abnormality requiring intervention."
    plan = "Continue observation and repeat bloods in the morning."
    return (
        f"HISTORY OF PRESENT ILLNESS:\n{hpi}\n\nFINDINGS:\n{' '.join(findings)}\n\n"
        f"IMPRESSION:\n{impression}\n\nPLAN:\n{plan}\n"
    )


VITAL_SIGNALS = {
    # name: (unit, baseline mean, baseline sd, effect per unit z at the end of the window, noise sd)
    "heart_rate": ("bpm", 78.0, 8.0, 12.0, 3.0),
    "resp_rate": ("/min", 16.0, 2.0, 3.0, 1.0),
    "spo2": ("%", 97.0, 1.0, -1.5, 0.6),
    "sbp": ("mmHg", 124.0, 10.0, -8.0, 4.0),
    "temperature": ("degC", 36.9, 0.25, 0.35, 0.15),
}


def render_vitals(z: float, hours: int, index_time: np.datetime64, rng: np.random.Generator) -> list[tuple]:
    rows = []
    for name, (unit, mean, sd, effect, noise) in VITAL_SIGNALS.items():
        base = rng.normal(mean, sd)
        n_obs = int(rng.integers(hours // 3, hours // 1.5))
        t_hours = np.sort(rng.uniform(0, hours, size=n_obs))
        ramp = t_hours / hours
        values = base + effect * z * ramp + rng.normal(0, noise, size=n_obs)
        if name == "spo2":
            values = np.minimum(values, 100.0)
        for t, v in zip(t_hours, values):
            stamp = index_time - np.timedelta64(int(round((hours - t) * 3600)), "s")
            rows.append((str(stamp), name, round(float(v), 2), unit))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows



def write_pet(path: Path, z: float, size: int, rng: np.random.Generator) -> None:
    """An FDG-PET-like volume (SUV, float32 NIfTI, 4 mm voxels) whose hot spot's uptake encodes ``z``."""
    import nibabel as nib

    g = np.indices((size, size, size), dtype=np.float32)
    c = (size - 1) / 2.0
    body = (((g[0] - c) / (0.45 * size)) ** 2 + ((g[1] - c) / (0.40 * size)) ** 2) <= 1.0
    vol = np.where(body, 1.0, 0.05).astype(np.float32)
    centre = rng.uniform(0.35 * size, 0.65 * size, size=3)
    spot = ((g[0] - centre[0]) ** 2 + (g[1] - centre[1]) ** 2 + (g[2] - centre[2]) ** 2) <= max(1.5, size / 6) ** 2
    vol[spot & body] += max(0.0, 1.5 + 1.2 * float(z))
    vol += rng.normal(0.0, 0.15, size=vol.shape).astype(np.float32) * body
    affine = np.diag([-4.0, -4.0, 4.0, 1.0])
    affine[:3, 3] = -(size - 1) / 2 * np.array([-4.0, -4.0, 4.0])
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
