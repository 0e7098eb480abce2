"""Patient-level splits and cross-validation folds.

Every split is drawn over groups, never rows: a patient's records (and, with ``group_by``, a
whole site's patients) land in one split only. Splits are stratified by a task's label
(unknown labels form their own stratum) with scikit-learn's ``StratifiedGroupKFold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cohort import label_strata, split_indices
from ..errors import ConfigError
from ..records import PatientRecord

__all__ = ["split_groups", "assign_patient_splits", "cv_folds", "check_disjoint"]


def split_groups(records: list[PatientRecord], group_by: str | None) -> np.ndarray:
    """The group of each record: its ``group_by`` column (``record.meta``), else its patient."""
    if not group_by:
        return np.asarray([r.patient_id for r in records], dtype=object)
    missing = [r.patient_id for r in records if r.meta.get(group_by) in (None, "")]
    if missing:
        raise ConfigError(f"{len(missing)} patient(s) have no {group_by!r} value (first: row of {missing[0]})",
                          column=group_by, hint=f"fill the {group_by} column or drop split.group_by")
    groups = np.asarray([str(r.meta[group_by]) for r in records], dtype=object)
    by_patient: dict[str, set[str]] = {}
    for r, g in zip(records, groups):
        by_patient.setdefault(r.patient_id, set()).add(g)
    split_patients = [p for p, gs in by_patient.items() if len(gs) > 1]
    if split_patients:
        raise ConfigError(f"patient {split_patients[0]} has several {group_by!r} values", column=group_by,
                          hint="a patient must belong to one group")
    return groups


def _strata(records: list[PatientRecord], task: str | None) -> np.ndarray:
    if task is None:
        return np.zeros(len(records), dtype=int)
    return label_strata([r.labels.get(task) for r in records])


def assign_patient_splits(records: list[PatientRecord], *, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                          stratify: str | None = None, group_by: str | None = None, seed: int = 0) -> dict[str, str]:
    """``{patient_id: "train" | "val" | "test"}``: stratified by ``stratify``'s label,
    grouped by patient (and by ``group_by`` when given)."""
    groups = split_groups(records, group_by)
    if group_by and len(set(groups.tolist())) < 3:
        raise ConfigError(f"{len(set(groups.tolist()))} {group_by!r} group(s) cannot make train, val and test splits",
                          column=group_by, hint="use more groups, or no group_by")
    train, val, test = split_indices(_strata(records, stratify), groups, fractions=fractions, seed=seed)
    out: dict[str, str] = {}
    for name, sel in (("train", train), ("val", val), ("test", test)):
        for i in sel:
            out[records[i].patient_id] = name
    return out


def cv_folds(records: list[PatientRecord], k: int, *, stratify: str | None = None, group_by: str | None = None,
             seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train indices, validation indices) pairs, stratified and grouped by patient/``group_by``."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = split_groups(records, group_by)
    if len(set(groups.tolist())) < k:
        raise ConfigError(f"{len(set(groups.tolist()))} group(s) cannot make {k} folds", hint="use fewer folds")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in cv.split(np.zeros(len(records)), _strata(records, stratify), groups)]


def check_disjoint(parts: dict[str, list[Any]]) -> None:
    """Raise when a patient id appears in two of ``parts`` (lists of records)."""
    seen: dict[str, str] = {}
    for name, recs in parts.items():
        for r in recs:
            other = seen.setdefault(r.patient_id, name)
            if other != name:
                raise ConfigError(f"patient {r.patient_id} is in both the {other} and the {name} split",
                                  column="split", hint="give each patient one split value in the manifest")
