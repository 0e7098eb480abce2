"""Distributed data-parallel training under ``torchrun``.

``torchrun --nproc_per_node N -m medmm train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (gloo on CPU, NCCL on
GPU). Each process sees its shard of every epoch through :class:`EpochSampler` (a
``DistributedSampler``, or a seeded weighted draw sharded the same way for the balanced
sampler), gradients are averaged by ``DistributedDataParallel``, and only rank 0 logs
and writes checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DistInfo", "dist_info", "init_distributed", "unwrap", "EpochSampler", "all_reduce_sum", "sum_over_processes",
           "barrier"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """This process's rank and the world size (1 process when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``); a no-op otherwise."""
    info = dist_info()
    if info.world_size <= 1 or torch.distributed.is_initialized():
        return info
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist_info()


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper."""
    return getattr(model, "module", model)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def sum_over_processes(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``t`` summed over the data-parallel processes (in place) and their number."""
    torch.distributed.all_reduce(t)
    return t, torch.distributed.get_world_size()


class EpochSampler(torch.utils.data.Sampler[int]):
    """This rank's indices for one epoch, fixed by ``(seed, epoch)`` alone.

    Without ``weights`` it is a :class:`torch.utils.data.DistributedSampler` (shuffled); with
    ``weights`` it draws ``len(dataset)`` indices with replacement (a balanced sampler) from a
    generator seeded by ``seed + epoch`` and shards them the same way (padded to a multiple
    of the world size, then every ``world_size``-th index from ``rank``). Because an epoch's
    order depends on nothing else, a resumed run sees the same batches; ``skip`` drops the
    first indices (the batches already done before an interrupt). ``cap`` limits each rank's
    indices per epoch (before ``skip``): the trainer sets it so that data-parallel processes take
    the same full global batches a single process with ``world_size`` times the batch would
    take, never the padding ``DistributedSampler`` repeats to even out the ranks.
    """

    def __init__(self, n: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 weights: np.ndarray | None = None) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 0
        self.skip = 0
        self.cap: int | None = None
        self._dist = torch.utils.data.DistributedSampler(
            range(self.n), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=self.seed)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = int(epoch)
        self.skip = int(skip)
        self._dist.set_epoch(self.epoch)

    def indices(self) -> list[int]:
        if self.weights is None:
            idx = list(self._dist)
        else:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            drawn = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
            per_rank = -(-self.n // self.world_size)
            drawn = (drawn * 2)[: per_rank * self.world_size]
            idx = drawn[self.rank::self.world_size]
        if self.cap is not None:
            idx = idx[:self.cap]
        return idx[self.skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world_size)
        return max((per_rank if self.cap is None else min(per_rank, self.cap)) - self.skip, 0)
