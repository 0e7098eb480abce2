"""Per-modality fitted transforms, bundled into one :class:`MultimodalPreprocessor`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import NotFittedError
from ..records import MODALITIES, Missing, PatientRecord

__all__ = ["MultimodalPreprocessor"]


class MultimodalPreprocessor:
    """One fitted transform per modality; fitted on training records only (contract 2).

    ``transform(record)`` returns ``{modality: array or None}`` where ``None`` marks a
    missing modality. It is saved with the model as data (:meth:`get_state`, see
    :mod:`medmm.preprocess.state`), never as a pickle.
    """

    def __init__(
        self,
        *,
        image: Any = None,
        notes: Any = None,
        vitals: Any = None,
        ehr: Any = None,
        modalities: tuple[str, ...] = MODALITIES,
    ) -> None:
        from .image import ImagePreprocessor
        from .tabular import TabularPreprocessor
        from .text import TextPreprocessor
        from .vitals import VitalsPreprocessor

        self.modalities = tuple(modalities)
        self.steps = {
            "image": image if image is not None else ImagePreprocessor(),
            "notes": notes if notes is not None else TextPreprocessor(),
            "vitals": vitals if vitals is not None else VitalsPreprocessor(),
            "ehr": ehr if ehr is not None else TabularPreprocessor(),
        }

    def fit(self, records: list[PatientRecord]) -> "MultimodalPreprocessor":
        records = list(records)  # a lazy Cohort is built once, not once per modality
        for m in self.modalities:
            values = [getattr(r, m) for r in records if not isinstance(getattr(r, m), Missing)]
            self.steps[m].fit(values)
        self.fitted_ = True
        return self

    def transform(self, record: PatientRecord) -> dict[str, np.ndarray | None]:
        """``{modality: array, or None where the record lacks it}`` for one record."""
        return self.transform_many([record])[0]

    def transform_many(self, records: list[PatientRecord], *,
                       modalities: tuple[str, ...] | None = None) -> list[dict[str, np.ndarray | None]]:
        """:meth:`transform` of many records: one batched call per modality where the step has
        ``transform_many`` (the text and EHR steps cost nearly the same for one row as for thirty;
        what a micro-batching service and batch scoring want). ``modalities`` limits the work to
        those (the others are ``None``)."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError("MultimodalPreprocessor is not fitted", hint="call fit(train_records) first")
        out: list[dict[str, np.ndarray | None]] = [dict.fromkeys(self.modalities) for _ in records]
        for m in self.modalities if modalities is None else [m for m in self.modalities if m in modalities]:
            step = self.steps[m]
            idx = [i for i, r in enumerate(records) if not isinstance(getattr(r, m), Missing)]
            if not idx:
                continue
            if m == "vitals":
                for i in idx:
                    out[i][m] = step.transform(records[i].vitals, index_time=records[i].index_time)
            elif hasattr(step, "transform_many"):
                rows = step.transform_many([getattr(records[i], m) for i in idx])
                for k, i in enumerate(idx):
                    out[i][m] = rows[k]
            else:
                for i in idx:
                    out[i][m] = step.transform(getattr(records[i], m))
        return out

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(self.steps[m].output_shape) for m in self.modalities}

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Modalities and each step's state (arrays named ``<modality>/<name>``)."""
        from .state import dump_preprocessor

        steps, arrays = {}, {}
        for m in self.modalities:
            steps[m], a = dump_preprocessor(self.steps[m], prefix=f"{m}/")
            arrays.update(a)
        return {"modalities": list(self.modalities), "steps": steps,
                "fitted": bool(getattr(self, "fitted_", False))}, arrays

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> "MultimodalPreprocessor":
        from .state import load_preprocessor

        modalities = tuple(state["modalities"])
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}")
        steps = {m: load_preprocessor(state["steps"][m], arrays, prefix=f"{m}/") for m in modalities}
        obj = cls(modalities=modalities, **steps)
        if state.get("fitted"):
            obj.fitted_ = True
        return obj
