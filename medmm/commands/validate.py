"""``medmm validate MANIFEST``: report every problem of a cohort manifest."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="cohort manifest (CSV or Parquet)")
    p.add_argument("--read", action="store_true",
                   help="also read every file with its reader, images included (slower; finds unreadable files)")
    p.add_argument("--workers", type=int, default=0, help="processes that read the files with --read (default 0)")
    p.add_argument("--json", action="store_true", help="print the problems as JSON lines")


def run(args: argparse.Namespace) -> int:
    import json

    from ..cohort import load_cohort, validate_manifest

    if args.read:
        report = load_cohort(args.manifest, progress=False).check(workers=args.workers, progress=sys.stderr.isatty())
    else:
        report = validate_manifest(args.manifest)
    if args.json:
        for p in report.problems:
            print(json.dumps({k: v for k, v in vars(p).items() if v is not None}))
    else:
        print(report)
    return 1 if report.errors else 0
