"""How a trained demo model combines its modalities: on the test split, each unimodal path of
the fused model beside the single-modality oracle, then the fused score, the plain sum of the
unimodal logits and a logistic regression on them (fitted in-sample: an upper bound for any
per-modality weighting) beside the oracle.

With ``--paths`` also, per path, the oracle's sum with that path swapped in (an in-sample logistic
regression on the path and the other modalities' oracle log-likelihood ratios: what the path's
imperfection costs the fused score) and its correlation with the oracle; and the effect on the
test AUROC of the two post-training steps fitted on the validation split:
``select_unimodal_paths`` (``model.residual_select``) and ``fit_late_fusion`` (``model.late_fusion``,
forced on whatever its one-standard-error rule says, with that rule's verdict).

    python benchmarks/bench_demo_fusion.py demo_out [--paths] [--model DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import argparse

    import pandas as pd

    from medmm.cohort import load_cohort
    from medmm.models import MultimodalModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the demo's output folder")
    ap.add_argument("--model", nargs="*", help="model folders (default OUT/model)")
    ap.add_argument("--paths", action="store_true", help="per-path swap-in losses and the validation-fitted steps")
    a = ap.parse_args(argv)
    out = Path(a.out)
    cohort = load_cohort(out / "cohort" / "manifest.csv", progress=False)
    orc = pd.read_csv(out / "cohort" / "oracle.csv", dtype={"patient_id": str})
    orc = orc.set_index(["patient_id", "task", "subset"])["score"]
    for folder in a.model or [out / "model"]:
        print(f"== {folder}")
        report(MultimodalModel.load(folder), cohort, orc, a.paths)
    return 0


def report(model, cohort, orc, paths: bool) -> None:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from medmm.data import MultimodalDataset, collate, encode_records
    from medmm.evaluate.metrics import auroc
    from medmm.records import subset_name

    model.eval()
    recs = list(cohort.split("test"))
    batch = collate(encode_records(recs, model.preprocessor), model.modalities, model.preprocessor.output_shapes(), ())
    with torch.no_grad():
        logits, aux = model(batch.values, batch.present, return_aux=True)
    ids = [r.patient_id for r in recs]
    present = batch.present.numpy()
    mods = model.modalities
    for k, t in enumerate(model.tasks):
        y = np.array([r.labels.get(t, np.nan) for r in recs], float)
        ok = ~np.isnan(y)
        uni = np.stack([np.where(present[:, j], aux[m][0][:, k].numpy(), 0.0) for j, m in enumerate(mods)], 1)
        for j, m in enumerate(mods):
            o = np.array([orc[(i, t, m)] for i in ids])
            sel = present[:, j] & ok
            if len(set(o[sel])) > 1:
                print(f"{t:>8} {m:>7} path {auroc(y[sel], uni[sel, j]):.3f}  oracle {auroc(y[sel], o[sel]):.3f}"
                      f"  logit sd {uni[sel, j].std():.2f}  n={sel.sum()}")
        pats = [subset_name(tuple(m for j, m in enumerate(mods) if present[i, j])) for i in range(len(ids))]
        o = np.array([orc[(i, t, p)] for i, p in zip(ids, pats)])
        x = np.concatenate([uni, present.astype(float)], 1)
        lr = LogisticRegression(C=100, max_iter=2000).fit(x[ok], y[ok])
        print(f"{t:>8} fused {auroc(y[ok], logits[ok, k].numpy()):.3f}  sum {auroc(y[ok], uni[ok].sum(1)):.3f}  "
              f"stacked (in-sample) {auroc(y[ok], lr.decision_function(x[ok])):.3f}  oracle {auroc(y[ok], o[ok]):.3f}"
              f"  weights " + ", ".join(f"{m} {w:+.2f}" for m, w in zip(mods, lr.coef_[0])))
        if not paths:
            continue
        logit = lambda p: np.log(p / (1 - p))  # noqa: E731
        prior = logit(np.array([orc[(i, t, "none")] for i in ids]))
        llr = np.stack([np.where(present[:, j], logit(np.array([orc[(i, t, m)] for i in ids])) - prior, 0.0)
                        for j, m in enumerate(mods)], 1)
        for j, m in enumerate(mods):
            sel = present[:, j] & ok
            if np.std(llr[sel, j]) == 0:
                continue
            others = llr[:, [i for i in range(len(mods)) if i != j]].sum(1)
            xs = np.stack([uni[:, j], present[:, j].astype(float), others], 1)
            fit = LogisticRegression(C=100, max_iter=3000).fit(xs[ok], y[ok])
            print(f"{t:>8} {m:>7} swapped into the oracle's sum {auroc(y[ok], fit.decision_function(xs[ok])):.3f} "
                  f"(oracle {auroc(y[ok], llr[ok].sum(1)):.3f}), correlation with the oracle's LLR "
                  f"{np.corrcoef(uni[sel, j], llr[sel, j])[0, 1]:.3f}")
    if not paths:
        return
    val = MultimodalDataset(list(cohort.split("val")), model.preprocessor, model.label_columns_flat)
    before = model.predict_records(recs)
    gates = model.select_unimodal_paths(val) or {}
    gated = model.predict_records(recs)
    late = model.fit_late_fusion(val, margin_se=-np.inf) or {}
    stacked = model.predict_records(recs)
    for k, t in enumerate(model.tasks):
        y = np.array([r.labels.get(t, np.nan) for r in recs], float)
        ok = ~np.isnan(y)
        info = late.get(t, {})
        print(f"{t:>8} test AUROC {auroc(y[ok], before[ok, k]):.3f}; residual_select {auroc(y[ok], gated[ok, k]):.3f} "
              f"(dropped {gates.get(t, {}).get('dropped', [])}); then late fusion forced "
              f"{auroc(y[ok], stacked[ok, k]):.3f} (validation log loss model {info.get('val_loss_model')}, "
              f"stack CV {info.get('val_loss_stacked_cv')}, SE {info.get('diff_se')}: the 1-SE rule "
              f"{'keeps' if info and info['val_loss_model'] - info['val_loss_stacked_cv'] > info['diff_se'] else 'rejects'} it)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
