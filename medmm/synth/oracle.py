"""The Bayes-optimal score of every modality subset, and a model's AUROC set beside it."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..records import MODALITIES
from ..records import subset_name as _subset_name
from .latent import EXTRA_MODALITIES, MU, NOTE_CATEGORIES, NOTE_LIKELIHOOD, SynthConfig, TASKS

if TYPE_CHECKING:
    import pandas as pd



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


def _gauss_llr(z: np.ndarray, mu: float) -> np.ndarray:
    return mu * z - mu * mu / 2.0


def log_likelihood_ratios(lat: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
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
    llr = log_likelihood_ratios(lat)
    rows = []
    prior = {"tumor": cfg.prevalence_tumor, "disease": cfg.prevalence_disease}
    for task in TASKS:
        base = math.log(prior[task] / (1 - prior[task]))
        for subset in all_subsets(include_empty=True, modalities=cfg.modalities):
            mods = [] if subset == "none" else subset.split("+")
            logit = base + sum((llr[(task, m)] for m in mods), np.zeros(len(lat["tumor"])))
            rows.append({"task": task, "subset": subset, "score": 1.0 / (1.0 + np.exp(-logit))})
    return rows


def compare_to_oracle(predictions: pd.DataFrame, oracle_path: str | Path, tasks: tuple[str, ...] = TASKS) -> dict[str, dict[str, Any]]:
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
