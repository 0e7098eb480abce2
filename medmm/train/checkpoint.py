"""Training checkpoints, written atomically.

A checkpoint holds everything needed to continue a run bit for bit: model, optimiser,
scheduler and AMP scaler states, the best epoch's weights, the history, the step counters,
the position inside the epoch (for a checkpoint written on interrupt) and every random
state (Python, NumPy, torch CPU and CUDA). It is written to a temporary file in the same
folder, flushed to disk and renamed over ``last.pt`` (:func:`os.replace` is atomic), so a
process killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ReadError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "model_fingerprint",
           "check_resumable", "LAST", "CHECKPOINT_VERSION"]

LAST = "last.pt"
CHECKPOINT_VERSION = 1


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's config (when it has one) and of its parameter and buffer names and
    shapes: two models with the same fingerprint can exchange checkpoints."""
    cfg = getattr(model, "config", None)
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else None
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    blob = json.dumps({"config": cfg, "state": shapes}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_resumable(state: dict[str, Any], model: torch.nn.Module, seed: int, path: str | Path) -> None:
    """Refuse, with the fix, to resume ``state`` into a model or a run it was not written by."""
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
    ran = (state.get("config") or {}).get("seed")
    if ran is not None and ran != seed:
        raise ConfigError(f"the checkpoint in {path} belongs to a run with seed {ran}, not {seed}", path=path,
                          hint=fix)


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
