"""The model half of ``bench_real_tabular.py``: medmm's default single-modality model against
scikit-learn on identical nested 5-fold splits.

For each table (load_breast_cancer, load_diabetes binarised at its median) and a notes task
(the synthetic corpus of :mod:`medmm.synth.real_notes`: all-caps notes against transcription and
Markdown ones; TF-IDF lowercases, so only layout and wording tell them apart),
every outer fold trains medmm's default model (early stopping on an inner validation part of the
fold's training part) and fits LogisticRegression and HistGradientBoosting (TF-IDF + LR on the
notes) on the whole training part, through :mod:`medmm.evaluate.baselines`. Printed: mean test
AUROC of each, and the paired mean difference medmm - the better reference (target: > -0.01).

    PYTHONPATH=. python benchmarks/bench_real_tabular_models.py [--folds 5] [--epochs 60]

``bench_real_tabular.main()`` can call :func:`model_section` beside its ``audit_section``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np


def _tables() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer, load_diabetes

    from medmm.records import PatientRecord, Tabular

    out = {}
    bc = load_breast_cancer(as_frame=True)
    y = 1.0 - bc.target.to_numpy(float)  # malignant = 1
    out["breast_cancer"] = [PatientRecord(patient_id=f"bc{i}", ehr=Tabular(bc.data.iloc[i].to_dict()),
                                          labels={"y": y[i]}) for i in range(len(y))]
    db = load_diabetes(as_frame=True, scaled=False)
    y = (db.target.to_numpy() > np.median(db.target)).astype(float)
    out["diabetes"] = [PatientRecord(patient_id=f"db{i}", ehr=Tabular(db.data.iloc[i].to_dict()),
                                     labels={"y": y[i]}) for i in range(len(y))]
    return out


def _notes(n: int = 200, seed: int = 0) -> list[Any]:
    from medmm.records import Note, Notes, PatientRecord
    from medmm.synth.real_notes import note_corpus

    corpus = note_corpus(n, seed=seed)
    rows = [(text, kind) for kind, notes in sorted(corpus.items()) for text, _ in notes]
    np.random.default_rng(seed).shuffle(rows)
    target = sorted({k for _, k in rows})[0]
    return [PatientRecord(patient_id=f"n{i}", notes=Notes([Note(text)]), labels={"y": float(kind == target)})
            for i, (text, kind) in enumerate(rows)]


def _medmm_fold(records, fold, modality: str, *, epochs: int, seed: int):
    import torch

    from medmm.data import MultimodalDataset
    from medmm.experiment import predictions_frame
    from medmm.models.multimodal import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.trainer import TrainConfig, train

    pick = lambda idx: [records[i] for i in idx]  # noqa: E731
    cfg = ModelConfig(tasks={"y": "binary"}, modalities=(modality,))  # the defaults a first-time user gets
    pre = build_preprocessor(cfg).fit(pick(fold.train))
    torch.manual_seed(seed)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    ds = {k: MultimodalDataset(pick(v), pre, ("y",)) for k, v in (("train", fold.train), ("val", fold.val),
                                                                 ("test", fold.test))}
    train(model, ds["train"], ds["val"], TrainConfig(epochs=epochs, device="cpu", seed=seed), progress=False)
    return model, predictions_frame(model, ds["test"], "test")


def compare_on(name: str, records, modality: str, *, folds: int = 5, epochs: int = 60, seed: int = 0) -> dict:
    """Nested ``folds``-fold AUROC of medmm's default model and the baselines on the same folds."""
    from sklearn.metrics import roc_auc_score

    from medmm.evaluate.baselines import run_baselines
    from medmm.train.splits import nested_cv_folds

    per: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for fold in nested_cv_folds(records, folds, stratify="y", seed=seed):
        model, preds = _medmm_fold(records, fold, modality, epochs=epochs, seed=seed + fold.index)
        dev = [records[i] for i in fold.development]
        test = [records[i] for i in fold.test]
        bpreds, _, _ = run_baselines(dev, test, model.preprocessor, ["y"], preds, seed=seed, compare=False)
        y = preds["label_y"].to_numpy(float)
        per.setdefault("medmm", []).append(roc_auc_score(y, preds["prob_y"]))
        for b, df in bpreds.items():
            per.setdefault(b, []).append(roc_auc_score(df["label_y"], df["prob_y"]))
        print(f"  {name} fold {fold.index}: " + ", ".join(f"{b} {v[-1]:.3f}" for b, v in per.items()),
              file=sys.stderr, flush=True)
    refs = [b for b in per if b != "medmm" and (modality != "notes" or b == "tfidf_lr")]
    best = max(refs, key=lambda b: np.mean(per[b]))
    diff = np.asarray(per["medmm"]) - np.asarray(per[best])
    return {"table": name, "n": len(records), "medmm": float(np.mean(per["medmm"])),
            **{b: float(np.mean(v)) for b, v in per.items() if b != "medmm"}, "reference": best,
            "paired_diff": float(diff.mean()), "paired_diff_sd": float(diff.std(ddof=1)),
            "seconds": round(time.perf_counter() - t0, 1)}


def model_section(*, folds: int = 5, epochs: int = 60, seed: int = 0) -> list[dict]:
    """Print medmm's mean test AUROC beside the better reference's on each data set."""
    rows = [compare_on(n, r, "ehr", folds=folds, epochs=epochs, seed=seed) for n, r in _tables().items()]
    rows.append(compare_on("notes: all-caps format vs rest", _notes(seed=seed), "notes", folds=folds, epochs=epochs,
                           seed=seed))
    print(f"\n== model section: nested {folds}-fold test AUROC, medmm default single-modality model vs scikit-learn")
    print(f"{'data set':<32}{'n':>5}{'medmm':>8}{'LR':>8}{'HGB':>8}{'TFIDF+LR':>10}  {'medmm - best ref (sd)':<24}target")
    for r in rows:
        tf = f"{r['tfidf_lr']:.3f}" if "tfidf_lr" in r else "-"
        ok = "met" if r["paired_diff"] >= -0.01 else "NOT met"
        print(f"{r['table']:<32}{r['n']:>5}{r['medmm']:>8.3f}{r.get('logistic_regression', np.nan):>8.3f}"
              f"{r.get('hist_gradient_boosting', np.nan):>8.3f}{tf:>10}  "
              f"{r['paired_diff']:+.3f} ({r['paired_diff_sd']:.3f}) vs {r['reference']:<10} >= -0.01 {ok}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    rows = model_section(folds=a.folds, epochs=a.epochs, seed=a.seed)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
