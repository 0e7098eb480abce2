"""Data audits run before training: the mistakes that make a model look better than it is.

:func:`audit_cohort` reads a cohort's records (a :class:`~medmm.cohort.Cohort` or a list of
:class:`~medmm.records.PatientRecord`) and knows nothing of models. Checks:

``leakage``
    Single-feature AUROC of every table (EHR) and manifest metadata column on the training
    split, the column's missingness included. A column is a suspect when it nearly
    determines the label (AUROC >= ``near_perfect``), when it predicts the label far better
    than any other column (AUROC >= ``standout_auroc`` and ``standout_margin`` above the
    runner-up), or when it is named like a quantity known only after the index time
    (follow-up, survival, discharge, death, ...) and its AUROC reaches ``leak_auroc``. A
    fixed threshold alone would flag honest strong features (a tumour's perimeter reaches
    0.975 on the breast-cancer table), hence the runner-up and name rules. A numeric column
    whatever its name is also a suspect when it separates the classes (AUROC >= ``leak_auroc``)
    yet is unrelated to every other numeric column within each class (adjusted within-class
    R^2 <= ``label_copy_r2``): it behaves like the label plus noise, as a value recorded
    because of the outcome does, while a real measurement shares variation with the others
    (the clean breast-cancer and diabetes tables: every column >= 0.14).
``post_index``
    Date columns, vital signs and notes dated after the patient's ``index_time``, and
    time-stamped modalities of patients without an index time (which no reader could window).
``duplicate``
    The same EHR row or the same note (normalised text hash) in two splits, near-duplicate
    notes across splits (Jaccard similarity of their word 3-shingles >= ``near_duplicate``,
    0.8 by default: two templated notes that differ in a value or two, a copy-forward), and
    near-duplicate table rows across splits (at least ``near_duplicate`` of the columns both
    rows have agree within ``row_tolerance`` of the column's interquartile range, among them
    at least ``min_features`` columns with many distinct values: a patient exported twice,
    rounded differently or with a value re-measured).
``type_drift``
    Numeric columns holding text: placeholder tokens (``?``, ``-``, ``missing``) that the EHR
    reader read as missing, and any other text that would turn the column into categories.
``disguised_missing``
    Zeros where zero is impossible (BMI, cholesterol, blood pressure, weight, ...; or an
    isolated zero far below every other value) and sentinel codes (999, -1, 9999, ...).
``prevalence``
    Label prevalence per split and per site; splits that differ more than chance allows.

Each :class:`Finding` names the column, the count, examples and what to do. ``strict=True``
(``medmm validate --audit --strict-audit``) makes every warning an error.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .io.common import naive_utc, to_timestamp
from .io.ehr import ALWAYS_MISSING_TOKENS, PLACEHOLDER_TOKENS, is_placeholder

__all__ = [
    "ALWAYS_MISSING_TOKENS",
    "CHECKS",
    "PLACEHOLDER_TOKENS",
    "AuditReport",
    "Finding",
    "audit_cohort",
    "audit_splits",
    "is_placeholder",
]

CHECKS = ("leakage", "post_index", "duplicate", "type_drift", "disguised_missing", "prevalence")

_POST_INDEX_NAME = re.compile(
    r"follow|\bf ?u\b|\btime\b|time to|\bdays? to|survival|\bsurv|death|\bdied|deceased|mortality|discharg|"
    r"\blos\b|length of stay|outcome|\bstatus\b|\bevent\b|censor|readmi|post ?op|after|vital status|"
    r"\bdeath|\bexitus|\bend date|\bdod\b")
_IMPOSSIBLE_ZERO_NAME = re.compile(
    r"\bbmi\b|body mass|\bweight\b|\bwt\b|\bheight\b|\bht\b|chol|\bldl\b|\bhdl\b|\bvldl\b|triglycer|\btg\b|"
    r"glucose|\bglu\b|blood pressure|\bbp\b|\bsbp\b|\bdbp\b|\bmap\b|systolic|diastolic|trestbps|heart rate|"
    r"\bhr\b|pulse|thalach|respiratory rate|\brr\b|resp rate|spo2|o2 sat|temperature|\btemp\b|creatinin|"
    r"sodium|potassium|chloride|h(a)?emoglobin|\bhg?b\b|hematocrit|\bhct\b|albumin|platelet|insulin|"
    r"skin ?thick|ejection|\blvef\b|\bserum\b|urea|\bbun\b|calcium|\bwbc\b|\brbc\b")
_SENTINELS = (-1.0, -9.0, -99.0, -999.0, -9999.0, 99.0, 999.0, 9999.0, 99999.0, 999999.0)
_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?\s*$")
#: manifest metadata that is bookkeeping, not a feature
_META_SKIP = {"patient_id", "split", "index_time", "_row"}


@dataclass
class Finding:
    """One audit finding: which check, which column, how many, examples and what to do."""

    check: str
    message: str
    fix: str
    column: str | None = None
    source: str | None = None  # "ehr", "manifest", "notes", "vitals", "labels"
    count: int = 0
    examples: list[str] = field(default_factory=list)
    severity: str = "warning"  # "warning" (an error with strict) or "info" (never an error)
    value: float | None = None  # the statistic behind it (an AUROC, a p-value)

    def __str__(self) -> str:
        where = f"{self.source} column {self.column!r}" if self.column else (self.source or "cohort")
        ex = f"; e.g. {', '.join(self.examples[:5])}" if self.examples else ""
        return f"[{self.check}] {where}: {self.message} (n={self.count}{ex}). Fix: {self.fix}"


class AuditReport:
    """The findings of :func:`audit_cohort`, plus the tables behind them."""

    def __init__(self, findings: list[Finding] | None = None, *, strict: bool = False) -> None:
        self.findings: list[Finding] = list(findings or [])
        self.strict = strict
        self.auroc = None  # DataFrame: task, source, column, n, auroc (of the training split)
        self.prevalence = None  # DataFrame: task, by, group, n, positives, prevalence

    def __len__(self) -> int:
        return len(self.findings)

    def __iter__(self):
        return iter(self.findings)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "info"]

    @property
    def ok(self) -> bool:
        """No finding that ``strict`` would make an error."""
        return not self.warnings

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def to_frame(self):
        import pandas as pd

        cols = ["check", "severity", "source", "column", "count", "value", "message", "examples", "fix"]
        rows = [{**asdict(f), "examples": "; ".join(f.examples)} for f in self.findings]
        return pd.DataFrame(rows, columns=cols)

    def to_dict(self) -> dict[str, Any]:
        return {"strict": self.strict, "findings": [asdict(f) for f in self.findings],
                "auroc": [] if self.auroc is None else self.auroc.to_dict(orient="records"),
                "prevalence": [] if self.prevalence is None else self.prevalence.to_dict(orient="records")}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    def metrics(self) -> dict[str, float]:
        """Counts per check and the largest single-feature AUROC per task (for MLflow)."""
        out: dict[str, float] = {"audit_findings": float(len(self.warnings))}
        for c in CHECKS:
            out[f"audit_{c}"] = float(sum(1 for f in self.warnings if f.check == c))
        if self.auroc is not None and len(self.auroc):
            for t, g in self.auroc.groupby("task"):
                out[f"audit_max_single_auroc_{t}"] = float(g["auroc"].max())
        return out

    def add_to(self, report: Any) -> None:
        """Append the findings to a :class:`~medmm.cohort.ProblemReport` (errors when strict)."""
        for f in self.findings:
            sev = "info" if f.severity == "info" else ("error" if self.strict else "warning")
            report.add(sev, f"audit {f.check}: {f.message} (n={f.count}"
                       + (f"; e.g. {', '.join(f.examples[:5])}" if f.examples else "") + f"). Fix: {f.fix}",
                       column=f.column, modality=f.source if f.source in ("ehr", "notes", "vitals", "image") else None)

    def __str__(self) -> str:
        if not self.findings:
            return "audit: no finding"
        head = f"audit: {len(self.warnings)} finding(s)" + (" (errors: --strict-audit)" if self.strict else "")
        info = len(self.findings) - len(self.warnings)
        head += f", {info} note(s)" if info else ""
        return "\n".join([head, *(f"  {f}" for f in self.findings)])

    def to_html(self) -> str:
        """An HTML section (for the evaluation report and notebooks)."""
        e = html.escape
        if not self.findings:
            return "<p>The data audit found nothing.</p>"
        rows = "".join(
            f"<tr><td>{e(f.check)}</td><td>{e(f.severity)}</td><td>{e(str(f.source or ''))}</td>"
            f"<td>{e(str(f.column or ''))}</td><td>{f.count}</td><td style='text-align:left'>{e(f.message)}"
            f"</td><td style='text-align:left'>{e('; '.join(f.examples[:5]))}</td>"
            f"<td style='text-align:left'>{e(f.fix)}</td></tr>" for f in self.findings)
        return ("<table class='tbl'><tr><th>check</th><th>severity</th><th>source</th><th>column</th><th>n</th>"
                f"<th>finding</th><th>examples</th><th>what to do</th></tr>{rows}</table>")

    _repr_html_ = to_html


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# ----------------------------------------------------------------------------------------- helpers


def _norm_name(column: str) -> str:
    column = re.sub(r"\[[^\]]*\]", " ", str(column))
    column = re.sub(r"([a-z])([A-Z])", r"\1 \2", column)
    return re.sub(r"[^a-z0-9]+", " ", column.lower()).strip()


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    t = type(v)
    if t is float:
        return v != v
    if t is str or t is int:
        return False
    if isinstance(v, float) and math.isnan(v):
        return True
    try:
        import pandas as pd

        return v is pd.NaT or v is pd.NA
    except ImportError:  # pragma: no cover
        return False


def _to_float(v: Any) -> float | None:
    t = type(v)
    if t is float:
        return None if v != v else v
    if t is int:
        return float(v)
    if isinstance(v, bool) or _is_missing(v):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if hasattr(v, "item") and not isinstance(v, str):
        try:
            return float(v.item())
        except (TypeError, ValueError):
            return None
    if isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def _modalities(rec: Any) -> list[str]:
    try:
        return list(rec.present)
    except Exception:  # noqa: BLE001 - a record without a presence map
        return ["image", "notes", "vitals", "ehr"]


def _values(rec: Any, kind: str) -> list[tuple[str, Any]]:
    """The ``(modality name, value)`` pairs of a record whose value type is ``kind``."""
    from .records import Notes, Tabular, Vitals

    cls = {"table": Tabular, "text": Notes, "series": Vitals}[kind]
    out = []
    for m in _modalities(rec):
        try:
            v = rec.modality(m) if hasattr(rec, "modality") else getattr(rec, m)
        except (KeyError, AttributeError):
            v = getattr(rec, m, None)
        if isinstance(v, cls):
            out.append((m, v))
    return out


def _table_columns(records: list[Any]) -> dict[tuple[str, str], list[Any]]:
    """``(source, column) -> values`` over ``records`` (``None`` where absent): every table
    modality's columns and the manifest's metadata columns."""
    cols: dict[tuple[str, str], list[Any]] = {}
    n = len(records)
    for i, rec in enumerate(records):
        for m, tab in _values(rec, "table"):
            for k, v in tab.values.items():
                if k in ("patient_id",):
                    continue
                cols.setdefault((m, str(k)), [None] * n)[i] = v
        for k, v in (rec.meta or {}).items():
            if k in _META_SKIP:
                continue
            cols.setdefault(("manifest", str(k)), [None] * n)[i] = v
    return cols


def _binary_labels(records: list[Any], task: str):
    import numpy as np

    y = np.array([_to_float(r.labels.get(task)) if r.labels.get(task) is not None else np.nan for r in records],
                 dtype=float)
    known = y[~np.isnan(y)]
    if len(known) == 0 or not set(np.unique(known)) <= {0.0, 1.0}:
        return None
    return y


def _auroc(x, y) -> float:
    """AUROC of score ``x`` for binary ``y`` (ties count half), as ``max(auc, 1 - auc)``."""
    import numpy as np

    n1 = float(y.sum())
    n0 = float(len(y) - n1)
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _average_ranks(np.asarray(x, dtype=float))
    auc = (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(max(auc, 1 - auc))


def _average_ranks(x):
    """Ranks 1..n, ties given their average rank (``scipy.stats.rankdata``'s default)."""
    import numpy as np

    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    start = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    end = np.r_[start[1:], len(xs)]
    avg = (start + end + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, end - start)
    return ranks


def _chi2_p(table) -> float:
    """Pearson's chi-squared test of independence of a contingency table (no continuity correction)."""
    import numpy as np
    from scipy.special import chdtrc

    obs = np.asarray(table, dtype=float)
    exp = obs.sum(axis=1, keepdims=True) * obs.sum(axis=0, keepdims=True) / obs.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = float(np.nansum(np.where(exp > 0, (obs - exp) ** 2 / exp, 0.0)))
    dof = (obs.shape[0] - 1) * (obs.shape[1] - 1)
    return float(chdtrc(dof, stat)) if dof > 0 else 1.0


def _pid(rec: Any) -> str:
    return str(rec.patient_id)


# ----------------------------------------------------------------------------------------- checks


def _check_leakage(train: list[Any], tasks: list[str], cols: dict, rep: AuditReport, *, leak_auroc: float,
                   near_perfect: float, standout_auroc: float, standout_margin: float, min_per_class: int,
                   label_copy_r2: float) -> None:
    import numpy as np
    import pandas as pd

    rows = []
    for task in tasks:
        y_all = _binary_labels(train, task)
        if y_all is None:
            continue
        lab = ~np.isnan(y_all)
        for (src, col), vals in cols.items():
            if src == "manifest" and col == "site":
                continue  # site: reported by the prevalence check
            nums = [_to_float(v) for v in vals]
            present = np.array([not _is_missing(v) for v in vals])
            numeric = np.array([x is not None for x in nums])
            n_present = int(present[lab].sum())
            kind = "value"
            if n_present and numeric[lab & present].mean() >= 0.95:
                x = np.array([np.nan if v is None else v for v in nums], dtype=float)
                keep = lab & ~np.isnan(x)
            else:  # categorical: each level scored by its prevalence in the training split
                levels = pd.Series([None if _is_missing(v) else str(v) for v in vals], dtype=object)
                if levels[lab & present].nunique() > 20 or not n_present:
                    x, keep = None, None
                else:
                    rate = pd.Series(y_all).groupby(levels.where(lab)).mean()
                    x = levels.map(rate).to_numpy(dtype=float)
                    keep = lab & present
                kind = "category"
            cand = []
            if x is not None and keep.sum() and min(y_all[keep].sum(), (1 - y_all[keep]).sum()) >= min_per_class:
                cand.append((_auroc(x[keep], y_all[keep]), kind, int(keep.sum())))
            miss = lab & ~present
            if miss.sum() >= min_per_class and (lab & present).sum() >= min_per_class:
                cand.append((_auroc((~present[lab]).astype(float), y_all[lab]), "missingness", int(lab.sum())))
            for auc, how, n in cand:
                if not math.isnan(auc):
                    rows.append({"task": task, "source": src, "column": col, "by": how, "n": n, "auroc": auc})
    table = pd.DataFrame(rows, columns=["task", "source", "column", "by", "n", "auroc"])
    rep.auroc = table.sort_values(["task", "auroc"], ascending=[True, False]).reset_index(drop=True)
    flagged: set = set()
    for task, g in rep.auroc.groupby("task", sort=False):
        g = g.sort_values("auroc", ascending=False)
        best_by_col = g.drop_duplicates(["source", "column"])
        aucs = best_by_col["auroc"].to_numpy()
        for k, r in enumerate(best_by_col.itertuples(index=False)):
            runner_up = aucs[1] if k == 0 and len(aucs) > 1 else (aucs[0] if k > 0 else 0.5)
            named = bool(_POST_INDEX_NAME.search(_norm_name(r.column)))
            why = []
            if r.auroc >= near_perfect:
                why.append(f"nearly determines label_{task} on its own")
            elif k == 0 and r.auroc >= standout_auroc and r.auroc - runner_up >= standout_margin:
                why.append(f"predicts label_{task} far better than any other column (runner-up {runner_up:.3f})")
            if named and r.auroc >= leak_auroc:
                why.append("is named like something known only after the index time"
                           + ("" if why else f" and predicts label_{task}"))
            why = "; it ".join(why) or None
            if why is None:
                continue
            flagged.add((task, r.source, r.column))
            what = "its missingness" if r.by == "missingness" else "the column"
            rep.findings.append(Finding(
                "leakage", f"{what} {why}: single-feature AUROC {r.auroc:.3f} on {r.n} training patients",
                "check when the value is recorded; drop it (or move index_time) if it is known only after the "
                "prediction time (follow-up time, discharge status, a test ordered because of the outcome)",
                column=r.column, source=r.source, count=int(r.n), value=float(r.auroc),
                examples=[f"AUROC {r.auroc:.3f}", f"by {r.by}"]))
    for task in rep.auroc["task"].unique():
        y_all = _binary_labels(train, task)
        values = rep.auroc[(rep.auroc.task == task) & (rep.auroc.by == "value")]
        auc_of = {(r.source, r.column): (float(r.auroc), int(r.n)) for r in values.itertuples(index=False)}
        for (src, col), r2 in _within_class_r2(cols, y_all, min_per_class=min_per_class).items():
            auc, n = auc_of.get((src, col), (float("nan"), 0))
            if (task, src, col) in flagged or not auc >= leak_auroc or r2 > label_copy_r2:
                continue
            rep.findings.append(Finding(
                "leakage", f"the column separates label_{task} (single-feature AUROC {auc:.3f} on {n} training "
                f"patients) yet is unrelated to every other numeric column within each class (adjusted "
                f"within-class R^2 {r2:.2f}): it behaves like the label plus noise, as a value recorded because "
                "of the outcome does", column=col, source=src, count=n, value=auc,
                examples=[f"AUROC {auc:.3f}", f"within-class R^2 {r2:.2f}"],
                fix="check when and why the value is recorded; drop it if it is known only after the prediction "
                    "time or derived from the outcome (an independent marker measured at baseline may stay)"))


def _within_class_r2(cols: dict, y, *, min_per_class: int, min_columns: int = 4) -> dict[tuple[str, str], float]:
    """``(source, column) -> adjusted R^2`` of each numeric column on all the other numeric
    columns after removing the class means of ``y`` (mean-imputed; columns at least half
    present with at least 5 distinct values). Empty with fewer than ``min_columns`` columns."""
    import numpy as np

    lab = ~np.isnan(y)
    yl = y[lab]
    if min(yl.sum(), (1 - yl).sum()) < min_per_class:
        return {}
    keys, mats = [], []
    for key, vals in cols.items():
        if key == ("manifest", "site"):
            continue
        x = np.array([np.nan if (f := _to_float(v)) is None else f for v, keep in zip(vals, lab) if keep])
        present = [v for v, keep in zip(vals, lab) if keep and not _is_missing(v)]
        if np.isnan(x).mean() > 0.5 or len(present) == 0 or (~np.isnan(x)).sum() < 0.95 * len(present):
            continue
        if len(np.unique(x[~np.isnan(x)])) < 5:
            continue
        x = np.where(np.isnan(x), np.nanmean(x), x)
        for c in (0.0, 1.0):
            x[yl == c] -= x[yl == c].mean()
        sd = x.std()
        if sd > 0:
            keys.append(key)
            mats.append(x / sd)
    n, p = len(yl), len(keys)
    if p < min_columns or n - 2 - (p - 1) <= 0:
        return {}
    C = np.corrcoef(np.vstack(mats)) + 1e-6 * np.eye(p)
    r2 = 1.0 - 1.0 / np.diag(np.linalg.pinv(C))
    adj = 1.0 - (1.0 - r2) * (n - 2) / (n - 2 - (p - 1))
    return {k: float(v) for k, v in zip(keys, adj)}


def _check_post_index(records: list[Any], cols: dict, rep: AuditReport) -> None:
    import pandas as pd

    for (src, col), vals in cols.items():
        strs = [v for v in vals if isinstance(v, str) and v.strip()]
        stamps = [v for v in vals if isinstance(v, pd.Timestamp)]
        if not stamps and (len(strs) < 3 or sum(bool(_DATE.match(v)) for v in strs) < 0.8 * len(strs)):
            continue
        after = []
        for rec, v in zip(records, vals):
            if rec.index_time is None or _is_missing(v):
                continue
            try:
                t = to_timestamp(v)
            except (ValueError, TypeError):
                continue
            it = to_timestamp(rec.index_time)
            if t is not None and t > it:
                after.append(f"{_pid(rec)}: {t.date()} > {it.date()}")
        if after:
            rep.findings.append(Finding(
                "post_index", "holds dates after the patient's index_time", column=col, source=src,
                count=len(after), examples=after[:5],
                fix="drop the column, or keep only what was known at index_time (e.g. a date before it)"))
    series_after: dict[str, list[str]] = defaultdict(list)
    no_index: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        it = to_timestamp(rec.index_time)
        for m, vit in _values(rec, "series"):
            if it is None:
                no_index[m].append(_pid(rec))
                continue
            times = naive_utc(pd.to_datetime(vit.frame["time"]))
            n = int((times > it).sum())
            if n:
                series_after[m].append(f"{_pid(rec)} ({n} obs)")
        for m, notes in _values(rec, "text"):
            times = [n.time for n in notes.notes if n.time is not None and not _is_missing(n.time)]
            if it is None:
                if times:
                    no_index[m].append(_pid(rec))
            elif any(to_timestamp(t) > it for t in times):
                series_after[m].append(_pid(rec))
    for m, ex in series_after.items():
        rep.findings.append(Finding("post_index", f"{m} recorded after the index_time", source=m, count=len(ex),
                                    examples=ex[:5], fix="read the modality with the patient's index_time so "
                                    "that later observations are left out"))
    for m, ex in no_index.items():
        rep.findings.append(Finding(
            "post_index", f"patients with time-stamped {m} but no index_time: nothing after the prediction "
            "time could be left out", source=m, count=len(ex), examples=ex[:5],
            fix="give every patient an index_time (the prediction time) in the manifest"))


def _norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.casefold())).strip()


def _check_duplicates(records: list[Any], split_of: dict[int, str], rep: AuditReport, *,
                      near_duplicate: float, min_features: int, row_tolerance: float = 0.02) -> None:
    # table rows: the same values in two splits
    keys: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        for m, tab in _values(rec, "table"):
            items = []
            for k, v in sorted(tab.values.items()):
                if _is_missing(v) or k == "patient_id":
                    continue
                x = _to_float(v)
                items.append((k, f"{x:.6g}" if x is not None else str(v).strip().casefold()))
            if len(items) >= min_features:
                keys[m + "\x00" + repr(items)].append(i)
    row_pairs = _report_dups(keys, records, split_of, rep, what="table row",
                             source_of=lambda k: k.split("\x00", 1)[0],
                             fix="keep one row per patient: the same patient (or a copy) in train and test inflates "
                                 "the test score; de-duplicate before splitting, or split by a grouping column")
    if near_duplicate:
        _near_duplicate_rows(records, split_of, rep, threshold=near_duplicate, tolerance=row_tolerance,
                             min_features=min_features, exact=row_pairs)
    # notes: exact (normalised text) and near duplicates
    docs: list[tuple[int, str, str]] = []  # (record position, modality, normalised text)
    for i, rec in enumerate(records):
        for m, notes in _values(rec, "text"):
            for note in notes.notes:
                t = _norm_text(note.text)
                if len(t) >= 20:
                    docs.append((i, m, t))
    hashes: dict[str, list[int]] = defaultdict(list)
    for i, m, t in docs:
        hashes[m + "\x00" + hashlib.sha1(t.encode()).hexdigest()].append(i)
    exact_pairs = _report_dups(hashes, records, split_of, rep, what="note text",
                               source_of=lambda k: k.split("\x00", 1)[0],
                               fix="drop repeated notes (templates, copies of one report) or keep each text in one "
                                   "split only")
    if near_duplicate and len(docs) >= 2:
        _near_duplicate_notes(docs, records, split_of, rep, threshold=near_duplicate, exact=exact_pairs)


def _report_dups(groups: dict[str, list[int]], records, split_of, rep, *, what: str, source_of, fix: str) -> set:
    cross: dict[str, list[str]] = defaultdict(list)
    counts: Counter = Counter()
    within: Counter = Counter()
    pairs: set = set()
    for key, idx in groups.items():
        pos = sorted(set(idx))
        if len(pos) < 2:
            continue
        splits = {split_of.get(i) for i in pos}
        src = source_of(key)
        if len(splits - {None}) >= 2:
            counts[src] += len(pos)
            cross[src].append(" = ".join(f"{_pid(records[i])} ({split_of.get(i)})" for i in pos[:3]))
            pairs.update((a, b) for a in pos for b in pos if a < b)
        else:
            within[src] += len(pos) - 1
    for src, ex in cross.items():
        extra = f"; {within[src]} more repeat(s) inside one split" if within[src] else ""
        rep.findings.append(Finding("duplicate", f"the same {what} in two or more splits ({len(ex)} group(s)"
                                    f"{extra})", source=src, count=counts[src], examples=ex[:5], fix=fix))
    for src, n in within.items():
        if src not in cross:
            rep.findings.append(Finding("duplicate", f"the same {what} repeated inside one split", source=src,
                                        count=n, severity="info",
                                        fix="check that repeated rows are distinct patients; they weigh twice"))
    return pairs


def _near_duplicate_rows(records, split_of, rep, *, threshold: float, tolerance: float, min_features: int,
                         exact: set, blocks: int = 12, block_size: int = 4, max_bucket: int = 200) -> None:
    """Pairs of table rows in different splits that agree on ``threshold`` of their shared
    columns (numbers within ``tolerance`` x the column's IQR, text equal), at least
    ``min_features`` of them columns with 10+ distinct values. Candidates come from hashing
    random blocks of ``block_size`` such columns into bins 4 tolerances wide (locality-sensitive
    hashing), so the cost grows with the rows, not their pairs."""
    import numpy as np

    by_mod: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for i, rec in enumerate(records):
        if split_of.get(i) is None:
            continue
        for m, tab in _values(rec, "table"):
            by_mod[m].append((i, {k: v for k, v in tab.values.items() if k != "patient_id" and not _is_missing(v)}))
    rng = np.random.default_rng(0)
    for m, rows in by_mod.items():
        if len(rows) < 2:
            continue
        names = sorted({k for _, r in rows for k in r})
        num: dict[str, np.ndarray] = {}
        text: dict[str, list[Any]] = {}
        for k in names:
            vals = [r.get(k) for _, r in rows]
            x = np.array([np.nan if (f := _to_float(v)) is None else f for v in vals])
            n_present = sum(v is not None for v in vals)
            if n_present and (~np.isnan(x)).sum() >= 0.95 * n_present:
                num[k] = x
            else:
                text[k] = [None if v is None else str(v).strip().casefold() for v in vals]
        tol, informative = {}, []
        for k, x in num.items():
            v = x[~np.isnan(x)]
            if not len(v):
                continue
            q1, q3 = np.quantile(v, [0.25, 0.75])
            spread = (q3 - q1) or float(v.std())
            tol[k] = tolerance * spread
            if len(np.unique(v)) >= 10 and tol[k] > 0:
                informative.append(k)
        if len(informative) < min_features:
            continue
        cand: set = set()
        size = min(block_size, len(informative))
        for _ in range(blocks):
            cols = rng.choice(informative, size=size, replace=False)
            bins = np.stack([np.floor(num[k] / (4 * tol[k])) for k in cols], axis=1)
            ok = ~np.isnan(bins).any(axis=1)
            buckets: dict[bytes, list[int]] = defaultdict(list)
            for a in np.flatnonzero(ok):
                buckets[bins[a].tobytes()].append(int(a))
            for members in buckets.values():
                if 2 <= len(members) <= max_bucket:
                    cand.update((a, b) for x_, a in enumerate(members) for b in members[x_ + 1:])
        pairs = np.array([(a, b) for a, b in sorted(cand)
                          if split_of.get(rows[a][0]) != split_of.get(rows[b][0])
                          and (min(rows[a][0], rows[b][0]), max(rows[a][0], rows[b][0])) not in exact],
                         dtype=int).reshape(-1, 2)
        if not len(pairs):
            continue
        keys = list(num)
        X = np.stack([num[k] for k in keys], axis=1)
        t_ = np.array([tol.get(k, 0.0) for k in keys])
        inf = np.array([k in informative for k in keys])
        xa, xb = X[pairs[:, 0]], X[pairs[:, 1]]
        both = ~np.isnan(xa) & ~np.isnan(xb)
        close = both & (np.abs(np.nan_to_num(xa) - np.nan_to_num(xb)) <= t_)
        shared, agree, agree_inf = both.sum(1), close.sum(1), (close & inf).sum(1)
        for t in text.values():
            ta = [t[a] for a in pairs[:, 0]]
            tb = [t[b] for b in pairs[:, 1]]
            shared += np.array([u is not None and v is not None for u, v in zip(ta, tb)], dtype=int)
            agree += np.array([u is not None and u == v for u, v in zip(ta, tb)], dtype=int)
        hit = (shared > 0) & (agree_inf >= min_features) & (agree >= threshold * shared)
        n_pairs, found = int(hit.sum()), []
        for (a, b), n_agree, n_shared in zip(pairs[hit][:5], agree[hit][:5], shared[hit][:5]):
            ia, ib = rows[a][0], rows[b][0]
            found.append(f"{_pid(records[ia])} ({split_of.get(ia)}) ~ {_pid(records[ib])} "
                         f"({split_of.get(ib)}): {n_agree} of {n_shared} columns agree")
        if n_pairs:
            rep.findings.append(Finding(
                "duplicate", f"near-duplicate table rows in different splits (>= {threshold:.0%} of the shared "
                f"columns agree, numbers within {tolerance:g} x the column's IQR)", source=m, count=n_pairs,
                examples=found, fix="a patient exported twice (rounded differently, a value re-measured) belongs "
                "in one split: de-duplicate by patient before splitting, or group the copies (split.group_by)"))


def _near_duplicate_notes(docs, records, split_of, rep, *, threshold: float, exact: set) -> None:
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    by_mod: dict[str, list[int]] = defaultdict(list)
    for k, (_, m, _) in enumerate(docs):
        by_mod[m].append(k)
    for m, ks in by_mod.items():
        if len(ks) < 2:
            continue
        texts = [docs[k][2] for k in ks]
        owners = np.array([docs[k][0] for k in ks])
        splits = np.array([str(split_of.get(int(o))) for o in owners], dtype=object)
        split_code = np.unique(splits, return_inverse=True)[1]
        try:  # word 3-shingles of each note, as a binary matrix: (X @ X.T) counts shared shingles
            X = CountVectorizer(analyzer="word", ngram_range=(3, 3), binary=True, token_pattern=r"\S+",
                                dtype=np.float32).fit_transform(texts).tocsr()
        except ValueError:  # notes shorter than three words
            continue
        size = np.asarray(X.sum(axis=1)).ravel()
        found: list[str] = []
        seen: set = set()
        n_pairs = 0
        step = 512
        XT = X.T.tocsc()
        for a in range(0, X.shape[0], step):
            shared = (X[a:a + step] @ XT).tocoo()
            i, j, inter = shared.row.astype(np.int64) + a, shared.col.astype(np.int64), shared.data
            keep = (j > i) & (split_code[i] != split_code[j]) & (owners[i] != owners[j])
            i, j, inter = i[keep], j[keep], inter[keep]
            v = inter / np.maximum(size[i] + size[j] - inter, 1.0)  # Jaccard of the shingle sets
            keep = (v >= threshold) & (v < 0.999999)
            for i1, j1, v1 in zip(i[keep].tolist(), j[keep].tolist(), v[keep].tolist()):
                oi, oj = int(owners[i1]), int(owners[j1])
                pair = (min(oi, oj), max(oi, oj))
                if pair in exact or pair in seen:
                    continue
                seen.add(pair)
                n_pairs += 1
                if len(found) < 5:
                    found.append(f"{_pid(records[oi])} ({splits[i1]}) ~ {_pid(records[oj])} ({splits[j1]}), "
                                 f"Jaccard {v1:.2f}")
        if n_pairs:
            rep.findings.append(Finding(
                "duplicate", f"near-duplicate notes in different splits (word 3-shingle Jaccard >= {threshold:g})",
                source=m, count=n_pairs, examples=found,
                fix="near-copies (templates, copy-forward, one report transcribed twice) belong in one split: "
                    "group them (split.group_by) or drop the copies"))


def _check_type_drift(records: list[Any], cols: dict, rep: AuditReport) -> None:
    # placeholders the EHR reader already read as missing
    tokens: dict[tuple[str, str], Counter] = defaultdict(Counter)
    token_ex: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rec in records:
        for m, tab in _values(rec, "table"):
            for col, tok in (getattr(tab, "missing_tokens", None) or {}).items():
                tokens[(m, col)][tok] += 1
                if len(token_ex[(m, col)]) < 5:
                    token_ex[(m, col)].append(f"{_pid(rec)}: {tok!r}")
    for (m, col), cnt in tokens.items():
        n = sum(cnt.values())
        shown = ", ".join(f"{t!r} x{c}" for t, c in cnt.most_common(5))
        rep.findings.append(Finding(
            "type_drift", f"numeric column held text ({shown}); read as missing (left as text it would have "
            "turned the column into categories)", column=col, source=m, count=n, examples=token_ex[(m, col)],
            fix="export missing values as empty cells; check that these placeholders do mean 'not measured'"))
    # other text in mostly numeric columns
    for (src, col), vals in cols.items():
        present = [v for v in vals if not _is_missing(v)]
        if len(present) < 5:
            continue
        nums = [_to_float(v) for v in present]
        n_num = sum(x is not None for x in nums)
        if n_num < 0.5 * len(present) or n_num == len(present):
            continue
        bad = Counter(str(v) for v, x in zip(present, nums) if x is None)
        n_bad = sum(bad.values())
        where = [_pid(r) for r, v in zip(records, vals) if not _is_missing(v) and _to_float(v) is None][:3]
        effect = ("the whole column is treated as categories (one-hot), its numbers lost"
                  if n_num < 0.95 * len(present) else "these values are read as missing")
        placeholder = all(is_placeholder(t) for t in bad)
        rep.findings.append(Finding(
            "type_drift", f"numeric column holds text in {n_bad} of {len(present)} values "
            f"({', '.join(f'{t!r} x{c}' for t, c in bad.most_common(5))}); {effect}", column=col, source=src,
            count=n_bad, examples=[*(f"{t!r}" for t in list(bad)[:3]), *(f"patient {p}" for p in where)],
            fix=("export missing values as empty cells" if placeholder else
                 "fix the values that are not numbers (units, '<', decimal commas) in the source table")))


def _check_disguised_missing(records: list[Any], cols: dict, rep: AuditReport) -> None:
    import numpy as np

    for (src, col), vals in cols.items():
        present = [(r, v) for r, v in zip(records, vals) if not _is_missing(v)]
        nums = [(r, _to_float(v)) for r, v in present]
        nums = [(r, x) for r, x in nums if x is not None]
        if len(nums) < 10 or len(nums) < 0.9 * len(present):
            continue
        x = np.array([v for _, v in nums])
        distinct = np.unique(x)
        if len(distinct) <= 3:  # flags, codes
            continue
        name = _norm_name(col)
        zeros = [r for r, v in nums if v == 0]
        nonzero = np.unique(x[x != 0])
        if zeros and len(nonzero) >= 5 and (nonzero > 0).all():
            named = bool(_IMPOSSIBLE_ZERO_NAME.search(name))
            low = nonzero[: min(20, len(nonzero))]
            spacing = float(np.median(np.diff(low))) if len(low) > 2 else float(low[0])
            isolated = len(nonzero) >= 10 and nonzero[0] >= 10 * max(spacing, 1e-12) and \
                nonzero[0] >= 0.25 * float(np.median(x[x != 0]))
            if named or isolated:
                why = ("zero is impossible for this variable" if named else
                       f"zero lies far below every other value (the smallest is {nonzero[0]:g})")
                rep.findings.append(Finding(
                    "disguised_missing", f"{len(zeros)} zero(s): {why}; they are probably missing values",
                    column=col, source=src, count=len(zeros), examples=[_pid(r) for r in zeros[:5]],
                    fix="replace these zeros by empty cells (missing), or check the unit/export"))
        for s in _SENTINELS:
            hit = [r for r, v in nums if v == s]
            if not hit:
                continue
            rest = x[x != s]
            if len(rest) < 10 or len(np.unique(rest)) <= 3:
                continue
            q1, q3 = np.quantile(rest, [0.25, 0.75])
            iqr = max(q3 - q1, 1e-12)
            outside = s > q3 + 3 * iqr if s > 0 else (s < q1 - 3 * iqr and (rest >= 0).all())
            if outside:
                rep.findings.append(Finding(
                    "disguised_missing", f"{len(hit)} value(s) of {s:g}, a code for 'unknown' far outside the "
                    f"other values ({rest.min():g} to {rest.max():g})", column=col, source=src, count=len(hit),
                    examples=[_pid(r) for r in hit[:5]],
                    fix=f"replace {s:g} by an empty cell (missing) in the source table"))


def _check_prevalence(records: list[Any], split_of: dict[int, str], tasks: list[str], rep: AuditReport, *,
                      alpha: float, min_site: int) -> None:
    import numpy as np
    import pandas as pd

    rows = []
    for task in tasks:
        y = _binary_labels(records, task)
        if y is None:
            continue
        groups = {"split": [split_of.get(i) for i in range(len(records))],
                  "site": [None if _is_missing((r.meta or {}).get("site")) else str(r.meta["site"]) for r in records]}
        for by, g in groups.items():
            s = pd.Series(g, dtype=object)
            keep = ~np.isnan(y) & s.notna().to_numpy()
            if not keep.any():
                continue
            tab = pd.crosstab(s[keep], y[keep])
            for grp, r in tab.iterrows():
                n = int(r.sum())
                pos = int(r.get(1.0, 0))
                rows.append({"task": task, "by": by, "group": grp, "n": n, "positives": pos,
                             "prevalence": pos / n if n else float("nan")})
            if tab.shape[0] < 2:
                continue
            big = tab[tab.sum(axis=1) >= (min_site if by == "site" else 1)]
            if big.shape[0] < 2 or big.shape[1] < 2:
                continue
            p = _chi2_p(big.to_numpy())
            prev = (big.get(1.0, 0) / big.sum(axis=1)).round(3)
            shown = [f"{k}: {v:.2f} (n={int(big.loc[k].sum())})" for k, v in prev.items()]
            if p < alpha:
                if by == "split":
                    rep.findings.append(Finding(
                        "prevalence", f"label_{task} prevalence differs between splits more than chance allows "
                        f"(chi-squared p={p:.2g})", column=f"label_{task}", source="labels", count=int(keep.sum()),
                        examples=shown, value=p,
                        fix="draw the splits stratified on the label (split.mode=assign) or check how the split "
                            "column was made"))
                else:
                    rep.findings.append(Finding(
                        "prevalence", f"label_{task} prevalence differs between sites (chi-squared p={p:.2g})",
                        column="site", source="manifest", count=int(keep.sum()), examples=shown, value=p,
                        severity="info",
                        fix="report per-site metrics; consider split.group_by=site to test transfer to a new site"))
    rep.prevalence = pd.DataFrame(rows, columns=["task", "by", "group", "n", "positives", "prevalence"])


# ----------------------------------------------------------------------------------------- entry point


def audit_cohort(
    cohort: Any,
    *,
    tasks: list[str] | tuple[str, ...] | None = None,
    splits: dict[str, list[Any]] | None = None,
    checks: tuple[str, ...] = CHECKS,
    strict: bool = False,
    leak_auroc: float = 0.8,
    near_perfect: float = 0.99,
    standout_auroc: float = 0.75,
    standout_margin: float = 0.1,
    near_duplicate: float = 0.8,
    label_copy_r2: float = 0.05,
    row_tolerance: float = 0.02,
    min_per_class: int = 10,
    min_features: int = 3,
    alpha: float = 0.001,
) -> AuditReport:
    """Audit a cohort's records for leakage, post-index data, duplicates across splits, type
    drift, disguised missing values and label prevalence (see the module's docstring).

    ``cohort`` is a :class:`~medmm.cohort.Cohort` or a list of records; ``splits``
    (``{"train": [...], "val": [...], "test": [...]}``) overrides the records' own ``split``
    (training passes the splits it drew). Single-feature AUROCs use the training split (every
    labelled patient when there is none). ``strict`` turns every warning into an error when
    the findings are added to a problem report.
    """
    records = list(cohort.records if hasattr(cohort, "records") else cohort)
    if tasks is None:
        tasks = list(cohort.tasks) if hasattr(cohort, "tasks") else sorted({t for r in records for t in r.labels})
    tasks = list(tasks)
    if splits is not None:
        pos = {id(r): i for i, r in enumerate(records)}
        split_of = {pos[id(r)]: s for s, rs in splits.items() for r in rs if id(r) in pos}
    else:
        split_of = {i: r.split for i, r in enumerate(records) if r.split}
    rep = AuditReport(strict=strict)
    cols = _table_columns(records)
    if "leakage" in checks:
        train = [records[i] for i, s in split_of.items() if s == "train"] or records
        _check_leakage(train, tasks, _table_columns(train), rep, leak_auroc=leak_auroc, near_perfect=near_perfect,
                       standout_auroc=standout_auroc, standout_margin=standout_margin, min_per_class=min_per_class,
                       label_copy_r2=label_copy_r2)
    if "post_index" in checks:
        _check_post_index(records, cols, rep)
    if "duplicate" in checks:
        _check_duplicates(records, split_of, rep, near_duplicate=near_duplicate, min_features=min_features,
                          row_tolerance=row_tolerance)
    if "type_drift" in checks:
        _check_type_drift(records, cols, rep)
    if "disguised_missing" in checks:
        _check_disguised_missing(records, cols, rep)
    if "prevalence" in checks:
        _check_prevalence(records, split_of, tasks, rep, alpha=alpha, min_site=20)
    return rep


def audit_splits(records: list[Any], splits: dict[str, list[Any]], tasks: list[str] | tuple[str, ...],
                 report: Any = None, *, enabled: bool = True, strict: bool = False) -> AuditReport | None:
    """The audit training runs once its splits are drawn (single-feature AUROCs on ``splits['train']``):
    findings added to ``report``; with ``strict`` any finding raises :class:`~medmm.errors.ConfigError`
    (on every rank of a distributed run, so all of them stop)."""
    from .errors import ConfigError

    if not enabled:
        return None
    audit = audit_cohort(records, splits=splits, tasks=list(tasks), strict=strict)
    if report is not None:
        audit.add_to(report)
    if strict and not audit.ok:
        raise ConfigError(f"the data audit found {len(audit.warnings)} problem(s):\n{audit}",
                          hint="fix the data, or set cohort.strict_audit=false to train anyway")
    return audit
