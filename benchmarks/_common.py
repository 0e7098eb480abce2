"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_x.py``, so this
folder is on ``sys.path``)."""

from __future__ import annotations

import threading


class PeakRSS:
    """Peak resident memory (bytes) of a process tree, polled every ``interval`` seconds.

    ``pid`` is the tree's root (default: this process); ``include_root=False`` counts only its
    descendants (a wrapper process that only waits). Use as a context manager, or
    :meth:`start` / :meth:`stop`.

    The sum of the tree's RSS counts every page a forked worker shares with its parent once per
    process; :attr:`peak_pss_mb` (proportional set size, each shared page split between the
    processes sharing it; read from smaps every ``pss_every`` polls, Linux only) is what the tree
    takes from the machine. Both are reported.
    """

    def __init__(self, pid: int | None = None, *, include_root: bool = True, interval: float = 0.05,
                 pss_every: int = 10) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.include_root = include_root
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.pss_every = pss_every
        self._polls = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = pss = 0
        try:
            procs = [*([self.proc] if self.include_root else []), *self.proc.children(recursive=True)]
        except psutil.Error:
            return 0
        with_pss = self.pss_every > 0 and self._polls % self.pss_every == 0
        self._polls += 1
        for p in procs:
            try:
                if with_pss:
                    info = p.memory_full_info()
                    total += info.rss
                    pss += getattr(info, "pss", 0)
                else:
                    total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_pss = max(self.peak_pss, pss)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def peak_pss_mb(self) -> float:
        return self.peak_pss / 2**20

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
