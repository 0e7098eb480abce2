"""Issue 14: settings for declared modalities (``preprocess.<name>``) and the text wide path on the
full TF-IDF vocabulary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medmm.config import load_config
from medmm.errors import ConfigError
from medmm.records import ModalitySpec, Note, Notes, PatientRecord


def _cohort(tmp_path):
    pd.DataFrame({"patient_id": ["A", "B"], "age [years]": [50, 60]}).to_csv(tmp_path / "ehr.csv", index=False)
    pd.DataFrame({"patient_id": ["A", "B"], "crp [mg/L]": [3.1, 40.0]}).to_csv(tmp_path / "labs.csv", index=False)
    pd.DataFrame({"patient_id": ["A", "B"], "ehr_path": "ehr.csv", "labs_path": "labs.csv", "label_y": [0, 1]}
                 ).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "manifest.modalities.yaml").write_text("modalities:\n  labs: {kind: table}\n")
    return tmp_path / "manifest.csv"


def test_preprocess_options_of_a_declared_modality_reach_its_step(tmp_path):
    from medmm.models import ModelConfig, build_preprocessor

    cfg = load_config({"cohort": {"manifest": str(_cohort(tmp_path))},
                       "preprocess": {"labs": {"min_frequency": 2}, "ehr": {"min_frequency": 7}}})
    assert cfg.preprocess.options("labs") == {"min_frequency": 2}
    model = ModelConfig(tasks={"y": "binary"}, modalities=ModalitySpec({"ehr": "table", "labs": "table"}))
    pre = build_preprocessor(model, preprocess=cfg.preprocess)
    assert pre.steps["labs"].min_frequency == 2 and pre.steps["ehr"].min_frequency == 7


def test_a_wrong_setting_for_a_declared_modality_names_its_kind(tmp_path):
    man = _cohort(tmp_path)
    with pytest.raises(ConfigError, match=r"preprocess.labs \(table modality\).*min_frequncy.*min_frequency") as e:
        load_config({"cohort": {"manifest": str(man)}, "preprocess": {"labs": {"min_frequncy": 2}}})
    assert e.value.column == "preprocess.labs"


def test_preprocess_for_an_undeclared_name_suggests_the_declared_one(tmp_path):
    man = _cohort(tmp_path)
    with pytest.raises(ConfigError, match="labz.*labs.*not a declared modality"):
        load_config({"cohort": {"manifest": str(man)}, "preprocess": {"labz": {"min_frequency": 2}}})
    with pytest.raises(ConfigError, match="mapping"):
        load_config({"cohort": {"manifest": str(man)}, "preprocess": {"labs": 3}})


def _notes(n: int, seed: int = 0):
    """Referral letters; cardiology ones (label 1) use one of 60 rare cardiac terms each, so no
    term is frequent enough to enter a small capped n-gram vocabulary."""
    rng = np.random.default_rng(seed)
    letters = "abcdefghij"
    cardiac = [f"cardio{letters[k // 10]}{letters[k % 10]}" for k in range(60)]  # words of letters only
    other = [f"ortho{letters[k // 10]}{letters[k % 10]}" for k in range(60)]
    shared = "patient seen in clinic today history reviewed plan discussed with the patient follow up arranged"
    recs = []
    for i in range(n):
        y = i % 2
        words = shared.split() + list(rng.choice(cardiac if y else other, 2))
        rng.shuffle(words)
        recs.append(PatientRecord(f"P{i}", notes=Notes([Note(" ".join(words))]), labels={"y": float(y)}))
    return recs


def test_text_wide_path_reads_the_full_vocabulary_sparsely():
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.models.wide import SparseWide

    recs = _notes(120)
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=("notes",))
    pre = build_preprocessor(cfg).fit(recs)
    step = pre.steps["notes"]
    layout = step.sparse_layout()
    assert step.n_features_ == 32  # the MLP's capped vocabulary (auto: 120 notes / 4, at least 32)
    assert layout["n_terms"] - len(step.finding_names_) > 5 * step.n_features_  # every n-gram in >= 3 notes
    assert pre.output_shapes()["notes"] == (layout["dense"] + 2 * layout["nnz"],)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    assert isinstance(model.wide["notes"], SparseWide) and model.encoders["notes"].in_features == layout["dense"]
    # the sparse columns hold each note's full TF-IDF row: the wide layer equals a dense linear map on it
    x = np.stack([pre.transform(r)["notes"] for r in recs[:8]])
    full = step.wide_vectorizer_.transform([r.notes.text for r in recs[:8]]).toarray()
    import torch

    w = torch.randn(1, layout["n_terms"])
    with torch.no_grad():
        model.wide["notes"].raw.copy_(w / model.wide["notes"].lr_scale)
        got = model.wide["notes"](torch.tensor(x))[:, 0].numpy()
    found = x[:, step.n_features_:layout["dense"]]
    want = full @ w[0, :full.shape[1]].numpy() + found @ w[0, full.shape[1]:].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_text_wide_path_learns_rare_terms_the_capped_vocabulary_misses(tmp_path):
    """120 cardiac/orthopaedic terms, each in ~2 % of the notes: the MLP's 32-n-gram vocabulary
    holds only the shared wording, so without the wide path the model is at chance."""
    import torch

    from medmm.data import MultimodalDataset
    from medmm.evaluate.metrics import auroc
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    recs = _notes(300, seed=1)
    tr, te = recs[:200], recs[200:]
    y = np.array([r.labels["y"] for r in te])
    aucs = {}
    for wide in (True, False):
        cfg = ModelConfig(tasks={"y": "binary"}, modalities=("notes",), wide=wide)
        pre = build_preprocessor(cfg).fit(tr)
        torch.manual_seed(0)
        model = MultimodalModel(cfg, pre.output_shapes(), pre)
        train(model, MultimodalDataset(tr, pre, ("y",)), None,
              TrainConfig(epochs=30, device="cpu", monitor="last", seed=0), progress=False)
        aucs[wide] = auroc(y, model.predict_records(te)[:, 0])
        if wide:
            path = model.save(tmp_path / "m")
            again = MultimodalModel.load(path)
            np.testing.assert_allclose(again.predict_records(te), model.predict_records(te), atol=1e-6)
    assert aucs[True] > 0.7, aucs  # measured 0.77; the capped vocabulary alone is at chance (0.42)
    assert aucs[True] > aucs[False] + 0.2, aucs
