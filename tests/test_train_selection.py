"""Training defaults that fit small data: ModDrop off for a single modality; model selection on a
trailing mean of the monitored metric, so one lucky epoch on a tiny validation set cannot win."""

from __future__ import annotations

import numpy as np
import pytest

from medmm.errors import ConfigError
from medmm.records import PatientRecord, Tabular
from medmm.train.config import TrainConfig


def _records(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [PatientRecord(patient_id=f"p{i}", ehr=Tabular({"a": float(rng.normal()), "b": float(rng.normal())}),
                          labels={"y": float(i % 2)}) for i in range(n)]


def test_modality_dropout_defaults_to_off_for_one_modality():
    from medmm.config import load_config
    from medmm.models.multimodal import ModelConfig

    assert ModelConfig(modalities=("ehr",)).modality_dropout == 0.0
    assert ModelConfig(modalities=("notes", "ehr")).modality_dropout == 0.25
    assert ModelConfig(modalities=("ehr",), modality_dropout=0.1).modality_dropout == 0.1  # an explicit choice stays
    cfg = load_config({"cohort": {"manifest": "m.csv"}, "model": {"modalities": ["ehr"]}})
    assert cfg.model_config_for(("y",)).modality_dropout == 0.0


def test_auto_window_scales_with_the_validation_size():
    tc = TrainConfig()
    assert [tc.window_for(n) for n in (45, 138, 500, 5000)] == [5, 5, 3, 1]
    assert TrainConfig(monitor="last").window_for(45) == 1 and TrainConfig(monitor_window=2).window_for(45) == 3
    with pytest.raises(ConfigError, match="monitor_window"):
        TrainConfig(monitor_window=0)


@pytest.mark.parametrize("window, expected", [(1, 0), (3, 5), ("auto", 6)])
def test_one_lucky_epoch_does_not_win_selection(monkeypatch, window, expected):
    import medmm.train.trainer as trainer
    from medmm.data import MultimodalDataset
    from medmm.models.multimodal import ModelConfig, MultimodalModel, build_preprocessor

    # validation loss of a tiny val set: a lucky first epoch, then a steady fall and a slow rise
    script = [0.20, 0.60, 0.45, 0.35, 0.30, 0.29, 0.28, 0.31, 0.34, 0.37, 0.40, 0.43, 0.46, 0.49, 0.52, 0.55]
    calls = iter(script)
    monkeypatch.setattr(trainer, "_val_metrics", lambda *a, **k: {"val_loss": next(calls), "val_auroc_y": 0.5})
    recs = _records()
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=("ehr",), dim=4, fusion={"name": "concat"})
    pre = build_preprocessor(cfg).fit(recs[:30])
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    res = trainer.train(model, MultimodalDataset(recs[:30], pre, ("y",)), MultimodalDataset(recs[30:], pre, ("y",)),
                        TrainConfig(epochs=len(script), min_epochs=1, patience=6, device="cpu",
                                    monitor_window=window), progress=False)
    w = 5 if window == "auto" else window  # 4 validation patients: auto is 5
    h = w // 2
    centred = {e: np.mean(script[e - h:e + h + 1]) for e in range(h, len(res.history) - h)}
    assert res.best_epoch == min(centred, key=centred.get) == expected
    assert res.loss_info["monitor_window"] == w
    # the weights returned are those of the selected epoch, not of the window's last one
    assert res.history[res.best_epoch]["val_loss"] == script[expected]


def _ehr_model(dim=4, seed=0):
    import torch

    from medmm.models.multimodal import ModelConfig, MultimodalModel, build_preprocessor

    recs = _records()
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=("ehr",), dim=dim, fusion={"name": "concat"})
    pre = build_preprocessor(cfg).fit(recs[:30])
    torch.manual_seed(seed)
    return MultimodalModel(cfg, pre.output_shapes(), pre), pre, recs


def test_a_changed_model_or_seed_refuses_an_old_checkpoint_with_the_fix(tmp_path):
    from medmm.data import MultimodalDataset
    from medmm.train.checkpoint import load_checkpoint, model_fingerprint
    from medmm.train.trainer import train

    def fit(dim, seed=0, resume=True):
        model, pre, recs = _ehr_model(dim)
        ds = MultimodalDataset(recs[:30], pre, ("y",)), MultimodalDataset(recs[30:], pre, ("y",))
        tc = TrainConfig(epochs=2, min_epochs=1, device="cpu", seed=seed, checkpoint_dir=str(tmp_path / "pretrain_ehr"))
        return model, train(model, *ds, tc, progress=False, resume=resume)

    model, first = fit(4)
    assert load_checkpoint(tmp_path / "pretrain_ehr")["fingerprint"] == model_fingerprint(model)
    _, again = fit(4)  # the same model and seed resume (here: the finished run) as before
    assert again.resumed_from == {"epoch": 2, "batch": 0} and again.history == first.history
    with pytest.raises(ConfigError, match="written by another model") as err:
        fit(8)  # a wider model: before, torch's "size mismatch for ..." state-dict error
    assert "pretrain_ehr" in str(err.value) and "checkpoint_dir" in str(err.value)
    with pytest.raises(ConfigError, match="seed 0, not 1"):
        fit(4, seed=1)
    ckpt = load_checkpoint(tmp_path / "pretrain_ehr")  # a checkpoint from before fingerprints
    ckpt.pop("fingerprint")
    torch_save(ckpt, tmp_path / "pretrain_ehr" / "last.pt")
    with pytest.raises(ConfigError, match="does not fit this model"):
        fit(8)
    assert fit(4)[1].resumed_from == {"epoch": 2, "batch": 0}


def torch_save(obj, path):
    import torch

    torch.save(obj, path)
