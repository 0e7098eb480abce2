"""Patient records and the modality value types.

A modality is a name and a kind (:class:`ModalitySpec`): ``image`` (:class:`Image`), ``text``
(:class:`Notes`), ``series`` (an irregular time series, :class:`Vitals`) or ``table``
(:class:`Tabular`). The four default names are ``image``, ``notes``, ``vitals`` and ``ehr``; a
cohort may declare more (two image series, a labs table, ...). A :class:`PatientRecord` holds one
value per modality, or :class:`Missing` with a reason: a missing modality is data, not a special
case.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "MODALITIES",
    "KINDS",
    "DEFAULT_KINDS",
    "ModalitySpec",
    "subset_name",
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

#: the default modality names (a cohort may declare others, see :class:`ModalitySpec`)
MODALITIES: tuple[str, ...] = ("image", "notes", "vitals", "ehr")

#: what a modality can be: a volume, clinical text, an irregular time series, a row of a table
KINDS: tuple[str, ...] = ("image", "text", "series", "table")

#: the kind of each default modality
DEFAULT_KINDS: dict[str, str] = {"image": "image", "notes": "text", "vitals": "series", "ehr": "table"}

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: names a modality cannot take: record attributes and manifest columns
RESERVED_NAMES = frozenset({"patient", "patient_id", "label", "labels", "split", "index", "index_time", "meta",
                            "modalities", "present", "pattern", "masked", "modality", "site", "sex", "none",
                            "kinds", "all"})


class ModalitySpec(tuple):
    """The modalities of a cohort or a model: a tuple of names that knows each name's kind.

    ``ModalitySpec()`` is the four defaults; ``ModalitySpec({"ct": "image", "pet": "image",
    "labs": "table"})`` declares others. It is the tuple of names it replaces (``m in spec``,
    ``spec.index(m)``, ``"+".join(spec)``, equal to ``("ct", "pet", "labs")``) and gives each
    name's kind (:meth:`kind`, :attr:`kinds`, :meth:`of_kind`).
    """

    _kinds: dict[str, str]

    def __new__(cls, kinds: "Mapping[str, Any] | Iterable[str] | None" = None) -> "ModalitySpec":
        if kinds is None:
            kinds = DEFAULT_KINDS
        if isinstance(kinds, ModalitySpec):
            items = list(kinds.kinds.items())
        elif isinstance(kinds, Mapping):
            items = [(str(k), _kind_value(k, v)) for k, v in kinds.items()]
        else:
            items = []
            for name in kinds:
                name = str(name)
                if name not in DEFAULT_KINDS:
                    from .errors import ConfigError

                    raise ConfigError(f"modality {name!r} has no declared kind",
                                      hint=f"declare it with its kind, e.g. {{{name!r}: 'image'}} (kinds: {KINDS}) in "
                                           "the experiment config's `modalities:` section or <manifest>.modalities.yaml; "
                                           f"only the defaults {MODALITIES} need no declaration")
                items.append((name, DEFAULT_KINDS[name]))
        out: dict[str, str] = {}
        for name, kind in items:
            out[check_modality_name(name)] = kind
        obj = super().__new__(cls, tuple(out))
        obj._kinds = out
        return obj

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (dict(self._kinds),)

    @classmethod
    def coerce(cls, value: Any, kinds: "Mapping[str, str] | None" = None) -> "ModalitySpec":
        """A spec from a spec, a mapping ``name -> kind``, names (their kinds taken from ``kinds``,
        then the defaults) or ``None`` (the defaults)."""
        if isinstance(value, ModalitySpec):
            return value
        if value is None:
            return cls(kinds) if kinds else cls()
        if isinstance(value, Mapping):
            return cls(value)
        known = {**DEFAULT_KINDS, **dict(kinds or {})}
        names = [str(v) for v in value]
        return cls({n: known[n] for n in names}) if all(n in known for n in names) else cls(names)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, ModalitySpec):
            return list(self._kinds.items()) == list(other._kinds.items())
        return tuple.__eq__(self, other)

    def __ne__(self, other: Any) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return tuple.__hash__(self)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self)

    @property
    def kinds(self) -> dict[str, str]:
        """``{name: kind}``, in order."""
        return dict(self._kinds)

    def kind(self, name: str) -> str:
        """The kind of ``name``; a :class:`~medmm.errors.ConfigError` naming how to declare it."""
        try:
            return self._kinds[name]
        except KeyError:
            from .errors import ConfigError

            raise ConfigError(f"unknown modality {name!r}; declared: {list(self._kinds)}",
                              hint=f"declare it with its kind (one of {KINDS}) in the experiment config's "
                                   "`modalities:` section or the manifest's sidecar <manifest>.modalities.yaml") from None

    def of_kind(self, kind: str) -> tuple[str, ...]:
        """The names of one kind, in order."""
        return tuple(n for n, k in self._kinds.items() if k == kind)

    def subset(self, names: Iterable[str]) -> "ModalitySpec":
        """The named modalities (in the order given), each with its kind."""
        return ModalitySpec({n: self.kind(n) for n in names})

    def merged(self, other: "Mapping[str, Any] | ModalitySpec") -> "ModalitySpec":
        """This spec with ``other``'s declarations added (a name already here takes ``other``'s kind)."""
        out = dict(self._kinds)
        out.update(ModalitySpec.coerce(other)._kinds)
        return ModalitySpec(out)

    @property
    def is_default(self) -> bool:
        """Whether every name is a default one with its default kind."""
        return all(DEFAULT_KINDS.get(n) == k for n, k in self._kinds.items())

    def __repr__(self) -> str:
        return "ModalitySpec(" + ", ".join(f"{n}={k}" for n, k in self._kinds.items()) + ")"


def _kind_value(name: Any, value: Any) -> str:
    kind = value.get("kind") if isinstance(value, Mapping) else value
    if kind not in KINDS:
        from .errors import ConfigError

        raise ConfigError(f"modality {name!r} has kind {kind!r}, which is not a modality kind",
                          hint=f"use one of {KINDS}")
    return str(kind)


def check_modality_name(name: str) -> str:
    """``name`` when it can name a modality (lower-case letters, digits, ``_``; not reserved)."""
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES or name.endswith(("_path", "_format")):
        from .errors import ConfigError

        raise ConfigError(f"{name!r} cannot name a modality",
                          hint="use lower-case letters, digits and '_' (starting with a letter, at most 32), not one "
                               f"of {sorted(RESERVED_NAMES)}; its manifest column is then <name>_path")
    return name


def subset_name(mods: Iterable[str]) -> str:
    """Canonical name of a set of modalities, e.g. ``'image+vitals'`` (``'none'`` if empty): the
    default names in their order, then any others alphabetically. Presence patterns, masked
    subsets and oracle subsets are all named by it, so they match whatever order they came in."""
    mods = set(mods)
    names = [m for m in MODALITIES if m in mods] + sorted(m for m in mods if m not in DEFAULT_KINDS)
    return "+".join(names) if names else "none"

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
        """The voxel shape: from the headers where the format allows it (DICOM: the stack's
        slice headers, no pixel read), else from one read whose header is then kept
        (:attr:`header`), so the image's ``affine`` and ``meta`` do not read it again."""
        if self._shape is None:
            self._shape = _header_shape(self.source)
        if self._shape is None:
            full = self.source.read()
            self._shape, self.dtype = tuple(full.data.shape), full.data.dtype
            self.header = (full.affine, dict(full.meta))
        return self._shape

    #: ``(affine, meta)`` learned by a read made for :attr:`shape`, until the image takes it
    header: tuple[np.ndarray, dict[str, Any]] | None = None

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
        self._slicer = _slicer_for(self.source)

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
            assert source is not None  # checked above
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

    def _read_header(self) -> "Image | None":
        """Read the source (the whole image) to learn the header; keep the header only.
        ``None`` when the proxy already read it (for its shape): nothing is read again."""
        known = getattr(self.dataobj, "header", None)
        if known is not None:
            self._affine, self._meta = known
            self.dataobj.header = None
            return None
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
            data = self.loaded().data
            self._data = data
            self.dataobj = data
            return data
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
        full = None if self._affine is not None and self._meta is not None else self._read_header()
        if full is None:  # the header is known: read the voxels only
            full = self.source.read()  # type: ignore[union-attr]
        return Image(full.data, self.affine, self.meta)

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

    # ------------------------------------------------------------------ geometry

    @property
    def shape(self) -> tuple[int, ...]:
        if self._data is not None:
            return tuple(self._data.shape)
        shape = tuple(self.dataobj.shape)  # from headers where the format allows it
        if getattr(self.dataobj, "header", None) is not None:
            self._read_header()  # the proxy read the image for it: keep its header, read nothing more
        return shape

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


def _header_shape(source: ImageSource) -> tuple[int, ...] | None:
    """The shape the reader will return, from headers only, where that is certain: a DICOM
    series of one regular stack (one or several volumes) read without resampling. ``None``
    otherwise (the caller reads the image)."""
    if source.format != "dicom":
        return None
    opts = dict(source.options)
    if opts.get("irregular", "error") == "resample":
        return None
    from .errors import MedmmError
    from .io.dicom import list_series

    try:
        stacks = list_series(source.path)
    except MedmmError:
        return None  # the read reports it
    uid = opts.get("series_uid")
    chosen = [s for s in stacks if uid is None or uid in (s.id, s.uid)]
    if len(chosen) != 1 or len(chosen[0].volumes[0]) < 2 or chosen[0].problems:
        return None  # several stacks, a projection image or a geometry problem: the reader decides
    shape = chosen[0].shape
    return shape[:3] if opts.get("volume") is not None else shape


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

_KIND_OF_TYPE = ((Image, "image"), (Notes, "text"), (Vitals, "series"), (Tabular, "table"))


def spec_of_records(records: Iterable["PatientRecord"]) -> ModalitySpec:
    """The :class:`ModalitySpec` of records in memory: their modality names in order, each kind
    from the default names or from the values held (an :class:`Image` is an image, ...)."""
    kinds: dict[str, str | None] = {}
    for r in records:
        for m, v in r.modalities.items():
            if kinds.get(m) is None:
                kinds[m] = DEFAULT_KINDS.get(m) or next((k for t, k in _KIND_OF_TYPE if isinstance(v, t)), None)
    unknown = [m for m, k in kinds.items() if k is None]
    if unknown:
        from .errors import ConfigError

        raise ConfigError(f"cannot tell the kind of modalities {unknown}: no record holds a value of them",
                          hint="pass the modalities with their kinds (a ModalitySpec)")
    return ModalitySpec(kinds) if kinds else ModalitySpec()


_UNSET: Any = object()


@dataclass(init=False, repr=False)
class PatientRecord:
    """Everything medmm knows of one patient.

    ``modalities`` maps each of the record's modality names to its value or :class:`Missing`;
    each is also an attribute (``record.image``, ``record.ct``). A record holds the four default
    modalities unless built with others (``PatientRecord("P1", modalities={"ct": img})``); a
    default name it does not hold reads as ``Missing()``.
    """

    patient_id: str
    labels: dict[str, float | None]
    split: str | None
    index_time: "pd.Timestamp | None"
    meta: dict[str, Any]
    modalities: dict[str, ModalityValue]

    def __init__(self, patient_id: str, image: ModalityValue = _UNSET, notes: ModalityValue = _UNSET,
                 vitals: ModalityValue = _UNSET, ehr: ModalityValue = _UNSET,
                 labels: dict[str, float | None] | None = None, split: str | None = None,
                 index_time: "pd.Timestamp | None" = None, meta: dict[str, Any] | None = None,
                 modalities: "Mapping[str, ModalityValue] | None" = None, **others: ModalityValue) -> None:
        object.__setattr__(self, "patient_id", patient_id)
        object.__setattr__(self, "labels", {} if labels is None else labels)
        object.__setattr__(self, "split", split)
        object.__setattr__(self, "index_time", index_time)
        object.__setattr__(self, "meta", {} if meta is None else meta)
        mods: dict[str, ModalityValue] = ({m: Missing() for m in MODALITIES} if modalities is None
                                          else dict(modalities))
        for name, value in (("image", image), ("notes", notes), ("vitals", vitals), ("ehr", ehr), *others.items()):
            if value is not _UNSET:
                mods[check_modality_name(name)] = value
        object.__setattr__(self, "modalities", mods)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "modalities":
            raise AttributeError(name)
        mods = self.__dict__.get("modalities")
        if mods is not None and name in mods:
            return mods[name]
        if name in DEFAULT_KINDS:
            return Missing()
        raise AttributeError(f"{type(self).__name__} has no modality or attribute {name!r}"
                             + (f"; its modalities: {list(mods)}" if mods is not None else ""))

    def __setattr__(self, name: str, value: Any) -> None:
        mods = self.__dict__.get("modalities")
        if mods is not None and (name in mods or name in DEFAULT_KINDS):
            mods[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def modality(self, name: str) -> ModalityValue:
        if name not in self.modalities:
            if name in DEFAULT_KINDS:
                return Missing()
            raise KeyError(f"unknown modality {name!r}; this record has {list(self.modalities)}")
        return self.modalities[name]

    @property
    def present(self) -> dict[str, bool]:
        """Which modalities are present."""
        return {m: not isinstance(v, Missing) for m, v in self.modalities.items()}

    @property
    def pattern(self) -> str:
        """Presence pattern as a string such as ``'image+notes'`` (``'none'`` if empty; see
        :func:`subset_name`)."""
        return subset_name(m for m, p in self.present.items() if p)

    def masked(self, *modalities: str, reason: str = "masked") -> "PatientRecord":
        """A copy with the given modalities replaced by :class:`Missing`."""
        mods = dict(self.modalities)
        for m in modalities:
            mods[m] = Missing(reason)
        return PatientRecord(self.patient_id, labels=self.labels, split=self.split, index_time=self.index_time,
                             meta=self.meta, modalities=mods)

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}={v!r}" for m, v in self.modalities.items())
        return f"PatientRecord({self.patient_id!r}, {mods}, labels={self.labels})"

    def _repr_html_(self) -> str:
        """A card for notebooks: presence and labels, then each present modality (image
        slices, notes with findings highlighted, latest vitals, EHR values) in a fold."""
        e = html.escape
        rows = "".join(
            f"<tr><td>{m}</td><td style='color:{'#2a8a2a' if p else '#a33'}'>{'&#10003;' if p else '&#10007;'}</td>"
            f"<td style='text-align:left'>{e(repr(self.modalities[m]))}</td></tr>"
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
        for m, value in self.modalities.items():
            if isinstance(value, Missing):
                continue
            try:
                body = _modality_html(m, value, self.index_time)
            except Exception as exc:  # a display must never raise
                body = f"<i>cannot display: {e(type(exc).__name__)}: {e(str(exc))}</i>"
            folds.append(f"<details{' open' if isinstance(value, Image) else ''}><summary>{m}</summary>{body}</details>")
        return head + "".join(folds) + "</div>"


def _modality_html(modality: str, value: Any, index_time: Any = None) -> str:
    """HTML of one present modality (heavy imports happen only here, for notebooks)."""
    e = html.escape
    if isinstance(value, Image):
        from .viz.common import figure_html
        from .viz.image import ImageViewer

        return figure_html(ImageViewer(value).figure(size=2.2), alt="image slices")
    if isinstance(value, Notes):
        from .viz.notes import NotesView

        return NotesView(value, max_chars=1500)._repr_html_()
    if isinstance(value, Vitals):
        frame = value.frame
        last = frame.sort_values("time").groupby("signal").tail(1)
        cells = "".join(f"<tr><td>{e(str(r.signal))}</td><td>{r.value:g} {e(str(r.unit))}</td><td>{e(str(r.time))}</td></tr>"
                        for r in last.itertuples())
        return (f"<p>{len(frame)} observations of {len(value.signals)} signals, "
                f"{e(str(frame['time'].min()))} to {e(str(frame['time'].max()))}; latest:</p>"
                f"<table><tr><th>signal</th><th>value</th><th>time</th></tr>{cells}</table>"
                "<p style='color:#666'>medmm.viz.plot_vitals(record.vitals) draws them with the NEWS2 bands.</p>")
    if isinstance(value, Tabular):
        cells = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td><td>{e(value.units.get(k, ''))}</td></tr>"
                        for k, v in value.values.items())
        return f"<table><tr><th>feature</th><th>value</th><th>unit</th></tr>{cells}</table>"
    return e(repr(value))
