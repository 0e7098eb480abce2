"""``medmm preprocess``: fills the cache training reads, reports bad files, resumes after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medmm.preprocess.cache import VolumeCache


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medmm", *args], capture_output=True, text=True, timeout=300, **kw)


def _n_images(manifest: Path) -> int:
    import pandas as pd

    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    return int((df["image_path"] != "").sum())


def test_preprocess_fills_the_cache_then_only_hits(tiny_cohort, tmp_path):
    cache = tmp_path / "cache"
    first = _cli("preprocess", str(tiny_cohort), "preprocess.image.spatial_size=[16,16,16]", "--cache", str(cache),
                 "--workers", "2", "--quiet")
    assert first.returncode == 0, first.stderr
    n = _n_images(tiny_cohort)
    report = json.loads((cache / "preprocess_report.json").read_text())
    assert report["images"] == n and report["computed"] == n and report["error"] == 0
    assert len(VolumeCache(cache)) == n
    again = _cli("preprocess", str(tiny_cohort), "preprocess.image.spatial_size=[16,16,16]", "--cache", str(cache),
                 "--quiet")
    assert again.returncode == 0 and "0 preprocessed, %d already cached" % n in again.stdout


def test_training_reads_the_cache_preprocess_filled(tiny_cohort, tmp_path):
    from medmm.config import load_config
    from medmm.models import build_preprocessor
    from medmm.preprocess.cache import preprocess_cached
    from medmm.cohort import load_cohort

    cache = tmp_path / "cache"
    assert _cli("preprocess", str(tiny_cohort), "--cache", str(cache), "--quiet").returncode == 0
    cfg = load_config({"cohort": {"manifest": str(tiny_cohort)}})
    step = build_preprocessor(cfg.model_config_for(("tumor", "disease")), preprocess=cfg.preprocess).steps["image"].fit()
    vc = VolumeCache(cache)
    for rec in load_cohort(tiny_cohort, progress=False):
        if rec.present["image"]:
            preprocess_cached(rec.image.source, step, vc)
    assert vc.misses == 0 and vc.hits == _n_images(tiny_cohort)  # the keys training computes are there


def test_an_unreadable_image_is_a_problem_not_a_crash(tiny_cohort, tmp_path):
    import pandas as pd

    shutil.copytree(tiny_cohort.parent, tmp_path / "c")
    manifest = tmp_path / "c" / "manifest.csv"
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    row = df[df["image_path"] != ""].iloc[0]
    for f in (manifest.parent / row["image_path"]).iterdir():
        f.write_bytes(b"garbage")
    res = _cli("preprocess", str(manifest), "--cache", str(tmp_path / "cache"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "1 unreadable" in res.stdout and row["patient_id"] in res.stdout
    assert _cli("preprocess", str(manifest), "--cache", str(tmp_path / "cache"), "--quiet",
                "--strict").returncode == 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_preprocess_resumes_after_sigkill(tmp_path):
    from medmm.synth import generate_cohort

    manifest = generate_cohort(tmp_path / "c", n_patients=30, seed=1, image_size=24, missing_rate=0.0,
                               image_format="nifti", progress=False)
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "medmm", "preprocess", str(manifest), "preprocess.image.spatial_size=[24,24,24]",
            "--cache", str(cache), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (cache.exists() and len(VolumeCache(cache)) >= 5):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(VolumeCache(cache))
    assert 0 < done < 30, done  # killed midway
    assert not list(cache.glob("*/*.npy.tmp*"))
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads((cache / "preprocess_report.json").read_text())
    assert report["hit"] >= done and report["computed"] == 30 - report["hit"] and report["error"] == 0
    assert len(VolumeCache(cache)) == 30


def test_a_corrupted_cache_entry_is_detected_and_rebuilt(tmp_path):
    import numpy as np

    vc = VolumeCache(tmp_path)
    key = vc.key([], {"x": 1})
    vc.put(key, np.arange(1000, dtype=np.float32))
    p = vc.path(key)
    raw = bytearray(p.read_bytes())
    raw[-8:] = b"\x00" * 8  # flip the last values, header intact
    p.write_bytes(bytes(raw))
    assert vc.get(key) is None and vc.corrupt == 1 and not p.exists()
    calls = []
    out = vc.get_or_compute([], {"x": 1}, lambda: calls.append(1) or np.arange(1000, dtype=np.float32))
    assert calls == [1] and np.array_equal(out, np.arange(1000, dtype=np.float32))
