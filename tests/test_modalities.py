"""User-defined modalities (a name and a kind), defaults that fit the data, and the wide path.

A six-modality synthetic cohort (the four defaults plus a PET series and a labs table) goes end to
end: declared in the manifest's sidecar, read by kind, trained, scored under every presence
pattern, Shapley values over six modalities, saved and loaded. An undeclared ``*_path`` column is
an error; an EHR-only manifest trains on the EHR alone and asking it for vitals is a ConfigError
(never a torch traceback); the wide path learns a linearly separable toy.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medmm.cohort import Cohort, validate_manifest
from medmm.errors import ConfigError
from medmm.records import MODALITIES, Image, Missing, ModalitySpec, PatientRecord, Tabular, subset_name

SIX = ("image", "notes", "vitals", "ehr", "pet", "labs")


@pytest.fixture(scope="module")
def six_cohort(tmp_path_factory):
    from medmm.synth import generate_cohort

    out = tmp_path_factory.mktemp("six")
    return generate_cohort(out, n_patients=72, seed=3, missing_rate=0.3, image_size=8, image_format="nifti",
                           extra_modalities=("pet", "labs"), progress=False)


# ------------------------------------------------------------------------------------------ declaring


def test_spec_is_a_tuple_of_names_with_kinds():
    spec = ModalitySpec({"ct": "image", "pet": {"kind": "image"}, "labs": "table"})
    assert spec == ("ct", "pet", "labs") and spec.index("labs") == 2 and "+".join(spec) == "ct+pet+labs"
    assert spec.kind("pet") == "image" and spec.of_kind("image") == ("ct", "pet")
    assert ModalitySpec() == MODALITIES and ModalitySpec().kinds["notes"] == "text"
    assert ModalitySpec({"ct": "image"}) != ModalitySpec({"ct": "table"})
    with pytest.raises(ConfigError, match="no declared kind"):
        ModalitySpec(["exam"])
    with pytest.raises(ConfigError, match="not a modality kind"):
        ModalitySpec({"exam": "picture"})
    for bad in ("Exam", "split", "label", "x-ray", "exam_path"):
        with pytest.raises(ConfigError, match="cannot name a modality"):
            ModalitySpec({bad: "image"})
    assert subset_name(["labs", "image", "pet", "ehr"]) == "image+ehr+labs+pet"


def test_record_holds_any_modalities_with_attribute_access():
    import pickle
    from dataclasses import replace

    rec = PatientRecord("P1", modalities={"ct": Missing(), "labs": Tabular({"crp": 3.0})})
    assert rec.labs.values == {"crp": 3.0} and rec.present == {"ct": False, "labs": True}
    assert isinstance(rec.image, Missing)  # a default name it does not hold reads as missing
    with pytest.raises(AttributeError, match="ct"):
        rec.flair
    rec.ct = Tabular({})
    assert rec.pattern == "ct+labs" and rec.masked("ct").pattern == "labs" and rec.pattern == "ct+labs"
    back = pickle.loads(pickle.dumps(rec))
    assert back == rec and back.labs.values == {"crp": 3.0}
    old = PatientRecord("P2", ehr=Tabular({"a": 1}))
    assert tuple(old.modalities) == MODALITIES and replace(old, notes=Missing("empty")).ehr.values == {"a": 1}


def _manifest(tmp_path, extra_cols: dict[str, str], sidecar: str | None = None):
    ehr = tmp_path / "ehr.csv"
    pd.DataFrame({"patient_id": ["A", "B"], "age [years]": [50, 60]}).to_csv(ehr, index=False)
    img = tmp_path / "a.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(img))
    rows = pd.DataFrame({"patient_id": ["A", "B"], "ehr_path": ["ehr.csv", "ehr.csv"], "label_y": [0, 1],
                         **{c: [v, ""] for c, v in extra_cols.items()}})
    path = tmp_path / "manifest.csv"
    rows.to_csv(path, index=False)
    if sidecar is not None:
        (tmp_path / "manifest.modalities.yaml").write_text(sidecar)
    return path


def test_undeclared_path_column_is_an_error_naming_how_to_declare(tmp_path):
    path = _manifest(tmp_path, {"exam_path": "a.nii.gz"})
    report = validate_manifest(path)
    [err] = [p for p in report.errors if p.column == "exam_path"]
    assert "'exam' that is not declared" in err.message and "manifest.modalities.yaml" in err.message
    assert "exam: image" in err.message
    from medmm.errors import ManifestError

    with pytest.raises(ManifestError, match="exam"):
        Cohort.from_manifest(path, progress=False)


def test_declared_modality_is_read_by_its_kind(tmp_path):
    path = _manifest(tmp_path, {"exam_path": "a.nii.gz"}, sidecar="modalities:\n  exam: {kind: image}\n")
    assert validate_manifest(path).ok
    cohort = Cohort.from_manifest(path, progress=False)
    assert cohort.modalities.kind("exam") == "image" and cohort.available_modalities() == ("ehr", "exam")
    a, b = cohort[0], cohort[1]
    assert isinstance(a.exam, Image) and a.exam.shape == (4, 4, 4) and a.pattern == "ehr+exam"
    assert b.pattern == "ehr" and "exam_path" not in a.meta


def test_bad_sidecar_is_reported_with_its_file(tmp_path):
    path = _manifest(tmp_path, {"exam_path": "a.nii.gz"}, sidecar="modalities:\n  exam: picture\n")
    report = validate_manifest(path)
    assert not report.ok and "exam" in str(report)


# ------------------------------------------------------------------------------ six modalities end to end


def test_synth_writes_extra_modalities_with_their_oracle(six_cohort):
    m = pd.read_csv(six_cohort, dtype=str, keep_default_na=False)
    assert {"pet_path", "labs_path"} <= set(m.columns)
    side = (six_cohort.parent / "manifest.modalities.yaml").read_text()
    assert "pet" in side and "labs" in side
    orc = pd.read_csv(six_cohort.parent / "oracle.csv")
    assert orc["subset"].nunique() == 2 ** 6
    assert "image+notes+vitals+ehr+labs+pet" in set(orc["subset"])
    # the PET evidence carries tumour information: the oracle with pet alone beats the prior
    from medmm.evaluate.metrics import auroc

    y = m.set_index("patient_id")["label_tumor"].astype(float)
    pet = orc[(orc.task == "tumor") & (orc.subset == "pet")].set_index("patient_id")["score"]
    assert auroc(y[pet.index].to_numpy(), pet.to_numpy()) > 0.65


def test_six_modalities_train_score_every_pattern_and_shapley(six_cohort, tmp_path):
    from medmm.data import MultimodalDataset
    from medmm.evaluate.robustness import masking_table, pattern_metrics, shapley_values
    from medmm.evaluate.scoring import score_cohort
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.trainer import train
    from medmm.train.config import TrainConfig

    cohort = Cohort.from_manifest(six_cohort, progress=False)
    assert cohort.modalities == SIX and cohort.modalities.kind("pet") == "image"
    train_recs = cohort.split("train").records
    assert any(r.present["pet"] for r in train_recs) and any(r.present["labs"] for r in train_recs)
    assert isinstance(next(r.labs for r in train_recs if r.present["labs"]), Tabular)
    cfg = ModelConfig(tasks={"tumor": "binary", "disease": "binary"}, modalities=cohort.modalities, dim=8,
                      encoders={"image": {"name": "tiny_cnn3d", "channels": (2, 4)},
                                "pet": {"name": "tiny_cnn3d", "channels": (2, 4)},
                                "vitals": {"name": "gru", "hidden": 4}},
                      fusion={"name": "attention", "heads": 2})
    assert cfg.encoders["labs"]["name"] == "mlp" and cfg.encoders["pet"]["name"] == "tiny_cnn3d"
    pre = build_preprocessor(cfg).fit(train_recs)
    assert set(pre.steps) == set(SIX) and type(pre.steps["pet"]).__name__ == "ImagePreprocessor"
    assert type(pre.steps["labs"]).__name__ == "TabularPreprocessor"
    torch.manual_seed(0)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    assert set(model.wide) == {"notes", "ehr", "labs"}  # table and text modalities
    ds = MultimodalDataset(train_recs, pre, model.label_columns_flat)
    assert ds.collate([ds[i] for i in range(4)]).present.shape == (4, 6)
    res = train(model, ds, None, TrainConfig(epochs=2, batch_size=16, device="cpu", monitor="last"), progress=False)
    assert np.isfinite(res.history[-1]["train_loss"])

    scored = score_cohort(model, cohort, split="all", subsets=True, progress=False)
    assert len(scored.masked) == 2 ** 6
    preds = scored.predictions
    assert set(preds["pattern"]) <= set(scored.masked)
    assert preds["pattern"].nunique() > 5  # many observed presence patterns
    every = PatientRecord("x", modalities=dict.fromkeys(SIX, Missing()))
    assert np.isfinite(model.predict_records([every])).all()  # nothing present: the prior, finite
    table = masking_table(scored)
    assert set(table["subset"]) == set(scored.masked) and table["n_modalities"].max() == 6
    pm = pattern_metrics(preds, scored.tasks, n_boot=20, min_n=2)
    assert len(pm) > 0
    sh = shapley_values(scored)
    assert set(sh["modality"]) == set(SIX)
    for t in scored.tasks:  # efficiency: the values add up to v(all) - v(none), per patient mean
        from medmm.evaluate.robustness import _logit

        full = _logit(scored.masked[subset_name(SIX)][:, scored.tasks.index(t)])
        none = _logit(scored.masked["none"][:, scored.tasks.index(t)])
        assert sh[sh.task == t]["mean_logit_shapley"].sum() == pytest.approx(float(np.mean(full - none)), abs=1e-4)

    # a saved six-modality model loads with its kinds, and predicts the same
    from medmm.models.bundle import read_bundle

    folder = model.save(tmp_path / "model")
    meta = json.loads((folder / "medmm_model.json").read_text())
    assert meta["format_version"] == 4 and meta["config"]["modality_kinds"]["pet"] == "image"
    back = read_bundle(folder)
    recs = cohort.split("test").records[:6]
    assert back.modalities.kind("labs") == "table"
    np.testing.assert_allclose(back.predict_records(recs), model.predict_records(recs), atol=1e-5)


def test_format3_bundle_loads_as_the_four_defaults_without_wide(tiny_loaded, tmp_path):
    from medmm.models import ModelConfig, MultimodalModel
    from medmm.models.bundle import read_bundle
    from medmm.preprocess import MultimodalPreprocessor
    from medmm.preprocess.image import ImagePreprocessor

    train = tiny_loaded.split("train").records
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(8, 8, 8))).fit(train)
    cfg = ModelConfig(dim=8, wide=False, encoders={"image": {"name": "tiny_cnn3d", "channels": (2, 4)}})
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "medmm_model.json").read_text())
    meta["format_version"] = 3  # what medmm wrote before modality kinds
    for k in ("modality_kinds", "wide", "wide_l2"):
        meta["config"].pop(k)
    (folder / "medmm_model.json").write_text(json.dumps(meta))
    state = json.loads((folder / "preprocessor.json").read_text())
    state["state"].pop("kinds")
    (folder / "preprocessor.json").write_text(json.dumps(state))
    old = read_bundle(folder)
    assert old.modalities == MODALITIES and len(old.wide) == 0
    assert old.modalities.kind("vitals") == "series"
    recs = tiny_loaded.split("test").records[:4]
    np.testing.assert_allclose(old.predict_records(recs), model.predict_records(recs), atol=1e-5)


# -------------------------------------------------------------------------------- defaults that fit


def _ehr_only(tmp_path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    x = rng.normal(size=n)
    y = (x + 0.5 * rng.normal(size=n) > 0).astype(int)
    pd.DataFrame({"patient_id": ids, "marker [mg/L]": x.round(3), "age [years]": rng.integers(30, 80, n)}).to_csv(
        tmp_path / "ehr.csv", index=False)
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    path = tmp_path / "manifest.csv"
    pd.DataFrame({"patient_id": ids, "split": split, "ehr_path": "ehr.csv", "vitals_path": "",
                  "label_outcome": y}).to_csv(path, index=False)
    return path


def test_ehr_only_cohort_trains_on_ehr_and_vitals_is_a_config_error(tmp_path):
    from medmm.config import load_config
    from medmm.experiment import run_experiment

    path = _ehr_only(tmp_path)
    base = {"cohort": {"manifest": str(path)}, "out_dir": str(tmp_path / "run"),
            "train": {"epochs": 2, "batch_size": 8, "device": "cpu"},
            "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "log_model": False, "plots": False}}
    with pytest.raises(ConfigError) as err:
        run_experiment(config=load_config({**base, "model": {"modalities": ["vitals", "ehr"]}}), progress=False)
    assert "vitals" in err.value.message and "--modalities ehr" in (err.value.hint or "")
    res = run_experiment(config=load_config(base), progress=False)
    assert res.model.modalities == ("ehr",) and "ehr" in res.model.wide
    assert set(res.predictions["pattern"]) == {"ehr"}


def test_a_modality_no_training_patient_has_is_a_config_error_not_a_torch_traceback():
    from medmm.models import ModelConfig, MultimodalModel

    with pytest.raises(ConfigError, match="no training patient has vitals"):
        MultimodalModel(ModelConfig(modalities=("vitals", "ehr"), tasks={"y": "binary"}),
                        {"vitals": (24, 0), "ehr": (5,)})


def test_encoder_of_the_wrong_kind_is_a_config_error():
    from medmm.models import ModelConfig

    with pytest.raises(ConfigError, match="reads image modalities"):
        ModelConfig(modalities={"labs": "table"}, encoders={"labs": {"name": "tiny_cnn3d"}}, tasks={"y": "binary"})


# ------------------------------------------------------------------------------------------- the wide path


def test_wide_path_learns_a_linearly_separable_toy():
    from medmm.data import MultimodalDataset
    from medmm.evaluate.metrics import auroc
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    rng = np.random.default_rng(0)
    n = 240
    x = rng.normal(size=(n, 6))
    w = np.array([2.0, -1.5, 1.0, 0.0, 0.0, 0.0])
    y = (x @ w > 0).astype(float)
    recs = [PatientRecord(f"P{i}", modalities={"labs": Tabular({f"f{j}": float(x[i, j]) for j in range(6)})},
                          labels={"y": y[i]}) for i in range(n)]
    tr, te = recs[:160], recs[160:]
    spec = ModalitySpec({"labs": "table"})
    aucs, weights = {}, None
    for wide in (True, False):
        cfg = ModelConfig(tasks={"y": "binary"}, modalities=spec, dim=8, wide=wide, modality_dropout=0.0,
                          encoders={"labs": {"name": "mlp", "hidden": 8}})
        pre = build_preprocessor(cfg).fit(tr)
        torch.manual_seed(0)
        model = MultimodalModel(cfg, pre.output_shapes(), pre)
        assert ("labs" in model.wide) is wide
        train(model, MultimodalDataset(tr, pre, ("y",)), None,
              TrainConfig(epochs=25, batch_size=32, lr=0.01, device="cpu", monitor="last"), progress=False)
        aucs[wide] = auroc(y[160:], model.predict_records(te)[:, 0])
        if wide:
            weights = model.wide["labs"].weight.detach().numpy()[0]
            # the wide layer alone (deep part, residual head and fusion off) is a linear classifier of the toy
            with torch.no_grad():
                xs = torch.tensor(np.stack([pre.transform(r)["labs"] for r in te]))
                lin = model.wide_logits("labs", xs, torch.ones(len(te), dtype=torch.bool))[:, 0].numpy()
            assert auroc(y[160:], lin) > 0.93
    assert aucs[True] > 0.98
    assert aucs[True] >= aucs[False] - 0.005
    # the linear path found the true direction: numeric columns come first, f0..f5 in order
    assert np.sign(weights[:3]).tolist() == [1.0, -1.0, 1.0]
    assert np.abs(weights[:3]).min() > np.abs(weights[3:6]).max()
