"""``medmm demo``: synthesise a cohort, train a fusion model, evaluate it beside the oracle, log to MLflow."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--patients", type=int, default=1200,
                   help="cohort size (default 1200: 660 train, 180 val and 360 test patients; at 600 (283 train) "
                        "even a logistic regression given the true note categories reached only 0.859-0.868 "
                        "against the tumour oracle's 0.899, so the 3-seed mean could not come within 0.03 of it)")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="share of the cohort held out for the test (default 0.3: 360 test patients, a held-out "
                        "AUROC standard error of ~0.02)")
    p.add_argument("--missing-rate", type=float, default=0.2, help="per-modality missing rate (default 0.2)")
    p.add_argument("--image-size", type=int, default=16,
                   help="voxels along each image axis (default 16: the lesion spans ~5 voxels, and each training "
                        "epoch is ~8 times cheaper than at 32)")
    p.add_argument("--image-format", choices=("dicom", "nifti"), default="nifti",
                   help="how the cohort's CT volumes are written (default nifti: one .nii.gz per patient; dicom: a "
                        "series of slice files per patient with vendor quirks, read by medmm's DICOM series reader: "
                        "the same figures within noise, ~20 s slower to write and read at 1,200 patients)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort and of the first training run (default 0)")
    p.add_argument("--seeds", type=int, default=3,
                   help="training runs on the one cohort, with seeds SEED, SEED+1, ...; the figures printed are "
                        "their average (default 3: one run's AUROC varies by ~0.02 with its seed)")
    p.add_argument("--epochs", type=int, default=30,
                   help="maximum epochs of each training stage: unimodal pretraining, then fusion (default 30)")
    p.add_argument("--fusion", default="attention", help="fusion module (default attention)")
    p.add_argument("--jobs", type=int, default=None,
                   help="training runs at once, each in its own process with an equal share of the CPUs (default: "
                        "the number of seeds, at most one per CPU; 1 trains the seeds one after another in this "
                        "process). A run's figures depend on its share of threads (float sums in another order), "
                        "as on another machine")
    p.add_argument("--fresh", action="store_true",
                   help="write the cohort again even if OUT/cohort holds one with the same settings")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from ..cohort import load_cohort
    from ..synth import TASKS

    t0 = time.perf_counter()
    out = Path(args.out)
    progress = not args.quiet
    n_seeds = max(int(args.seeds), 1)
    print(f"[1/3] a synthetic cohort of {args.patients} patients in {out / 'cohort'}")
    manifest, reused = make_cohort(out / "cohort", args, progress=progress, reuse=not args.fresh)
    t_synth = time.perf_counter() - t0
    print(f"      {'reused (same settings; --fresh writes it again)' if reused else 'written'} in {t_synth:.0f} s")
    cohort = load_cohort(manifest, strict=False, progress=False)
    jobs = _jobs(args.jobs, n_seeds)
    print(f"[2/3] {n_seeds} training run(s) (seeds {args.seed}..{args.seed + n_seeds - 1}"
          + (f", {jobs} at a time" if jobs > 1 else "") + "): attention fusion over image, notes, vitals, EHR;\n"
          "      each encoder pretrained alone with its unimodal head, then the whole model fine-tuned")
    if jobs > 1:
        runs = _train_in_parallel(cohort, manifest, out, args, n_seeds, jobs, progress=progress)
    else:
        runs = []
        for k in range(n_seeds):
            runs.append(_train_seed(cohort, manifest, out, args, k, progress=progress))
            _print_seed(*runs[-1])
    runs = [r[:3] for r in sorted(runs, key=lambda r: r[0])]
    print(f"[3/3] held-out evaluation beside the oracle ({len(runs[0][1].predictions)} test patients)")
    metrics = _summary(runs, manifest.parent / "oracle.csv", TASKS, seed=args.seed)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    first = runs[0][1]
    import mlflow

    mlflow.set_tracking_uri(first.tracking_uri)
    summary = {}
    for t, m in metrics.items():
        summary |= {f"test_oracle_auroc_{t}": m["oracle_auroc"], f"test_mean_auroc_{t}": m["auroc"],
                    f"test_gap_to_oracle_{t}": m["gap_to_oracle"][0], f"test_gap_to_oracle_{t}_low": m["gap_to_oracle"][1],
                    f"test_gap_to_oracle_{t}_high": m["gap_to_oracle"][2],
                    f"test_best_single_modality_oracle_auroc_{t}": m["best_single_modality_oracle_auroc"]}
    mlflow.log_metrics(summary, run_id=first.run_id)
    client = mlflow.MlflowClient(tracking_uri=first.tracking_uri)
    client.set_tag(first.run_id, "medmm.demo_seed_runs", ",".join(r.run_id for _, r, _ in runs))
    mlflow.log_artifact(str(out / "metrics.json"), "evaluation", run_id=first.run_id)

    label = f"AUROC ({n_seeds} seeds)" if n_seeds > 1 else "AUROC"
    head = (f"{'task':<9}{label:>17}{'AUPRC':>7}{'oracle':>8}{'model - oracle [95% CI]':>27}"
            f"{'best single-modality oracle':>30}  n (pos)")
    print(head)
    print("-" * len(head))
    for t, m in metrics.items():
        d, lo, hi = m["gap_to_oracle"]
        print(f"{t:<9}{m['auroc']:>17.3f}{m['auprc']:>7.3f}{m['oracle_auroc']:>8.3f}"
              f"{f'{d:+.3f} [{lo:+.3f}, {hi:+.3f}]':>27}"
              f"{m['best_single_modality_oracle_auroc']:>21.3f} ({m['best_single_modality']})  {m['n']} ({m['n_positive']})")
        if n_seeds > 1:
            print(f"{'':<9}per seed: " + ", ".join(f"{a:.3f}" for a in m["auroc_per_seed"]))
    print("oracle AUROC: the Bayes-optimal score given the modalities each test patient has; the CI is a paired "
          "bootstrap over test patients of the seeds' mean AUROC minus the oracle's.")
    print(f"\nmetrics: {out / 'metrics.json'}   model (seed {args.seed}): {first.model_dir}   "
          f"predictions: {out / 'predictions.parquet'}")
    uri = first.tracking_uri
    if uri.startswith("sqlite:") or uri.startswith("postgresql:") or uri.startswith("mysql:"):
        print(f"MLflow runs {', '.join(r.run_id for _, r, _ in runs)}: open them with\n"
              f"  mlflow ui --backend-store-uri {uri}")
    else:
        print(f"MLflow run {first.run_id} at {uri}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


@dataclass
class SeedRun:
    """What the demo keeps of one training run (small enough to come back from a worker process)."""

    run_id: str | None
    tracking_uri: str
    model_dir: Any
    predictions: Any  # DataFrame, one row per test patient
    best_epoch: int | None


def _train_seed(cohort, manifest, out, args: argparse.Namespace, k: int, *, progress: bool = False,
                threads: int | None = None) -> tuple[int, SeedRun, dict, float]:
    """Training run ``k`` of the demo (seed ``args.seed + k``): ``(seed, run, oracle comparison, seconds)``.
    The first run also audits the cohort, fits the baselines and logs the model; the others
    (their figures do not depend on the training seed) do not."""
    import shutil
    import time

    from ..experiment import run_experiment
    from ..synth import TASKS, compare_to_oracle

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    seed = args.seed + k
    run_dir = out if k == 0 else out / "seeds" / f"seed_{seed}"
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # every demo trains from scratch
    overrides = [f"preprocess.cache_dir={(out / 'cache').resolve()}", f"tracking.run_name=demo-seed{seed}"]
    if k:  # the audit and the baselines do not depend on the training seed: once is enough
        overrides += ["tracking.log_model=false", "tracking.plots=false", "cohort.audit=false",
                      "evaluation.baselines=false"]
    cfg = demo_config(manifest, run_dir, argparse.Namespace(**{**vars(args), "seed": seed}), overrides)
    t = time.perf_counter()
    res = run_experiment(config=cfg, cohort=cohort, progress=progress)
    cmp = compare_to_oracle(res.predictions, manifest.parent / "oracle.csv", TASKS)
    run = SeedRun(res.run_id, res.tracking_uri, res.model_dir, res.predictions,
                  getattr(res.train_result, "best_epoch", None))
    return seed, run, cmp, time.perf_counter() - t


def _print_seed(seed: int, run: SeedRun, cmp: dict, seconds: float) -> None:
    from ..synth import TASKS

    print(f"      seed {seed}: best epoch {run.best_epoch}, " +
          ", ".join(f"{t} AUROC {cmp[t]['auroc']:.3f}" for t in TASKS) + f" ({seconds:.0f} s)", flush=True)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _jobs(jobs: int | None, n_seeds: int) -> int:
    """Training runs at once: ``--jobs`` or one per seed, at most one per CPU; 1 where processes
    cannot be forked safely (only Linux is trusted to fork a process that has imported torch:
    macOS's system libraries are not fork-safe, Windows cannot fork)."""
    import multiprocessing as mp
    import sys

    if not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(n_seeds, _cpus() if jobs is None else int(jobs)))


def _train_in_parallel(cohort, manifest, out, args: argparse.Namespace, n_seeds: int, jobs: int, *,
                       progress: bool = False) -> list[tuple[int, SeedRun, dict, float]]:
    """The seeds' runs in ``jobs`` forked processes, each with ``CPUs // jobs`` torch threads.

    Their shared work is done here first, once: the records read (notes, vitals, EHR) and the
    images preprocessed into the cache, both in one process per CPU, and the MLflow store and
    experiment created (by a short-lived process, so that two runs never race to create the
    tables and this process holds no database connection its children would inherit). The
    workers are forked from this process, which has run no torch operation, so they start at
    once with its imports and records. On two CPUs (1,200 patients, NIfTI) the shared work took
    ~19 s and the three runs 81 s, against 119 s for the three one after another with the same
    shared work inside the first (each run's two threads kept ~1.6 CPUs busy; one thread per run,
    two runs at once, keep both)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from ..errors import MedmmError
    from ..models import build_preprocessor
    from ..tracking import default_tracking_uri
    from ..train.datasets import fill_image_cache

    cfg = demo_config(manifest, out, args, [f"preprocess.cache_dir={(out / 'cache').resolve()}"])
    ctx = mp.get_context("fork")
    uri = cfg.tracking.tracking_uri or default_tracking_uri()
    init = ctx.Process(target=_create_experiment, args=(uri, cfg.tracking.experiment), daemon=True)
    init.start()
    workers = max(int(cfg.preprocess.workers or 0), 1)
    cohort.build_records(workers=workers if workers > 1 else 0, progress=progress)
    if "image" in cohort.modalities:
        pre = build_preprocessor(cfg.model_config_for(tuple(cfg.tasks)), preprocess=cfg.preprocess)
        todo = cohort.sources("image")
        fill_image_cache([s for _, s in todo], pre.steps["image"].fit(), Path(cfg.preprocess.cache_dir),
                         workers=workers, progress=progress)
    init.join()
    if init.exitcode != 0:
        raise MedmmError(f"could not create the MLflow experiment {cfg.tracking.experiment!r} "
                         f"(exit code {init.exitcode})", path=uri,
                         hint="run with --jobs 1 to see the error in this process, or pass another --tracking-uri")
    threads = max(1, _cpus() // jobs)
    runs = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_train_seed, cohort, manifest, out, args, k, progress=False, threads=threads)
                   for k in range(n_seeds)]
        for f in as_completed(futures):
            try:
                runs.append(f.result())
            except BrokenProcessPool as exc:  # a worker killed (out of memory, a signal): say what to do
                raise MedmmError(f"a training worker process of the demo died ({exc})", path=out,
                                 hint=f"run the seeds one after another in this process: --jobs 1 "
                                      f"({jobs} runs at once need about {jobs} times one run's memory)") from exc
            _print_seed(*runs[-1])
    return runs


def _create_experiment(uri: str, name: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(name)


def _summary(runs: list, oracle_csv, tasks, *, seed: int = 0, n_boot: int = 2000) -> dict[str, dict]:
    """Per task: the seeds' mean AUROC and AUPRC beside the oracle's, each seed's AUROC, and the
    mean gap to the oracle with a 95 % paired bootstrap CI over the test patients (each resample
    scores every seed's model and the oracle on the same patients, so the CI covers the test
    split's sampling noise; the seeds' spread is in ``auroc_per_seed``)."""
    import numpy as np
    import pandas as pd

    preds = [r.predictions for _, r, _ in runs]
    ids = preds[0]["patient_id"].astype(str).tolist()
    for p in preds[1:]:
        if p["patient_id"].astype(str).tolist() != ids:
            raise RuntimeError("the seeds' runs scored different test patients")
    orc = pd.read_csv(oracle_csv, dtype={"patient_id": str})
    out: dict[str, dict] = {}
    for t in tasks:
        cmps = [c[t] for _, _, c in runs]
        o = orc[orc["task"] == t].set_index(["patient_id", "subset"])["score"]
        oracle = np.asarray([o[(i, s)] for i, s in zip(ids, preds[0]["pattern"])], dtype=float)
        y = preds[0][f"label_{t}"].to_numpy(float)
        keep = ~np.isnan(y)
        scores = np.stack([p[f"prob_{t}"].to_numpy(float)[keep] for p in preds])
        d, lo, hi = seed_mean_gap(y[keep], scores, oracle[keep], n_boot=n_boot, seed=seed)
        m = {k: v for k, v in cmps[0].items() if k not in ("auroc", "auprc")}
        m.update(auroc=float(np.mean([c["auroc"] for c in cmps])), auprc=float(np.mean([c["auprc"] for c in cmps])),
                 auroc_per_seed=[float(c["auroc"]) for c in cmps], seeds=[s for s, _, _ in runs],
                 gap_to_oracle=[d, lo, hi])
        out[t] = m
    return out


def _auroc_rows(y: Any, s: Any) -> Any:
    """AUROC of each row of scores ``s`` against the labels of the same row of ``y`` (ties count
    one half; NaN for a row with one class)."""
    import numpy as np
    from scipy.stats import rankdata

    r = rankdata(s, axis=-1)
    pos = y.sum(-1)
    neg = y.shape[-1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((r * y).sum(-1) - pos * (pos + 1) / 2) / (pos * neg)


def seed_mean_gap(y, scores, oracle, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean AUROC of ``scores`` (one row per training seed) minus the oracle's, with a 95 %
    percentile CI from a paired bootstrap over patients."""
    import numpy as np

    y = np.asarray(y, float)
    scores = np.atleast_2d(np.asarray(scores, float))
    oracle = np.asarray(oracle, float)
    point = float(np.mean(_auroc_rows(y, scores)) - _auroc_rows(y, oracle))
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    yb = y[idx]
    gaps = np.mean([_auroc_rows(yb, s[idx]) for s in scores], axis=0) - _auroc_rows(yb, oracle[idx])
    gaps = gaps[np.isfinite(gaps)]
    lo, hi = np.percentile(gaps, [2.5, 97.5]) if len(gaps) else (np.nan, np.nan)
    return point, float(lo), float(hi)


def make_cohort(folder, args: argparse.Namespace, *, progress: bool = False, reuse: bool = False):
    """The demo's synthetic cohort in ``folder``, written in one process per CPU (the files do not
    depend on it); with ``reuse`` a complete cohort already there with the same settings is kept.
    Returns ``(manifest, reused)``."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    from ..synth import SynthConfig, generate_cohort

    folder = Path(folder)
    test = min(max(args.test_fraction, 0.05), 0.9)
    fractions = ((1 - test) * 0.55 / 0.70, (1 - test) * 0.15 / 0.70, test)  # train:val as in the synthetic default
    kw = dict(n_patients=args.patients, seed=args.seed, missing_rate=args.missing_rate, image_size=args.image_size,
              split_fractions=fractions, image_format=args.image_format)
    manifest, written = folder / "manifest.csv", folder / "synth_config.json"
    if reuse and manifest.exists() and written.exists():  # manifest.csv is the generator's last file
        if json.loads(written.read_text()) == json.loads(json.dumps(asdict(SynthConfig(**kw)))):
            return manifest, True
    return generate_cohort(folder, progress=progress, workers=0, **kw), False


def _workers() -> int:
    import os

    n = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), 4)
    return n if n > 1 else 0


def demo_config(manifest, out, args: argparse.Namespace, overrides: list[str] | tuple[str, ...] = ()):
    """The demo's experiment: MedFuse-style two stages with the attention fusion.

    Stage 1 trains each encoder with its unimodal head on the patients who have that
    modality (each stops at its own best epoch); stage 2 trains the fused model, the
    encoders at a quarter of the learning rate. Selection is on the validation split only.
    """
    from ..config import load_config
    from ..synth import TASKS

    s = args.image_size
    return load_config(dict(
        cohort={"manifest": str(manifest)},
        tasks=list(TASKS),
        # notes, vitals and EHR read and the image cache filled in one process per CPU (up to 4)
        preprocess={"image": {"spatial_size": [s, s, s]}, "workers": _workers()},
        # the vitals GRU also reads each signal's mean and slope, the CNN the volume's first-order
        # intensity statistics: both reach their single-modality oracle from a few hundred patients
        # (benchmarks/bench_demo.py, stage one)
        # each wide (linear) path's L2 chosen on the validation split (on the demo's templated notes a
        # fixed weak penalty let incidental n-grams blur the notes path), and the unimodal residuals
        # that carry nothing on a task (vitals on the tumour) dropped on validation (bench_demo_fusion.py)
        model={"fusion": {"name": args.fusion}, "wide_l2": "auto", "residual_select": True,
               # the CNN at half the width and a strided stem (as bench_missing.py): at 1,200 patients its
               # AUROC was the same or better on two seeds for ~10 % less time per seed
               "encoders": {"image": {"name": "tiny_cnn3d", "first_order": True, "channels": [8, 16],
                                      "stem_stride": 2},
                            "vitals": {"name": "gru", "trend": True}}},
        train={"epochs": args.epochs, "seed": args.seed, "lr": 2e-3, "weight_decay": 0.05, "monitor": "val_loss",
               "min_epochs": min(10, args.epochs), "patience": 10, "encoder_lr_scale": 0.25,
               # single epochs: the fused stage's validation loss swings by up to 0.4 between epochs, and a
               # 5-epoch mean (auto) then prefers an early, smooth stretch (benchmarks/bench_demo.py)
               "monitor_window": 1},
        transfer={"pretrain_epochs": args.epochs, "mode": "finetune"},
        tracking={"experiment": "medmm-demo", "run_name": "demo", "tracking_uri": args.tracking_uri},
        out_dir=str(out),
    ), overrides)
