"""The training loop.

AdamW or SGD; cosine, one-cycle or constant learning rate with an optional linear warm-up;
gradient clipping and accumulation; mixed precision on CUDA; masked multi-task losses with
class-imbalance options (:mod:`medmm.models.losses`); a shuffled or balanced sampler;
validation each epoch with early stopping on a chosen metric, or stochastic weight averaging of
the schedule's last epochs (``swa_start``); deterministic seeding;
atomic checkpoints each epoch and on interrupt, from which :func:`train` resumes to the
same final weights; ``DistributedDataParallel`` when run under ``torchrun``.

The trainer knows nothing of MLflow: it reports to ``callbacks``, objects with any of
``on_train_begin(info)``, ``on_resume(history)``, ``on_step_end(epoch, batch, loss)`` and
``on_epoch_end(epoch, metrics)``, which the tracking layer provides.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Batch, MultimodalDataset
from ..errors import ConfigError
from ..forking import frozen_gc
from ..models.losses import MaskedLoss, balanced_sample_weights, build_criterion
from .distributed import unwrap
from .config import OPTIMIZERS, SCHEDULERS, TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train", "seed_everything", "predict_dataset", "resolve_device",
           "training_loss", "masked_bce", "OPTIMIZERS", "SCHEDULERS"]

@dataclass
class TrainResult:
    """What :func:`train` did. ``best_epoch``/``best_score``: the selected epoch and its (windowed)
    monitored score; with ``swa_start`` the last epoch (where the average ends) and the average's
    own validation score, its details in ``loss_info["swa"]``."""

    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    seconds: float
    loss_info: dict[str, Any] = field(default_factory=dict)
    resumed_from: dict[str, int] | None = None  # {"epoch": ..., "batch": ...} when resumed
    data_wait_s: float = 0.0  # time spent waiting for batches
    step_s: float = 0.0  # time spent in training steps (data wait included)
    samples: int = 0  # training samples processed (this process)


def _deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=True)`` without importing TorchInductor
    (the public call imports it to set its ``deterministic`` flag: about 3 s per process). The
    flag only matters to ``torch.compile``: when Inductor is loaded already it is set as usual."""
    import sys

    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=mode)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=mode)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def masked_bce(logits: torch.Tensor, batch: Batch, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over the (patient, task) pairs whose label is known (and whose row is in ``rows``)."""
    return MaskedLoss("bce")(logits, batch, rows)


def training_loss(model: torch.nn.Module, batch: Batch, criterion: Any = None, *, sum_counts: Any = None) -> torch.Tensor:
    """Fused loss plus, when the model has them, its auxiliary unimodal heads' losses.

    The single place the trainer computes the loss. ``criterion(logits, batch, rows=None)`` is
    the class-imbalance loss (:func:`medmm.models.losses.build_criterion`; masked BCE by
    default). A model with multi-task loss weighting (``loss_weighting``, as
    :class:`~medmm.models.multimodal.MultimodalModel`) combines its tasks' losses itself
    (:func:`medmm.models.losses.multitask_loss`, called on the possibly DDP-wrapped model so
    that gradients are synchronised). Under data-parallel training ``sum_counts``
    (:func:`medmm.train.distributed.sum_over_processes`) makes its masked means the global
    batch's (:func:`medmm.models.losses.global_batch_means`); the plain path below (models
    without loss weighting) keeps each process's own mean.
    """
    core = unwrap(model)
    if hasattr(core, "loss_weighting") and hasattr(core, "label_columns"):
        from ..models.losses import multitask_loss

        return multitask_loss(model, batch, criterion, sum_counts=sum_counts)
    criterion = criterion or masked_bce
    out = model(batch.values, batch.present, return_aux=True)
    logits, aux = out if isinstance(out, tuple) else (out, {})
    loss = criterion(logits, batch)
    if aux:
        weight = getattr(getattr(core, "config", None), "aux_weight", 0.0)
        loss = loss + weight * sum(criterion(lg, batch, rows) for lg, rows in aux.values()) / len(aux)
    return loss


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, ds: MultimodalDataset, *, batch_size: int = 32,
                    device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, labels, label mask and presence mask for a whole dataset, ``batch_size``
    patients at a time (the training batch's default: at 128, scoring the validation and test
    splits was the peak of `medmm train` at 1,600 patients, 1,762 MB against 908 MB during the
    training steps, and grew with the cohort until the splits filled a batch)."""
    model = unwrap(model)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs, labels, lmask, present = [], [], [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=ds.collate)
    proba = getattr(model, "predict_proba", None)
    for batch in loader:
        b = batch.to(device)
        p = proba(b.values, b.present) if proba is not None else torch.sigmoid(model(b.values, b.present))
        probs.append(p.float().cpu().numpy())
        labels.append(batch.labels.numpy())
        lmask.append(batch.label_mask.numpy())
        present.append(batch.present.numpy())
    model.train(was_training)
    if not probs:
        t, m = len(ds.tasks), len(ds.modalities)
        return np.zeros((0, t), np.float32), np.zeros((0, t), np.float32), np.zeros((0, t), bool), np.zeros((0, m), bool)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(lmask), np.concatenate(present)


def _val_metrics(model, ds, tasks, device) -> dict[str, float]:
    from ..metrics import auroc
    from ..models.survival import task_val_metrics

    p, y, m, _ = predict_dataset(model, ds, device=device)
    cols = getattr(unwrap(model), "output_columns", None)
    out: dict[str, float] = {}
    losses = []
    for k, t in enumerate(tasks):
        heads = getattr(unwrap(model), "heads", None)
        if (cols and t not in cols) or (heads is not None and t in heads and heads[t].kind != "binary"):
            continue  # other kinds: task_val_metrics
        j = cols.index(t) if cols and p.shape[1] != y.shape[1] else k
        if j >= p.shape[1]:
            continue
        sel = m[:, k]
        out[f"val_auroc_{t}"] = auroc(y[sel, k], p[sel, j])
        pk = np.clip(p[sel, j], 1e-7, 1 - 1e-7)
        losses.append(float(-np.mean(y[sel, k] * np.log(pk) + (1 - y[sel, k]) * np.log(1 - pk))) if sel.any() else np.nan)
    aucs = [v for k, v in out.items()]
    out.update(task_val_metrics(unwrap(model), p, y, m, tasks))
    losses += [v for k, v in out.items() if k.startswith("val_loss_")]
    out["val_auroc_mean"] = float(np.nanmean(aucs)) if aucs and not all(np.isnan(aucs)) else float("nan")
    out["val_loss"] = float(np.nanmean(losses)) if losses else float("nan")
    return out


def _monitored(metrics: dict[str, float], config: TrainConfig, higher: bool) -> float:
    """The monitored value of one epoch (the training loss when the validation one is undefined)."""
    score = float(metrics["epoch"]) if config.monitor == "last" else metrics.get(config.monitor)
    if score is None or (isinstance(score, float) and math.isnan(score)):
        score = -metrics["train_loss"] if higher else metrics["train_loss"]
    return float(score)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32  # base seed (from the loader's seeded generator) + worker id
    random.seed(s)
    np.random.seed(s)


def _param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    enc, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (enc if name.startswith("encoders.") else rest).append(p)
    groups = [{"params": rest, "lr": config.lr}]
    if enc:
        groups.append({"params": enc, "lr": config.lr * config.encoder_lr_scale})
    return [g for g in groups if g["params"]]


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config)
    if not groups:
        raise ConfigError("the model has no trainable parameter", hint="unfreeze some layers")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(opt: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    total = max(config.epochs * steps_per_epoch, 1)
    warm = config.warmup_epochs * steps_per_epoch
    if config.scheduler == "onecycle":
        pct = min(max(config.warmup_epochs / config.epochs, 0.01), 0.99) if config.warmup_epochs else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total, pct_start=pct)

    def factor(step: int) -> float:
        f = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
        if config.scheduler == "cosine":  # per epoch, as CosineAnnealingLR(T_max=epochs)
            e = min(step // max(steps_per_epoch, 1), config.epochs)
            f *= 0.5 * (1 + math.cos(math.pi * e / config.epochs))
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class _WeightEMA:
    """Exponential moving average of a model's weights: parameters and floating buffers (BatchNorm
    running statistics), integer buffers copied. Updated after each optimiser step with decay
    ``min(decay, (1 + n) / (10 + n))`` at update ``n`` (TensorFlow's ``ExponentialMovingAverage``
    with ``num_updates``), so the random initialisation fades within the first steps. ``model`` is
    an eval-mode copy that validation, selection and the result use (as timm's ``ModelEmaV3``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            s = src[k].detach()
            if v.dtype.is_floating_point:
                v.lerp_(s.to(v.dtype), 1.0 - d)
            else:
                v.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["model"])


@torch.no_grad()
def _update_bn(model: torch.nn.Module, ds: MultimodalDataset, batch_size: int, device: torch.device) -> int:
    """Recompute the BatchNorm running statistics of ``model`` (averaged weights) by one pass over
    ``ds`` in training mode, each batch weighted equally (momentum ``None``), as
    ``torch.optim.swa_utils.update_bn``, which cannot call a model on a :class:`Batch`. Only the
    layers that train: a frozen stage's BatchNorm stays in eval mode and keeps its statistics (the
    torch helper would reset them and never refill them). Returns the number of layers updated."""
    was_training = model.training
    model.train()
    bns = [m for m in model.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    if not bns or not len(ds):
        model.train(was_training)
        return 0
    saved = {m: (copy.deepcopy(m.state_dict()), m.momentum) for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=ds.collate,
                                         drop_last=len(ds) > batch_size)
    for batch in loader:
        b = batch.to(device)
        model(b.values, b.present)
    for m, (st, momentum) in saved.items():
        m.momentum = momentum
        if int(m.num_batches_tracked) == 0:  # no training row reached it (its modality absent throughout)
            m.load_state_dict(st)
    model.train(was_training)
    return len(bns)


class _StopFlag:
    """SIGINT/SIGTERM set a flag checked between batches, so the interrupt checkpoint is
    written at a clean step boundary (only in the main thread; elsewhere signals behave as usual)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def train(
    model: torch.nn.Module,
    train_ds: MultimodalDataset,
    val_ds: MultimodalDataset | None,
    config: TrainConfig,
    *,
    callbacks: list[Any] = (),
    progress: bool = True,
    resume: bool | str | Path = False,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    With ``config.checkpoint_dir`` a checkpoint is written there after every epoch and when
    SIGINT/SIGTERM arrives (then ``KeyboardInterrupt`` is raised). ``resume=True`` continues
    from ``checkpoint_dir/last.pt`` when it exists (``resume`` may also be a checkpoint
    path); a resumed run reaches the same weights and metrics as an uninterrupted one. A checkpoint
    of another model, seed or training settings is refused with a ``ConfigError`` naming each
    changed setting (:func:`~medmm.train.checkpoint.check_resumable`; ``num_workers``, ``device``,
    ``checkpoint_dir`` and ``deterministic`` may change).
    """
    from tqdm.auto import tqdm

    from .checkpoint import check_resumable, load_checkpoint, model_fingerprint, rng_state, save_checkpoint, set_rng_state
    from .distributed import EpochSampler, all_reduce_sum, dist_info, sum_over_processes

    info = dist_info()
    main = info.rank == 0
    sum_counts = sum_over_processes if info.enabled else None  # masked means over the global batch
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    ckpt = None
    if resume:
        source = Path(resume) if not isinstance(resume, bool) else ckpt_dir
        if source is None:
            raise ConfigError("resume needs a checkpoint", hint="set checkpoint_dir or pass resume=PATH")
        ckpt = load_checkpoint(source)
        if ckpt is not None:
            check_resumable(ckpt, model, config, source)

    prev_det = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    seed_everything(config.seed + info.rank)
    device = resolve_device(config.device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    model.to(device)
    core = model
    tasks = train_ds.tasks

    heads = getattr(unwrap(model), "heads", None)
    kinds = ({c: heads[t].kind for t in unwrap(model).tasks for c in unwrap(model).label_columns[t]}
             if heads is not None else {})
    criterion = build_criterion(config, train_ds, kinds=kinds)
    weights = (balanced_sample_weights(train_ds, config.balance_task, kinds=kinds) if config.sampler == "balanced"
               else None)
    loss_info = {**criterion.describe(), "sampler": config.sampler,
                 "prevalence": {t: round(v, 4) for t, v in criterion.prevalence.items()}}
    if config.sampler == "balanced":
        loss_info["balance_task"] = config.balance_task or tasks[0]

    sampler = EpochSampler(len(train_ds), seed=config.seed, rank=info.rank, world_size=info.world_size,
                           weights=weights)
    if info.enabled and len(train_ds) >= config.batch_size * info.world_size:
        # the full global batches of a single process with world_size x the batch: a padded
        # duplicate would otherwise be trained on, and an epoch would take more steps than that
        # process (23 patients, 2 x 4: 3 steps against its 2)
        sampler.cap = len(train_ds) // (config.batch_size * info.world_size) * config.batch_size
    per_rank = len(sampler)
    drop_last = per_rank > config.batch_size
    n_batches = per_rank // config.batch_size if drop_last else -(-per_rank // config.batch_size)
    steps_per_epoch = -(-n_batches // config.grad_accum)

    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # batch statistics over the global batch (SyncBatchNorm needs a GPU)
            core = torch.nn.SyncBatchNorm.convert_sync_batchnorm(core)
        model = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=True)
    opt = _make_optimizer(core, config)
    sched = _make_scheduler(opt, config, steps_per_epoch)
    use_amp = bool(config.amp) and device.type == "cuda"
    amp_dtype = torch.bfloat16 if config.amp_dtype == "bfloat16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    fingerprint = model_fingerprint(core)
    higher = config.higher_is_better
    window = config.window_for(len(val_ds) if val_ds is not None else 0)
    half = min(window // 2, (config.epochs - 1) // 2)  # an epoch is judged on the mean of the window centred on it
    window = 2 * half + 1
    recent: dict[int, dict[str, torch.Tensor]] = {}  # the last `half` epochs' weights, until their window is full
    best_score, best_epoch, best_state = (-np.inf if higher else np.inf), -1, None
    history: list[dict[str, float]] = []
    steps = 0
    start_epoch, start_batch, running = 0, 0, (0.0, 0)
    pending_grads = None
    finished = False
    resumed_from = None
    if ckpt is not None:
        core.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        best_score, best_epoch, best_state = ckpt["best_score"], ckpt["best_epoch"], ckpt["best_state"]
        recent = dict(ckpt.get("recent_states") or {})
        history = list(ckpt["history"])
        steps = ckpt["steps"]
        start_epoch, start_batch = ckpt["epoch"], ckpt["batch"]
        running = tuple(ckpt.get("running", (0.0, 0)))
        pending_grads = ckpt.get("grads")
        finished = bool(ckpt.get("finished"))
        if main:
            set_rng_state(ckpt["rng"])
        else:
            seed_everything(config.seed + info.rank + 7919 * start_epoch)
        resumed_from = {"epoch": start_epoch, "batch": start_batch}
    ema = _WeightEMA(core, config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None and ckpt is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    scored = ema.model if ema is not None else core  # the weights validated, selected and returned
    swa_first = config.swa_first_epoch
    swa = None
    if swa_first is not None:
        from torch.optim.swa_utils import AveragedModel

        swa = AveragedModel(scored)  # equal-weight mean of the epochs' weights; buffers follow `scored`
        if ckpt is not None and ckpt.get("swa"):
            swa.load_state_dict(ckpt["swa"])

    def state(epoch: int, batch: int, run: tuple[float, int], grads=None, done: bool = False) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in core.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "best_score": best_score, "best_epoch": best_epoch, "best_state": best_state, "recent_states": recent,
            "history": history, "steps": steps, "epoch": epoch, "batch": batch, "running": run,
            "grads": grads, "rng": rng_state(), "finished": done, "config": config.to_dict(),
            "fingerprint": fingerprint, "ema": ema.state_dict() if ema is not None else None,
            "swa": {k: v.detach().cpu().clone() for k, v in swa.state_dict().items()} if swa is not None else None,
        }

    loss_info["monitor_window"] = window
    before = getattr(core, "before_training", None)  # e.g. MultimodalModel: wide_l2="auto"
    if callable(before):
        loss_info.update(before(train_ds, val_ds))
    for cb in callbacks:
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin({"imbalance": loss_info, "world_size": info.world_size,
                               "steps_per_epoch": steps_per_epoch, "device": str(device)})
        if history and hasattr(cb, "on_resume"):
            cb.on_resume(history)

    t0 = time.perf_counter()
    wait_s = step_s = 0.0
    samples = 0
    params = [p for p in core.parameters() if p.requires_grad]
    bar = tqdm(total=config.epochs, initial=start_epoch, desc="train", unit="epoch", disable=not (progress and main))
    try:
        with _StopFlag() as stop:
            epoch = start_epoch
            while not finished and epoch < config.epochs:
                skip_batches = start_batch if epoch == start_epoch else 0
                sampler.set_epoch(epoch, skip=skip_batches * config.batch_size)
                if hasattr(train_ds, "set_epoch"):  # per-epoch augmentation seeds
                    train_ds.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(
                    train_ds, batch_size=config.batch_size, sampler=sampler, collate_fn=train_ds.collate,
                    drop_last=drop_last, num_workers=config.num_workers, worker_init_fn=_worker_init,
                    generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch),
                    pin_memory=device.type == "cuda", persistent_workers=False)
                model.train()
                total, count = running if skip_batches else (0.0, 0)
                if pending_grads is not None:
                    for p, g in zip(params, pending_grads):
                        p.grad = None if g is None else g.to(device)
                    pending_grads = None
                micro = skip_batches
                hit_max = False
                t_wait = time.perf_counter()
                with frozen_gc() if config.num_workers > 0 else contextlib.nullcontext():
                    batches = iter(loader)  # the workers fork here: the parent's heap stays shared with them
                for batch in batches:
                    t_got = time.perf_counter()
                    wait_s += t_got - t_wait
                    b = batch.to(device)
                    last_micro = (micro + 1) % config.grad_accum == 0 or micro + 1 == n_batches
                    sync = model.no_sync() if (info.enabled and not last_micro) else contextlib.nullcontext()
                    with sync:
                        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                            loss = training_loss(model, b, criterion, sum_counts=sum_counts)
                        scaler.scale(loss / config.grad_accum).backward()
                    if last_micro:
                        if config.grad_clip:
                            scaler.unscale_(opt)
                            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                        scaler.step(opt)
                        scaler.update()
                        opt.zero_grad(set_to_none=True)
                        if not (config.scheduler == "onecycle" and sched.last_epoch + 1 >= sched.total_steps):
                            sched.step()
                        steps += 1
                        if ema is not None:
                            ema.update(core)
                    lv = float(loss.detach())
                    total += lv * len(batch)
                    count += len(batch)
                    samples += len(batch)
                    micro += 1
                    t_end = time.perf_counter()
                    step_s += t_end - t_wait
                    t_wait = t_end
                    for cb in callbacks:
                        if hasattr(cb, "on_step_end"):
                            cb.on_step_end(epoch, micro, lv)
                    if stop.signum is not None:
                        if main and ckpt_dir is not None:
                            grads = None if last_micro else [None if p.grad is None else p.grad.detach().cpu()
                                                             for p in params]
                            save_checkpoint(state(epoch, micro, (total, count), grads), ckpt_dir)
                        raise KeyboardInterrupt(f"signal {stop.signum}")
                    if config.max_steps and steps >= config.max_steps:
                        hit_max = True
                        break
                total, count = all_reduce_sum([total, float(count)], device)
                metrics = {"train_loss": total / max(count, 1), "lr": opt.param_groups[0]["lr"]}
                if val_ds is not None and len(val_ds):
                    metrics.update(_val_metrics(scored, val_ds, tasks, device))
                history.append({"epoch": epoch, **metrics})
                if swa is not None and epoch >= swa_first:
                    swa.update_parameters(scored)
                state_now = None
                if half or best_state is None:
                    state_now = {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
                if best_state is None:  # a placeholder until the first full window
                    best_score, best_epoch, best_state = (-np.inf if higher else np.inf), epoch, state_now
                centre = epoch - half
                if half:
                    recent[epoch] = state_now
                if centre >= half:  # the window [centre - half, centre + half] is complete
                    scores = [_monitored(h, config, higher) for h in history[centre - half:centre + half + 1]]
                    score = float(np.mean(scores))  # one noisy epoch on a small val set cannot win alone
                    placeholder = best_epoch < half
                    if placeholder or ((score > best_score) if higher else (score < best_score)):
                        best_score, best_epoch = score, centre
                        best_state = recent.get(centre) or state_now or \
                            {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
                recent = {e: st for e, st in recent.items() if e > centre}
                judged = epoch >= 2 * half  # at least one full window
                stop_now = hit_max or (swa is None and judged and epoch + 1 >= config.min_epochs
                                       and epoch - best_epoch >= config.patience)
                epoch += 1
                finished = stop_now or epoch >= config.epochs
                if main and ckpt_dir is not None:
                    save_checkpoint(state(epoch, 0, (0.0, 0), done=finished), ckpt_dir)
                for cb in callbacks:
                    if hasattr(cb, "on_epoch_end"):
                        cb.on_epoch_end(epoch - 1, metrics)
                bar.update(1)
                bar.set_postfix({k: round(v, 3) for k, v in metrics.items() if k in ("train_loss", config.monitor)})
    finally:
        bar.close()
        if config.deterministic and not prev_det:
            _deterministic_algorithms(False)
    if swa is not None and int(swa.n_averaged) > 0:
        core.load_state_dict(swa.module.state_dict())
        n_bn = _update_bn(core, train_ds, config.batch_size, device)
        best_epoch = int(history[-1]["epoch"])
        swa_info: dict[str, Any] = {"first_epoch": swa_first, "epochs_averaged": int(swa.n_averaged),
                                    "batchnorm_layers_updated": n_bn}
        best_score = float("nan")
        if val_ds is not None and len(val_ds):
            val = _val_metrics(core, val_ds, tasks, device)
            swa_info["val"] = val
            best_score = _monitored({**val, "epoch": best_epoch, "train_loss": history[-1]["train_loss"]}, config,
                                    higher)
        loss_info["swa"] = swa_info
    else:  # no average (off, or the run stopped before swa_start): the selected epoch
        if swa is not None:
            loss_info["swa"] = {"first_epoch": swa_first, "epochs_averaged": 0}
        core.load_state_dict(best_state if best_state is not None else scored.state_dict())
    after = getattr(core, "after_training", None)  # validation-fitted steps (MultimodalModel: wide-or-deep, ...)
    if callable(after):
        loss_info.update(after(train_ds, val_ds, seed=config.seed))
    from ..models.survival import fit_survival_baselines

    fit_survival_baselines(core, train_ds, device=device)
    return TrainResult(best_epoch=best_epoch, best_score=float(best_score), history=history,
                       seconds=time.perf_counter() - t0, loss_info=loss_info, resumed_from=resumed_from,
                       data_wait_s=wait_s, step_s=step_s, samples=samples)
