"""``medmm preprocess MANIFEST --cache DIR``: fill the image cache ahead of training.

Every patient's image is read once and preprocessed (the deterministic part: reorientation,
resampling, windowing, sizing) into the content-addressed cache that ``medmm train`` reads
(``preprocess.cache_dir``). Entries are written atomically with a checksum, so a killed run
resumes where it stopped: a re-run computes only what is not there. A file that cannot be
read becomes a problem in the report (``DIR/preprocess_report.json``), not a crash.

Examples::

    medmm preprocess cohort/manifest.csv --cache cache/ --workers 2
    medmm preprocess --config experiment.yaml --cache cache/ preprocess.image.spatial_size=[64,64,64]
    medmm train --config experiment.yaml preprocess.cache_dir=cache/    # training reads the filled cache
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__.split("Examples::", 1)[0].split("\n", 2)[2]
    p.epilog = "examples:" + __doc__.split("Examples::", 1)[1]
    p.add_argument("args", nargs="*", metavar="MANIFEST | KEY=VALUE",
                   help="the cohort manifest (without --config) and config overrides KEY=VALUE; the image "
                        "preprocessing settings must be those training will use, or the cache is not hit")
    p.add_argument("--config", "-c", metavar="FILE", default=None, help="experiment config (YAML)")
    p.add_argument("--cache", required=True, metavar="DIR", help="cache folder (created if needed)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default 0: this process)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where the work runs: local processes (default) or a Ray cluster")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, ray://host:port); --engine ray")
    p.add_argument("--strict", action="store_true", help="exit 1 when any image could not be read")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..cohort import Cohort
    from ..models import build_preprocessor
    from .train import experiment_config

    cfg = experiment_config(args.args, args.config)
    progress = not args.quiet
    cohort = Cohort.from_manifest(cfg.cohort.manifest, modalities=("image",), progress=progress)
    tasks = tuple(cfg.tasks or cohort.tasks or ("label",))
    model_config = cfg.model_config_for(tasks)
    pre = build_preprocessor(model_config, preprocess=cfg.preprocess)
    step = pre.steps["image"].fit()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.engine == "ray":  # each row read and preprocessed as a Ray task; results kept per row to resume
        import functools
        import hashlib

        from ..engines import map_rows
        from ..train.datasets import preprocess_row

        key = hashlib.sha256(json.dumps(step.deterministic_config(), sort_keys=True).encode()).hexdigest()[:16]
        fn = functools.partial(preprocess_row, base=str(Path(cfg.cohort.manifest).parent), preprocessor=step,
                               cache_dir=str(cache.resolve()))
        out = map_rows(cohort.rows, fn, state_dir=cache / ".rows" / key, engine="ray", address=args.address,
                       progress=progress)
        pairs = [(pid, o) for pid, o in zip(cohort.patient_ids, out) if o["status"] != "none"]
        patients = [pid for pid, _ in pairs]
        results = [(o["status"], o["error"]) for _, o in pairs]
        n_patients = len(cohort)
    else:
        from ..train.datasets import fill_image_cache

        todo = cohort.sources("image")  # no record built: the pool reads images only
        n_patients = len(cohort)
        patients = [pid for pid, _ in todo]
        results = fill_image_cache([s for _, s in todo], step, cache, workers=args.workers, progress=progress)
    for pid, (status, err) in zip(patients, results):
        if status == "error":
            cohort.report.add("error", err, patient_id=pid, modality="image", column="image_path")
    counts = {s: sum(st == s for st, _ in results) for s in ("computed", "hit", "error")}
    summary = {"manifest": str(cfg.cohort.manifest), "images": len(patients), **counts,
               "patients": n_patients, "preprocess": step.deterministic_config(),
               "problems": [str(p) for p in cohort.report.problems]}
    (cache / "preprocess_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(patients)} image(s): {counts['computed']} preprocessed, {counts['hit']} already cached, "
          f"{counts['error']} unreadable; cache {cache} (report: {cache / 'preprocess_report.json'})")
    for p in cohort.report.errors[:20]:
        print(f"  {p}")
    return 1 if args.strict and counts["error"] else 0
