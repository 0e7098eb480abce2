"""Latency measurement shared by ``medmm compress`` and ``benchmarks/bench_latency.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["measure_latency", "machine_load"]


def measure_latency(fn: Callable[[Any], Any], inputs: Any, *, n: int = 200, warmup: int = 20,
                    max_seconds: float | None = None) -> dict[str, float]:
    """p50/p99/mean latency in milliseconds of ``fn(inputs)`` over ``n`` timed calls (after ``warmup``);
    stops early after ``max_seconds`` of timed calls."""
    for _ in range(warmup):
        fn(inputs)
    times = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn(inputs)
        times.append(time.perf_counter() - t)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(len(ms))}


def machine_load() -> str:
    """The 1-minute load average against the core count, and the busiest processes not ours."""
    import os

    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return "load average unavailable"
    text = f"load average {load1:.2f} on {os.cpu_count()} cores"
    try:
        import subprocess

        out = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=5).stdout.splitlines()[1:6]
        me = os.getpid()
        busy = [ln.split() for ln in out]
        busy = [f"{b[2]}({b[1]}%)" for b in busy if len(b) >= 3 and int(b[0]) != me and float(b[1]) >= 20]
        if busy:
            text += "; other busy processes: " + ", ".join(busy)
    except Exception:  # noqa: BLE001 - informative only
        pass
    return text
