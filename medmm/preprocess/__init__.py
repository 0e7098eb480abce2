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
    missing modality. The whole object is pickled with the model.
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
        for m in self.modalities:
            values = [getattr(r, m) for r in records if not isinstance(getattr(r, m), Missing)]
            self.steps[m].fit(values)
        self.fitted_ = True
        return self

    def transform(self, record: PatientRecord) -> dict[str, np.ndarray | None]:
        if not getattr(self, "fitted_", False):
            raise NotFittedError("MultimodalPreprocessor is not fitted", hint="call fit(train_records) first")
        out: dict[str, np.ndarray | None] = {}
        for m in self.modalities:
            value = getattr(record, m)
            if isinstance(value, Missing):
                out[m] = None
            elif m == "vitals":
                out[m] = self.steps[m].transform(value, index_time=record.index_time)
            else:
                out[m] = self.steps[m].transform(value)
        return out

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(self.steps[m].output_shape) for m in self.modalities}
