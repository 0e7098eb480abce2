"""The wide (linear) path on a small table: medmm's default single-modality model against
scikit-learn's LogisticRegression on identical splits.

scikit-learn's ``load_breast_cancer`` (569 patients, 30 features; installs with scikit-learn, no
download) is written as an EHR-only cohort. For each of 5 stratified folds, medmm trains on four
fifths of the training part and stops early on the rest (the default recipe), LogisticRegression
(standardised features, C=1) fits the whole training part, and both are scored on the fold's test
part. Printed: per-fold and mean paired difference in test AUROC (medmm - LR) with the wide path
on (the default) and off, and, with ``--tfidf``, a notes task (TF-IDF + LR as the reference).

    PYTHONPATH=. python benchmarks/bench_wide.py [--folds 5] [--variants wide,deep] [--moddrop 0.25]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _records(x: np.ndarray, y: np.ndarray, names: list[str]):
    from medmm.records import PatientRecord, Tabular

    return [PatientRecord(f"P{i:04d}", ehr=Tabular({n: float(v) for n, v in zip(names, row)}), labels={"y": float(t)})
            for i, (row, t) in enumerate(zip(x, y))]


def _medmm_auc(train_recs, val_recs, test_recs, *, wide: bool, moddrop: float, seed: int) -> float:
    import torch

    from medmm.data import MultimodalDataset
    from medmm.evaluate.metrics import auroc
    from medmm.models import ModelConfig, MultimodalModel, build_preprocessor
    from medmm.train.config import TrainConfig
    from medmm.train.trainer import train

    cfg = ModelConfig(tasks={"y": "binary"}, modalities=("ehr",), wide=wide, modality_dropout=moddrop)
    pre = build_preprocessor(cfg).fit(train_recs)
    torch.manual_seed(seed)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    tr = MultimodalDataset(train_recs, pre, ("y",))
    va = MultimodalDataset(val_recs, pre, ("y",))
    train(model, tr, va, TrainConfig(device="cpu", seed=seed), progress=False)
    y = np.array([r.labels["y"] for r in test_recs])
    return auroc(y, model.predict_records(test_recs)[:, 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--variants", default="wide,deep", help="wide (the default model), deep (wide=False)")
    ap.add_argument("--moddrop", type=float, default=0.25, help="modality dropout (0.25: today's default)")
    args = ap.parse_args()

    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x, y = data.data, data.target
    names = [str(n) for n in data.feature_names]
    recs = _records(x, y, names)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    diffs: dict[str, list[float]] = {v: [] for v in variants}
    lr_aucs = []
    t0 = time.perf_counter()
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0).split(x, y)
    for k, (tr_idx, te_idx) in enumerate(folds):
        lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x[tr_idx], y[tr_idx])
        lr_auc = roc_auc_score(y[te_idx], lr.predict_proba(x[te_idx])[:, 1])
        lr_aucs.append(lr_auc)
        fit_idx, val_idx = train_test_split(tr_idx, test_size=0.2, stratify=y[tr_idx], random_state=k)
        parts = ([recs[i] for i in fit_idx], [recs[i] for i in val_idx], [recs[i] for i in te_idx])
        line = [f"fold {k}: LR {lr_auc:.4f}"]
        for v in variants:
            auc = _medmm_auc(*parts, wide=v == "wide", moddrop=args.moddrop, seed=k)
            diffs[v].append(auc - lr_auc)
            line.append(f"medmm[{v}] {auc:.4f} ({auc - lr_auc:+.4f})")
        print("  ".join(line), flush=True)
    print(f"\nbreast_cancer as an EHR-only cohort, {args.folds} folds, modality_dropout {args.moddrop}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"  LogisticRegression (reference)   mean test AUROC {np.mean(lr_aucs):.4f}")
    for v in variants:
        d = np.asarray(diffs[v])
        print(f"  medmm {v:<5} - LR: mean paired difference {d.mean():+.4f} (min {d.min():+.4f}, max {d.max():+.4f})"
              f"  target >= -0.01: {'met' if d.mean() >= -0.01 else 'NOT met'}")


if __name__ == "__main__":
    main()
