"""Training settings: :class:`TrainConfig` and the names it accepts.

Kept free of torch so that reading and validating an experiment config
(:mod:`medmm.config`) does not import it; :mod:`medmm.train.trainer` re-exports them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError
from ..modelspec import LOSSES

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULERS", "LOSSES", "SAMPLERS"]

SAMPLERS = ("shuffle", "balanced")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "onecycle", "constant")


@dataclass
class TrainConfig:
    """Optimisation settings.

    Which weights a run returns: by default those of the epoch whose ``monitor`` (averaged over
    ``monitor_window`` epochs centred on it) was best, early stopping after ``patience`` epochs
    without improvement (never before ``min_epochs``). ``swa_start`` replaces that choice by
    stochastic weight averaging (Izmailov et al. 2018; ``torch.optim.swa_utils``, Lightning's
    ``StochasticWeightAveraging``): the weights at the end of every epoch from ``swa_start`` to the
    last are averaged with equal weight, BatchNorm statistics are recomputed for the average on the
    training data (``swa_utils.update_bn``), and the average is the result. An int is the first
    averaged epoch (0-based), a float in (0, 1) a fraction of ``epochs`` (0.5: the second half of
    the schedule; epoch ``int(swa_start * epochs)`` first, as Lightning). Early stopping is off
    then (the average needs the schedule's tail); the epochs' own validation metrics are still
    recorded, and the average's in ``TrainResult.loss_info["swa"]``. It suits a validation set
    too small to tell late epochs apart (each epoch's figure is then mostly noise) and a
    multi-task model whose tasks peak at different epochs: the average needs no validation figure.
    With ``ema_decay`` the EMA weights are what is averaged.
    """

    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 10
    min_epochs: int = 15
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"
    monitor: str = "val_loss"  # a metric name, or "last" (keep the last epoch's weights)
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests)
    # optimiser and schedule
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # SGD only
    scheduler: str = "cosine"  # cosine (per epoch) | onecycle (per step) | constant
    warmup_epochs: float = 0.0  # linear warm-up (cosine, constant), or the rising phase of onecycle
    grad_accum: int = 1  # micro-batches per optimiser step
    amp: bool = False  # mixed precision (CUDA only; ignored on CPU)
    amp_dtype: str = "float16"  # float16 (with a gradient scaler) | bfloat16
    encoder_lr_scale: float = 1.0  # encoders' learning rate relative to lr (fine-tuning)
    monitor_mode: str = "auto"  # min | max | auto (min for a *loss* metric)
    monitor_window: Any = "auto"  # epochs (centred, odd) averaged before comparing `monitor`; auto: by validation size
    ema_decay: float = 0.0  # per-step EMA of the weights used for validation, selection and the result (0: off)
    swa_start: int | float | None = None  # average the weights of the epochs from this one to the last (None: off)
    # class imbalance
    loss: str = "bce"  # bce | weighted_bce | focal
    pos_weight: Any = None  # None | "auto" (N_neg/N_pos from training prevalence) | number | list per task
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    sampler: str = "shuffle"  # shuffle | balanced (classes of balance_task equally likely)
    balance_task: str | None = None  # default: the first task
    # data loading, determinism, checkpoints
    num_workers: int = 0
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn only)
    checkpoint_dir: str | None = None  # write last.pt here each epoch and on interrupt

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch_size and lr must be positive")
        checks = [("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("loss", LOSSES), ("sampler", SAMPLERS),
                  ("monitor_mode", ("auto", "min", "max")), ("amp_dtype", ("float16", "bfloat16"))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not supported", column=name,
                                  hint=f"use one of {allowed}")
        w = self.monitor_window
        if w != "auto" and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ConfigError(f"monitor_window={w!r} is not 'auto' or a positive integer", column="monitor_window",
                              hint="e.g. 3, or auto (5 epochs under 200 validation patients, 3 under 1000, else 1)")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay!r} is not in [0, 1)", column="ema_decay",
                              hint="0 turns the weight average off; 0.9-0.999 are usual (closer to 1: longer memory)")
        s = self.swa_start
        if s is not None:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or \
                    (isinstance(s, float) and not 0.0 < s < 1.0) or (isinstance(s, int) and not 0 <= s < self.epochs):
                raise ConfigError(f"swa_start={s!r} is not an epoch in [0, epochs={self.epochs}) nor a fraction in (0, 1)",
                                  column="swa_start",
                                  hint="e.g. 0.5 (average the second half of the schedule), an epoch number below "
                                       "epochs, or null (off: keep the best validation epoch)")
        if self.grad_accum < 1 or self.num_workers < 0 or self.warmup_epochs < 0:
            raise ConfigError("grad_accum must be >= 1, num_workers and warmup_epochs >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def swa_first_epoch(self) -> int | None:
        """The first epoch (0-based) whose weights enter the average, or None when averaging is off."""
        if self.swa_start is None:
            return None
        if isinstance(self.swa_start, float):
            return min(int(self.swa_start * self.epochs), self.epochs - 1)
        return int(self.swa_start)

    def window_for(self, n_val: int) -> int:
        """Epochs (odd, centred on the judged epoch) of the mean of the monitored metric: a few on
        small validation sets, where one epoch's figure is mostly noise (AUROC's standard error is
        ~0.04 on 100 patients). An even setting is rounded up."""
        if self.monitor_window != "auto":
            return int(self.monitor_window) // 2 * 2 + 1
        if self.monitor == "last" or n_val <= 0:
            return 1
        return 5 if n_val < 200 else 3 if n_val < 1000 else 1

    @property
    def higher_is_better(self) -> bool:
        if self.monitor == "last":
            return True
        if self.monitor_mode != "auto":
            return self.monitor_mode == "max"
        return "loss" not in self.monitor
