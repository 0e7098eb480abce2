"""Patient records and the modality value types.

A :class:`PatientRecord` holds up to four modalities (``image``, ``notes``, ``vitals``,
``ehr``). Each is either a value (:class:`Image`, :class:`Notes`, :class:`Vitals`,
:class:`Tabular`) or :class:`Missing` with a reason: a missing modality is data, not a
special case.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "MODALITIES",
    "Missing",
    "Image",
    "Note",
    "Notes",
    "Vitals",
    "Tabular",
    "PatientRecord",
]

MODALITIES: tuple[str, ...] = ("image", "notes", "vitals", "ehr")

#: Reasons a modality can be missing.
MISSING_REASONS = (
    "not_acquired",  # the manifest names no file for it
    "read_error",  # a file was named but could not be read (see the cohort's problem report)
    "masked",  # removed on purpose (modality dropout, robustness evaluation)
    "empty",  # the file was read but held nothing usable
)


@dataclass(frozen=True)
class Missing:
    """A modality that is absent, and why."""

    reason: str = "not_acquired"
    detail: str = ""

    def __bool__(self) -> bool:  # `if record.image:` reads naturally
        return False

    def __repr__(self) -> str:
        return f"Missing({self.reason!r}{', ' + repr(self.detail) if self.detail else ''})"


@dataclass
class Image:
    """An image: voxel data, an affine to RAS+ world millimetres, and header metadata.

    ``data``'s first three axes are voxel axes i, j, k (nibabel's convention); a fourth
    axis holds time, echo or volume when there is one. ``affine`` maps ``(i, j, k, 1)`` to
    RAS+ millimetres.
    """

    data: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Closest axis codes, e.g. ``'RAS'`` or ``'LPS'``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def world_coordinates(self, ijk: np.ndarray) -> np.ndarray:
        """World (RAS+ mm) coordinates of voxel indices ``ijk`` (shape ``[N, 3]``)."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        return f"Image(shape={self.shape}, spacing=({sp}) mm, dtype={self.data.dtype})"


@dataclass
class Note:
    """One clinical note."""

    text: str
    time: "pd.Timestamp | None" = None
    note_type: str = "note"


@dataclass
class Notes:
    """The clinical notes of one patient, oldest first."""

    notes: list[Note]

    @property
    def text(self) -> str:
        """All notes joined, oldest first."""
        return "\n\n".join(n.text for n in self.notes)

    def __len__(self) -> int:
        return len(self.notes)

    def __repr__(self) -> str:
        return f"Notes(n={len(self.notes)}, chars={sum(len(n.text) for n in self.notes)})"


@dataclass
class Vitals:
    """An irregular multichannel vital-sign series in long layout.

    ``frame`` has columns ``time`` (datetime64), ``signal`` (str), ``value`` (float) and
    ``unit`` (str), one row per observation, sorted by time.
    """

    frame: "pd.DataFrame"

    @property
    def signals(self) -> list[str]:
        return sorted(self.frame["signal"].unique().tolist())

    @property
    def units(self) -> dict[str, str]:
        first = self.frame.drop_duplicates("signal")
        return dict(zip(first["signal"], first["unit"]))

    def channel(self, signal: str) -> "pd.Series":
        """The observations of one signal as a time-indexed series."""
        rows = self.frame[self.frame["signal"] == signal]
        return rows.set_index("time")["value"]

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"Vitals(observations={len(self.frame)}, signals={self.signals})"


@dataclass
class Tabular:
    """One row of typed tabular EHR features, with units where known."""

    values: dict[str, Any]
    units: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Tabular({len(self.values)} features)"


ModalityValue = Union[Image, Notes, Vitals, Tabular, Missing]


@dataclass
class PatientRecord:
    """Everything medmm knows of one patient."""

    patient_id: str
    image: ModalityValue = field(default_factory=Missing)
    notes: ModalityValue = field(default_factory=Missing)
    vitals: ModalityValue = field(default_factory=Missing)
    ehr: ModalityValue = field(default_factory=Missing)
    labels: dict[str, float | None] = field(default_factory=dict)
    split: str | None = None
    index_time: "pd.Timestamp | None" = None
    meta: dict[str, Any] = field(default_factory=dict)

    def modality(self, name: str) -> ModalityValue:
        if name not in MODALITIES:
            raise KeyError(f"unknown modality {name!r}; expected one of {MODALITIES}")
        return getattr(self, name)

    @property
    def present(self) -> dict[str, bool]:
        """Which modalities are present."""
        return {m: not isinstance(getattr(self, m), Missing) for m in MODALITIES}

    @property
    def pattern(self) -> str:
        """Presence pattern as a string such as ``'image+notes'`` (``'none'`` if empty)."""
        names = [m for m, p in self.present.items() if p]
        return "+".join(names) if names else "none"

    def masked(self, *modalities: str, reason: str = "masked") -> "PatientRecord":
        """A copy with the given modalities replaced by :class:`Missing`."""
        from dataclasses import replace

        return replace(self, **{m: Missing(reason) for m in modalities})

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}={getattr(self, m)!r}" for m in MODALITIES)
        return f"PatientRecord({self.patient_id!r}, {mods}, labels={self.labels})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{m}</td><td>{'&#10003;' if p else '&#10007;'}</td>"
            f"<td>{html.escape(repr(getattr(self, m)))}</td></tr>"
            for m, p in self.present.items()
        )
        labels = html.escape(", ".join(f"{k}={v}" for k, v in self.labels.items()))
        return (
            f"<div><b>PatientRecord {html.escape(self.patient_id)}</b>"
            f" &middot; split={html.escape(str(self.split))} &middot; labels: {labels}"
            f"<table><tr><th>modality</th><th>present</th><th>value</th></tr>{rows}</table></div>"
        )
