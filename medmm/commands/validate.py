"""``medmm validate MANIFEST``: report every problem of a cohort manifest.

``--audit`` also reads every record (notes, vitals and EHR; images stay on disk unless
``--read``) and runs the data audit (:mod:`medmm.audit`): leakage suspects, data recorded after
the index time, duplicates across splits, type drift, disguised missing values and label
prevalence. ``--strict-audit`` makes its findings errors (exit code 1).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="cohort manifest (CSV or Parquet)")
    p.add_argument("--read", action="store_true",
                   help="also read every file with its reader, images included (slower; finds unreadable files)")
    p.add_argument("--workers", type=int, default=0, help="processes that read the files with --read (default 0)")
    p.add_argument("--audit", action="store_true",
                   help="also audit the data: leakage suspects, post-index data, duplicates across splits, "
                        "type drift, disguised missing values, label prevalence")
    p.add_argument("--strict-audit", action="store_true", help="audit findings are errors (implies --audit)")
    p.add_argument("--leak-auroc", type=float, default=0.8, metavar="AUC",
                   help="single-feature AUROC from which a column named like a post-index quantity is a leakage "
                        "suspect (default 0.8)")
    p.add_argument("--json", action="store_true", help="print the problems as JSON lines")


def run(args: argparse.Namespace) -> int:
    import json

    from ..cohort import load_cohort, validate_manifest

    audit = None
    if args.read or args.audit or args.strict_audit:
        cohort = load_cohort(args.manifest, progress=False)
        if args.read:
            cohort.check(workers=args.workers, progress=sys.stderr.isatty())
        if args.audit or args.strict_audit:
            from ..audit import audit_cohort

            audit = audit_cohort(cohort, strict=args.strict_audit, leak_auroc=args.leak_auroc)
            audit.add_to(cohort.report)
        report = cohort.report
        if not args.read:  # records were built without reading images: name the unreachable files too
            files = validate_manifest(args.manifest)
            known = {(p.row, p.column, p.message) for p in report.problems}
            report.problems.extend(p for p in files.problems if (p.row, p.column, p.message) not in known)
    else:
        report = validate_manifest(args.manifest)
    if args.json:
        for p in report.problems:
            print(json.dumps({k: v for k, v in vars(p).items() if v is not None}))
    else:
        print(report)
        if audit is not None and audit.prevalence is not None and len(audit.prevalence):
            print("label prevalence:")
            for (task, by), g in audit.prevalence.groupby(["task", "by"], sort=False):
                cells = ", ".join(f"{r.group} {r.prevalence:.2f} (n={r.n})" for r in g.itertuples())
                print(f"  label_{task} by {by}: {cells}")
    return 1 if report.errors else 0
