"""Patient-level splits and cross-validation folds.

Every split is drawn over groups, never rows: a patient's records (and, with ``group_by``, a
whole site's patients) land in one split only. Splits are stratified by a task's label
(unknown labels form their own stratum) with scikit-learn's ``StratifiedGroupKFold``.

Cross-validation is nested (:func:`nested_cv_folds`): each outer fold's training part is split
again into an inner training and an inner validation part; early stopping and epoch selection
see only the inner validation part, and the scored outer fold is never seen before it is scored
(Varma & Simon 2006: selecting on the scored fold makes per-fold figures optimistic).
:func:`external_split` holds whole groups (sites) out as an external test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cohort import hold_out, label_strata, split_indices
from ..errors import ConfigError
from ..records import PatientRecord

__all__ = ["split_groups", "assign_patient_splits", "cv_folds", "nested_cv_folds", "Fold", "assign_external_splits",
           "check_disjoint"]


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


@dataclass(frozen=True)
class Fold:
    """One outer fold of nested cross-validation (positions into the records)."""

    index: int
    train: np.ndarray  # fits the weights and the preprocessing
    val: np.ndarray  # early stopping and epoch selection only
    test: np.ndarray  # scored once, never seen before

    @property
    def development(self) -> np.ndarray:
        """Train and val together: the outer fold's training part."""
        return np.sort(np.concatenate([self.train, self.val]))


def nested_cv_folds(records: list[PatientRecord], k: int, *, stratify: str | None = None,
                    group_by: str | None = None, val_fraction: float = 0.2, seed: int = 0) -> list[Fold]:
    """``k`` outer folds, each with an inner validation part drawn from its training part.

    Outer folds are stratified by ``stratify``'s label and grouped by patient, or by
    ``group_by`` (e.g. ``site``: each site is scored by a model that never saw it). The inner
    validation part (``val_fraction`` of the outer training part) is stratified and grouped by
    patient, so that a fold with few sites still has patients to stop on.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction {val_fraction} is outside (0, 1)", column="split.cv_val_fraction",
                          hint="e.g. 0.2")
    strata = _strata(records, stratify)
    patients = split_groups(records, None)
    out = []
    for i, (dev, test) in enumerate(cv_folds(records, k, stratify=stratify, group_by=group_by, seed=seed)):
        train, val = hold_out(np.asarray(dev), strata, patients, val_fraction, seed + 7919 * (i + 1))
        if not len(val):
            raise ConfigError(f"fold {i}: too few patients ({len(dev)}) to hold out an inner validation part",
                              column="split.cv_folds", hint="use fewer folds or more patients")
        out.append(Fold(i, np.sort(train), np.sort(val), np.sort(np.asarray(test))))
    return out


def assign_external_splits(records: list[PatientRecord], *, group_by: str | None, test_groups: list[str],
                           fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), stratify: str | None = None,
                           seed: int = 0) -> dict[str, str]:
    """``{patient_id: split}`` for an external-site evaluation: the patients whose ``group_by``
    value is in ``test_groups`` are the test split; the others are drawn into train and val
    (stratified, grouped by patient, in the ratio of ``fractions``' first two entries)."""
    if not group_by:
        raise ConfigError("split.test_groups needs split.group_by (the column the groups are values of)",
                          column="split.test_groups", hint="e.g. split.group_by=site split.test_groups=[site_c]")
    groups = split_groups(records, group_by)
    known = sorted(set(groups.tolist()))
    unknown = [g for g in test_groups if str(g) not in known]
    if unknown:
        raise ConfigError(f"split.test_groups names {unknown}, which are not {group_by!r} values of the cohort",
                          column="split.test_groups", hint=f"{group_by} values: {known[:20]}")
    external = np.isin(groups, [str(g) for g in test_groups])
    if external.all():
        raise ConfigError(f"every patient is in split.test_groups {list(test_groups)}: nothing is left to train on",
                          column="split.test_groups", hint=f"leave some of {known} for training")
    rest = np.flatnonzero(~external)
    f_train, f_val = fractions[0], fractions[1]
    train, val = hold_out(rest, _strata(records, stratify), split_groups(records, None),
                            f_val / max(f_train + f_val, 1e-12), seed)
    out = {records[i].patient_id: "test" for i in np.flatnonzero(external)}
    out.update({records[i].patient_id: "train" for i in train})
    out.update({records[i].patient_id: "val" for i in val})
    return out


def check_disjoint(parts: dict[str, list[Any]]) -> None:
    """Raise when a patient id appears in two of ``parts`` (lists of records)."""
    seen: dict[str, str] = {}
    for name, recs in parts.items():
        for r in recs:
            other = seen.setdefault(r.patient_id, name)
            if other != name:
                raise ConfigError(f"patient {r.patient_id} is in both the {other} and the {name} split",
                                  column="split", hint="give each patient one split value in the manifest")
