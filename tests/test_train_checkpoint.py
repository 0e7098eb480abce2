"""Resuming a checkpoint under changed training settings: refused with the fix when the settings
change the numbers, allowed when they only change where and how they are computed, and a
checkpoint that stored no settings (older medmm) resumes with a warning."""

from __future__ import annotations

import dataclasses
import re
import shutil
import warnings

import pytest
import torch

from medmm.errors import ConfigError
from medmm.train.checkpoint import (RESUME_MAY_CHANGE, ResumeWarning, check_resumable, load_checkpoint,
                                    run_settings)
from medmm.train.trainer import TrainConfig, train
from test_train_toys import same_weights, toy_dataset, toy_model, weights
from test_train_trainer import FAST, InterruptAt

DATA = dict(train_ds=toy_dataset(40), val_ds=toy_dataset(24, seed=1))


def _cfg(folder, **kw) -> TrainConfig:
    return TrainConfig(**{**FAST, "epochs": 5, "grad_accum": 2, "checkpoint_dir": str(folder), **kw})


def _fit(cfg, model_seed=0, **kw):
    model = toy_model(model_seed)
    res = train(model, DATA["train_ds"], DATA["val_ds"], cfg, progress=False, **kw)
    return model, res


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A reference run, and a checkpoint written on Ctrl-C in epoch 2 between two accumulated micro-batches."""
    tmp = tmp_path_factory.mktemp("resume")
    ref, ref_res = _fit(_cfg(tmp / "ref"))
    with pytest.raises(KeyboardInterrupt):
        _fit(_cfg(tmp / "run"), callbacks=[InterruptAt(2, 3)])
    state = load_checkpoint(tmp / "run")
    assert (state["epoch"], state["batch"]) == (2, 3) and state["config"]["lr"] == FAST["lr"]
    return {"ref": weights(ref), "history": ref_res.history, "ckpt": tmp / "run" / "last.pt"}


@pytest.fixture
def ckpt_dir(interrupted, tmp_path):
    """A fresh copy of the interrupted run's checkpoint folder."""
    (tmp_path / "ckpt").mkdir()
    shutil.copy(interrupted["ckpt"], tmp_path / "ckpt" / "last.pt")
    return tmp_path / "ckpt"


def test_a_changed_lr_is_refused_naming_old_and_new_and_the_fix(ckpt_dir, interrupted):
    before = ckpt_dir.joinpath("last.pt").read_bytes()
    with pytest.raises(ConfigError) as err:
        _fit(_cfg(ckpt_dir, lr=0.01), resume=True)
    msg = str(err.value)
    assert "lr 0.05 -> 0.01" in msg and err.value.column == "lr"
    assert str(ckpt_dir) in msg and "train.lr=0.05" in msg and "checkpoint_dir" in msg
    assert ckpt_dir.joinpath("last.pt").read_bytes() == before  # refused before anything was written
    model, res = _fit(_cfg(ckpt_dir), resume=True)  # set back: the run resumes as if never stopped
    assert res.resumed_from == {"epoch": 2, "batch": 3}
    assert same_weights(weights(model), interrupted["ref"]) and res.history == interrupted["history"]


def test_every_changed_setting_is_named(ckpt_dir):
    with pytest.raises(ConfigError) as err:
        _fit(_cfg(ckpt_dir, epochs=8, scheduler="constant", patience=3), resume=True)
    msg = str(err.value)
    for part in ("epochs 5 -> 8", "scheduler 'cosine' -> 'constant'", "patience 100 -> 3",
                 "train.epochs=5", "train.scheduler='cosine'", "train.patience=100"):
        assert part in msg, msg
    assert "lr" not in msg.split("(", 1)[1].split(")")[0]  # unchanged settings are not listed
    assert err.value.column is None


# A changed value for every TrainConfig field that decides the numbers. A field added to TrainConfig
# must be added here or to RESUME_MAY_CHANGE: this test fails until someone decides which.
CHANGED = {
    "epochs": 9, "batch_size": 4, "lr": 0.1, "weight_decay": 0.01, "patience": 2, "min_epochs": 3, "grad_clip": 1.0,
    "seed": 1, "monitor": "val_auroc_mean", "max_steps": 7, "optimizer": "sgd", "momentum": 0.5,
    "scheduler": "onecycle", "warmup_epochs": 1.0, "grad_accum": 4, "amp": True, "amp_dtype": "bfloat16",
    "encoder_lr_scale": 0.1, "monitor_mode": "max", "monitor_window": 3, "ema_decay": 0.9, "loss": "focal",
    "pos_weight": "auto", "focal_gamma": 1.0, "focal_alpha": 0.25, "sampler": "balanced", "balance_task": "b",
    "swa_start": 0.5,
}


def test_each_run_defining_field_is_compared_and_the_rest_may_change(ckpt_dir):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(CHANGED) | RESUME_MAY_CHANGE == fields and not set(CHANGED) & RESUME_MAY_CHANGE
    state = load_checkpoint(ckpt_dir)
    model = toy_model(0)
    base = _cfg(ckpt_dir)
    for name, value in CHANGED.items():
        with pytest.raises(ConfigError, match=re.escape(f"{name} {getattr(base, name)!r} -> {value!r}") + "|seed 0, not 1"):
            check_resumable(state, model, dataclasses.replace(base, **{name: value}), ckpt_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_resumable(state, model, dataclasses.replace(base, num_workers=3, device="cuda", deterministic=False,
                                                          checkpoint_dir="/elsewhere"), ckpt_dir)


def test_a_list_setting_read_back_from_yaml_equals_the_tuple_it_was_written_as(ckpt_dir):
    state = load_checkpoint(ckpt_dir)
    state["config"]["pos_weight"] = (2.0, 1.0)
    check_resumable(state, toy_model(0), _cfg(ckpt_dir, pos_weight=[2.0, 1.0]), ckpt_dir)
    assert run_settings(_cfg(ckpt_dir, pos_weight=(2.0, 1.0)))["pos_weight"] == [2.0, 1.0]


def test_workers_device_and_folder_may_change_and_reach_the_same_weights(ckpt_dir, interrupted, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(ckpt_dir, moved)  # resumed from another folder, with loader workers, on "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)
        model, res = _fit(_cfg(moved, num_workers=2, device="auto" if not torch.cuda.is_available() else "cpu",
                               deterministic=False), resume=True)
    assert res.resumed_from == {"epoch": 2, "batch": 3}
    assert same_weights(weights(model), interrupted["ref"]) and res.history == interrupted["history"]


@pytest.mark.parametrize("stored", [None, {"seed": 0}], ids=["no-config", "seed-only"])
def test_a_checkpoint_without_settings_resumes_with_a_warning(ckpt_dir, interrupted, stored):
    state = load_checkpoint(ckpt_dir)
    state.pop("version")
    if stored is None:
        state.pop("config")
    else:
        state["config"] = stored
    from medmm.train.checkpoint import save_checkpoint

    save_checkpoint(state, ckpt_dir)
    with pytest.warns(ResumeWarning, match="stored no training settings.*could not be compared"):
        model, res = _fit(_cfg(ckpt_dir), resume=True)
    assert same_weights(weights(model), interrupted["ref"]) and res.history == interrupted["history"]


def test_a_setting_newer_than_the_checkpoint_is_taken_as_its_default(ckpt_dir, interrupted):
    from medmm.train.checkpoint import save_checkpoint

    state = load_checkpoint(ckpt_dir)
    state.pop("version")
    del state["config"]["ema_decay"]  # written before train.ema_decay existed
    save_checkpoint(state, ckpt_dir)
    with pytest.raises(ConfigError, match=r"ema_decay 0\.0 -> 0\.9"):
        _fit(_cfg(ckpt_dir, ema_decay=0.9), resume=True)
    with pytest.warns(ResumeWarning, match="predates the settings ema_decay"):
        model, res = _fit(_cfg(ckpt_dir), resume=True)
    assert same_weights(weights(model), interrupted["ref"])


def test_a_logged_model_config_read_back_keeps_its_fingerprint():
    """`medmm train --resume` rebuilds the model from the logged config: the YAML round trip (where each
    encoder gains an empty `preprocess`) must give the same ModelConfig, or every resume is refused as
    "written by another model"."""
    import yaml

    from medmm.config import load_config
    from medmm.models.multimodal import MultimodalModel

    cfg = load_config({"cohort": {"manifest": "m.csv"}, "model": {"dim": 8, "modalities": ["ehr"]}})
    first = cfg.model_config_for(("tumor",))
    # a config written before the run (--print-config) reads back with `tasks: null` & co.: still the defaults
    assert load_config(yaml.safe_load(cfg.to_yaml())).model_config_for(("tumor",)).to_dict() == first.to_dict()
    cfg.model = first.to_dict()  # as the experiment logs it
    again = load_config(yaml.safe_load(cfg.to_yaml())).model_config_for(("tumor",))
    assert again.to_dict() == first.to_dict()
    from medmm.train.checkpoint import model_fingerprint

    models = []
    for mc in (first, again):
        torch.manual_seed(0)
        models.append(MultimodalModel(mc, {"ehr": (5,)}))
    assert model_fingerprint(models[0]) == model_fingerprint(models[1])


@pytest.mark.slow
def test_cli_resume_under_other_settings_is_the_usual_one_line_error(tiny_cohort, tiny_loaded, tmp_path, capsys):
    """`medmm train --resume RUN_ID` whose checkpoint folder was since written by a run with another lr
    (the same out_dir reused): the CLI's one-line error, exit status 1, no traceback."""
    import json

    from medmm.cli import main
    from medmm.config import load_config
    from medmm.experiment import run_experiment
    from medmm.train.checkpoint import save_checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config({"cohort": {"manifest": str(tiny_cohort)}, "out_dir": str(tmp_path / "run"),
                       "preprocess": {"image": {"spatial_size": [16, 16, 16]}}, "model": {"dim": 8},
                       "train": {"epochs": 1, "batch_size": 8, "min_epochs": 1, "device": "cpu", "lr": 0.002},
                       "tracking": {"experiment": "tests", "tracking_uri": uri, "log_model": False, "plots": False}})
    run_experiment(config=cfg, cohort=tiny_loaded, progress=False)
    run_id = json.loads((tmp_path / "run" / "run.json").read_text())["run_id"]
    folder = tmp_path / "run" / "checkpoints"
    state = load_checkpoint(folder)
    state.pop("version")
    state["config"]["lr"] = 0.01  # what another run with train.lr=0.01 in the same out_dir leaves behind
    save_checkpoint(state, folder)
    capsys.readouterr()
    assert main(["train", "--resume", run_id, "--tracking-uri", uri, "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("medmm train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "lr 0.01 -> 0.002" in lines[0] and "train.lr=0.01" in lines[0] and str(folder) in lines[0]
