"""Shared fixtures: a tiny synthetic cohort written once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True, scope="session")
def _export_cache(tmp_path_factory):
    """Serving's export cache in a temporary folder, not the user's ~/.cache/medmm."""
    old = os.environ.get("MEDMM_CACHE_DIR")
    os.environ["MEDMM_CACHE_DIR"] = str(tmp_path_factory.mktemp("medmm_cache"))
    yield
    if old is None:
        os.environ.pop("MEDMM_CACHE_DIR", None)
    else:
        os.environ["MEDMM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """40 patients, 16^3 DICOM volumes, 20% missing per modality. Returns the manifest path."""
    from medmm.synth import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("tiny_cohort"), n_patients=40, seed=7, image_size=16,
                           progress=False)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_cohort):
    from medmm.cohort import load_cohort

    return load_cohort(tiny_cohort, progress=False)
