"""The on-disk volume cache: keys, memory maps, LRU bound, several processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest

from medmm.preprocess.cache import VolumeCache, config_fingerprint, source_identity


class _Pre:  # a preprocessor stand-in with a deterministic_config
    def __init__(self, size: int, flip_prob: float = 0.5) -> None:
        self.size = size
        self.flip_prob = flip_prob
        self.fitted_ = True

    def deterministic_config(self) -> dict:
        return {"size": self.size}


def test_key_follows_sources_and_deterministic_config(tmp_path: Path) -> None:
    src = tmp_path / "series"
    src.mkdir()
    (src / "a.dcm").write_bytes(b"x" * 10)
    cache = VolumeCache(tmp_path / "cache")
    k1 = cache.key(src, _Pre(32))
    assert k1 == cache.key(src, _Pre(32, flip_prob=0.9))  # augmentation is not in the key
    assert k1 != cache.key(src, _Pre(64))
    (src / "b.dcm").write_bytes(b"y")
    k2 = cache.key(src, _Pre(32))
    assert k2 != k1
    st = (src / "b.dcm").stat()
    os.utime(src / "b.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.key(src, _Pre(32)) != k2
    assert [Path(p).name for p, _, _ in source_identity(src)] == ["a.dcm", "b.dcm"]
    assert config_fingerprint({"b": 1, "a": 2}) == {"a": 2, "b": 1}
    assert "fitted_" not in config_fingerprint(type("P", (), {"__init__": lambda s: setattr(s, "fitted_", 1)})())


def test_put_get_memory_mapped(tmp_path: Path) -> None:
    cache = VolumeCache(tmp_path)
    arr = np.random.default_rng(0).random((1, 8, 8, 8)).astype(np.float32)
    assert cache.get("ab" * 32) is None
    out = cache.put("ab" * 32, arr)
    assert isinstance(out, np.memmap) and not out.flags.writeable
    got = cache.get("ab" * 32)
    np.testing.assert_array_equal(got, arr)
    assert isinstance(got, np.memmap)
    assert cache.hits == 1 and cache.misses == 1
    assert not list(tmp_path.glob("*/.tmp-*"))


def test_lru_eviction(tmp_path: Path) -> None:
    one = np.zeros(1000, dtype=np.float64)  # 8000 bytes + header
    cache = VolumeCache(tmp_path, max_bytes=3 * 8200)
    keys = [f"{i:02d}" + "0" * 62 for i in range(4)]
    for i, k in enumerate(keys[:3]):
        cache.put(k, one)
        os.utime(cache.path(k), (1000 + i, 1000 + i))  # distinct, old last-use times
    assert cache.get(keys[0]) is not None  # touch: key 0 is now the most recently used
    cache.put(keys[3], one)
    assert len(cache) == 3
    assert cache.get(keys[1]) is None  # the least recently used went
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.size_bytes <= cache.max_bytes


def _worker(root: str, seed: int, out: "mp.Queue") -> None:
    cache = VolumeCache(root, max_bytes=1 << 30)
    sums = []
    for i in range(15):
        k = f"{i % 5:02d}" + "f" * 62
        hit = cache.get(k)
        if hit is None:
            hit = cache.put(k, np.full((64, 64, 16), i % 5, dtype=np.float32))
        sums.append(float(np.asarray(hit).sum()))
    out.put((seed, sums))


def test_several_processes_share_one_cache(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), s, q)) for s in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    expected = [float((i % 5) * 64 * 64 * 16) for i in range(15)]
    assert all(sums == expected for _, sums in results)
    assert len(VolumeCache(tmp_path)) == 5
    assert not list(tmp_path.glob("*/.tmp-*"))


def test_get_or_compute_with_images(tmp_path: Path) -> None:
    from imaging_helpers import make_stored, write_series

    from medmm.io.image import read_image

    write_series(tmp_path / "s", make_stored((16, 16, 8)))
    cache = VolumeCache(tmp_path / "cache")
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.asarray(read_image(tmp_path / "s").data)[None]

    a = cache.get_or_compute(tmp_path / "s", {"window": "soft_tissue"}, compute)
    b = cache.get_or_compute(tmp_path / "s", {"window": "soft_tissue"}, compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_warm_pass_much_faster_than_cold(tmp_path: Path) -> None:
    from imaging_helpers import make_stored, write_series

    from medmm.io.image import read_image
    from medmm.preprocess.image import ImagePreprocessor

    folders = []
    for n in range(6):
        write_series(tmp_path / f"s{n}", make_stored((48, 48, 32), seed=n))
        folders.append(tmp_path / f"s{n}")
    pre = ImagePreprocessor(spatial_size=(32, 32, 32)).fit()
    cache = VolumeCache(tmp_path / "cache")

    def one_pass() -> float:
        t = time.perf_counter()
        for f in folders:
            cache.get_or_compute(f, pre, lambda f=f: pre.transform(read_image(f)))
        return time.perf_counter() - t

    cold = one_pass()
    warm = min(one_pass() for _ in range(3))
    assert cold / warm >= 20


def test_preprocess_cached_caches_only_the_deterministic_part(tmp_path: Path) -> None:
    from imaging_helpers import make_stored, write_series

    from medmm.preprocess.cache import preprocess_cached
    from medmm.preprocess.image import ImagePreprocessor

    write_series(tmp_path / "s", make_stored((12, 12, 6)))
    cache = VolumeCache(tmp_path / "cache")
    pre = ImagePreprocessor(spatial_size=(8, 8, 8), augment={"noise_prob": 1.0}, seed=0).fit()
    det = preprocess_cached(tmp_path / "s", pre, cache)
    assert len(cache) == 1 and isinstance(det, np.memmap)
    aug1 = preprocess_cached(tmp_path / "s", pre, cache, training=True, seed=1)
    aug2 = preprocess_cached(tmp_path / "s", pre, cache, training=True, seed=1)
    assert len(cache) == 1  # augmentation never creates entries
    np.testing.assert_array_equal(aug1, aug2)
    assert not np.array_equal(aug1, det)
    np.testing.assert_array_equal(preprocess_cached(tmp_path / "s", pre, cache), det)


def test_filling_a_cache_scans_the_folder_once_not_per_write(tmp_path: Path, monkeypatch) -> None:
    """Eviction used to list the whole folder after every write (O(n^2) stats for a fill of n);
    now a process scans when its running total passes the bound or RESCAN_S has elapsed."""
    scans = []
    real = VolumeCache.entries

    def counting(self):
        scans.append(1)
        return real(self)

    monkeypatch.setattr(VolumeCache, "entries", counting)
    one = np.zeros(1000, dtype=np.float64)
    cache = VolumeCache(tmp_path, max_bytes=10 * 8200)
    for i in range(9):
        cache.put(f"{i:02d}" + "a" * 62, one)
    assert len(scans) == 1  # the first write learns the folder's size; the rest add their own
    cache.put("09" + "a" * 62, one)
    cache.put("10" + "a" * 62, one)  # past the bound: scanned and evicted
    assert len(real(cache)) == 10 and cache.size_bytes <= cache.max_bytes


def test_another_process_s_writes_are_seen_by_the_bound(tmp_path: Path, monkeypatch) -> None:
    one = np.zeros(1000, dtype=np.float64)
    a, b = VolumeCache(tmp_path, max_bytes=4 * 8200), VolumeCache(tmp_path, max_bytes=4 * 8200)
    a.put("00" + "b" * 62, one)
    b.put("01" + "b" * 62, one)  # b's first write scans: a's entry counted
    for i in range(2, 4):
        a.put(f"{i:02d}" + "b" * 62, one)
    monkeypatch.setattr(VolumeCache, "RESCAN_S", 0.0)  # b's estimate is stale: the periodic rescan sees a's writes
    b.put("04" + "b" * 62, one)
    assert len(b) == 4 and b.size_bytes <= b.max_bytes
