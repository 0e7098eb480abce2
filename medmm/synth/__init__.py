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

from .cohort import generate_cohort
from .latent import EXTRA_MODALITIES, LAB_MISSING, MU, NOTE_CATEGORIES, NOTE_LIKELIHOOD, TASKS, SynthConfig
from .oracle import all_subsets, compare_to_oracle, oracle_scores, subset_name
from .render import VITAL_SIGNALS, render_note, render_vitals, render_volume

__all__ = [
    "SynthConfig",
    "generate_cohort",
    "subset_name",
    "all_subsets",
    "TASKS",
    "compare_to_oracle",
    "oracle_scores",
    "render_note",
    "render_vitals",
    "render_volume",
    "EXTRA_MODALITIES",
    "LAB_MISSING",
    "MU",
    "NOTE_CATEGORIES",
    "NOTE_LIKELIHOOD",
    "VITAL_SIGNALS",
]
