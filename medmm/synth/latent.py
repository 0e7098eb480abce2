"""The generative model: labels, latent evidence per modality, note categories and presence, drawn from the seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..records import MODALITIES


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


def draw_latents(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
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
