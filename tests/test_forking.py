"""frozen_gc: the parent's objects are kept out of the collector while workers fork, then released;
return_large_frees: a reader's freed volumes go back to the OS."""

import gc
import multiprocessing as mp
import sys

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


_HEAP_PROBE = """
import sys, numpy as np, psutil
from medmm.forking import return_large_frees
applied = return_large_frees() if sys.argv[1] == "pinned" else None
rss = lambda: psutil.Process().memory_info().rss / 2**20
keep = [np.ones(1000) for _ in range(10)]
base = rss()
for _ in range(3):  # a reader's per-patient volumes (8 MB, freed) and what it keeps (a row of results)
    a = np.ones(2**20); keep.append(np.ones(2**17)); del a
print(applied, round(rss() - base, 1))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_reader_gives_freed_volumes_back_to_the_os():
    """glibc raises its mmap threshold to the largest block freed, so from the second patient on
    a reader's 8 MB volumes live in its heap and stay there when freed; pinned, they are unmapped."""
    import subprocess

    out = {}
    for mode in ("default", "pinned"):
        r = subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True, check=True)
        applied, grown = r.stdout.split()
        out[mode] = (applied, float(grown))
    assert out["pinned"][0] == "True"
    kept = 3 * 1.0  # MB: the three rows it keeps
    assert out["default"][1] - kept >= 6  # a freed 8 MB volume stays in the heap
    assert out["pinned"][1] - kept < 1
