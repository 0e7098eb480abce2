"""Forking worker processes without copying the parent's heap into each of them.

A forked worker shares its parent's memory until it writes to a page. CPython's cyclic garbage
collector writes to every object it traverses, so after a few collections in a worker every
page of the parent's heap (the model, the cohort, imported modules: hundreds of MB) has been
copied into it, and a pool of N workers costs N more copies of the parent. :func:`gc.freeze`
before the fork moves the parent's objects to a generation the collector never visits
(`gc.freeze` documentation; the recipe CPython gives for pre-fork servers), so they stay shared.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Fork worker processes inside this block: the objects that exist now are frozen (kept out
    of the collector's traversal) in the parent and in every process forked here; the parent
    unfreezes them when the block ends.

    No collection first: in a process that has imported torch, MONAI, MLflow and scikit-learn a
    full ``gc.collect()`` takes ~0.3 s (437,000 objects), paid at every fork point (each training
    epoch with ``train.num_workers``: a third of a 1 s warm epoch), and the CPython documentation's
    recipe avoids it too (a collection before the fork leaves freed holes in shared pages). Garbage
    frozen here is collected in the parent after the block; in a worker it stays frozen, shared,
    never written."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


#: allocations from this size up are mapped from the OS and unmapped when freed (glibc's default
#: starts at 128 KB but raises itself to the largest block freed, up to 32 MB, after which the
#: 8 MB float32 volumes a reader allocates per 128^3 patient stay in the heap when freed; at 16 MB
#: the readers' memory did not change, at 1 MB and 4 MB it did alike)
MMAP_THRESHOLD = 4 << 20


def return_large_frees() -> bool:
    """In a reader worker: pin glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD)``, which
    also switches its dynamic raising off) so that every large array goes back to the OS when
    freed. Measured on `medmm evaluate --split all --workers 2` of 400 patients at 128^3 (quiet
    machine): each reader's private memory 436 / 288 MB -> ~95 MB, the command's tree peak RSS
    1,991-2,195 -> 1,685-1,706 MB; the price is the page faults of mapping those arrays afresh:
    43.9 -> 51.7 s (three interleaved pairs, +7 to +10 s each).

    Also called by a training run of an image model (``experiment._fit``), in its own process: the
    activations of a batch (TinyCNN3D's first layer at 32^3 alone is 34 MB at batch 32) are freed after each
    step, and with the raised threshold they stayed in the heap, fragmented, so the training process
    grew with the number of batches: `medmm train --epochs 1` on bench_scale's 1,600-patient cohort
    (warm cache, the main process's RSS polled every 0.1 s) 1,236 MB -> 968 MB with the
    threshold pinned; likewise the process of ``score_cohort`` that runs an image model (`medmm
    evaluate --split all --workers 2` of that cohort, tree peak 2,053 -> 1,755 MB, 142 -> 145 s, one run each).
    The price is a page fault per page of each large allocation: bench_scale's warm epoch at 1,600
    patients took 14.4 s against 10.5 s in the previous full run (at 100: 0.7 against 1.0 s; not an
    interleaved comparison). Returns whether it applied
    (glibc only; elsewhere a no-op)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, MMAP_THRESHOLD))
