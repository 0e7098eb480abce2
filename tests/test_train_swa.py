"""Stochastic weight averaging (``TrainConfig.swa_start``): the result is the equal-weight mean of
the averaged epochs' weights, BatchNorm statistics are recomputed for it (frozen layers keep
theirs), early stopping does not cut the schedule's tail, and an interrupted run resumes to the
same average."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import medmm.train.trainer as trainer
from medmm.errors import ConfigError
from medmm.train.trainer import TrainConfig, train
from test_train_toys import same_weights, toy_dataset, toy_model, weights
from test_train_trainer import FAST, InterruptAt


class Snapshots:
    """Keeps the trained model's weights at the end of every epoch."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.by_epoch = model, {}

    def on_epoch_end(self, epoch, metrics):
        self.by_epoch[epoch] = weights(self.model)


def _fit(model, callbacks=(), val=True, **kw):
    cfg = TrainConfig(**{**FAST, "epochs": 6, **kw})
    return train(model, toy_dataset(40), toy_dataset(24, seed=1) if val else None, cfg, callbacks=list(callbacks),
                 progress=False)


@pytest.mark.parametrize("start, first", [(0.5, 3), (4, 4)])
def test_the_result_is_the_mean_of_the_averaged_epochs_weights(start, first):
    model = toy_model(0)
    snaps = Snapshots(model)
    res = _fit(model, [snaps], swa_start=start)
    averaged = range(first, 6)
    mean = {k: torch.stack([snaps.by_epoch[e][k] for e in averaged]).mean(0) for k in snaps.by_epoch[5]}
    got = weights(model)
    assert all(torch.allclose(got[k], mean[k], atol=1e-6) for k in mean)
    assert not same_weights(got, snaps.by_epoch[5])  # not simply the last epoch's weights
    assert res.best_epoch == 5 and len(res.history) == 6
    info = res.loss_info["swa"]
    assert info["first_epoch"] == first and info["epochs_averaged"] == len(averaged)
    assert info["batchnorm_layers_updated"] == 0  # the toy model has none
    # the average's own validation, on the weights returned
    again = trainer._val_metrics(model, toy_dataset(24, seed=1), ("a", "b"), torch.device("cpu"))
    assert info["val"]["val_loss"] == pytest.approx(again["val_loss"]) == pytest.approx(res.best_score)
    assert info["val"]["val_loss"] != pytest.approx(res.history[-1]["val_loss"])


def test_without_swa_the_selected_epoch_is_returned_and_nothing_is_averaged():
    model = toy_model(0)
    snaps = Snapshots(model)
    res = _fit(model, [snaps], monitor_window=1)
    assert "swa" not in res.loss_info
    assert same_weights(weights(model), snaps.by_epoch[res.best_epoch])


def test_early_stopping_cuts_the_run_that_the_average_keeps_going(monkeypatch):
    # a validation loss that only rises after the first epoch (a noisy, high learning-rate phase)
    calls = iter(range(100))
    monkeypatch.setattr(trainer, "_val_metrics", lambda *a, **k: {"val_loss": 0.5 + 0.01 * next(calls)})
    stopped = _fit(toy_model(0), epochs=8, patience=2, min_epochs=1, monitor_window=1)
    assert len(stopped.history) == 3 and stopped.best_epoch == 0  # the old rule: epoch 0, stopped at 2
    kept = _fit(toy_model(0), epochs=8, patience=2, min_epochs=1, monitor_window=1, swa_start=0.5)
    assert len(kept.history) == 8 and kept.best_epoch == 7
    assert kept.loss_info["swa"]["epochs_averaged"] == 4 and kept.loss_info["swa"]["first_epoch"] == 4


def test_a_run_stopped_before_swa_start_returns_its_selected_epoch():
    model = toy_model(0)
    snaps = Snapshots(model)
    res = _fit(model, [snaps], swa_start=5, max_steps=10, monitor_window=1)  # 5 steps per epoch: 2 epochs
    assert len(res.history) == 2 and res.loss_info["swa"] == {"first_epoch": 5, "epochs_averaged": 0}
    assert same_weights(weights(model), snaps.by_epoch[res.best_epoch])


class BNModel(nn.Module):
    """Linear -> BatchNorm -> Tanh -> Linear, plus a frozen BatchNorm kept in eval mode (as an
    encoder's frozen stage) on the input."""

    def __init__(self, features: int = 6, tasks: int = 2, hidden: int = 8) -> None:
        super().__init__()
        self.frozen = nn.BatchNorm1d(features)
        self.lin = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.out = nn.Linear(hidden, tasks)
        for p in self.frozen.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()
        return self

    def hidden(self, x):
        return self.lin(self.frozen(x))

    def forward(self, values, present, return_aux=False):
        out = self.out(torch.tanh(self.bn(self.hidden(values["ehr"]))))
        return (out, {}) if return_aux else out


def test_batchnorm_statistics_are_recomputed_for_the_average_and_frozen_ones_kept():
    torch.manual_seed(0)
    model = BNModel()
    with torch.no_grad():  # statistics the frozen layer came with (e.g. from pretraining)
        model.frozen.running_mean.fill_(0.3)
        model.frozen.running_var.fill_(2.0)
    frozen = {k: v.clone() for k, v in model.frozen.state_dict().items()}
    ds = toy_dataset(40)
    res = train(model, ds, toy_dataset(24, seed=1), TrainConfig(**{**FAST, "epochs": 6, "swa_start": 0.5}),
                progress=False)
    assert res.loss_info["swa"]["batchnorm_layers_updated"] == 1
    assert all(torch.equal(v, frozen[k]) for k, v in model.frozen.state_dict().items())
    # the averaged weights' hidden activations, batch by batch (40 patients: five equal batches of 8)
    x = torch.stack([torch.as_tensor(ds[i]["values"]["ehr"]) for i in range(len(ds))])
    with torch.no_grad():
        h = model.eval().hidden(x).reshape(5, 8, -1)
    assert torch.allclose(model.bn.running_mean, h.mean(1).mean(0), atol=1e-5)
    assert torch.allclose(model.bn.running_var, h.var(1, unbiased=True).mean(0), atol=1e-5)
    assert model.bn.momentum == 0.1 and int(model.bn.num_batches_tracked) == 5


def test_an_interrupted_run_resumes_to_the_same_average(tmp_path):
    cfg = dict(swa_start=0.5, grad_accum=2)
    ref = toy_model(0)
    ref_res = _fit(ref, checkpoint_dir=str(tmp_path / "ref"), **cfg)
    with pytest.raises(KeyboardInterrupt):  # in epoch 4: epoch 3 is averaged already
        _fit(toy_model(0), [InterruptAt(4, 3)], checkpoint_dir=str(tmp_path / "run"), **cfg)
    model = toy_model(0)
    res = train(model, toy_dataset(40), toy_dataset(24, seed=1),
                TrainConfig(**{**FAST, "epochs": 6, "checkpoint_dir": str(tmp_path / "run"), **cfg}),
                progress=False, resume=True)
    assert res.resumed_from == {"epoch": 4, "batch": 3}
    assert same_weights(weights(model), weights(ref)) and res.history == ref_res.history
    assert res.loss_info["swa"] == ref_res.loss_info["swa"]


@pytest.mark.parametrize("bad", [1.0, 0.0, -1, 6, True, "half"])
def test_a_bad_swa_start_is_a_config_error_naming_the_field(bad):
    with pytest.raises(ConfigError, match="swa_start") as err:
        TrainConfig(epochs=6, swa_start=bad)
    assert err.value.column == "swa_start" and "0.5" in str(err.value)


def test_swa_start_from_an_experiment_config():
    from medmm.config import load_config

    tc = load_config({"cohort": {"manifest": "m.csv"}, "train": {"epochs": 30, "swa_start": 0.5}}).train_config()
    assert tc.swa_first_epoch == 15
    tc = load_config({"cohort": {"manifest": "m.csv"}, "train": {"epochs": 30, "swa_start": 20}}).train_config()
    assert tc.swa_first_epoch == 20 and isinstance(tc.swa_start, int)
    assert TrainConfig().swa_first_epoch is None
    with pytest.raises(ConfigError, match="swa_start"):
        load_config({"cohort": {"manifest": "m.csv"}, "train": {"epochs": 30, "swa_start": 30}}).train_config()
