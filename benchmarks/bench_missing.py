"""Missing-modality learning on the synthetic cohort, beside dedicated models and the oracle.

For every non-empty subset S of the four modalities available at test time it reports the
held-out AUROC of

* ``single``: ONE model trained with missing-modality learning (ModDrop, auxiliary unimodal
  heads, the unimodal residual path: ``ModelConfig`` defaults), tested with every modality
  outside S hidden;
* ``dedicated``: a model of the same architecture trained and tested on S alone (no ModDrop);
* ``oracle``: the Bayes-optimal score given the modalities each test patient has (S, less what
  the patient lacks anyway).

Every model is trained with the demo's two-stage recipe: stage one trains each encoder alone
with its unimodal head (once, shared by all models, so no model starts ahead of another); stage
two trains the model, its encoders at a quarter of the learning rate. Trained from scratch in
one stage (``--one-stage``), the fast modalities (notes, EHR) overfit the validation loss before
the image encoder has learnt anything, and the early stop keeps an image-blind model.

Targets (issue 5): the single model within 0.02 of the dedicated model on every subset; fusion
(the single model with everything) better than the best unimodal (dedicated) model on both
tasks; ``attention`` at least as good as ``concat`` when 50 % of each modality is missing.
Issue 14: the fused model's AUROC with every modality, averaged over the seeds (at least 3),
within 0.03 of the oracle's for both tasks (``fused_within_0.03_of_oracle``, with each seed's gap).

The cohort is generated complete; missingness is then drawn per patient and modality with a
fixed seed (``--missing-rate`` for the main comparison, 0.5 for attention vs concat), in
training and test alike. Preprocessing is fitted on each scenario's training split only;
model selection uses the validation split (for a model meant for any subset, its loss over every
subset of each validation patient's modalities); the test split is only scored.

    python benchmarks/bench_missing.py --out bench_missing.json            # 500 + 600 test patients, 16^3
    python benchmarks/bench_missing.py --quick --out /tmp/quick.json       # smoke run (a minute or two)
    python benchmarks/bench_missing.py --sweep 0.2 --seeds 3 --out fused.json  # issue 14's fused check alone

Writes ``--out`` (a JSON list of rows: task, subset, single_model_auroc, dedicated_model_auroc,
oracle_auroc, n) and ``<out>.checks.json`` (the three targets with their figures).

Every model sees the volumes at ``--image-size`` (``preprocess.image.spatial_size``, as the demo);
until 2026-12-02 the preprocessor's default upsampled the 16^3 volumes to 32^3 (8x the CNN's work,
no new information), and the model options were ModelConfig's defaults, not the demo's
(``--plain-recipe`` keeps those options).

Issue 14's check, the fused model with every modality (20 % of each missing) against the oracle,
mean of 3 seeds, measured 2026-12-02 on the quiet 2-core machine (``--sweep 0.2 --seeds 3``;
gap = model - oracle, per seed in brackets):

=========================================================  ==========================  ==========================
cohort, recipe                                             tumour                      disease
=========================================================  ==========================  ==========================
1,200 (660 train, 180 val, 360 test; the demo's split),    **-0.029** (-0.028, -0.028,  **-0.016** (-0.015, -0.012,
16^3 as written, demo recipe (``--patients 1200            -0.033): met                 -0.023): met
--test-patients 0``; 55-67 s a seed)
the same, 16^3, ``--plain-recipe`` (48-58 s a seed)        -0.034 (-0.026, -0.034,      -0.020 (-0.026, -0.021,
                                                           -0.044)                      -0.014)
the same, volumes upsampled to 32^3 (176-238 s a seed)     -0.031 (-0.030, -0.033,      -0.017 (-0.016, -0.014,
                                                           -0.031)                      -0.021)
the same, 32^3, epoch chosen on the validation patients    -0.031                       -0.018
as they are (``--no-val-every-subset``)
500 + 600 test (275 train; the default), 16^3, demo        -0.033 (-0.029, -0.047,      -0.031 (-0.039, -0.024,
recipe; 22-27 s a seed                                     -0.023)                      -0.030)
the same, 32^3, demo recipe                                -0.025                       -0.033
the same, 32^3, ``--plain-recipe``                         -0.027                       -0.035
=========================================================  ==========================  ==========================

At the demo's cohort size both gaps are within 0.03 (the tumour's by 0.001; ``medmm demo`` itself:
-0.023 / -0.017); with 275 training patients neither is, on any recipe tried: there the sample
limits every learner (the README's "Why 1,200 patients": at 283 training patients a linear model
on the true note categories, the image's statistics and the EHR row stays ~0.04 short on the tumour).
The per-seed spread (up to 0.024) is the size of these differences: one seed decides nothing.

The full default run (5 seeds, 10 for attention vs concat; 16^3 as written), 2026-12-02, demo recipe /
``--plain-recipe`` (1,619 s beside another benchmark / 971 s): single model within 0.02 of the dedicated
model on 28/30 / 29/30 rows, **not met**: disease on the notes alone 0.748 / 0.752 against a dedicated
notes model's 0.775 (-0.027 / -0.023; with the demo recipe also disease on image+notes, -0.027); every
other row within 0.02 (10 of 30 rows better than dedicated with the demo recipe, 22 with the plain
one). Fusion beats the best unimodal model on both tasks (tumour 0.852 / 0.851 vs image 0.754 / 0.741;
disease 0.853 / 0.850 vs vitals 0.777 / notes 0.775): met. Attention vs concat at 50 % missing: tumour
0.751 / 0.755 vs 0.722 / 0.737, disease 0.790 / 0.786 vs 0.776 / 0.778: met. The fused model's gap to
the oracle over the five seeds (275 training patients): tumour -0.030 / -0.030, disease -0.037 / -0.041.
So the demo's recipe helps the model with every modality (at 1,200: +0.005 tumour, +0.004 disease
over the plain one) and costs it on subsets: for the issue-5 comparisons ``--plain-recipe`` is the
fairer setting. The notes-only shortfall is of the single model (a dedicated notes model does not depend on the recipe
or the image size; 0.775 in both runs); whether it was there at 32^3 was not measured (a full run at
32^3 would take an hour or so here, an estimate from the 32^3 sweeps' 3x slower seeds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

MODS = ("image", "notes", "vitals", "ehr")
# every model of the benchmark: ModelConfig's encoders, with a cheaper image CNN (2 CPU cores), and the
# demo's first-order image statistics and vitals trend read-out (medmm/commands/demo.py)
ENCODERS = {"image": {"name": "tiny_cnn3d", "channels": (8, 16), "stem_stride": 2, "first_order": True},
            "notes": {"name": "tfidf_mlp"}, "vitals": {"name": "gru", "trend": True}, "ehr": {"name": "mlp"}}


def subsets() -> list[tuple[str, ...]]:
    return [c for r in range(1, 5) for c in itertools.combinations(MODS, r)]


def name(mods) -> str:
    return "+".join(m for m in MODS if m in set(mods)) or "none"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_missing.json", help="JSON file for the per-subset table")
    p.add_argument("--patients", type=int, default=500,
                   help="patients for training and validation: 55%% train, 15%% val, 30%% test (default 500)")
    p.add_argument("--test-patients", type=int, default=600,
                   help="patients added to the test split (default 600): the single-vs-dedicated gaps asked for "
                        "(0.02) are smaller than the sampling error of an AUROC on 150 test patients (about 0.035)")
    p.add_argument("--image-size", type=int, default=16, help="voxels per image axis (default 16)")
    p.add_argument("--missing-rate", type=float, default=0.2, help="per-modality missing rate of the main scenario")
    p.add_argument("--half-rate", type=float, default=0.5, help="missing rate of the attention-vs-concat scenario")
    p.add_argument("--epochs", type=int, default=40, help="maximum epochs per stage and model (early stopping on val loss)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    p.add_argument("--seeds", type=int, default=5,
                   help="training seeds (default 5): every model is trained once per seed and its AUROCs averaged, "
                        "so the comparison is of recipes, not of one lucky or unlucky initialisation")
    p.add_argument("--half-seeds", type=int, default=10,
                   help="training seeds of the attention-vs-concat comparison (default 10): the two differ by less "
                        "than one seed's spread (about 0.02 AUROC)")
    p.add_argument("--plain-recipe", action="store_true",
                   help="ModelConfig's defaults and the auto selection window instead of the demo's wide_l2=auto, "
                        "residual_select and single-epoch selection")
    p.add_argument("--one-stage", dest="two_stage", action="store_false",
                   help="train every model from scratch in one stage instead of the demo's two stages")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort, the missingness and the training")
    p.add_argument("--workdir", default=None, help="where the cohort is written (default: a folder beside --out)")
    p.add_argument("--quick", action="store_true", help="smoke run: 120 patients, 2 epochs")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--monitor", default="val_loss",
                   help="validation metric that selects each model's epoch: val_loss (default) or val_auroc_mean")
    p.add_argument("--dedicated-from", default=None,
                   help="take the dedicated models' AUROCs from an earlier --out of this script with the same "
                        "cohort and training settings instead of training them again")
    p.add_argument("--no-val-every-subset", dest="val_every_subset", action="store_false",
                   help="select the single model's epoch on the validation patients as they are, not once per "
                        "modality subset")
    p.add_argument("--sweep", default=None,
                   help="instead of the targets: train the default single model at these comma-separated missing "
                        "rates (e.g. 0,0.4,0.8) and report its test AUROC beside the oracle's")
    args = p.parse_args(argv)
    if args.quick:
        args.patients, args.test_patients, args.epochs, args.patience, args.seeds, args.half_seeds = 120, 0, 2, 1, 1, 1
    return args


def drop_mask(pids: list[str], rate: float, seed: int) -> dict[str, set[str]]:
    """Which modalities each patient lacks: each independently with chance ``rate``."""
    import numpy as np

    rng = np.random.default_rng([seed, 2024])
    u = rng.random((len(pids), len(MODS)))
    return {pid: {m for j, m in enumerate(MODS) if u[i, j] < rate} for i, pid in enumerate(pids)}


class Scenario:
    """The cohort under one draw of missingness: preprocessing fitted on its train split, items per split."""

    def __init__(self, cohort, rate: float, seed: int, image_size: int) -> None:
        from medmm.data import encode_records
        from medmm.models import ModelConfig, build_preprocessor

        pids = [r.patient_id for r in cohort.records]
        self.missing = drop_mask(pids, rate, seed)
        recs = {s: [r.masked(*sorted(self.missing[r.patient_id])) for r in cohort.split(s)]
                for s in ("train", "val", "test")}
        # the volumes at the size they were written, as the demo (preprocess.image.spatial_size = its
        # --image-size); the preprocessor's default (32^3) would upsample them, 8x the CNN's work for nothing
        self.pre = build_preprocessor(ModelConfig(), preprocess={"image": {"spatial_size": [image_size] * 3}}
                                      ).fit(recs["train"])
        self.shapes = self.pre.output_shapes()
        self.items = {s: encode_records(r, self.pre) for s, r in recs.items()}

    def view(self, split: str, mods: tuple[str, ...], tasks: tuple[str, ...], *, every_subset: bool = False):
        """A dataset of ``split`` seen through ``mods``; with ``every_subset`` each patient once per
        non-empty subset of ``mods`` (validation of a model meant for any subset)."""
        from medmm.train.transfer import DatasetView

        shows = [c for r in range(1, len(mods) + 1) for c in itertools.combinations(mods, r)] if every_subset else [mods]
        items = [{**it, "id": f"{it['id']}|{name(sub)}" if every_subset else it["id"],
                  "values": {m: it["values"][m] if m in sub else None for m in mods}}
                 for sub in shows for it in self.items[split]]
        return DatasetView(items, tasks, tuple(mods), {m: self.shapes[m] for m in mods})


def train_config(args, **kw):
    """The demo's recipe (``medmm demo``): AdamW 2e-3 with weight decay 0.05, selection on the
    validation loss of single epochs (``monitor_window=1``) after at least 10 epochs, patience
    ``--patience``; ``--plain-recipe``: the validation loss averaged as ``auto`` chooses."""
    from medmm.train.trainer import TrainConfig

    return TrainConfig(epochs=args.epochs, patience=args.patience, min_epochs=min(10, args.epochs), seed=args.seed,
                       lr=2e-3, weight_decay=0.05, device="cpu", deterministic=False, monitor=args.monitor,
                       monitor_window="auto" if args.plain_recipe else 1, **kw)


def model_options(args) -> dict:
    """The demo's model options beside its encoders: each wide path's L2 chosen on the data and the
    unimodal residuals that carry nothing on a task dropped on validation (``medmm demo``'s
    ``demo_config``); none with ``--plain-recipe`` (the ModelConfig defaults)."""
    return {} if args.plain_recipe else {"wide_l2": "auto", "residual_select": True}


def pretrain(sc: Scenario, tasks, args) -> tuple[dict, float]:
    """Stage one of the two-stage recipe: each encoder trained alone with its unimodal head on the
    training patients who have that modality. Every model of the benchmark (the single model and
    each dedicated model) starts its fused training from these same encoders and heads."""
    from medmm.models import ModelConfig, MultimodalModel
    from medmm.train.transfer import pretrain_encoders

    import torch

    cfg = ModelConfig(tasks={t: "binary" for t in tasks}, modalities=MODS, encoders={m: dict(ENCODERS[m]) for m in MODS},
                      **model_options(args))
    torch.manual_seed(args.seed)  # the initial weights too come from the run's seed
    model = MultimodalModel(cfg, {m: sc.shapes[m] for m in MODS}, sc.pre)
    t0 = time.perf_counter()
    pretrain_encoders(model, sc.view("train", MODS, tasks), sc.view("val", MODS, tasks), train_config(args),
                      epochs=args.epochs)
    state = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("encoders.", "aux_heads."))}
    return state, time.perf_counter() - t0


def fit_model(sc: Scenario, mods, tasks, args, *, any_subset: bool = False, init: dict | None = None, **model_kw):
    """Train one model on ``mods``; with ``init`` (from :func:`pretrain`) its encoders and unimodal
    heads start from there and are fine-tuned at a quarter of the learning rate (stage two)."""
    import torch

    from medmm.models import ModelConfig, MultimodalModel
    from medmm.train.trainer import train

    cfg = ModelConfig(tasks={t: "binary" for t in tasks}, modalities=tuple(mods),
                      encoders={m: dict(ENCODERS[m]) for m in mods}, **{**model_options(args), **model_kw})
    torch.manual_seed(args.seed)
    model = MultimodalModel(cfg, {m: sc.shapes[m] for m in mods}, sc.pre)
    if init is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in init.items() if k in own and own[k].shape == v.shape}, strict=False)
    tc = train_config(args, encoder_lr_scale=0.25 if init is not None else 1.0)
    t0 = time.perf_counter()
    val = sc.view("val", mods, tasks, every_subset=any_subset and args.val_every_subset)
    res = train(model, sc.view("train", mods, tasks), val, tc, progress=False)
    return model, time.perf_counter() - t0, res.best_epoch


def seed_args(args, k: int) -> argparse.Namespace:
    """``args`` for the ``k``-th training seed (``--seed`` + k); the cohort and missingness keep ``--seed``."""
    return argparse.Namespace(**{**vars(args), "seed": args.seed + k})


def train_single(sc: Scenario, tasks, targs):
    """Stage one (with ``two_stage``) and the single model meant for any subset of the modalities.
    Returns (stage-one state or None, its seconds, model, training seconds, best epoch)."""
    init, pre_secs = pretrain(sc, tasks, targs) if targs.two_stage else (None, 0.0)
    model, secs, ep = fit_model(sc, MODS, tasks, targs, any_subset=True, init=init)
    return init, pre_secs, model, secs, ep


def fused_check(aurocs: list[float], oracle_auroc: float) -> dict:
    """Issue 14: the fused model's AUROC, averaged over the seeds, within 0.03 of the oracle's."""
    gaps = [a - oracle_auroc for a in aurocs]
    gap = sum(gaps) / len(gaps)
    return {"met": gap >= -0.03, "gap": round(gap, 4), "gap_per_seed": [round(g, 4) for g in gaps],
            "fused_auroc": round(sum(aurocs) / len(aurocs), 4), "oracle_auroc": round(oracle_auroc, 4),
            "seeds": len(gaps)}


def score(model, sc: Scenario, mods, tasks, oracle):
    """Test AUROC per task with only ``mods`` visible, and the oracle's on the same patients."""
    import numpy as np

    from medmm.evaluate.metrics import auroc
    from medmm.train.trainer import predict_dataset

    ds = sc.view("test", model.modalities, tasks)
    for it in ds.items:  # hide what is outside the subset
        it["values"] = {m: (v if m in mods else None) for m, v in it["values"].items()}
    p, y, lm, _ = predict_dataset(model, ds)
    out = {}
    for k, t in enumerate(tasks):
        sel = lm[:, k]
        ids = [it["id"] for it in ds.items]
        avail = [name([m for m in mods if m not in sc.missing[i]]) for i in ids]
        o = np.array([oracle[(i, t, a)] for i, a in zip(ids, avail)])
        out[t] = {"auroc": auroc(y[sel, k], p[sel, k]), "oracle": auroc(y[sel, k], o[sel]), "n": int(sel.sum())}
    return out


def sweep(cohort, oracle, tasks, args, out: Path, t0: float) -> int:
    """The default single model trained and tested at several missing rates, once per seed (``--seeds``);
    each rate's AUROCs averaged over the seeds, with the issue-14 check (mean gap within 0.03)."""
    rows, checks = [], {}
    print(f"{'missing':>8}{'seed':>6}{'task':>9}{'model':>8}{'oracle':>8}{'gap':>8}{'seconds':>9}")
    for rate in (float(r) for r in args.sweep.split(",")):
        sc = Scenario(cohort, rate, args.seed, args.image_size)
        runs: dict[str, list[float]] = {t: [] for t in tasks}
        orc, secs_all = {}, []
        for k in range(args.seeds):
            targs = seed_args(args, k)
            _, pre_secs, model, secs, _ = train_single(sc, tasks, targs)
            secs += pre_secs
            secs_all.append(round(secs, 1))
            s = score(model, sc, MODS, tasks, oracle)
            for t in tasks:
                runs[t].append(s[t]["auroc"])
                orc[t] = (s[t]["oracle"], s[t]["n"])
                print(f"{rate:>8.0%}{targs.seed:>6}{t:>9}{s[t]['auroc']:>8.3f}{s[t]['oracle']:>8.3f}"
                      f"{s[t]['auroc'] - s[t]['oracle']:>+8.3f}{secs:>9.0f}", flush=True)
        for t in tasks:
            c = checks.setdefault(f"fused_within_0.03_of_oracle@{rate:g}", {})[t] = fused_check(runs[t], orc[t][0])
            rows.append({"missing_rate": rate, "task": t, "single_model_auroc": c["fused_auroc"],
                         "oracle_auroc": c["oracle_auroc"], "n": orc[t][1],
                         "single_model_auroc_runs": [round(a, 4) for a in runs[t]], "train_s": secs_all})
            print(f"{rate:>8.0%}{'mean':>6}{t:>9}{c['fused_auroc']:>8.3f}{c['oracle_auroc']:>8.3f}{c['gap']:>+8.3f}"
                  f"  ({'MET' if c['met'] else 'NOT MET'}: within 0.03)", flush=True)
    checks["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    checks["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    Path(f"{out}.checks.json").write_text(json.dumps(checks, indent=2) + "\n")
    print(f"wrote {out} and {out}.checks.json in {checks['seconds']:.0f} s")
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    import pandas as pd
    import torch

    from medmm.cohort import load_cohort
    from medmm.synth import TASKS, generate_cohort

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.workdir) if args.workdir else (
        out.parent / f".bench_missing_cohort_{args.patients}+{args.test_patients}_{args.image_size}_{args.seed}")
    t0 = time.perf_counter()
    manifest = work / "manifest.csv"
    if not manifest.exists():
        n = args.patients + args.test_patients
        fractions = (0.55 * args.patients / n, 0.15 * args.patients / n)
        generate_cohort(work, n_patients=n, seed=args.seed, image_size=args.image_size, missing_rate=0.0,
                        split_fractions=(*fractions, 1.0 - sum(fractions)), progress=False)
    cohort = load_cohort(manifest, progress=False)
    orc = pd.read_csv(work / "oracle.csv", dtype={"patient_id": str})
    oracle = {(p, t, s): v for p, t, s, v in orc[["patient_id", "task", "subset", "score"]].itertuples(index=False)}
    tasks = tuple(TASKS)
    if args.sweep:
        return sweep(cohort, oracle, tasks, args, out, t0)
    main_sc = Scenario(cohort, args.missing_rate, args.seed, args.image_size)
    t_prep = time.perf_counter() - t0
    print(f"cohort: {args.patients} patients, {args.image_size}^3 images, {len(main_sc.items['train'])}/"
          f"{len(main_sc.items['val'])}/{len(main_sc.items['test'])} train/val/test; missing rate {args.missing_rate}; "
          f"data ready in {t_prep:.0f} s", flush=True)

    earlier = {}
    if args.dedicated_from:  # dedicated models do not depend on the single model's settings
        prev = json.loads(Path(args.dedicated_from).read_text())
        prev_set = json.loads(Path(f"{args.dedicated_from}.checks.json").read_text())["settings"]
        same = ("patients", "test_patients", "image_size", "missing_rate", "epochs", "patience", "seed", "two_stage",
                "seeds", "plain_recipe")
        if any(prev_set.get(k) != getattr(args, k) for k in same):
            raise SystemExit(f"--dedicated-from was run with other settings: {prev_set}")
        earlier = {(r["task"], r["subset"]): r for r in prev}
    runs: dict[tuple[str, str], dict[str, list[float]]] = {}
    oracle_auc: dict[tuple[str, str], tuple[float, int]] = {}
    for k in range(args.seeds):  # every model trained once per seed; AUROCs averaged over the seeds
        targs = seed_args(args, k)
        init, pre_secs, single, secs, ep = train_single(main_sc, tasks, targs)
        if init is not None:
            print(f"seed {targs.seed}: stage one (each encoder with its unimodal head) in {pre_secs:.0f} s", flush=True)
        print(f"seed {targs.seed}: single model (attention, ModDrop) trained in {secs:.0f} s, best epoch {ep}",
              flush=True)
        for mods in subsets():
            s_single = score(single, main_sc, mods, tasks, oracle)
            if not earlier:
                ded, secs, ep = fit_model(main_sc, mods, tasks, targs, init=init, modality_dropout=0.0)
                s_ded = score(ded, main_sc, mods, tasks, oracle)
                print(f"  dedicated {name(mods):<26} {secs:5.0f} s, best epoch {ep}", flush=True)
            for t in tasks:
                r = runs.setdefault((t, name(mods)), {"single": [], "dedicated": []})
                r["single"].append(s_single[t]["auroc"])
                if not earlier:
                    r["dedicated"].append(s_ded[t]["auroc"])
                oracle_auc[(t, name(mods))] = (s_single[t]["oracle"], s_single[t]["n"])
    rows = []
    for (t, sub), r in runs.items():
        ded_runs = r["dedicated"] or earlier[(t, sub)]["dedicated_model_auroc_runs"]
        rows.append({"task": t, "subset": sub,
                     "single_model_auroc": round(sum(r["single"]) / len(r["single"]), 4),
                     "dedicated_model_auroc": round(sum(ded_runs) / len(ded_runs), 4),
                     "oracle_auroc": round(oracle_auc[(t, sub)][0], 4), "n": oracle_auc[(t, sub)][1],
                     "single_model_auroc_runs": [round(a, 4) for a in r["single"]],
                     "dedicated_model_auroc_runs": [round(a, 4) for a in ded_runs]})
    if earlier:
        print(f"  dedicated models' AUROCs from {args.dedicated_from}", flush=True)

    head = f"{'task':<8}{'subset':<26}{'single':>8}{'dedicated':>11}{'oracle':>8}{'single-ded':>12}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in sorted(rows, key=lambda r: (r["task"], len(r["subset"].split("+")), r["subset"])):
        d = r["single_model_auroc"] - r["dedicated_model_auroc"]
        print(f"{r['task']:<8}{r['subset']:<26}{r['single_model_auroc']:>8.3f}{r['dedicated_model_auroc']:>11.3f}"
              f"{r['oracle_auroc']:>8.3f}{d:>+12.3f}{'' if d >= -0.02 else '  <-- more than 0.02 below'}")

    checks: dict = {"within_0.02": {}, "fusion_vs_best_unimodal": {}, "fused_within_0.03_of_oracle": {},
                    "attention_vs_concat_at_half_missing": {}}
    worst = min(rows, key=lambda r: r["single_model_auroc"] - r["dedicated_model_auroc"])
    n_ok = sum(r["single_model_auroc"] >= r["dedicated_model_auroc"] - 0.02 for r in rows)
    checks["within_0.02"] = {"met": n_ok == len(rows), "rows_within": n_ok, "rows": len(rows),
                             "worst": {k: worst[k] for k in ("task", "subset", "single_model_auroc", "dedicated_model_auroc")}}
    full = name(MODS)
    for t in tasks:
        uni = {r["subset"]: r["dedicated_model_auroc"] for r in rows if r["task"] == t and "+" not in r["subset"]}
        best = max(uni, key=uni.get)
        fused = next(r["single_model_auroc"] for r in rows if r["task"] == t and r["subset"] == full)
        checks["fusion_vs_best_unimodal"][t] = {"met": fused > uni[best], "fusion_auroc": fused,
                                                "best_unimodal": best, "best_unimodal_auroc": uni[best]}
        checks["fused_within_0.03_of_oracle"][t] = fused_check(runs[(t, full)]["single"], oracle_auc[(t, full)][0])

    half = Scenario(cohort, args.half_rate, args.seed + 1, args.image_size)
    got: dict[str, dict[str, list[float]]] = {f: {t: [] for t in tasks} for f in ("attention", "concat")}
    res = {}
    for k in range(args.half_seeds):
        targs = seed_args(args, k)
        half_init = pretrain(half, tasks, targs)[0] if args.two_stage else None
        for fusion in ("attention", "concat"):
            m, secs, ep = fit_model(half, MODS, tasks, targs, any_subset=True, init=half_init, fusion={"name": fusion})
            s = score(m, half, MODS, tasks, oracle)
            for t in tasks:
                got[fusion][t].append(s[t]["auroc"])
            res["oracle"] = {t: round(s[t]["oracle"], 4) for t in tasks}
            print(f"{args.half_rate:.0%} missing, seed {targs.seed}, {fusion:<9}: trained in {secs:.0f} s, best epoch "
                  f"{ep}, test AUROC " + ", ".join(f"{t} {got[fusion][t][-1]:.3f}" for t in tasks), flush=True)
    for fusion in ("attention", "concat"):
        res[fusion] = {t: round(sum(v) / len(v), 4) for t, v in got[fusion].items()}
    for t in tasks:
        checks["attention_vs_concat_at_half_missing"][t] = {
            "met": res["attention"][t] >= res["concat"][t], "attention_auroc": res["attention"][t],
            "concat_auroc": res["concat"][t], "oracle_auroc": res["oracle"][t]}

    print("\ntargets:")
    c = checks["within_0.02"]
    print(f"  single model within 0.02 of dedicated: {c['rows_within']}/{c['rows']} rows "
          f"({'MET' if c['met'] else 'NOT MET'}; worst {c['worst']})")
    for t, c in checks["fusion_vs_best_unimodal"].items():
        print(f"  {t}: fusion {c['fusion_auroc']:.3f} vs best unimodal {c['best_unimodal']} {c['best_unimodal_auroc']:.3f}"
              f" ({'MET' if c['met'] else 'NOT MET'})")
    for t, c in checks["fused_within_0.03_of_oracle"].items():
        print(f"  {t}: fused model {c['fused_auroc']:.3f} (mean of {c['seeds']} seeds) vs oracle {c['oracle_auroc']:.3f}, "
              f"gap {c['gap']:+.3f} (per seed {', '.join(f'{g:+.3f}' for g in c['gap_per_seed'])}) "
              f"({'MET' if c['met'] else 'NOT MET'}: within 0.03)")
    for t, c in checks["attention_vs_concat_at_half_missing"].items():
        print(f"  {t} at {args.half_rate:.0%} missing: attention {c['attention_auroc']:.3f} vs concat "
              f"{c['concat_auroc']:.3f}, oracle {c['oracle_auroc']:.3f} ({'MET' if c['met'] else 'NOT MET'})")
    checks["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    checks["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    Path(f"{out}.checks.json").write_text(json.dumps(checks, indent=2) + "\n")
    print(f"\nwrote {out} and {out}.checks.json in {checks['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
