"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_x.py``, so this
folder is on ``sys.path``)."""

from __future__ import annotations

import threading


class PeakRSS:
    """Peak resident memory (bytes) of a process tree, polled every ``interval`` seconds.

    ``pid`` is the tree's root (default: this process); ``include_root=False`` counts only its
    descendants (a wrapper process that only waits). Use as a context manager, or
    :meth:`start` / :meth:`stop`.
    """

    def __init__(self, pid: int | None = None, *, include_root: bool = True, interval: float = 0.05) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.include_root = include_root
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        try:
            procs = [*([self.proc] if self.include_root else []), *self.proc.children(recursive=True)]
        except psutil.Error:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    def start(self) -> "PeakRSS":
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def __enter__(self) -> "PeakRSS":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
