"""A content-addressed on-disk cache of preprocessed volumes.

The key of an entry is a SHA-256 of

* the identity of the source files (resolved path, size and modification time of every
  file, so that a folder's DICOM series is re-read when any slice changes), and
* the deterministic part of the preprocessing configuration (never its random
  augmentation settings, so training epochs share one entry).

Entries are ``.npy`` files opened with ``np.load(mmap_mode="r")``: a hit costs an
``open`` and an ``mmap``, and several DataLoader workers share the page cache. Writes go
to a temporary file in the cache folder and are published with :func:`os.replace`, so a
reader sees a whole entry or none, whatever the number of processes. The cache is bounded:
after a write, least recently used entries (by modification time, refreshed on every hit)
are deleted until the total is under ``max_bytes``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VolumeCache", "source_identity", "config_fingerprint", "preprocess_cached", "cached_entry", "entry_key",
           "augmented", "CACHE_VERSION"]

#: Bumped when the on-disk layout or a preprocessing default changes meaning.
CACHE_VERSION = 2


def _checksum(array: np.ndarray) -> str:
    """CRC-32 of an array's bytes (with its dtype and shape), as hex."""
    head = f"{array.dtype.str}{array.shape}".encode()
    return f"{zlib.crc32(np.ascontiguousarray(array).data.cast('B'), zlib.crc32(head)):08x}"


def source_identity(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of every file of ``sources`` (folders are walked), sorted."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out: list[tuple[str, int, int]] = []
    for src in sources:
        p = Path(src).resolve()
        try:
            files = [p] if not p.is_dir() else [f for f in p.rglob("*") if f.is_file()]
            for f in files:
                st = f.stat()
                out.append((str(f), int(st.st_size), int(st.st_mtime_ns)))
        except OSError as exc:
            from ..errors import ReadError

            raise ReadError(f"image source cannot be read ({type(exc).__name__}: {exc.strerror or exc})", path=p,
                            hint="the file was moved or deleted after the cohort was validated; restore it or "
                            "remove it from the manifest") from exc
    return sorted(out)


def config_fingerprint(config: Any) -> Any:
    """The deterministic part of a preprocessing configuration, as JSON-able data.

    ``config`` may be a mapping, an object with ``deterministic_config()`` (returning a
    mapping), or any object whose public constructor settings (``vars`` without names
    starting or ending in ``_``) describe it.
    """
    if config is None:
        return None
    if hasattr(config, "deterministic_config"):
        return {"class": type(config).__qualname__, **dict(config.deterministic_config())}
    if isinstance(config, dict):
        return {str(k): config[k] for k in sorted(config, key=str)}
    state = {k: v for k, v in vars(config).items() if not k.startswith("_") and not k.endswith("_")}
    return {"class": type(config).__qualname__, **state}


class VolumeCache:
    """Preprocessed arrays on disk, keyed by source identity and configuration.

    Parameters
    ----------
    root:
        Cache folder (created if needed); one cache may be shared by several processes.
    max_bytes:
        Size bound of the ``.npy`` entries; least recently used entries are evicted.
    """

    #: seconds between two scans of the folder by :meth:`put` while this process's own estimate of
    #: the total stays under ``max_bytes`` (other processes sharing the folder write too)
    RESCAN_S = 15.0

    def __init__(self, root: str | os.PathLike, *, max_bytes: int = 10 * 2**30) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._total: int | None = None  # bytes at the last scan plus what this process wrote since
        self._scanned_at = 0.0

    # -------------------------------------------------------------------------- keys

    def key(self, sources: Any, config: Any = None) -> str:
        """The entry key (hex SHA-256) of ``sources`` preprocessed with ``config``."""
        payload = {
            "version": CACHE_VERSION,
            "sources": source_identity(sources),
            "config": config_fingerprint(config),
        }
        text = json.dumps(payload, sort_keys=True, default=repr, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    # ------------------------------------------------------------------------ access

    def get(self, key: str, *, verify: bool = True) -> np.ndarray | None:
        """The memory-mapped (read-only) entry, or None. With ``verify`` an entry whose checksum
        does not match (a torn or corrupted file) is deleted and reported as a miss, so it is
        rebuilt; that reads the whole entry, so a training epoch reading entries checked by the
        prefill pass skips it (``verify=False``)."""
        p = self.path(key)
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            # the checksum is published before the entry (put), so an entry always has one
            want = p.with_suffix(".crc").read_text().strip() if verify else ""
        except (FileNotFoundError, ValueError, OSError):
            self.misses += 1
            return None
        if verify and want != _checksum(arr):
            self.corrupt += 1
            self.misses += 1
            for q in (p, p.with_suffix(".crc")):
                try:
                    q.unlink()
                except OSError:
                    pass
            return None
        try:
            os.utime(p)  # last use, for LRU eviction
        except OSError:
            pass
        self.hits += 1
        return arr

    def put(self, key: str, array: np.ndarray) -> np.ndarray:
        """Store ``array`` atomically; returns the memory-mapped stored entry."""
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".npy")
        array = np.ascontiguousarray(array)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
            crc_tmp = tmp[:-4] + ".crc"
            Path(crc_tmp).write_text(_checksum(array) + "\n")
            os.replace(crc_tmp, p.with_suffix(".crc"))  # the checksum first: a reader never sees an entry without it
            os.replace(tmp, p)
        except BaseException:
            for q in (tmp, tmp[:-4] + ".crc"):
                try:
                    os.unlink(q)
                except OSError:
                    pass
            raise
        self._after_write(p)
        return np.load(p, mmap_mode="r", allow_pickle=False)

    def _after_write(self, p: Path) -> None:
        """Evict when needed. A full scan of the folder per write made filling a cache of n entries
        cost O(n^2) stats (57 s of the demo's 100 s fill at 480 entries); so the folder is scanned
        when this process's running total (the last scan plus its own writes) passes the bound,
        and at most every :attr:`RESCAN_S` seconds otherwise, to see other processes' writes."""
        try:
            size = p.stat().st_size
        except OSError:
            size = 0
        if self._total is not None:
            self._total += size
        if (self._total is None or self._total > self.max_bytes
                or time.monotonic() - self._scanned_at > self.RESCAN_S):
            self.evict(keep=p)

    def get_or_compute(self, sources: Any, config: Any, compute: Callable[[], np.ndarray], *,
                       verify: bool = True) -> np.ndarray:
        """The cached result for ``(sources, config)``, computing and storing it on a miss."""
        key = self.key(sources, config)
        hit = self.get(key, verify=verify)
        if hit is not None:
            return hit
        return self.put(key, np.asarray(compute()))

    # ---------------------------------------------------------------------- eviction

    def entries(self) -> list[tuple[Path, int, float]]:
        """``(path, bytes, last use)`` of every entry."""
        out = []
        for p in self.root.glob("*/*.npy"):
            if p.name.startswith(".tmp-"):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((p, st.st_size, st.st_mtime))
        return out

    @property
    def size_bytes(self) -> int:
        return sum(n for _, n, _ in self.entries())

    def evict(self, *, keep: Path | None = None) -> int:
        """Delete least recently used entries until under ``max_bytes``; returns how many."""
        entries = self.entries()
        total = sum(n for _, n, _ in entries)
        self._scanned_at = time.monotonic()
        removed = 0
        for p, n, _ in sorted(entries, key=lambda e: e[2]):
            if total <= self.max_bytes:
                break
            if keep is not None and p == keep:
                continue
            for q in (p, p.with_suffix(".crc")):
                try:
                    q.unlink()  # readers holding a memory map keep their data (POSIX)
                except FileNotFoundError:
                    pass
            total -= n
            removed += 1
        self._total = total
        self._clean_temps()
        return removed

    def _clean_temps(self, older_than_s: float = 3600.0) -> None:
        now = time.time()
        for p in self.root.glob("*/.tmp-*"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
            except OSError:
                pass

    def clear(self) -> None:
        for p, _, _ in self.entries():
            for q in (p, p.with_suffix(".crc")):
                try:
                    q.unlink()
                except FileNotFoundError:
                    pass

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"VolumeCache({str(self.root)!r}, entries={len(self)}, max_bytes={self.max_bytes})"


def _request(path: Any, preprocessor: Any, reader: Callable[..., Any] | None,
             read_options: dict[str, Any]) -> tuple[Any, dict[str, Any], Callable[[], np.ndarray]]:
    """``(sources, config, compute)`` of one cache entry: what :meth:`VolumeCache.key` hashes,
    and how to build the entry on a miss."""
    read: Callable[..., Any]
    if hasattr(path, "read") and hasattr(path, "options"):  # an ImageSource
        source = path
        path = source.path
        read_options = {**dict(source.options), "_format": source.format, **read_options}

        def read(_p: Any, **_o: Any) -> Any:
            return source.read()
    elif reader is not None:
        read = reader
    else:
        from ..io.image import read_image as read

    def compute() -> np.ndarray:
        opts = {k: v for k, v in read_options.items() if k != "_format"}
        image = read(path, **opts)
        fn = getattr(preprocessor, "transform_deterministic", None) or preprocessor.transform
        return np.asarray(fn(image))

    return path, {"preprocessor": config_fingerprint(preprocessor), "read": read_options}, compute


def entry_key(path: Any, preprocessor: Any, cache: VolumeCache, **read_options: Any) -> str:
    """The key of ``path``'s entry in ``cache`` (stats its files; reads no image)."""
    sources, config, _ = _request(path, preprocessor, None, read_options)
    return cache.key(sources, config)


def augmented(arr: np.ndarray, preprocessor: Any, *, training: bool, seed: int | None) -> np.ndarray:
    """``arr`` (a cached deterministic result) with ``preprocessor``'s augmentation when training
    (a copy: the cached entry is read-only)."""
    if training and getattr(preprocessor, "augment", False) and hasattr(preprocessor, "augment_array"):
        return preprocessor.augment_array(np.array(arr), seed=seed)
    return arr


def cached_entry(path: Any, preprocessor: Any, cache: VolumeCache, **read_options: Any) -> np.ndarray | None:
    """The cache's (memory-mapped) entry for ``path`` preprocessed by ``preprocessor``, or None;
    never reads the image. A missing source file is a :class:`~medmm.errors.ReadError`."""
    return cache.get(entry_key(path, preprocessor, cache, **read_options))


def preprocess_cached(
    path: Any,
    preprocessor: Any,
    cache: VolumeCache | None,
    *,
    training: bool = False,
    seed: int | None = None,
    reader: Callable[..., Any] | None = None,
    verify: bool = True,
    **read_options: Any,
) -> np.ndarray:
    """Read and preprocess the image at ``path`` (a path, or an
    :class:`~medmm.records.ImageSource` that knows its format and reader options) through ``cache``.

    Only the deterministic part (``preprocessor.transform_deterministic``, else
    ``transform``) is cached; with ``training=True`` augmentation
    (``preprocessor.augment_array``) is applied afterwards, to a copy, with ``seed``.
    """
    sources, config, compute = _request(path, preprocessor, reader, read_options)
    arr = cache.get_or_compute(sources, config, compute, verify=verify) if cache is not None else compute()
    return augmented(arr, preprocessor, training=training, seed=seed)
