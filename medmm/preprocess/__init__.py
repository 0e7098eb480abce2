"""Per-modality fitted transforms, chosen by modality kind, bundled into one :class:`MultimodalPreprocessor`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MedmmError, NotFittedError
from ..records import MODALITIES, Missing, ModalitySpec, PatientRecord

__all__ = ["MultimodalPreprocessor", "DEFAULT_STEPS", "default_step"]


#: the preprocessor of each modality kind, when the encoder asks for nothing else
DEFAULT_STEPS = {"image": "medmm.preprocess.image:ImagePreprocessor",
                 "text": "medmm.preprocess.text:TextPreprocessor",
                 "series": "medmm.preprocess.vitals:VitalsPreprocessor",
                 "table": "medmm.preprocess.tabular:TabularPreprocessor"}


def default_step(kind: str, **options: Any) -> Any:
    """A new preprocessor for a modality kind (``image``, ``text``, ``series``, ``table``)."""
    import importlib

    module, _, name = DEFAULT_STEPS[kind].partition(":")
    return getattr(importlib.import_module(module), name)(**options)


class MultimodalPreprocessor:
    """One fitted transform per modality, chosen by its kind; fitted on training records only
    (contract 2).

    ``MultimodalPreprocessor(modalities=spec, ct=ImagePreprocessor(...))``: ``modalities`` is a
    :class:`~medmm.records.ModalitySpec` (or default names); a step not given is its kind's
    default. ``transform(record)`` returns ``{modality: array or None}`` where ``None`` marks a
    missing modality. It is saved with the model as data (:meth:`get_state`, see
    :mod:`medmm.preprocess.state`), never as a pickle.
    """

    def __init__(self, *, modalities: Any = MODALITIES, **steps: Any) -> None:
        self.modalities = ModalitySpec.coerce(modalities)
        given = {m: s for m, s in steps.items() if s is not None}
        unknown = [m for m in given if m not in self.modalities and m not in MODALITIES]
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"preprocessing steps for {unknown}, which are not among the modalities "
                              f"{list(self.modalities)}", hint="declare the modality, or drop its step")
        self.steps = {m: given[m] if m in given else default_step(self.modalities.kind(m)) for m in self.modalities}

    @property
    def kinds(self) -> dict[str, str]:
        return self.modalities.kinds

    def fit(self, records: list[PatientRecord]) -> "MultimodalPreprocessor":
        records = list(records)  # a lazy Cohort is built once, not once per modality
        for m in self.modalities:
            values = [r.modality(m) for r in records if not isinstance(r.modality(m), Missing)]
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
            idx = [i for i, r in enumerate(records) if not isinstance(r.modality(m), Missing)]
            if not idx:
                continue
            if self.modalities.kind(m) == "series":
                for i in idx:
                    out[i][m] = step.transform(records[i].modality(m), index_time=records[i].index_time)
            elif hasattr(step, "transform_many"):
                rows = step.transform_many([records[i].modality(m) for i in idx])
                for k, i in enumerate(idx):
                    out[i][m] = rows[k]
            else:
                for i in idx:
                    out[i][m] = step.transform(records[i].modality(m))
        return out

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(self.steps[m].output_shape) for m in self.modalities}

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Modalities, their kinds and each step's state (arrays named ``<modality>/<name>``)."""
        from .state import dump_preprocessor

        steps, arrays = {}, {}
        for m in self.modalities:
            steps[m], a = dump_preprocessor(self.steps[m], prefix=f"{m}/")
            arrays.update(a)
        return {"modalities": list(self.modalities), "kinds": self.modalities.kinds, "steps": steps,
                "fitted": bool(getattr(self, "fitted_", False))}, arrays

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> "MultimodalPreprocessor":
        from .state import load_preprocessor

        names = list(state["modalities"])
        kinds = state.get("kinds")  # states written before modalities had kinds hold the four defaults
        try:
            spec = ModalitySpec({m: kinds[m] for m in names}) if kinds else ModalitySpec.coerce(names)
        except MedmmError as exc:
            raise ValueError(f"bad modalities {names}: {exc}") from exc
        steps = {m: load_preprocessor(state["steps"][m], arrays, prefix=f"{m}/") for m in spec}
        obj = cls(modalities=spec, **steps)
        if state.get("fitted"):
            obj.fitted_ = True
        return obj
