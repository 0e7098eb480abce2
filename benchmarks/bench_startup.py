"""Start-up cost: `import medmm` and `medmm --help` beside the heavy libraries they avoid importing.

Target (issue 2): `python -c "import medmm"` under 1 s. Prints the median of N fresh
interpreter runs for medmm and for the references (torch, monai, mlflow), side by side.

    python benchmarks/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], runs: int) -> float:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5, help="fresh interpreter runs per figure (default 5)")
    args = ap.parse_args()
    py = sys.executable
    rows = [
        ("python -c pass (interpreter floor)", [py, "-c", "pass"]),
        ("import medmm", [py, "-c", "import medmm"]),
        ("medmm --help", [py, "-m", "medmm", "--help"]),
        ("reference: import torch", [py, "-c", "import torch"]),
        ("reference: import monai", [py, "-c", "import monai"]),
        ("reference: import mlflow.pyfunc", [py, "-c", "import mlflow.pyfunc"]),
    ]
    print(f"median of {args.runs} fresh interpreters (s)")
    res = {}
    for name, cmd in rows:
        res[name] = timed(cmd, args.runs)
        print(f"  {name:<38}{res[name]:8.3f}")
    ok = res["import medmm"] < 1.0
    print(f"import medmm {res['import medmm']:.3f} s (target < 1 s): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
