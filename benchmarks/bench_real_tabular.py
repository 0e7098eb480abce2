"""Honest science on real tables (issue 14): does the data audit catch what a first-time user hits?

Audit section (``audit_section``): scikit-learn's ``load_breast_cancer`` and ``load_diabetes``
(binarised at the median of its target, columns named after what they measure), written as
medmm cohorts (a wide EHR CSV + a manifest with train/val/test splits), and copies of each with
problems injected the way real exports carry them:

* a follow-up-like column built from the label (events early, survivors censored late), in the
  EHR table (breast cancer) or in the manifest's metadata (diabetes);
* a neutral-named marker built from the label (single-feature AUROC ~0.85, below the table's
  best honest columns on breast cancer);
* patients duplicated under new ids, the copy in another split than the original, exactly and
  as near-copies (rounded to 3 significant digits, one value re-measured up to 5 % off);
* ``?`` (and ``-``) in a numeric column;
* zeros where zero is impossible (tumour radius; BMI and cholesterol) and a 999 sentinel.

It prints every injected problem and whether ``medmm.audit.audit_cohort`` reported it, then the
findings on the clean tables (false alarms). Target: every injected problem found, no false
alarm on a clean table.

    python benchmarks/bench_real_tabular.py [--out results.json]

Everything installs offline (scikit-learn's bundled data sets); ``main()`` runs the sections in
turn, so a model-comparison section can be added beside ``audit_section()``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DIABETES_NAMES = {"s1": "total_cholesterol", "s2": "ldl", "s3": "hdl", "s4": "chol_hdl_ratio",
                  "s5": "log_triglycerides", "s6": "glucose"}


@dataclass
class Injected:
    """A problem put into a table on purpose, and how to recognise its finding."""

    table: str
    what: str
    check: str
    column: str | None = None
    min_count: int = 1
    match: str | None = None  # a phrase the finding's message must hold


def breast_cancer():
    """The breast-cancer table: features and label 1 = malignant."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    X = d.frame.drop(columns="target")
    return X, 1 - d.frame["target"].to_numpy()


def diabetes():
    """The diabetes table, target binarised at its median (1 = progression above it)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(as_frame=True, scaled=False)
    X = d.frame.drop(columns="target").rename(columns=DIABETES_NAMES)
    y = (d.frame["target"].to_numpy() > np.median(d.frame["target"])).astype(int)
    return X, y


def write_cohort(folder: Path, X, y, *, seed: int = 0, meta: dict[str, Any] | None = None,
                 splits: list[str] | None = None) -> Path:
    """A medmm cohort: ``ehr.csv`` (one row per patient) and ``manifest.csv`` with splits."""
    import pandas as pd

    from medmm.cohort import assign_splits

    folder.mkdir(parents=True, exist_ok=True)
    X = X.copy()
    ids = list(X["patient_id"]) if "patient_id" in X else [f"P{i:04d}" for i in range(len(X))]
    X["patient_id"] = ids
    X = X[["patient_id", *[c for c in X.columns if c != "patient_id"]]]
    X.to_csv(folder / "ehr.csv", index=False)
    if splits is None:
        which = assign_splits(ids, list(map(int, y)), seed=seed)
        splits = [which[i] for i in ids]
    man = pd.DataFrame({"patient_id": ids, "split": splits, "ehr_path": "ehr.csv", "label_outcome": y,
                        **(meta or {})})
    man.to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def follow_up(y, rng) -> np.ndarray:
    """Days of follow-up as a registry records them: events early, the rest censored at the end
    of a staggered-entry study (it is known only after the outcome)."""
    event = np.exp(rng.normal(6.0, 0.8, len(y)))
    censored = 1825 - rng.uniform(0, 1100, len(y))
    return np.round(np.where(np.asarray(y) == 1, np.minimum(event, 1825), censored))


def label_marker(y, auroc: float, rng) -> np.ndarray:
    """A lab-like value that is the label plus noise, with single-feature AUROC about ``auroc``
    (a marker measured because of the outcome, under a name that says nothing)."""
    from scipy.stats import norm

    shift = np.sqrt(2) * norm.ppf(auroc)
    return np.round(40 + 6 * (np.asarray(y) * shift + rng.normal(size=len(y))), 1)


def near_copies(X, rows, rng, *, changed: int = 1):
    """Copies of ``rows`` as a second export writes them: numbers rounded to 3 significant digits
    and ``changed`` randomly chosen numeric values re-measured (up to +-5 % off)."""
    copies = X.iloc[rows].copy()
    numeric = [c for c in copies.columns if c != "patient_id" and np.issubdtype(X[c].dtype, np.number)]
    for c in numeric:
        copies[c] = [float(f"{v:.3g}") for v in copies[c]]
    for r in range(len(copies)):
        for c in rng.choice(numeric, size=changed, replace=False):
            copies.iloc[r, copies.columns.get_loc(c)] = float(f"{float(copies.iloc[r][c]) * (1 + rng.uniform(-.05, .05)):.3g}")
    return copies


def inject(X, y, *, name: str, seed: int = 0, leak_in: str = "ehr", text_col: str, zero_cols: list[str],
           sentinel_col: str | None = None, n_dup: int = 25, n_near: int = 10, marker: str = "assay_b7"):
    """The table with every problem injected; returns (X, y, splits, meta, [Injected])."""
    import pandas as pd

    from medmm.cohort import assign_splits

    rng = np.random.default_rng(seed)
    X = X.copy().reset_index(drop=True)
    y = np.asarray(y).copy()
    ids = [f"P{i:04d}" for i in range(len(X))]
    X.insert(0, "patient_id", ids)
    which = assign_splits(ids, list(map(int, y)), seed=seed)
    splits = [which[i] for i in ids]
    problems = []
    meta: dict[str, Any] = {}
    fu = follow_up(y, rng)
    if leak_in == "ehr":
        X["follow_up_days"] = fu
        problems.append(Injected(name, "follow-up time built from the label (EHR column)", "leakage",
                                 "follow_up_days"))
    else:
        meta["months_followed"] = np.round(fu / 30.4, 1)
        problems.append(Injected(name, "follow-up time built from the label (manifest column)", "leakage",
                                 "months_followed"))
    # a neutral-named marker built from the label: moderate AUROC, below the table's best columns
    X[marker] = label_marker(y, 0.85, rng)
    problems.append(Injected(name, f"neutral-named marker built from the label ({marker!r}, AUROC ~0.85)",
                             "leakage", marker))
    # duplicates: training patients copied under new ids into the test split, exactly and as near-copies
    train_pos = [i for i, s in enumerate(splits) if s == "train"]
    dup = rng.choice(train_pos, size=n_dup + n_near, replace=False)
    near, dup = dup[n_dup:], dup[:n_dup]
    copies = X.iloc[dup].copy()
    copies["patient_id"] = [f"D{i:04d}" for i in range(n_dup)]
    ncopies = near_copies(X, near, rng)
    ncopies["patient_id"] = [f"N{i:04d}" for i in range(n_near)]
    X = pd.concat([X, copies, ncopies], ignore_index=True)
    y = np.concatenate([y, y[dup], y[near]])
    splits = splits + ["test"] * (n_dup + n_near)
    for k, v in meta.items():
        meta[k] = np.concatenate([v, np.asarray(v)[dup], np.asarray(v)[near]])
    problems.append(Injected(name, f"{n_dup} patients duplicated into the test split", "duplicate", None, n_dup,
                             match="the same table row"))
    problems.append(Injected(name, f"{n_near} near-copies in the test split (rounded, one value re-measured)",
                             "duplicate", None, n_near, match="near-duplicate table rows"))
    # '?' and '-' in a numeric column (as a UCI export writes them)
    X[text_col] = X[text_col].astype(object)
    pos = rng.choice(len(X), size=int(0.12 * len(X)), replace=False)
    X.loc[pos, text_col] = np.where(rng.random(len(pos)) < 0.8, "?", "-")
    problems.append(Injected(name, f"'?' and '-' in numeric column {text_col!r} ({len(pos)} rows)", "type_drift",
                             text_col, len(pos)))
    for col in zero_cols:
        free = [i for i in range(len(X)) if X.at[i, text_col] not in ("?", "-") or col != text_col]
        zpos = rng.choice(free, size=15, replace=False)
        X.loc[zpos, col] = 0
        problems.append(Injected(name, f"zeros in {col!r} (15 rows), where zero is impossible", "disguised_missing",
                                 col, 15))
    if sentinel_col is not None:
        spos = rng.choice(len(X), size=8, replace=False)
        X[sentinel_col] = X[sentinel_col].astype(object)
        X.loc[spos, sentinel_col] = 999
        problems.append(Injected(name, f"999 for 'unknown' in {sentinel_col!r} (8 rows)", "disguised_missing",
                                 sentinel_col, 8))
    return X, y, splits, meta, problems


def _found(problem: Injected, audit) -> Any:
    for f in audit.findings:
        if f.check != problem.check or f.severity == "info":
            continue
        if problem.column is not None and f.column != problem.column:
            continue
        if problem.match is not None and problem.match not in f.message:
            continue
        if f.count >= problem.min_count:
            return f
    return None


def audit_section(work: Path) -> dict[str, Any]:
    """Audit the clean and the injected tables; print what was found and the false alarms."""
    from medmm.audit import audit_cohort
    from medmm.cohort import load_cohort

    print("== data audit: injected problems (issue 14) ==")
    rows: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    tables = {"breast_cancer": (breast_cancer, {"leak_in": "ehr", "text_col": "mean texture",
                                                "zero_cols": ["mean radius"]}),
              "diabetes": (diabetes, {"leak_in": "manifest", "text_col": "bp", "zero_cols": ["bmi", "total_cholesterol"],
                                      "sentinel_col": "glucose", "n_dup": 15, "marker": "protein_x"})}
    for name, (load, kw) in tables.items():
        X, y = load()
        clean = load_cohort(write_cohort(work / f"{name}_clean", X, y), progress=False)
        t0 = time.perf_counter()
        a = audit_cohort(clean)
        timings[f"{name}_clean_s"] = time.perf_counter() - t0
        for f in a.warnings:
            alarms.append({"table": name, "finding": str(f)})
        Xi, yi, splits, meta, problems = inject(X, y, name=f"{name}+injected", **kw)
        cohort = load_cohort(write_cohort(work / f"{name}_injected", Xi, yi, splits=splits, meta=meta),
                             progress=False)
        t0 = time.perf_counter()
        ai = audit_cohort(cohort)
        timings[f"{name}_injected_s"] = time.perf_counter() - t0
        for p in problems:
            f = _found(p, ai)
            rows.append({"table": p.table, "injected": p.what, "check": p.check, "found": f is not None,
                         "finding": str(f) if f is not None else ""})
        explained = {id(_found(p, ai)) for p in problems}
        for f in ai.warnings:
            if id(f) not in explained:
                rows.append({"table": f"{name}+injected", "injected": "(not injected)", "check": f.check,
                             "found": None, "finding": str(f)})
    w = max(len(r["injected"]) for r in rows)
    print(f"{'table':<24} {'injected problem':<{w}} {'check':<18} found")
    for r in rows:
        mark = {True: "yes", False: "NO", None: "extra"}[r["found"]]
        print(f"{r['table']:<24} {r['injected']:<{w}} {r['check']:<18} {mark}")
        if r["finding"]:
            print(f"{'':<24}   -> {r['finding'][:160]}")
    injected = [r for r in rows if r["found"] is not None]
    n_found = sum(r["found"] for r in injected)
    print(f"\nfound {n_found}/{len(injected)} injected problems (target: all)")
    print(f"false alarms on the clean tables: {len(alarms)} (target: 0)")
    for a_ in alarms:
        print(f"  {a_['table']}: {a_['finding'][:200]}")
    print("audit seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    return {"injected": rows, "false_alarms": alarms, "found": n_found, "total": len(injected), "timings": timings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--work", default=None, help="folder for the cohorts (default: a temporary one)")
    ap.add_argument("--models", action="store_true",
                    help="also run the model section (medmm vs LR/HGB/TF-IDF+LR, nested 5 folds; slow)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        results = {"audit": audit_section(work)}
        if args.models:
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_real_tabular_models import model_section

            results["models"] = model_section()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    audit = results["audit"]
    return 0 if audit["found"] == audit["total"] and not audit["false_alarms"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
