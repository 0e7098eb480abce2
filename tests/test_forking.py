"""frozen_gc: the parent's objects are kept out of the collector while workers fork, then released."""

import gc
import multiprocessing as mp

import pytest

from medmm.forking import frozen_gc


def _child_freeze_count(_: int) -> int:
    return gc.get_freeze_count()


def test_objects_are_frozen_inside_and_released_after():
    keep = [object() for _ in range(1000)]
    assert gc.get_freeze_count() == 0
    with frozen_gc():
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_freeze_count() == 0


def test_released_when_the_block_raises():
    with pytest.raises(RuntimeError):
        with frozen_gc():
            raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_workers_forked_inside_inherit_the_frozen_heap():
    with frozen_gc(), mp.get_context("fork").Pool(1) as pool:
        inside = pool.map(_child_freeze_count, [0])[0]
    with mp.get_context("fork").Pool(1) as pool:
        outside = pool.map(_child_freeze_count, [0])[0]
    assert inside > 1000 and outside == 0
