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

    tds.prefill_datasets, trainer._val_metrics = prefill, val_metrics
    runs = []
    for k in range(args.seeds):
        a = argparse.Namespace(**{**vars(args), "seed": args.seed + k})
        shutil.rmtree(work / f"seed_{k}" / "ckpt", ignore_errors=True)  # a finished checkpoint would be resumed
        cfg = demo_config(manifest, work / f"seed_{k}", a, [f"train.patience={args.epochs}", f"train.checkpoint_dir={work / f'seed_{k}' / 'ckpt'}",
                                    "tracking.log_model=false", "tracking.plots=false", f"tracking.tracking_uri=sqlite:///{work.resolve()}/mlflow.db",
                                    f"preprocess.cache_dir={work / 'cache'}", *args.set])
        t = time.perf_counter()
        res = run_experiment(config=cfg, progress=False)
        secs = time.perf_counter() - t
        cmp = compare_to_oracle(res.predictions, manifest.parent / "oracle.csv", TASKS)
        runs.append({"seed": a.seed, "seconds": round(secs, 1), "timings": res.timings,
                     "oracle": {t: cmp[t]["oracle_auroc"] for t in TASKS},
                     "history": [{k2: v for k2, v in h.items() if k2 == "epoch" or k2.startswith(("val_", "test_"))}
                                 for h in res.history]})
        print(f"seed {a.seed}: {secs:.0f} s; " + ", ".join(f"{k2} {v:.0f}" for k2, v in res.timings.items()
                                                         if k2.endswith("_s")), flush=True)
        Path(args.json).write_text(json.dumps({"settings": vars(args), "runs": runs}, indent=1) + "\n")  # so far
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
