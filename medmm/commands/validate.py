"""``medmm validate MANIFEST``: report every problem of a cohort manifest.

``--audit`` also reads every record (notes, vitals and EHR; images stay on disk unless
``--read``) and runs the data audit (:mod:`medmm.audit`): leakage suspects, data recorded after
the index time, duplicates across splits, type drift, disguised missing values and label
prevalence. ``--strict-audit`` makes its findings errors (exit code 1).

Label columns are checked against the task types the manifest's sidecar (``tasks:``) or
``--config``'s ``model.tasks`` declare: a regression target that is text, a negative follow-up,
an event that is not 0/1 or an unknown class is an error naming its row and column.
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
    p.add_argument("--config", default=None, metavar="YAML",
                   help="an experiment config whose model.tasks declare the task types (they win over the "
                        "sidecar's tasks: section); the label columns are checked against them")
    p.add_argument("--json", action="store_true", help="print the problems as JSON lines")


def run(args: argparse.Namespace) -> int:
    import json

    from ..cohort import load_cohort, read_manifest, sidecar_path, validate_manifest
    from ..tasks import encode_class_labels, merge_task_declarations, read_task_declarations, validate_task_labels

    config_tasks = None
    if args.config:
        from ..config import load_config

        config_tasks = load_config(args.config).model.get("tasks")
    declared = merge_task_declarations(read_task_declarations(sidecar_path(args.manifest)), config_tasks)
    raw = read_manifest(args.manifest) if declared else None
    frame = encode_class_labels(raw, declared, errors="keep") if declared else None
    audit = None
    if args.read or args.audit or args.strict_audit:
        cohort = load_cohort(args.manifest, progress=False, tasks=config_tasks)
        if args.read:
            cohort.check(workers=args.workers, progress=sys.stderr.isatty())
        if args.audit or args.strict_audit:
            from ..audit import audit_cohort

            audit = audit_cohort(cohort, strict=args.strict_audit, leak_auroc=args.leak_auroc)
            audit.add_to(cohort.report)
        report = cohort.report
        if not args.read:  # records were built without reading images: name the unreachable files too
            files = validate_manifest(args.manifest, frame=frame)
            known = {(p.row, p.column, p.message) for p in report.problems}
            report.problems.extend(p for p in files.problems if (p.row, p.column, p.message) not in known)
    else:
        report = validate_manifest(args.manifest, frame=frame)
    if declared:  # the label columns against the declared task types, by row and column
        validate_task_labels(raw, declared, report=report, source=str(args.manifest))
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
