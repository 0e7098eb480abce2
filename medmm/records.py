"""Patient records and the modality value types.

A :class:`PatientRecord` holds up to four modalities (``image``, ``notes``, ``vitals``,
``ehr``). Each is either a value (:class:`Image`, :class:`Notes`, :class:`Vitals`,
:class:`Tabular`) or :class:`Missing` with a reason: a missing modality is data, not a
special case.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "MODALITIES",
    "Missing",
    "Image",
    "ImageSource",
    "ImageProxy",
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


@dataclass(frozen=True)
class ImageSource:
    """Where an image's voxels come from: a file or folder, its format and the reader options.

    ``options`` are the reader's keyword arguments as sorted ``(name, value)`` pairs of plain
    values (``series_uid``, ``irregular``, ...), so a source is hashable and pickles small.
    """

    path: str
    format: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, path: Any, format: str | None = None, **options: Any) -> "ImageSource":
        return cls(str(path), format, tuple(sorted((str(k), v) for k, v in options.items() if v is not None)))

    def read(self) -> "Image":
        """Read the whole image (voxels included) with the registered reader."""
        from .io import read_modality

        return read_modality("image", self.path, self.format, **dict(self.options))


class ImageProxy:
    """An array proxy (nibabel's ``dataobj`` idea): reads the voxels of a source on demand.

    ``np.asarray(proxy)`` reads the whole image; ``proxy[i, j, k]`` reads only what is asked
    where the format allows it (NIfTI through nibabel's own proxy), else reads and slices.
    Nothing is kept after a read.
    """

    is_proxy = True

    def __init__(self, source: ImageSource, shape: tuple[int, ...] | None = None, dtype: Any = np.float32,
                 slicer: Any = None) -> None:
        self.source = source
        self._shape = None if shape is None else tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._slicer = slicer  # callable(key) -> ndarray, for formats that read parts

    @property
    def shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = tuple(self.source.read().data.shape)
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._slicer(()) if self._slicer is not None else self.source.read().data
        arr = np.asarray(arr)
        if self._shape is None:
            self._shape = tuple(arr.shape)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._slicer is not None:
            return np.asarray(self._slicer(key))
        return np.asarray(self)[key]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_slicer"] = None  # rebuilt from the source where the format has one
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.source.format == "nifti":
            from .io.nifti import nifti_slicer

            self._slicer = nifti_slicer(self.source.path)

    def __repr__(self) -> str:
        return f"ImageProxy({self.source.path!r}, shape={self._shape}, dtype={self.dtype})"


class Image:
    """An image: voxel data, an affine to RAS+ world millimetres, and header metadata.

    ``data``'s first three axes are voxel axes i, j, k (nibabel's convention); a fourth
    axis holds time, echo or volume when there is one. ``affine`` maps ``(i, j, k, 1)`` to
    RAS+ millimetres.

    An image read from a file keeps its :class:`ImageSource` and may hold no voxels: they are
    read on demand through ``dataobj`` (an :class:`ImageProxy`). ``data`` reads and keeps them
    (nibabel's ``get_fdata(caching="fill")``); :meth:`get_data` with ``caching="unchanged"``
    and :meth:`loaded` read without keeping; :meth:`uncache` drops them. An image with a source
    pickles without voxels, so records travel to worker processes and cluster nodes cheaply.
    Where the format has no cheap header read (DICOM), ``affine`` and ``meta`` are read on
    first use, and kept.
    """

    def __init__(self, data: Any = None, affine: Any = None, meta: dict[str, Any] | None = None, *,
                 source: ImageSource | None = None) -> None:
        if data is None and source is None:
            raise ValueError("an Image needs data or a source")
        self.source = source
        self._data: np.ndarray | None = None
        if data is None:
            self.dataobj: Any = ImageProxy(source)
        elif getattr(data, "is_proxy", False):
            self.dataobj = data
        else:
            self._data = np.asarray(data)
            self.dataobj = self._data
        self._affine: np.ndarray | None = None
        if affine is not None:
            self._affine = np.asarray(affine, dtype=np.float64)
            if self._affine.shape != (4, 4):
                raise ValueError(f"affine must be 4x4, got {self._affine.shape}")
        elif source is None:
            raise ValueError("an Image without a source needs an affine")
        self._meta: dict[str, Any] | None = dict(meta) if meta is not None else ({} if source is None else None)

    # ----------------------------------------------------------------- lazy parts

    def _read_header(self) -> "Image":
        """Read the source (the whole image) to learn the header; keep the header only."""
        full = self.source.read()  # type: ignore[union-attr]
        self._affine = full.affine
        self._meta = dict(full.meta)
        if getattr(self.dataobj, "is_proxy", False) and self.dataobj._shape is None:
            self.dataobj._shape = tuple(full.data.shape)
            self.dataobj.dtype = full.data.dtype
        return full

    @property
    def affine(self) -> np.ndarray:
        if self._affine is None:
            self._read_header()
        return self._affine  # type: ignore[return-value]

    @affine.setter
    def affine(self, value: Any) -> None:
        self._affine = np.asarray(value, dtype=np.float64)

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._read_header()
        return self._meta  # type: ignore[return-value]

    @meta.setter
    def meta(self, value: dict[str, Any]) -> None:
        self._meta = dict(value)

    @property
    def data(self) -> np.ndarray:
        """The voxels (read from the source on first use, then kept)."""
        if self._data is None:
            self._data = self.loaded()._data
            self.dataobj = self._data
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = np.asarray(value)
        self.dataobj = self._data

    @property
    def in_memory(self) -> bool:
        """Whether the voxels are held (``data`` will not read the source)."""
        return self._data is not None

    def get_data(self, *, caching: str = "fill") -> np.ndarray:
        """The voxels; ``caching="unchanged"`` reads them without keeping them."""
        if caching not in ("fill", "unchanged"):
            raise ValueError(f"caching must be 'fill' or 'unchanged', got {caching!r}")
        if self._data is not None or caching == "fill":
            return self.data
        return self.loaded()._data  # type: ignore[return-value]

    def loaded(self) -> "Image":
        """This image with its voxels in memory: ``self`` when they are, else a new eager
        :class:`Image` (the source read once; this one keeps only the header)."""
        if self._data is not None:
            return self
        if self._affine is not None and self._meta is not None and getattr(self.dataobj, "_slicer", None) is not None:
            return Image(np.asarray(self.dataobj), self._affine, self._meta)
        full = self._read_header()
        return Image(full.data, full.affine, full.meta)

    def uncache(self) -> None:
        """Drop the voxels held in memory (an image with a source reads them again on demand)."""
        if self.source is None or self._data is None:
            return
        self.dataobj = ImageProxy(self.source, self._data.shape, self._data.dtype,
                                  slicer=_slicer_for(self.source))
        self._data = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.source is not None and self._data is not None:  # pickle the source, not the pixels
            state["_data"] = None
            state["dataobj"] = ImageProxy(self.source, self._data.shape, self._data.dtype)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------ geometry

    @property
    def shape(self) -> tuple[int, ...]:
        if self._data is not None:
            return tuple(self._data.shape)
        if getattr(self.dataobj, "_shape", 1) is None:
            self._read_header()
        return tuple(self.dataobj.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype if self._data is not None else np.dtype(self.dataobj.dtype)

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
        where = "" if self.source is None else f", source={Path(self.source.path).name!r}"
        if self.source is not None and self._affine is None:
            return f"Image(not read yet{where})"
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        lazy = "" if self.in_memory else ", lazy"
        return f"Image(shape={self.shape}, spacing=({sp}) mm, dtype={self.dtype}{lazy}{where})"


def _slicer_for(source: ImageSource) -> Any:
    if source.format == "nifti":
        from .io.nifti import nifti_slicer

        return nifti_slicer(source.path)
    return None


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
        """A card for notebooks: presence and labels, then each present modality (image
        slices, notes with findings highlighted, latest vitals, EHR values) in a fold."""
        e = html.escape
        rows = "".join(
            f"<tr><td>{m}</td><td style='color:{'#2a8a2a' if p else '#a33'}'>{'&#10003;' if p else '&#10007;'}</td>"
            f"<td style='text-align:left'>{e(repr(getattr(self, m)))}</td></tr>"
            for m, p in self.present.items()
        )
        labels = e(", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in self.labels.items()))
        head = (
            f"<div style='font-family:sans-serif;font-size:13px'><b>PatientRecord {e(self.patient_id)}</b>"
            f" &middot; split={e(str(self.split))} &middot; pattern={e(self.pattern)} &middot; labels: {labels}"
            + (f" &middot; index time {e(str(self.index_time))}" if self.index_time is not None else "")
            + (f"<br><span style='color:#666'>{e(', '.join(f'{k}={v}' for k, v in self.meta.items()))}</span>"
               if self.meta else "")
            + f"<table><tr><th>modality</th><th>present</th><th>value</th></tr>{rows}</table>"
        )
        folds = []
        for m in MODALITIES:
            value = getattr(self, m)
            if isinstance(value, Missing):
                continue
            try:
                body = _modality_html(m, value, self.index_time)
            except Exception as exc:  # a display must never raise
                body = f"<i>cannot display: {e(type(exc).__name__)}: {e(str(exc))}</i>"
            folds.append(f"<details{' open' if m == 'image' else ''}><summary>{m}</summary>{body}</details>")
        return head + "".join(folds) + "</div>"


def _modality_html(modality: str, value: Any, index_time: Any = None) -> str:
    """HTML of one present modality (heavy imports happen only here, for notebooks)."""
    e = html.escape
    if modality == "image":
        from .viz.common import figure_html
        from .viz.image import ImageViewer

        return figure_html(ImageViewer(value).figure(size=2.2), alt="image slices")
    if modality == "notes":
        from .viz.notes import NotesView

        return NotesView(value, max_chars=1500)._repr_html_()
    if modality == "vitals":
        frame = value.frame
        last = frame.sort_values("time").groupby("signal").tail(1)
        cells = "".join(f"<tr><td>{e(str(r.signal))}</td><td>{r.value:g} {e(str(r.unit))}</td><td>{e(str(r.time))}</td></tr>"
                        for r in last.itertuples())
        return (f"<p>{len(frame)} observations of {len(value.signals)} signals, "
                f"{e(str(frame['time'].min()))} to {e(str(frame['time'].max()))}; latest:</p>"
                f"<table><tr><th>signal</th><th>value</th><th>time</th></tr>{cells}</table>"
                "<p style='color:#666'>medmm.viz.plot_vitals(record.vitals) draws them with the NEWS2 bands.</p>")
    if modality == "ehr":
        cells = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td><td>{e(value.units.get(k, ''))}</td></tr>"
                        for k, v in value.values.items())
        return f"<table><tr><th>feature</th><th>value</th><th>unit</th></tr>{cells}</table>"
    return e(repr(value))
