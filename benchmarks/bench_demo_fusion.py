"""How a trained demo model combines its modalities: on the test split, each unimodal path of
the fused model beside the single-modality oracle, then the fused score, the plain sum of the
unimodal logits and a logistic regression on them (fitted in-sample: an upper bound for any
per-modality weighting) beside the oracle.

    python benchmarks/bench_demo_fusion.py demo_out
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.linear_model import LogisticRegression

    from medmm.cohort import load_cohort
    from medmm.data import collate, encode_records
    from medmm.evaluate.metrics import auroc
    from medmm.models import MultimodalModel
    from medmm.records import subset_name

    out = Path((argv or sys.argv[1:])[0])
    model = MultimodalModel.load(out / "model")
    model.eval()
    recs = list(load_cohort(out / "cohort" / "manifest.csv", progress=False).split("test"))
    orc = pd.read_csv(out / "cohort" / "oracle.csv", dtype={"patient_id": str})
    orc = orc.set_index(["patient_id", "task", "subset"])["score"]
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
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
