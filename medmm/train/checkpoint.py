"""Training checkpoints, written atomically.

A checkpoint holds everything needed to continue a run bit for bit: model, optimiser,
scheduler and AMP scaler states, the best epoch's weights, the history, the step counters,
the position inside the epoch (for a checkpoint written on interrupt) and every random
state (Python, NumPy, torch CPU and CUDA). It is written to a temporary file in the same
folder, flushed to disk and renamed over ``last.pt`` (:func:`os.replace` is atomic), so a
process killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ReadError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "LAST", "CHECKPOINT_VERSION"]

LAST = "last.pt"
CHECKPOINT_VERSION = 1


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
