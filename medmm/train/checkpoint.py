"""Training checkpoints, written atomically.

A checkpoint holds everything needed to continue a run bit for bit: model, optimiser,
scheduler and AMP scaler states, the best epoch's weights, the history, the step counters,
the position inside the epoch (for a checkpoint written on interrupt) and every random
state (Python, NumPy, torch CPU and CUDA), and the training settings it was written with, which
:func:`check_resumable` compares with the resuming run's. It is written to a temporary file in the same
folder, flushed to disk and renamed over ``last.pt`` (:func:`os.replace` is atomic), so a
process killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ReadError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "model_fingerprint",
           "check_resumable", "run_settings", "ResumeWarning", "RESUME_MAY_CHANGE", "LAST", "CHECKPOINT_VERSION"]

LAST = "last.pt"
CHECKPOINT_VERSION = 1

#: Training settings a resumed run may change: they choose where and how the numbers are computed,
#: not which ones. ``num_workers``: the loader's order and the workers' seeds come from the seed and
#: the epoch, so any count gives the same batches (tested). ``device``: moving a run to another
#: machine (CPU and GPU round differently in the last bits). ``checkpoint_dir``: where the files
#: live (a checkpoint may be copied or resumed from a path). ``deterministic``: which kernels run,
#: not what they compute (on CPU the same numbers; on CUDA without it a run is not bit-reproducible
#: anyway). Every other field (``lr``, ``epochs``, ``scheduler``, ``loss``, ``patience``, ...) is
#: compared by :func:`check_resumable`, as is any field added to ``TrainConfig`` later.
RESUME_MAY_CHANGE = frozenset({"num_workers", "device", "checkpoint_dir", "deterministic"})


class ResumeWarning(UserWarning):
    """A checkpoint resumed without every check: it predates the training settings it would be compared on."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's config (when it has one) and of its parameter and buffer names and
    shapes: two models with the same fingerprint can exchange checkpoints."""
    cfg = getattr(model, "config", None)
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else None
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    blob = json.dumps({"config": cfg, "state": shapes}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_settings(config: Any) -> dict[str, Any]:
    """The fields of a :class:`~medmm.train.config.TrainConfig` (or its ``to_dict()``) that decide a
    run's numbers: every field but :data:`RESUME_MAY_CHANGE`, tuples as lists (as YAML gives them)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    return {k: _plain(v) for k, v in d.items() if k not in RESUME_MAY_CHANGE}


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def check_resumable(state: dict[str, Any], model: torch.nn.Module, config: Any, path: str | Path) -> None:
    """Refuse, with the fix, to resume ``state`` into a model or a run it was not written by.

    ``config`` is the resuming run's :class:`~medmm.train.config.TrainConfig` (a bare seed is
    accepted, then only the seed is compared). Every training setting but
    :data:`RESUME_MAY_CHANGE` must equal the one the checkpoint was written with: its optimiser,
    scheduler, sampler and early-stopping state continue under them, so a changed ``lr``,
    ``epochs`` (the cosine schedule's length), ``loss`` or ``patience`` would mix two runs. A
    setting added to medmm after the checkpoint was written is taken as its default then. A
    checkpoint that stored no settings (older medmm) resumes with a :class:`ResumeWarning`.
    """
    fix = (f"delete {path} to train from scratch, or set train.checkpoint_dir to a new folder "
           "(each model and seed needs its own)")
    want = model_fingerprint(model)
    have = state.get("fingerprint")
    if have is not None and have != want:
        raise ConfigError(f"the checkpoint in {path} was written by another model (fingerprint {have}, this model "
                          f"{want}): its config or input shapes changed since", path=path, hint=fix)
    if have is None:  # written before fingerprints: compare the weights' names and shapes
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in state["model"].items()}
        if mine != theirs:
            diff = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
            raise ConfigError(f"the checkpoint in {path} does not fit this model (first differences: {diff})",
                              path=path, hint=fix)
    stored = state.get("config") or {}
    seed = config if isinstance(config, int) else config.seed
    ran = stored.get("seed")
    if ran is not None and ran != seed:
        raise ConfigError(f"the checkpoint in {path} belongs to a run with seed {ran}, not {seed}", path=path,
                          hint=fix)
    if isinstance(config, int):
        return
    now = run_settings(config)
    then = run_settings(stored)
    if not set(then) - {"seed"}:
        warnings.warn(f"{path}: this checkpoint stored no training settings (written by an older medmm), so they "
                      f"could not be compared with this run's; resuming it assumes they did not change "
                      f"(lr, epochs, scheduler, loss, ...)", ResumeWarning, stacklevel=3)
        return
    defaults = run_settings(type(config)()) if dataclasses.is_dataclass(config) else {}
    changed, assumed = [], []
    for k, new in now.items():
        if k in then:
            old = then[k]
        elif k in defaults:  # a setting medmm did not have when the checkpoint was written
            old = defaults[k]
            assumed.append(k)
        else:
            continue
        if old != new:
            changed.append((k, old, new))
    if changed:
        names = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changed)
        back = ", ".join(f"train.{k}={_plain(old)!r}" for k, old, _ in changed)
        raise ConfigError(
            f"the checkpoint in {path} was written with other training settings ({names}); resuming would continue "
            "its optimiser, schedule and early-stopping state under the new ones, a mix of two runs", path=path,
            column=changed[0][0] if len(changed) == 1 else None,
            hint=f"set {back} to resume that run, or delete {path} (or set train.checkpoint_dir to a new folder) "
                 "to train from scratch with the new settings")
    if assumed:
        warnings.warn(f"{path}: the checkpoint predates the settings {', '.join(assumed)}; resuming assumes it ran "
                      "with their defaults", ResumeWarning, stacklevel=3)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], folder: str | Path, name: str = LAST) -> Path:
    """Write ``state`` to ``folder/name`` atomically; returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"version": CHECKPOINT_VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (a file, or a folder holding ``last.pt``); ``None`` if absent."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated file cannot exist (atomic writes) but a foreign one can
        raise ReadError(f"cannot read checkpoint: {exc}", path=path,
                        hint="delete it to start the run again from scratch") from exc
    if state.get("version") != CHECKPOINT_VERSION:
        raise ReadError(f"checkpoint version {state.get('version')} is not supported", path=path,
                        hint=f"this medmm reads version {CHECKPOINT_VERSION}")
    return state
