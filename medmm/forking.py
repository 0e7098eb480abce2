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
    unfreezes them when the block ends."""
    gc.collect()  # garbage collected now is not frozen, and not inherited by the workers
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
