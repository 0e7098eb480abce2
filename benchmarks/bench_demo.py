"""The demo's recipe across seeds: per-epoch held-out AUROC of stage two, and the epoch each
selection rule picks, so that early stopping and model selection are judged on several
training runs instead of one.

One synthetic cohort (cached in ``--workdir``) is trained on with ``--seeds`` training seeds,
the demo's two-stage recipe, stage two run for all ``--epochs`` (no early stop) while the test
split is scored after every epoch (the test figures never feed back into training). Each
selection rule (``monitor_window`` W, ``patience`` P) is then replayed on the validation history
exactly as :func:`medmm.train.trainer.train` applies it, and the test AUROC of the epoch it
picks is reported beside the oracle's, averaged over the seeds.

    python benchmarks/bench_demo.py --seeds 3 --out /tmp/bench_demo.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

RULES = [(1, 10), (3, 10), (5, 10), (1, 5), (3, 5)]  # (monitor_window, patience)


def parse(argv=None) -> argparse.Namespace:
    from medmm.commands import demo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    demo.add_arguments(p)
    p.add_argument("--workdir", default=None, help="cohort and runs (default: beside --json)")
    p.add_argument("--json", default="bench_demo.json", help="where to write the per-seed histories and the rules")
    p.add_argument("--set", nargs="*", default=[], help="experiment overrides key=value (e.g. train.lr=1e-3)")
    p.add_argument("--stage1-only", action="store_true",
                   help="stop after stage one (the unimodal pretraining): only its per-modality figures")
    return p.parse_args(argv)


def replay(history: list[dict], window: int, patience: int, min_epochs: int) -> int:
    """The epoch :func:`medmm.train.trainer.train` selects (centred window of val_loss, patience)."""
    import numpy as np

    half = window // 2
    best, best_epoch = np.inf, -1
    for epoch in range(len(history)):
        centre = epoch - half
        if centre >= half:
            score = float(np.mean([h["val_loss"] for h in history[centre - half:centre + half + 1]]))
            if best_epoch < half or score < best:
                best, best_epoch = score, centre
        if epoch >= 2 * half and epoch + 1 >= min_epochs and epoch - best_epoch >= patience:
            break
    return max(best_epoch, 0)


class _Stage1Done(Exception):
    pass


def unimodal_test(model, test_ds, oracle_csv) -> dict[str, dict[str, list[float]]]:
    """Each stage-one unimodal model (encoder + its auxiliary head, + wide layer) scored on the
    test patients who have that modality, beside the oracle given that modality alone:
    ``{modality: {task: [model AUROC, oracle AUROC, n]}}`` for the tasks it carries evidence of."""
    import pandas as pd

    from medmm.evaluate.metrics import auroc
    from medmm.train.trainer import predict_dataset
    from medmm.train.transfer import DatasetView, UnimodalView

    orc = pd.read_csv(oracle_csv, dtype={"patient_id": str}).set_index(["patient_id", "task", "subset"])["score"]
    out: dict[str, dict[str, list[float]]] = {}
    for m in model.modalities:
        view = DatasetView.of(test_ds, modalities=(m,), present_only=True)
        if not len(view):
            continue
        p, y, mask, _ = predict_dataset(UnimodalView(model, m), view)
        ids = [it["id"] for it in view.items]
        out[m] = {}
        for k, t in enumerate(view.tasks):
            o = [orc[(i, t, m)] for i in ids]
            if len(set(o)) > 1:  # the modality carries evidence of this task
                sel = mask[:, k]
                out[m][t] = [round(float(auroc(y[sel, k], p[sel, k])), 4),
                             round(float(auroc(y[sel, k], [o[j] for j in range(len(o)) if sel[j]])), 4), int(sel.sum())]
    return out


def _fmt_stage1(s1: dict) -> str:
    return "; ".join(f"{m}/{t} {v[0]:.3f} (oracle {v[1]:.3f})" for m, d in s1.items() for t, v in d.items())


def _stage1_table(runs: list[dict]) -> None:
    import numpy as np

    rows = {(m, t) for r in runs for m, d in r.get("stage1", {}).items() for t in d}
    if not rows:
        return
    print(f"\nstage one, test AUROC of each unimodal model vs the oracle given that modality alone ({len(runs)} seeds)")
    for m, t in sorted(rows):
        vals = [r["stage1"][m][t] for r in runs if t in r.get("stage1", {}).get(m, {})]
        gap = [v[0] - v[1] for v in vals]
        print(f"  {m:>7}/{t:<8} model {np.mean([v[0] for v in vals]):.3f}  oracle {vals[0][1]:.3f}  "
              f"gap {np.mean(gap):+.3f} (per seed {', '.join(f'{g:+.3f}' for g in gap)})  n={vals[0][2]}")


def main(argv=None) -> int:
    args = parse(argv)
    import numpy as np
    import torch

    import medmm.train.datasets as tds
    import medmm.train.trainer as trainer
    from medmm.commands.demo import demo_config, make_cohort
    from medmm.evaluate.metrics import auroc
    from medmm.experiment import run_experiment
    from medmm.synth import TASKS, compare_to_oracle

    torch.set_num_threads(2)
    work = Path(args.workdir or Path(args.json).with_suffix(""))
    t0 = time.perf_counter()
    manifest, _ = make_cohort(work / "cohort", args, progress=False, reuse=True)
    synth_s = time.perf_counter() - t0
    seen: dict = {}
    orig_prefill, orig_val = tds.prefill_datasets, trainer._val_metrics

    def prefill(datasets, **kw):
        seen["val"], seen["test"] = datasets[1], datasets[2]
        return orig_prefill(datasets, **kw)

    def val_metrics(model, ds, tasks, device):
        out = orig_val(model, ds, tasks, device)
        if ds is seen.get("val"):
            p, y, m, _ = trainer.predict_dataset(model, seen["test"], device=device)
            for k, t in enumerate(tasks):
                out[f"test_auroc_{t}"] = auroc(y[m[:, k], k], p[m[:, k], k])
        return out

    import medmm.train.transfer as transfer

    orig_pretrain = transfer.pretrain_encoders
    stage1: dict = {}

    def pretrain(model, train_ds, val_ds, config, **kw):
        res = orig_pretrain(model, train_ds, val_ds, config, **kw)
        stage1.clear()
        stage1.update(unimodal_test(model, seen["test"], manifest.parent / "oracle.csv"))
        if args.stage1_only:
            raise _Stage1Done(res)
        return res

    tds.prefill_datasets, trainer._val_metrics = prefill, val_metrics
    transfer.pretrain_encoders = pretrain
    runs = []
    for k in range(args.seeds):
        a = argparse.Namespace(**{**vars(args), "seed": args.seed + k})
        shutil.rmtree(work / f"seed_{k}" / "ckpt", ignore_errors=True)  # a finished checkpoint would be resumed
        cfg = demo_config(manifest, work / f"seed_{k}", a, [f"train.patience={args.epochs}", f"train.checkpoint_dir={work / f'seed_{k}' / 'ckpt'}",
                                    "tracking.log_model=false", "tracking.plots=false", f"tracking.tracking_uri=sqlite:///{work.resolve()}/mlflow.db",
                                    f"preprocess.cache_dir={work / 'cache'}", *args.set])
        t = time.perf_counter()
        try:
            res = run_experiment(config=cfg, progress=False)
        except _Stage1Done:
            print(f"seed {a.seed} stage one ({time.perf_counter() - t:.0f} s): " + _fmt_stage1(stage1), flush=True)
            runs.append({"seed": a.seed, "stage1": dict(stage1)})
            Path(args.json).write_text(json.dumps({"settings": vars(args), "runs": runs}, indent=1) + "\n")
            continue
        secs = time.perf_counter() - t
        cmp = compare_to_oracle(res.predictions, manifest.parent / "oracle.csv", TASKS)
        print(f"  stage one: {_fmt_stage1(stage1)}", flush=True)
        runs.append({"seed": a.seed, "seconds": round(secs, 1), "timings": res.timings, "stage1": dict(stage1),
                     "oracle": {t: cmp[t]["oracle_auroc"] for t in TASKS},
                     "history": [{k2: v for k2, v in h.items() if k2 == "epoch" or k2.startswith(("val_", "test_"))}
                                 for h in res.history]})
        print(f"seed {a.seed}: {secs:.0f} s; " + ", ".join(f"{k2} {v:.0f}" for k2, v in res.timings.items()
                                                         if k2.endswith("_s")), flush=True)
        Path(args.json).write_text(json.dumps({"settings": vars(args), "runs": runs}, indent=1) + "\n")  # so far
    if args.stage1_only:
        _stage1_table(runs)
        return 0
    _stage1_table(runs)
    min_epochs = demo_config(manifest, work, args).train.min_epochs
    print(f"\nsynth {synth_s:.0f} s; {args.seeds} seeds; test AUROC - oracle of the epoch each rule selects")
    print(f"{'window':>7}{'patience':>9}  " + "".join(f"{t:>18}" for t in TASKS) + "   epochs")
    table = []
    for w, pat in [*RULES, ("best test", None)]:
        gaps = {t: [] for t in TASKS}
        epochs = []
        for r in runs:
            h = r["history"]
            e = (int(np.argmax([x["test_auroc_tumor"] + x["test_auroc_disease"] for x in h])) if pat is None
                 else replay(h, w, pat, min_epochs))
            epochs.append(e)
            for t in TASKS:
                gaps[t].append(h[e][f"test_auroc_{t}"] - r["oracle"][t])
        row = {"window": w, "patience": pat, "epochs": epochs,
               **{t: [round(float(np.mean(g)), 4), [round(x, 4) for x in g]] for t, g in gaps.items()}}
        table.append(row)
        print(f"{w!s:>7}{pat!s:>9}  " + "".join(f"{row[t][0]:>+10.3f} ({np.std(gaps[t]):.3f})" for t in TASKS)
              + f"   {epochs}")
    Path(args.json).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items()}, "runs": runs,
                                           "rules": table}, indent=1) + "\n")
    print(f"wrote {args.json} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
