"""The experiment config: YAML + key=value overrides, validation, JSON Schema."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from medmm.config import SCHEMA_PATH, ExperimentConfig, apply_overrides, json_schema, load_config
from medmm.errors import ConfigError
from medmm.train.trainer import TrainConfig

CFG = {
    "cohort": {"manifest": "cohort/manifest.csv"},
    "split": {"mode": "assign", "group_by": "site", "cv_folds": 3},
    "preprocess": {"image": {"spatial_size": [16, 16, 16]}},
    "model": {"fusion": {"name": "concat"}, "dim": 32},
    "train": {"epochs": 7, "loss": "focal", "pos_weight": "auto", "sampler": "balanced"},
    "transfer": {"pretrain_epochs": 2, "mode": "partial"},
    "tracking": {"experiment": "x", "register_model": "tumor-model"},
}


def _write(tmp_path, data):
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_yaml_with_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, CFG), ["train.lr=1e-3", "model.fusion.name=attention", "train.epochs=3",
                                              "tracking.tags.owner=lab", "tasks=[tumor]", "train.max_steps=null"])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.epochs == 3
    assert cfg.model["fusion"]["name"] == "attention" and cfg.model["dim"] == 32
    assert cfg.tracking.tags == {"owner": "lab"} and cfg.tasks == ["tumor"]
    assert cfg.cohort.manifest == str(tmp_path / "cohort" / "manifest.csv")  # relative to the config file
    tc = cfg.train_config()
    assert isinstance(tc, TrainConfig) and tc.loss == "focal" and tc.checkpoint_dir.endswith("checkpoints")
    again = load_config(yaml.safe_load(cfg.to_yaml()))  # the resolved config reloads to the same config
    assert again == cfg


def test_defaults_follow_train_config():
    cfg = ExperimentConfig.model_validate({"cohort": {"manifest": "m.csv"}})
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        assert getattr(cfg.train, f.name) == getattr(defaults, f.name), f.name


@pytest.mark.parametrize("override,column", [
    (["train.optimiser=sgd"], "train.optimiser"),
    (["train.epochs=many"], "train.epochs"),
    (["split.cv_folds=1"], "split.cv_folds"),
    (["split.fractions=[0.5,0.5,0.5]"], "split.fractions"),
])
def test_bad_values_are_config_errors_naming_the_key(tmp_path, override, column):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, CFG), override)
    assert err.value.column == column


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError):
        load_config(_write(tmp_path, CFG), ["train.lr"])
    with pytest.raises(ConfigError):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError):
        ExperimentConfig.model_validate(CFG).model_copy(update={"model": {"colour": 1}}).model_config_for(("t",))


def test_apply_overrides_creates_nested_keys():
    assert apply_overrides({"a": {"b": 1}}, ["a.c.d=2", "e=[1, 2]"]) == {"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2]}


def test_stored_schema_matches_the_models_and_validates_configs():
    import jsonschema

    stored = json.loads(SCHEMA_PATH.read_text())
    current = json_schema()

    def keys(schema):
        return {name: sorted(d.get("properties", {})) for name, d in schema.get("$defs", {}).items()} | {
            "": sorted(schema["properties"])}

    assert keys(stored) == keys(current), "regenerate with: python -m medmm.config > medmm/schemas/experiment.schema.json"
    jsonschema.validate(CFG, stored)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**CFG, "train": {"epochs": "x"}}, stored)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"split": {}}, stored)  # cohort is required


def test_train_command_resolves_config_overrides_and_shortcuts(tmp_path, capsys):
    from medmm.cli import main

    f = _write(tmp_path, CFG)
    assert main(["train", "--config", str(f), "train.lr=0.01", "--epochs", "3", "--fusion", "gated",
                 "--modalities", "image,ehr", "--register", "m1", "--no-log-model", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.01 and printed["train"]["epochs"] == 3
    assert printed["model"]["fusion"]["name"] == "gated" and printed["model"]["modalities"] == ["image", "ehr"]
    assert printed["tracking"]["register_model"] == "m1" and printed["tracking"]["log_model"] is False
    # without a config file the first argument is the manifest
    assert main(["train", str(tmp_path / "m.csv"), "split.cv_folds=4", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["cohort"]["manifest"].endswith("m.csv") and printed["split"]["cv_folds"] == 4
    assert main(["train", "--config", str(f), "train.optimizer=adam", "--print-config"]) == 1
    assert "train.optimizer" in capsys.readouterr().err
    assert main(["train", "--resume", "abc", "train.lr=1"]) == 1  # a resumed run keeps its settings


@pytest.mark.parametrize("command", ["train", "predict"])
def test_every_option_has_help(command):
    import argparse

    from medmm.commands import predict, train

    p = argparse.ArgumentParser()
    {"train": train, "predict": predict}[command].add_arguments(p)
    assert p.description
    for action in p._actions:
        assert action.help, action.dest
