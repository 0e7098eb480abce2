"""A bounded load test of `medmm serve` on 127.0.0.1, side by side with the target.

Starts `medmm serve MODEL` on a free local port, then sends POST /predict requests (a patient
with 24 h of vitals, an EHR row and a note; no image) open-loop at --rate requests/s for
--seconds, at most --max-inflight at once. Latency is measured from each request's *scheduled*
send time (so a stalled server is not hidden by a slowed client). Nothing leaves 127.0.0.1.

Target: 200 requests/s for 60 s with no error and p99 under 50 ms.

    python benchmarks/bench_serve.py --model MODEL_DIR [--quick] [--rate 200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "bench-key"


def payload(i: int) -> dict:
    rng = np.random.default_rng(i)
    vitals = []
    for h in range(24):
        t = f"2024-05-01T{h:02d}:00:00"
        vitals += [{"time": t, "signal": "heart_rate", "value": float(rng.normal(80, 8)), "unit": "bpm"},
                   {"time": t, "signal": "resp_rate", "value": float(rng.normal(16, 2)), "unit": "/min"},
                   {"time": t, "signal": "spo2", "value": float(min(100, rng.normal(97, 1))), "unit": "%"},
                   {"time": t, "signal": "sbp", "value": float(rng.normal(124, 10)), "unit": "mmHg"},
                   {"time": t, "signal": "temperature", "value": float(rng.normal(36.9, 0.3)), "unit": "degC"}]
    return {"patient_id": f"bench-{i}", "index_time": "2024-05-02T00:00:00", "vitals": vitals,
            "notes": [{"text": "HISTORY: fatigue and weight loss. FINDINGS: no focal lesion. IMPRESSION: stable."}],
            "ehr": {"age [years]": int(rng.integers(30, 90)), "sex": "F" if i % 2 else "M", "smoking": "never",
                    "sodium [mmol/L]": 140.0, "hemoglobin [g/dL]": 12.5, "lactate [mmol/L]": 1.4}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(port: int, rate: float, seconds: float, max_inflight: int, bodies: list[bytes]):
    import httpx

    n = int(rate * seconds)
    lat = np.full(n, np.nan)
    status = np.zeros(n, dtype=int)
    sem = asyncio.Semaphore(max_inflight)
    limits = httpx.Limits(max_connections=max_inflight, max_keepalive_connections=max_inflight)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10.0,
                                 headers={"X-API-Key": KEY, "Content-Type": "application/json"}) as client:
        t0 = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            due = t0 + i / rate
            async with sem:
                try:
                    r = await client.post("/predict", content=bodies[i % len(bodies)])
                    status[i] = r.status_code
                except httpx.HTTPError:
                    status[i] = -1
            lat[i] = time.perf_counter() - due

        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return lat * 1e3, status, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder written by MultimodalModel.save")
    ap.add_argument("--runtime", default="onnx", help="runtime of the server (default onnx)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration (default 60)")
    ap.add_argument("--max-inflight", type=int, default=32, help="most requests in flight at once (default 32)")
    ap.add_argument("--threads", type=int, default=1, help="inference threads of the server (default 1)")
    ap.add_argument("--quick", action="store_true", help="10 s instead of 60 s, for development")
    args = ap.parse_args(argv)
    import httpx
    import orjson

    from medmm.deploy.bench import machine_load

    seconds = 10.0 if args.quick else args.seconds
    port = free_port()
    env = {**os.environ, "MEDMM_API_KEYS": KEY, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "medmm", "serve", args.model, "--host", "127.0.0.1", "--port", str(port),
           "--runtime", args.runtime, "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                print(proc.stdout.read().decode(errors="replace")[-3000:])
                print("the server exited before it answered")
                return 1
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        bodies = [orjson.dumps(payload(i)) for i in range(50)]
        r = httpx.post(f"http://127.0.0.1:{port}/predict", content=bodies[0], timeout=30,
                       headers={"X-API-Key": KEY, "Content-Type": "application/json"})
        if r.status_code != 200:
            print(f"warm-up request failed: {r.status_code} {r.text[:500]}")
            return 1
        asyncio.run(load(port, 20, 2, args.max_inflight, bodies))  # warm-up
        print(f"machine before: {machine_load()}")
        lat, status, wall = asyncio.run(load(port, args.rate, seconds, args.max_inflight, bodies))
        print(f"machine after:  {machine_load()}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    n = len(status)
    errors = int((status != 200).sum())
    ok = lat[status == 200]
    achieved = n / wall
    p50, p99 = (np.percentile(ok, 50), np.percentile(ok, 99)) if len(ok) else (float("nan"), float("nan"))
    print(f"\nPOST /predict, runtime {args.runtime}, {n} requests over {wall:.1f} s "
          f"(offered {args.rate:g}/s for {seconds:g} s, at most {args.max_inflight} in flight), "
          f"server and load generator on the same machine ({os.cpu_count()} cores)\n")
    print(f"{'figure':28s} {'measured':>12s} {'target':>12s}")
    print(f"{'throughput (req/s)':28s} {achieved:12.1f} {'>= 200':>12s}")
    print(f"{'duration (s)':28s} {wall:12.1f} {'>= 60':>12s}")
    print(f"{'errors':28s} {errors:12d} {'0':>12s}")
    print(f"{'latency p50 (ms)':28s} {p50:12.1f} {'':>12s}")
    print(f"{'latency p99 (ms)':28s} {p99:12.1f} {'< 50':>12s}")
    met = achieved >= 0.98 * 200 and wall >= 60 * 0.98 and errors == 0 and p99 < 50
    print(f"\ntarget {'met' if met else 'NOT met'}" + ("" if seconds >= 60 else " (a --quick run cannot meet the 60 s)"))
    if errors:
        codes, counts = np.unique(status[status != 200], return_counts=True)
        print("error statuses:", dict(zip(codes.tolist(), counts.tolist())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
