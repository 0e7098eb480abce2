"""The frame and stack of a DICOM series, shared by every step of the reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...problems import Problem

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

POS_TOL = 1e-2  # mm: positions closer than this are the same position
ORIENT_TOL = 1e-3  # direction cosines closer than this are the same orientation


class DicomWarning(UserWarning):
    """A DICOM series was read despite a problem (``irregular='accept'``) or resampled."""


@dataclass
class Frame:
    """One 2D frame: a single-frame file, a frame of a multi-frame file or a mosaic tile."""

    path: Path
    ds: Dataset  # the header, shared by the frames of one file
    frame: int | None  # frame index in a multi-frame file
    rows: int
    cols: int
    #: (6,) LPS row then column direction cosines, (3,) LPS position of the first voxel; without
    #: ``geometry`` (no ImageOrientation/PositionPatient) an axial placeholder at the origin
    iop: np.ndarray
    ipp: np.ndarray
    spacing: tuple[float, float]  # (between rows, between columns) mm
    slope: float = 1.0
    intercept: float = 0.0
    instance: int = 0
    stack_id: str | None = None
    keys: dict[str, Any] = field(default_factory=dict)  # volume keys: echo, temporal, ...
    pixel_offset: int | None = None  # native little-endian fast path
    mosaic: tuple[int, int] | None = None  # (tile index, tiles per side)
    geometry: bool = True

    @property
    def normal(self) -> np.ndarray:
        return slice_normal(self.iop)

    @property
    def uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")


@dataclass
class Stack:
    """Frames that form one image: ``volumes[t][k]`` is slice k of volume t."""

    uid: str
    id: str
    volumes: list[list[Frame]]
    volume_key: str | None = None
    volume_labels: list[Any] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_stacks_in_uid: int = 1

    @property
    def first(self) -> Frame:
        return self.volumes[0][0]

    @property
    def shape(self) -> tuple[int, ...]:
        f = self.first
        shape: tuple[int, ...] = (f.cols, f.rows, len(self.volumes[0]))
        if len(self.volumes) > 1:
            shape += (len(self.volumes),)
        return shape

    @property
    def n_frames(self) -> int:
        return sum(len(v) for v in self.volumes)

    @property
    def kind(self) -> str:
        """``magnitude``, ``phase``, ``real``, ``imaginary``, a derived map, or ``""``."""
        return str(self.first.keys.get("kind", "") or "")


def frame_geometry(iop: np.ndarray | None, ipp: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(iop, ipp, True)`` when ImageOrientationPatient (6 values) and ImagePositionPatient (3) are
    both there; else an axial placeholder at the origin and ``False`` (e.g. XA/US frames, secondary
    captures: the image keeps its pixels and says it has no geometry)."""
    if iop is None or ipp is None or len(iop) != 6 or len(ipp) != 3:
        return np.array([1.0, 0, 0, 0, 1, 0]), np.zeros(3), False
    return iop, ipp, True


def slice_normal(iop: Any) -> np.ndarray:
    """The unit normal (LPS) of a slice with ImageOrientationPatient ``iop``."""
    iop = np.asarray(iop, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


def plane_name(frame: Frame) -> str:
    if not frame.geometry:
        return "projection"
    n = np.abs(frame.normal)
    axis = int(np.argmax(n))
    name = ("sagittal", "coronal", "axial")[axis]
    return name if n[axis] > 0.999 else f"oblique~{name}"
