"""A synthetic multimodal cohort in real file formats, with known truth.

Each patient has two labels, ``tumor`` and ``disease``. The generator first draws *latent
evidence* per modality, conditionally independent given the labels, then renders it into
real files:

======== ===================================================== ==========================
modality tumor evidence                                        disease evidence
======== ===================================================== ==========================
image    contrast of a focal lesion in a CT-like DICOM series  none
notes    a finding sentence: affirmed / possible / negated /   a symptom sentence, same
         not mentioned                                         four categories
vitals   none                                                  a deterioration trend over
                                                               48 h (HR, RR, SpO2, SBP, T)
ehr      a tumour-marker lab (CEA)                             lactate and WBC
======== ===================================================== ==========================

``extra_modalities`` adds declared modalities beyond the four (written to the sidecar
``manifest.modalities.yaml``): ``pet`` (kind ``image``: an FDG-PET-like NIfTI volume whose hot
spot's uptake is tumour evidence) and ``labs`` (kind ``table``: a second table, ``labs.csv``, whose
C-reactive protein is disease evidence); each has its own presence draw and enters the oracle.

Because the evidence is conditionally independent, the Bayes-optimal score for any subset
of modalities is ``sigmoid(logit(prior) + sum of the subset's log-likelihood ratios)``. The
generator writes it to ``oracle.csv`` for every patient, task and subset (``none`` = the
prior alone), so any model's AUROC can be set beside the best achievable.

Everything is a pure function of the seed: the same seed writes byte-identical files.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..records import MODALITIES
from ..records import subset_name as _subset_name

__all__ = ["SynthConfig", "generate_cohort", "subset_name", "all_subsets", "TASKS"]

TASKS = ("tumor", "disease")

# Note finding categories and their likelihoods P(category | label=0), P(category | label=1).
NOTE_CATEGORIES = ("affirmed", "possible", "negated", "unmentioned")
NOTE_LIKELIHOOD = {
    "tumor": {0: (0.06, 0.16, 0.43, 0.35), 1: (0.45, 0.25, 0.14, 0.16)},
    "disease": {0: (0.07, 0.15, 0.45, 0.33), 1: (0.42, 0.26, 0.12, 0.20)},
}
# Mean shift of Gaussian latent evidence z ~ N(mu * label, 1).
MU = {
    ("tumor", "image"): 1.3,
    ("tumor", "cea"): 1.0,
    ("disease", "vitals"): 1.3,
    ("disease", "lactate"): 0.8,
    ("disease", "wbc"): 0.6,
}
LAB_MISSING = 0.05  # chance that one lab value is absent from an EHR row

#: the extra modalities the generator can add: name -> (kind, task it carries evidence of, mean shift)
EXTRA_MODALITIES: dict[str, tuple[str, str, float]] = {
    "pet": ("image", "tumor", 1.1),
    "labs": ("table", "disease", 0.9),
}


def subset_name(mods: tuple[str, ...] | list[str]) -> str:
    """Canonical name of a modality subset, e.g. ``'image+vitals'`` (``'none'`` if empty; see
    :func:`medmm.records.subset_name`)."""
    return _subset_name(mods)


def all_subsets(include_empty: bool = False, modalities: tuple[str, ...] = MODALITIES) -> list[str]:
    """Every subset of ``modalities`` (default: the four), by canonical name."""
    out = []
    for r in range(0 if include_empty else 1, len(modalities) + 1):
        out.extend(subset_name(c) for c in itertools.combinations(modalities, r))
    return out


@dataclass
class SynthConfig:
    """Settings of the synthetic cohort."""

    n_patients: int = 300
    seed: int = 0
    missing_rate: float = 0.2
    image_size: int = 32
    image_format: str = "dicom"  # or "nifti"
    oblique_fraction: float = 0.2
    prevalence_tumor: float = 0.4
    prevalence_disease: float = 0.35
    split_fractions: tuple[float, float, float] = (0.55, 0.15, 0.30)
    vitals_hours: int = 48
    outcomes: bool = False  # also a tumour grade and death with follow-up (medmm.synth.outcomes)
    extra_modalities: tuple[str, ...] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        return (*MODALITIES, *self.extra_modalities)


# --------------------------------------------------------------------------- latent draw


def _draw_latents(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = cfg.n_patients
    lat: dict[str, np.ndarray] = {}
    lat["tumor"] = (rng.random(n) < cfg.prevalence_tumor).astype(int)
    lat["disease"] = (rng.random(n) < cfg.prevalence_disease).astype(int)
    lat["z_image"] = rng.normal(MU[("tumor", "image")] * lat["tumor"], 1.0)
    lat["z_cea"] = rng.normal(MU[("tumor", "cea")] * lat["tumor"], 1.0)
    lat["z_vitals"] = rng.normal(MU[("disease", "vitals")] * lat["disease"], 1.0)
    lat["z_lactate"] = rng.normal(MU[("disease", "lactate")] * lat["disease"], 1.0)
    lat["z_wbc"] = rng.normal(MU[("disease", "wbc")] * lat["disease"], 1.0)
    for task in TASKS:
        cats = np.empty(n, dtype=object)
        u = rng.random(n)
        for y in (0, 1):
            cum = np.cumsum(NOTE_LIKELIHOOD[task][y])
            idx = np.searchsorted(cum, u, side="right").clip(0, 3)
            sel = lat[task] == y
            cats[sel] = np.array(NOTE_CATEGORIES, dtype=object)[idx[sel]]
        lat[f"note_{task}"] = cats
    for lab in ("cea", "lactate", "wbc"):
        lat[f"has_{lab}"] = rng.random(n) >= LAB_MISSING
    present = rng.random((n, len(MODALITIES))) >= cfg.missing_rate
    for m, col in zip(MODALITIES, present.T):
        lat[f"present_{m}"] = col
    if cfg.extra_modalities:  # a stream of their own: the default modalities' draws do not change
        xrng = np.random.default_rng([cfg.seed, 0x6D6D])
        for m in cfg.extra_modalities:
            _, task, mu = EXTRA_MODALITIES[m]
            lat[f"z_{m}"] = xrng.normal(mu * lat[task], 1.0)
            lat[f"present_{m}"] = xrng.random(n) >= cfg.missing_rate
    return lat


def _gauss_llr(z: np.ndarray, mu: float) -> np.ndarray:
    return mu * z - mu * mu / 2.0


def _llrs(lat: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """Log-likelihood ratio of each (task, modality) evidence; 0 where a modality says nothing."""
    n = len(lat["tumor"])
    zero = np.zeros(n)
    out: dict[tuple[str, str], np.ndarray] = {}
    for task in TASKS:
        lk = NOTE_LIKELIHOOD[task]
        table = {c: math.log(lk[1][i] / lk[0][i]) for i, c in enumerate(NOTE_CATEGORIES)}
        out[(task, "notes")] = np.array([table[c] for c in lat[f"note_{task}"]])
    out[("tumor", "image")] = _gauss_llr(lat["z_image"], MU[("tumor", "image")])
    out[("tumor", "vitals")] = zero
    out[("tumor", "ehr")] = np.where(lat["has_cea"], _gauss_llr(lat["z_cea"], MU[("tumor", "cea")]), 0.0)
    out[("disease", "image")] = zero
    out[("disease", "vitals")] = _gauss_llr(lat["z_vitals"], MU[("disease", "vitals")])
    out[("disease", "ehr")] = np.where(
        lat["has_lactate"], _gauss_llr(lat["z_lactate"], MU[("disease", "lactate")]), 0.0
    ) + np.where(lat["has_wbc"], _gauss_llr(lat["z_wbc"], MU[("disease", "wbc")]), 0.0)
    for m, (_, evidence_of, mu) in EXTRA_MODALITIES.items():
        if f"z_{m}" in lat:
            for task in TASKS:
                out[(task, m)] = _gauss_llr(lat[f"z_{m}"], mu) if task == evidence_of else zero
    return out


def oracle_scores(lat: dict[str, np.ndarray], cfg: SynthConfig) -> list[dict[str, Any]]:
    """Rows ``(patient index, task, subset, score)`` of the Bayes-optimal posterior."""
    llr = _llrs(lat)
    rows = []
    prior = {"tumor": cfg.prevalence_tumor, "disease": cfg.prevalence_disease}
    for task in TASKS:
        base = math.log(prior[task] / (1 - prior[task]))
        for subset in all_subsets(include_empty=True, modalities=cfg.modalities):
            mods = [] if subset == "none" else subset.split("+")
            logit = base + sum((llr[(task, m)] for m in mods), np.zeros(len(lat["tumor"])))
            rows.append({"task": task, "subset": subset, "score": 1.0 / (1.0 + np.exp(-logit))})
    return rows


# --------------------------------------------------------------------------- rendering


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
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


def _write_dicom_series(
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


_TUMOR_TEXT = {
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
_DISEASE_TEXT = {
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
_FILLER = [
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
        hpi += " " + pick(_DISEASE_TEXT[disease_cat])
    findings = [pick(_FILLER)]
    if tumor_cat != "unmentioned":
        findings.append(pick(_TUMOR_TEXT[tumor_cat]).format(size=round(float(rng.uniform(1, 5)), 1), organ=organ))
    findings.append(pick(_FILLER))
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


# --------------------------------------------------------------------------- driver


def _render_patient(out: Path, cfg: SynthConfig, p: dict[str, Any]) -> tuple[dict, dict, dict | None]:
    """Write one patient's files; return its manifest row, truth row and EHR row (or None).

    Everything random comes from the patient's own stream ``(seed, index)``, so patients can be
    rendered in any order, in any process, and give the same bytes.
    """
    import pandas as pd

    pid = p["pid"]
    prng = np.random.default_rng([cfg.seed, p["index"]])  # each patient its own stream
    row: dict[str, Any] = {
        "patient_id": pid,
        "split": p["split"],
        "index_time": str(p["index_time"]),
        "site": p["site"],
        "sex": p["sex"],
    }
    t_row: dict[str, Any] = {"patient_id": pid}
    # image
    vol, lesion = render_volume(p["z_image"], cfg.image_size, prng)
    spacing = np.array([1.5, 1.5, 2.0])
    rot = _rotation(prng, 20.0) if prng.random() < cfg.oblique_fraction else np.eye(3)
    lps = np.eye(4)
    lps[:3, :3] = rot @ np.diag(spacing)
    lps[:3, 3] = rot @ (-(np.array(vol.shape) - 1) / 2 * spacing)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    t_row.update({"affine_ras": json.dumps(np.round(ras, 6).tolist()), "oblique": bool(not np.allclose(rot, np.eye(3))), **{f"lesion_{k}": json.dumps(v) if isinstance(v, list) else v for k, v in lesion.items()}})
    if p["present_image"]:
        if cfg.image_format == "dicom":
            rel = f"images/{pid}"
            date = str(p["index_time"])[:10].replace("-", "")
            _write_dicom_series(out / rel, vol, lps, pid, prng, date)
        else:
            import nibabel as nib

            rel = f"images/{pid}.nii.gz"
            img = nib.Nifti1Image(np.round(vol).astype(np.int16), ras)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, str(out / rel))
        row["image_path"] = rel
    else:
        row["image_path"] = ""
    # notes
    if p["present_notes"]:
        rel = f"notes/{pid}.txt"
        text = render_note(int(p["age"]), str(p["sex"]), p["note_tumor"], p["note_disease"], prng)
        (out / rel).write_text(text, encoding="utf-8")
        row["notes_path"] = rel
    else:
        row["notes_path"] = ""
    # vitals
    if p["present_vitals"]:
        rel = f"vitals/{pid}.csv"
        vrows = render_vitals(p["z_vitals"], cfg.vitals_hours, p["index_time"], prng)
        pd.DataFrame(vrows, columns=["time", "signal", "value", "unit"]).to_csv(out / rel, index=False)
        row["vitals_path"] = rel
    else:
        row["vitals_path"] = ""
    # ehr
    ehr_row = None
    if p["present_ehr"]:
        ehr_row = {
            "patient_id": pid,
            "age [years]": int(p["age"]),
            "sex": p["sex"],
            "smoking": str(prng.choice(["never", "former", "current"], p=[0.5, 0.3, 0.2])),
            "sodium [mmol/L]": round(float(prng.normal(139, 3)), 1),
            "hemoglobin [g/dL]": round(float(prng.normal(13.2, 1.5)), 1),
            "cea [ng/mL]": round(float(np.exp(0.9 + 0.45 * p["z_cea"])), 3) if p["has_cea"] else None,
            "lactate [mmol/L]": round(float(np.exp(0.25 + 0.3 * p["z_lactate"])), 3) if p["has_lactate"] else None,
            "wbc [10^9/L]": round(float(np.exp(2.0 + 0.25 * p["z_wbc"])), 3) if p["has_wbc"] else None,
        }
        row["ehr_path"] = "ehr.csv"
    else:
        row["ehr_path"] = ""
    extra_rows = {}
    for m in cfg.extra_modalities:
        xrng = np.random.default_rng([cfg.seed, p["index"], 0x6D6D])  # not the patient's default stream
        t_row[f"z_{m}"] = float(p[f"z_{m}"])
        if not p[f"present_{m}"]:
            row[f"{m}_path"] = ""
            continue
        if m == "pet":
            rel = f"pet/{pid}.nii.gz"
            _write_pet(out / rel, float(p["z_pet"]), max(8, cfg.image_size // 2), xrng)
            row[f"{m}_path"] = rel
        elif m == "labs":
            extra_rows[m] = {
                "patient_id": pid,
                "crp [mg/L]": round(float(np.exp(1.6 + 0.55 * p["z_labs"])), 3),
                "albumin [g/L]": round(float(xrng.normal(38, 4)), 1),
                "creatinine [umol/L]": round(float(np.exp(xrng.normal(4.4, 0.2))), 1),
            }
            row[f"{m}_path"] = "labs.csv"
    if extra_rows:
        ehr_row = {"_ehr": ehr_row, **extra_rows}
    row["label_tumor"] = int(p["tumor"])
    row["label_disease"] = int(p["disease"])
    for key in ("z_image", "z_cea", "z_vitals", "z_lactate", "z_wbc", "note_tumor", "note_disease"):
        t_row[key] = p[key].item() if hasattr(p[key], "item") else p[key]
    return row, t_row, ehr_row



def _write_pet(path: Path, z: float, size: int, rng: np.random.Generator) -> None:
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


def _render_chunk(out: Path, cfg: SynthConfig, chunk: list[dict[str, Any]]) -> list[tuple]:
    return [_render_patient(out, cfg, p) for p in chunk]


def _pool_context():
    """``fork`` when nothing here runs threads that a fork could catch holding a lock (torch's,
    MLflow's): the workers start at once with this process's imports. Otherwise ``forkserver``,
    preloaded with what the workers import, so that they do not each pay for it."""
    import multiprocessing as mp
    import sys

    if "fork" in mp.get_all_start_methods() and not {"torch", "mlflow", "ray"} & set(sys.modules):
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "pandas", "nibabel", "pydicom"])
    return ctx


def _render_all(out: Path, cfg: SynthConfig, patients: Any, n: int, workers: int, bar: Any):
    """Rendered patients in order, from this process or from ``workers`` processes."""
    if workers <= 1 or n < 2:
        for p in patients:
            yield _render_patient(out, cfg, p)
            bar.update(1)
        return
    import itertools
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    size = max(1, min(32, n // (workers * 4)))
    chunks = iter(lambda: list(itertools.islice(patients, size)), [])
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        for done in pool.map(partial(_render_chunk, out, cfg), chunks):
            yield from done
            bar.update(len(done))


def generate_cohort(
    out: str | Path,
    *,
    n_patients: int = 300,
    seed: int = 0,
    missing_rate: float = 0.2,
    image_size: int = 32,
    image_format: str = "dicom",
    progress: bool = True,
    workers: int = 1,
    **kwargs: Any,
) -> Path:
    """Write a synthetic cohort under ``out`` and return the manifest's path.

    Files written: ``manifest.csv``, ``images/<pid>/`` (DICOM series) or
    ``images/<pid>.nii.gz``, ``notes/<pid>.txt``, ``vitals/<pid>.csv``, ``ehr.csv``,
    ``oracle.csv`` (Bayes-optimal scores), ``truth.csv`` (latent evidence and geometry) and
    ``synth_config.json``. ``workers`` > 1 renders patients in that many processes (0: one
    per CPU); the files do not depend on it.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if image_format not in ("dicom", "nifti"):
        raise ValueError(f"image_format must be 'dicom' or 'nifti', got {image_format!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 voxels, got {image_size}")
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per CPU) or more, got {workers}")
    workers = workers or os.cpu_count() or 1
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate}")
    cfg = SynthConfig(
        n_patients=n_patients, seed=seed, missing_rate=missing_rate, image_size=image_size,
        image_format=image_format, **kwargs,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = np.random.default_rng(cfg.seed)
    lat = _draw_latents(cfg, root)
    n = cfg.n_patients
    pids = [f"P{i:05d}" for i in range(n)]

    # stratified split by label combination
    split = np.empty(n, dtype=object)
    strata = lat["tumor"] * 2 + lat["disease"]
    f_train, f_val, _ = cfg.split_fractions
    for s in np.unique(strata):
        idx = root.permutation(np.flatnonzero(strata == s))
        a, b = round(len(idx) * f_train), round(len(idx) * (f_train + f_val))
        split[idx[:a]], split[idx[a:b]], split[idx[b:]] = "train", "val", "test"

    age = np.clip(root.normal(62, 13, n), 18, 95).round().astype(int)
    sex = np.where(root.random(n) < 0.5, "F", "M")
    site = root.choice(["north", "south", "east"], size=n)
    days = root.integers(0, 365, n)
    index_times = [np.datetime64("2024-01-01T08:00:00") + np.timedelta64(int(d), "D") for d in days]

    for dirname in ("images", "notes", "vitals"):
        (out / dirname).mkdir(exist_ok=True)
    patients = ({"index": i, "pid": pids[i], "split": split[i], "index_time": index_times[i], "site": site[i],
                 "sex": sex[i], "age": age[i], **{k: v[i] for k, v in lat.items()}} for i in range(n))
    unknown = [m for m in cfg.extra_modalities if m not in EXTRA_MODALITIES]
    if unknown:
        raise ValueError(f"unknown extra modalities {unknown}; choose from {sorted(EXTRA_MODALITIES)}")
    manifest, truth, ehr_rows = [], [], []
    extra_tables: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.extra_modalities
                                                      if EXTRA_MODALITIES[m][0] == "table"}
    with tqdm(total=n, desc="synth patients", disable=not progress, unit="pt") as bar:
        for row, t_row, ehr_row in _render_all(out, cfg, patients, n, workers, bar):
            manifest.append(row)
            truth.append(t_row)
            if isinstance(ehr_row, dict) and "_ehr" in ehr_row:
                for m, r in ehr_row.items():
                    if m != "_ehr":
                        extra_tables[m].append(r)
                ehr_row = ehr_row["_ehr"]
            if ehr_row is not None:
                ehr_rows.append(ehr_row)

    pd.DataFrame(ehr_rows).to_csv(out / "ehr.csv", index=False)
    for m, rows in extra_tables.items():
        pd.DataFrame(rows, columns=["patient_id", "crp [mg/L]", "albumin [g/L]", "creatinine [umol/L]"]).to_csv(
            out / f"{m}.csv", index=False)
    if cfg.extra_modalities:
        import yaml

        decl = {m: {"kind": EXTRA_MODALITIES[m][0], "description": f"synthetic {m} ({EXTRA_MODALITIES[m][1]} evidence)"}
                for m in cfg.extra_modalities}
        (out / "manifest.modalities.yaml").write_text(yaml.safe_dump({"modalities": decl}, sort_keys=False))
    pd.DataFrame(truth).to_csv(out / "truth.csv", index=False)
    orc = []
    for r in oracle_scores(lat, cfg):
        for i, pid in enumerate(pids):
            orc.append((pid, r["task"], r["subset"], round(float(r["score"][i]), 8)))
    pd.DataFrame(orc, columns=["patient_id", "task", "subset", "score"]).to_csv(out / "oracle.csv", index=False)
    if cfg.outcomes:
        from .outcomes import add_outcomes

        add_outcomes(out, manifest, lat, cfg, pids)
    (out / "synth_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    mpath = out / "manifest.csv"
    pd.DataFrame(manifest).to_csv(mpath, index=False)
    return mpath


def compare_to_oracle(predictions: Any, oracle_path: str | Path, tasks: tuple[str, ...] = TASKS) -> dict[str, dict[str, Any]]:
    """Set a model's held-out AUROC beside the oracle's.

    ``predictions`` has columns ``patient_id``, ``pattern`` (the modalities each patient
    actually has, as a subset name) and per task ``label_<t>`` and ``prob_<t>``. Returns per
    task: ``auroc``, ``auprc``, ``oracle_auroc`` (the oracle given the modalities each
    patient has: the best any model can do on this data), ``oracle_auroc_no_missing`` (as if
    nothing were missing), ``best_single_modality_oracle_auroc`` and its modality.
    """
    import pandas as pd

    from ..evaluate.metrics import auroc, binary_metrics

    orc = pd.read_csv(oracle_path, dtype={"patient_id": str})
    full = max(orc["subset"].unique(), key=lambda s: len(s.split("+")))
    mods = tuple(full.split("+"))
    out: dict[str, dict[str, Any]] = {}
    for t in tasks:
        o = orc[orc["task"] == t].set_index(["patient_id", "subset"])["score"]
        y = predictions[f"label_{t}"].to_numpy(float)
        ids = predictions["patient_id"].astype(str).tolist()
        pats = predictions["pattern"].tolist()
        res = binary_metrics(y, predictions[f"prob_{t}"])
        res["oracle_auroc"] = auroc(y, [o[(i, p)] for i, p in zip(ids, pats)])
        res["oracle_auroc_no_missing"] = auroc(y, [o[(i, full)] for i in ids])
        singles = {}
        for m in mods:
            singles[m] = auroc(y, [o[(i, m if m in p.split("+") else "none")] for i, p in zip(ids, pats)])
        best = max(singles, key=lambda k: -1 if np.isnan(singles[k]) else singles[k])
        res["best_single_modality_oracle_auroc"] = singles[best]
        res["best_single_modality"] = best
        res["single_modality_oracle_auroc"] = singles
        out[t] = res
    return out
