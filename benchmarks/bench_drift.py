"""Drift detection power and false-alarm rate on synthetic shifts, side by side with the targets.

One synthetic cohort is drawn; each trial splits its patients at random into a reference set and a
current set. The current set is left as is (no shift: every alarm is a false alarm) or shifted:

  * scanner intensity shift: every current image +SHIFT_HU Hounsfield units (default 60);
  * vitals unit error: current SpO2 recorded as a fraction (0.97) under the unit '%';
  * 30% more missing notes: 30% of the current patients' notes are removed.

Features (and, with a model, embeddings and predictions) are computed once per patient for the
original and the shifted records, so a trial only re-runs the tests. Power = share of shifted
trials in which the shifted modality alarms; false-alarm rate = share of unshifted trials with
any alarm (Bonferroni over all tests at alpha = 0.05).

    python benchmarks/bench_drift.py [--quick] [--model MODEL_DIR --manifest MANIFEST]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mix(base, alt, use_alt: np.ndarray):
    """Per-patient features taken from ``alt`` where ``use_alt`` (same patients, same order)."""
    import pandas as pd

    ids = base.present.index
    alt_ids = set(ids[use_alt])

    def frame(a, b):
        return pd.concat([a[~a.index.isin(alt_ids)], b[b.index.isin(alt_ids)]]).reindex(
            [i for i in ids if i in set(a.index[~a.index.isin(alt_ids)]) | set(b.index[b.index.isin(alt_ids)])])

    present = base.present.copy()
    present[use_alt] = alt.present[use_alt].to_numpy()
    emb = {}
    for m in base.embeddings:
        rows_b = {pid: k for k, pid in enumerate(ids[base.present[m].to_numpy()])}
        rows_a = {pid: k for k, pid in enumerate(ids[alt.present[m].to_numpy()])}
        out = []
        for pid in ids[present[m].to_numpy()]:
            out.append(alt.embeddings[m][rows_a[pid]] if pid in alt_ids else base.embeddings[m][rows_b[pid]])
        emb[m] = np.asarray(out).reshape(-1, base.embeddings[m].shape[1])
    probs = None if base.probs is None else np.where(use_alt[:, None], alt.probs, base.probs)
    return replace(base, present=present, tabular=frame(base.tabular, alt.tabular), vitals=frame(base.vitals, alt.vitals),
                   image_stats=frame(base.image_stats, alt.image_stats),
                   notes_stats=frame(base.notes_stats, alt.notes_stats), embeddings=emb, probs=probs)


def shifted_records(records, kind: str, shift_hu: float):
    from dataclasses import replace as dc_replace

    from medmm.records import Image, Missing, Vitals

    out = []
    for r in records:
        if kind == "image" and not isinstance(r.image, Missing):
            r = dc_replace(r, image=Image(np.asarray(r.image.data, dtype=np.float32) + shift_hu, r.image.affine,
                                          dict(r.image.meta)))
        elif kind == "vitals" and not isinstance(r.vitals, Missing):
            f = r.vitals.frame.copy()
            f.loc[f["signal"] == "spo2", "value"] = f.loc[f["signal"] == "spo2", "value"] / 100.0
            r = dc_replace(r, vitals=Vitals(f))
        elif kind == "notes":
            r = r.masked("notes", reason="masked")
        out.append(r)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", help="cohort manifest (default: a synthetic cohort of --patients)")
    ap.add_argument("--model", help="model folder: adds embeddings (MMD) and prediction drift")
    ap.add_argument("--patients", type=int, default=300, help="patients of the synthetic cohort (default 300)")
    ap.add_argument("--n-current", type=int, default=150, help="patients in each current set (default 150)")
    ap.add_argument("--trials", type=int, default=100, help="trials per scenario (default 100)")
    ap.add_argument("--permutations", type=int, default=200, help="MMD permutations (default 200)")
    ap.add_argument("--shift-hu", type=float, default=60.0, help="scanner intensity shift in HU (default 60)")
    ap.add_argument("--quick", action="store_true", help="20 trials per scenario, 100 permutations")
    ap.add_argument("--seed", type=int, default=0, help="seed of the splits")
    args = ap.parse_args(argv)
    from medmm.cohort import load_cohort
    from medmm.deploy.bench import machine_load
    from medmm.deploy.drift import drift_report, extract_features

    if args.quick:
        args.trials, args.permutations = 20, 100
    print(f"machine at start: {machine_load()}")
    t0 = time.perf_counter()
    manifest = args.manifest
    if manifest is None:
        from medmm.synth import generate_cohort

        manifest = generate_cohort(Path(tempfile.mkdtemp(prefix="medmm_drift_")), n_patients=args.patients, seed=1,
                                   image_size=16, progress=False)
    records = load_cohort(manifest, progress=False).records
    model = None
    if args.model:
        from medmm.models.multimodal import MultimodalModel

        model = MultimodalModel.load(args.model)
    base = extract_features(records, model)
    alts = {k: extract_features(shifted_records(records, k, args.shift_hu), model) for k in ("image", "vitals", "notes")}
    print(f"features of {len(records)} patients x 4 versions in {time.perf_counter() - t0:.0f} s")
    rng = np.random.default_rng(args.seed)
    n = len(records)
    n_cur = min(args.n_current, n // 2)
    scenarios = {"none": None, "scanner intensity +%g HU" % args.shift_hu: "image",
                 "vitals unit error (SpO2 as a fraction)": "vitals", "30% more missing notes": "notes"}
    results = {}
    for name, kind in scenarios.items():
        hits = 0
        for _ in range(args.trials):
            perm = rng.permutation(n)
            ref_idx, cur_idx = perm[:n - n_cur], perm[n - n_cur:]
            cur = base
            if kind is not None:
                use = np.zeros(n, dtype=bool)
                if kind == "notes":  # 30% of the current patients who have notes lose them
                    with_notes = cur_idx[base.present["notes"].to_numpy()[cur_idx]]
                    use[rng.choice(with_notes, size=int(round(0.3 * len(with_notes))), replace=False)] = True
                else:
                    use[cur_idx] = True
                cur = mix(base, alts[kind], use)
            rep = drift_report(base.subset(np.sort(ref_idx)), cur.subset(np.sort(cur_idx)),
                               n_permutations=args.permutations, seed=int(rng.integers(1 << 31)))
            if kind is None:
                hits += rep.drifted
            else:
                target_mod = {"image": "image", "vitals": "vitals", "notes": "missingness"}[kind]
                hits += rep.modalities.get(target_mod, False)
        results[name] = hits / args.trials
    print(f"machine at end:   {machine_load()}")
    print(f"\n{len(records)} patients, reference {n - n_cur} / current {n_cur} per trial, {args.trials} trials, "
          f"model: {args.model or 'none (no embeddings/predictions)'}\n")
    print(f"{'scenario':42s} {'measured':>9s}  {'target':>12s}  verdict")
    for name, rate in results.items():
        if name == "none":
            print(f"{'no shift: false-alarm rate':42s} {rate:9.3f}  {'<= 0.05':>12s}  {'meets' if rate <= 0.05 else 'misses'}")
        else:
            print(f"{name + ': power':42s} {rate:9.3f}  {'>= 0.9':>12s}  {'meets' if rate >= 0.9 else 'misses'}")
    print(f"\n({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
