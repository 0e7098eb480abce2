"""The driver: one patient's files, patients rendered in processes, the cohort's tables and manifest."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .latent import EXTRA_MODALITIES, SynthConfig, draw_latents
from .oracle import oracle_scores
from .render import random_rotation, write_dicom_series, write_pet, render_note, render_vitals, render_volume

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from tqdm.auto import tqdm



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
    rot = random_rotation(prng, 20.0) if prng.random() < cfg.oblique_fraction else np.eye(3)
    lps = np.eye(4)
    lps[:3, :3] = rot @ np.diag(spacing)
    lps[:3, 3] = rot @ (-(np.array(vol.shape) - 1) / 2 * spacing)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    t_row.update({"affine_ras": json.dumps(np.round(ras, 6).tolist()), "oblique": bool(not np.allclose(rot, np.eye(3))),
                  **{f"lesion_{k}": json.dumps(v) if isinstance(v, list) else v for k, v in lesion.items()}})
    if p["present_image"]:
        if cfg.image_format == "dicom":
            rel = f"images/{pid}"
            date = str(p["index_time"])[:10].replace("-", "")
            write_dicom_series(out / rel, vol, lps, pid, prng, date)
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
            write_pet(out / rel, float(p["z_pet"]), max(8, cfg.image_size // 2), xrng)
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


def _render_chunk(out: Path, cfg: SynthConfig, chunk: list[dict[str, Any]]) -> list[tuple]:
    return [_render_patient(out, cfg, p) for p in chunk]


def _pool_context() -> BaseContext:
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


def _render_all(out: Path, cfg: SynthConfig, patients: Iterator[dict[str, Any]], n: int, workers: int,
                bar: tqdm) -> Iterator[tuple[dict, dict, dict | None]]:
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
    lat = draw_latents(cfg, root)
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
