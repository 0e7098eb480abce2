"""Benchmark: the streaming health monitor on real-like bedside numerics.

Generates ``--patients`` ICU stays of ``--hours`` of minute numerics as a bedside monitor
writes them (MIMIC numerics habits): ECG heart rate and pleth pulse rate, SpO2, impedance
respiration, invasive arterial systolic pressure (``ABPSys``) and an hourly cuff pressure
(``NBPSys``), with the device's zeros (leads off, probe off, the arterial line flushed or
closed: in one real record 1,929 of 1,936 ABPSys minutes are 0) and a frozen, flat-lined
arterial line. Feeds them through :meth:`HealthMonitor.observe_many` (one charted set per
minute) and prints

* throughput in observations/s beside the reference: the monitor before issue 13 on the same
  stream, measured in the same run from ``--reference-tree`` (a checkout of main before the
  change), else the figure recorded in ``REFERENCE_OBS_S``; on a shared machine compare the two
  figures of one run, not figures of different runs;
* clinical (NEWS2) alerts, and how many of them rest on a zero reading (target: 0);
* technical "signal lost" alerts.

    python benchmarks/bench_monitor.py                 # 20 patients x 24 h
    python benchmarks/bench_monitor.py --patients 4    # quick run
    python benchmarks/bench_monitor.py --reference-tree /path/to/main-before   # side by side
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.environ.get("MEDMM_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

#: observations/s of the monitor before issue 13 (main at 3e3af9a), this stream, --patients 4 --hours 24,
#: on the 2-core dev machine; its alerts: every patient escalated on zero readings
REFERENCE_OBS_S = 13_100.0


def numerics(pid: int, hours: float, rng: np.random.Generator) -> list[tuple]:
    """One stay's minute numerics ``(time, signal, value, unit)`` with the device's zeros."""
    import pandas as pd

    n = int(hours * 60)
    t0 = pd.Timestamp("2750-03-04 10:00:00") + pd.Timedelta(days=pid)  # MIMIC-shifted dates
    minutes = np.arange(n)
    hr = np.round(82 + 6 * np.sin(minutes / 90) + rng.normal(0, 2, n))
    pr = hr + np.round(rng.normal(0, 1.5, n))
    spo2 = np.clip(np.round(96 + rng.normal(0, 1, n)), 85, 100)
    rr = np.round(16 + rng.normal(0, 1.5, n))
    abp = np.round(125 + 8 * np.sin(minutes / 120) + rng.normal(0, 3, n))
    if pid % 2 == 0:  # a real deterioration in the 20th hour: NEWS2 must still escalate
        worse = slice(int(19 * n / 24), int(20 * n / 24))
        rr[worse], hr[worse], pr[worse] = 27.0, 124.0, 124.0
    # device habits
    abp[: int(0.6 * n)] = 0.0  # line closed / flushed most of the stay
    frozen = slice(int(0.7 * n), int(0.7 * n) + 40)
    abp[frozen] = abp[frozen.start]  # a frozen transducer
    for arr, share in ((hr, 0.05), (pr, 0.08), (spo2, 0.08), (rr, 0.1)):
        start = rng.integers(0, n - 30, size=max(1, int(share * n / 15)))
        for s in start:
            arr[s:s + rng.integers(3, 15)] = 0.0  # leads off, probe off
    rows = []
    for k in range(n):
        t = t0 + pd.Timedelta(minutes=int(k))
        rows += [(t, "HR", hr[k], "bpm"), (t, "PULSE", pr[k], "bpm"), (t, "SpO2", spo2[k], "%"),
                 (t, "RESP", rr[k], "bpm"), (t, "ABPSys", abp[k], "mmHg")]
        if k % 60 == 30:
            rows.append((t, "NBPSys", float(np.round(122 + rng.normal(0, 6))), "mmHg"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--reference-tree", help="a medmm checkout to measure as the reference, same stream")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from medmm.monitor.health import HealthMonitor

    rng = np.random.default_rng(0)
    streams = {f"p{i}": numerics(i, args.hours, rng) for i in range(args.patients)}
    n_obs = sum(len(s) for s in streams.values())
    mon = HealthMonitor()
    t = time.perf_counter()
    alerts = []
    for pid, rows in streams.items():
        alerts += mon.observe_many(pid, rows)
    dt = time.perf_counter() - t
    clinical = [a for a in alerts if getattr(a, "kind", "clinical") == "clinical"]
    technical = [a for a in alerts if getattr(a, "kind", "clinical") == "technical"]
    on_zero = [a for a in clinical if any(v == 0 for k, v in a.news2["values"].items() if k != "air_or_oxygen")]
    rate = n_obs / dt
    if args.json:
        print(json.dumps({"rate": rate, "clinical": len(clinical), "on_zero": len(on_zero)}))
        return
    ref = f"{REFERENCE_OBS_S:,.0f} obs/s (recorded)" if REFERENCE_OBS_S else "n/a"
    if args.reference_tree:
        out = subprocess.run([sys.executable, __file__, "--json", "--patients", str(args.patients), "--hours",
                              str(args.hours)], env={**os.environ, "MEDMM_BENCH_TREE": args.reference_tree},
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        ref = (f"{r['rate']:,.0f} obs/s (this run; its clinical alerts: {r['clinical']}, on a zero reading: "
               f"{r['on_zero']})")
    print(f"observations: {n_obs:,} from {args.patients} patients x {args.hours:g} h of minute numerics")
    print(f"throughput:   {rate:,.0f} obs/s   (reference, the monitor before issue 13: {ref}; target >= 10,000)")
    print(f"clinical alerts: {len(clinical)}, resting on a zero reading: {len(on_zero)}   (target 0)")
    print(f"technical (signal lost) alerts: {len(technical)}")


if __name__ == "__main__":
    main()
