"""The trainer: optimisers, schedules, accumulation, determinism, early stopping, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from medmm.errors import ConfigError
from medmm.train.checkpoint import load_checkpoint, save_checkpoint
from medmm.train.trainer import TrainConfig, _make_scheduler, train
from test_train_toys import same_weights, toy_dataset, toy_model, weights

FAST = dict(epochs=4, batch_size=8, lr=0.05, min_epochs=1, patience=100, device="cpu")


def _train(tmp=None, model_seed=0, **kw):
    cfg = TrainConfig(**{**FAST, **kw})
    model = toy_model(model_seed)
    res = train(model, toy_dataset(40), toy_dataset(24, seed=1), cfg, progress=False)
    return model, res


@pytest.mark.parametrize("optimizer,scheduler", [("adamw", "cosine"), ("sgd", "onecycle"), ("sgd", "constant")])
def test_optimizers_and_schedules_learn(optimizer, scheduler):
    model, res = _train(optimizer=optimizer, scheduler=scheduler, warmup_epochs=1, epochs=8)
    losses = [h["train_loss"] for h in res.history]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert res.history[-1]["val_auroc_mean"] > 0.7


def test_warmup_then_cosine_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = _make_scheduler(opt, TrainConfig(epochs=4, lr=1.0, warmup_epochs=1), steps_per_epoch=4)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up over the first epoch
    assert lrs[4:8] == pytest.approx([0.5 * (1 + np.cos(np.pi / 4))] * 4)  # cosine, constant within an epoch
    assert lrs[8] > lrs[12] > 0


def test_unknown_settings_are_config_errors():
    with pytest.raises(ConfigError):
        TrainConfig(optimizer="adam")
    with pytest.raises(ConfigError):
        TrainConfig(scheduler="step")


def test_same_seed_same_weights_other_seed_differs():
    a, _ = _train(seed=3)
    b, _ = _train(seed=3)
    c, _ = _train(seed=4)
    assert same_weights(weights(a), weights(b))
    assert not same_weights(weights(a), weights(c))


def test_gradient_accumulation_matches_a_large_batch():
    # 2 micro-batches of 8 accumulate to the gradient of one batch of 16 (all labels known, no dropout)
    a, _ = _train(batch_size=16, grad_accum=1, max_steps=1, grad_clip=0, scheduler="constant")
    b, _ = _train(batch_size=8, grad_accum=2, max_steps=1, grad_clip=0, scheduler="constant")
    c, _ = _train(batch_size=8, grad_accum=1, max_steps=1, grad_clip=0, scheduler="constant")
    for k, v in weights(a).items():
        torch.testing.assert_close(weights(b)[k], v, atol=1e-6, rtol=1e-5)
    assert not same_weights(weights(a), weights(c))


def test_gradient_clipping_limits_the_step():
    init = weights(toy_model(0))
    clipped, _ = _train(grad_clip=1e-4, max_steps=1, optimizer="sgd", momentum=0, scheduler="constant", weight_decay=0)
    free, _ = _train(grad_clip=0, max_steps=1, optimizer="sgd", momentum=0, scheduler="constant", weight_decay=0)
    moved = lambda m: sum(float((weights(m)[k] - init[k]).norm() ** 2) for k in init) ** 0.5  # noqa: E731
    assert moved(clipped) == pytest.approx(0.05 * 1e-4, rel=1e-3)  # lr * max norm
    assert moved(free) > 100 * moved(clipped)


def test_amp_is_ignored_on_cpu():
    _, res = _train(amp=True, epochs=1)
    assert np.isfinite(res.history[0]["train_loss"])


def test_early_stopping_on_the_chosen_metric():
    _, res = _train(epochs=30, monitor="val_auroc_mean", patience=2, lr=0.2, monitor_window=1)
    aucs = [h["val_auroc_mean"] for h in res.history]
    assert len(res.history) < 30
    assert res.best_epoch == int(np.nanargmax(aucs))
    assert res.best_score == pytest.approx(max(aucs))
    assert len(res.history) - 1 - res.best_epoch == 2  # stopped after `patience` epochs without improvement


def test_best_epoch_weights_are_returned(tmp_path):
    seen = {}

    class Keep:
        def on_epoch_end(self, epoch, metrics):
            seen[epoch] = weights(model)

    model = toy_model(0)
    res = train(model, toy_dataset(40), toy_dataset(24, seed=1),
                TrainConfig(**{**FAST, "epochs": 6, "lr": 0.3, "monitor": "val_auroc_mean"}), callbacks=[Keep()],
                progress=False)
    assert same_weights(weights(model), seen[res.best_epoch])


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    save_checkpoint({"x": 1}, tmp_path)

    def broken(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_checkpoint({"x": 2}, tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["x"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def _ckpt_cfg(tmp_path, **kw):
    return TrainConfig(**{**FAST, "epochs": 5, "checkpoint_dir": str(tmp_path / "ckpt"), **kw})


def test_resume_from_an_epoch_checkpoint_reaches_the_same_weights(tmp_path):
    train_ds, val_ds = toy_dataset(40), toy_dataset(24, seed=1)
    ref = toy_model(0)
    ref_res = train(ref, train_ds, val_ds, _ckpt_cfg(tmp_path / "ref", grad_accum=2), progress=False)

    class CopyAfterEpoch1:
        def on_epoch_end(self, epoch, metrics):
            if epoch == 1:
                shutil.copy(tmp_path / "run" / "ckpt" / "last.pt", tmp_path / "epoch1.pt")

    cfg = _ckpt_cfg(tmp_path / "run", grad_accum=2)
    train(toy_model(0), train_ds, val_ds, cfg, callbacks=[CopyAfterEpoch1()], progress=False)
    state = load_checkpoint(tmp_path / "epoch1.pt")
    assert state["epoch"] == 2 and state["batch"] == 0 and not state["finished"]
    resumed = toy_model(99)  # weights come from the checkpoint
    res = train(resumed, train_ds, val_ds, cfg, resume=tmp_path / "epoch1.pt", progress=False)
    assert res.resumed_from == {"epoch": 2, "batch": 0}
    assert same_weights(weights(resumed), weights(ref))
    assert res.history == ref_res.history


class InterruptAt:
    """A callback that sends SIGINT after step ``batch`` of ``epoch`` (as Ctrl-C would)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_step_end(self, epoch, batch, loss):
        if (epoch, batch) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupt_mid_epoch_checkpoints_and_resumes_exactly(tmp_path):
    train_ds, val_ds = toy_dataset(40), toy_dataset(24, seed=1)
    ref = toy_model(0)
    ref_res = train(ref, train_ds, val_ds, _ckpt_cfg(tmp_path / "ref", grad_accum=2), progress=False)

    cfg = _ckpt_cfg(tmp_path / "run", grad_accum=2)  # step 3 lies between the micro-batches of an accumulation
    with pytest.raises(KeyboardInterrupt):
        train(toy_model(0), train_ds, val_ds, cfg, callbacks=[InterruptAt(2, 3)], progress=False)
    state = load_checkpoint(cfg.checkpoint_dir)
    assert (state["epoch"], state["batch"]) == (2, 3)
    assert state["grads"] is not None  # the half-accumulated gradient is kept
    resumed = toy_model(5)
    res = train(resumed, train_ds, val_ds, cfg, resume=True, progress=False)
    assert same_weights(weights(resumed), weights(ref))
    assert res.history == ref_res.history
    # a finished run resumes to its final state without training again
    again = toy_model(7)
    res2 = train(again, train_ds, val_ds, cfg, resume=True, progress=False)
    assert same_weights(weights(again), weights(ref)) and res2.history == ref_res.history


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    cfg = _ckpt_cfg(tmp_path, epochs=2)
    a = toy_model(0)
    res = train(a, toy_dataset(40), None, cfg, resume=True, progress=False)
    assert res.resumed_from is None and len(res.history) == 2


def test_data_wait_is_measured():
    _, res = _train(epochs=2)
    assert 0 <= res.data_wait_s < res.step_s
    assert res.samples == 2 * 40 // 8 * 8


def test_workers_give_the_same_result_as_the_main_process():
    a, _ = _train(epochs=2, num_workers=0)
    b, _ = _train(epochs=2, num_workers=2)
    assert same_weights(weights(a), weights(b))


def test_train_config_dict_round_trip():
    cfg = TrainConfig(loss="focal", sampler="balanced", pos_weight="auto")
    assert TrainConfig(**cfg.to_dict()) == cfg
    assert dataclasses.asdict(cfg)["loss"] == "focal"


# ---------------------------------------------------------------------------------------------- weight average


class _BNToy(torch.nn.Module):
    """The toy model with a BatchNorm layer: its running statistics are averaged too."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                                       torch.nn.Linear(8, 2))

    def forward(self, values, present, return_aux=False):
        out = self.net(values["ehr"])
        return (out, {}) if return_aux else out


def test_ema_is_the_exponential_average_of_each_steps_weights():
    torch.manual_seed(0)
    model = _BNToy()
    steps = []

    class EveryStep:
        def on_step_end(self, epoch, batch, loss):
            steps.append(weights(model))

    cfg = TrainConfig(**{**FAST, "epochs": 3, "ema_decay": 0.8, "monitor": "last"})
    res = train(model, toy_dataset(40), toy_dataset(24, seed=1), cfg, callbacks=[EveryStep()], progress=False)
    torch.manual_seed(0)
    ema = weights(_BNToy())
    for n, w in enumerate(steps, start=1):
        d = min(0.8, (1 + n) / (10 + n))
        ema = {k: (d * v + (1 - d) * w[k]) if v.is_floating_point() else w[k] for k, v in ema.items()}
    assert len(steps) == 3 * 5 and res.best_epoch == 2
    for k, v in weights(model).items():  # the returned weights are the average, BatchNorm statistics included
        torch.testing.assert_close(v, ema[k], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(weights(model)["net.1.running_mean"], steps[-1]["net.1.running_mean"])
    assert weights(model)["net.1.num_batches_tracked"] == steps[-1]["net.1.num_batches_tracked"]


def test_ema_weights_are_what_validation_scores():
    raw, raw_res = _train(epochs=3)
    avg, avg_res = _train(epochs=3, ema_decay=0.9, monitor="last")
    from medmm.train.trainer import _val_metrics

    val = toy_dataset(24, seed=1)
    assert _val_metrics(avg, val, val.tasks, torch.device("cpu"))["val_loss"] == pytest.approx(
        avg_res.history[-1]["val_loss"])
    assert avg_res.history[0]["train_loss"] == pytest.approx(raw_res.history[0]["train_loss"])  # same steps taken
    assert avg_res.history[-1]["val_loss"] != pytest.approx(raw_res.history[-1]["val_loss"])


def test_ema_decay_out_of_range_is_a_config_error():
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="ema_decay"):
            TrainConfig(ema_decay=bad)


def test_interrupted_run_with_ema_resumes_exactly(tmp_path):
    train_ds, val_ds = toy_dataset(40), toy_dataset(24, seed=1)
    ref = toy_model(0)
    ref_res = train(ref, train_ds, val_ds, _ckpt_cfg(tmp_path / "ref", ema_decay=0.9), progress=False)

    cfg = _ckpt_cfg(tmp_path / "run", ema_decay=0.9)
    with pytest.raises(KeyboardInterrupt):
        train(toy_model(0), train_ds, val_ds, cfg, callbacks=[InterruptAt(2, 3)], progress=False)
    assert load_checkpoint(cfg.checkpoint_dir)["ema"]["updates"] == 2 * 5 + 3
    resumed = toy_model(5)
    res = train(resumed, train_ds, val_ds, cfg, resume=True, progress=False)
    assert same_weights(weights(resumed), weights(ref))
    assert res.history == ref_res.history


def test_deterministic_switch_sets_torch_flags_without_importing_inductor():
    """The trainer's determinism switch sets the same flags as torch.use_deterministic_algorithms,
    but does not pay TorchInductor's import (seconds per process) when nothing compiled."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from medmm.train.trainer import _deterministic_algorithms as d\n"
        "d(True)\n"
        "assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "assert 'torch._inductor' not in sys.modules, 'inductor imported'\n"
        "d(False)\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "import torch._inductor.config as c\n"
        "d(True)\n"
        "assert c.deterministic and torch.are_deterministic_algorithms_enabled()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
