"""Frames of an enhanced multi-frame file, from its shared and per-frame functional groups."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import DicomError
from .frame import Frame, frame_geometry
from .values import float_list, first_item, num, pixel_spacing
from .vendor import image_kind

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: (functional group sequence, nested sequence or None, attribute) of each per-frame value
_FRAME_VALUES = {
    "ImageOrientationPatient": ("PlaneOrientationSequence", None),
    "ImagePositionPatient": ("PlanePositionSequence", None),
    "PixelSpacing": ("PixelMeasuresSequence", None),
    "RescaleSlope": ("PixelValueTransformationSequence", None),
    "RescaleIntercept": ("PixelValueTransformationSequence", None),
    "EffectiveEchoTime": ("MREchoSequence", None),
    "TemporalPositionIndex": ("FrameContentSequence", None),
    "StackID": ("FrameContentSequence", None),
    "DimensionIndexValues": ("FrameContentSequence", None),
    "DiffusionBValue": ("MRDiffusionSequence", None),
    "DiffusionGradientOrientation": ("MRDiffusionSequence", "DiffusionGradientDirectionSequence"),
    "NominalCardiacTriggerDelayTime": ("CardiacSynchronizationSequence", None),
    "FrameType": ("MRImageFrameTypeSequence", None),
    "ComplexImageComponent": ("MRImageFrameTypeSequence", None),
}


def _frame_values(group: Dataset | None) -> dict[str, Any]:
    """The values of :data:`_FRAME_VALUES` in one functional-groups item (pydicom), in the
    plain form :func:`medmm.io.dicom.perframe.read_per_frame` gives them."""
    out: dict[str, Any] = {}
    if group is None:
        return out
    for name, (seq, inner) in _FRAME_VALUES.items():
        item = first_item(group, seq)
        if item is not None and inner is not None:
            item = first_item(item, inner)
        if item is None or name not in item:
            continue
        value = item[name].value
        if value is None or value == "":
            continue
        if isinstance(value, (str, bytes)):
            out[name] = str(value)
        elif isinstance(value, Iterable):
            out[name] = [v if isinstance(v, str) else float(v) for v in value]
        else:
            out[name] = [float(value)]
    return out


def _first(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, list):
        return float(value[0]) if value else None
    return num(value, None)


def enhanced_frames(
    path: Path, ds: Dataset, offset: int | None, rows: int, cols: int, n_frames: int, instance: int
) -> list[Frame]:
    fast = getattr(ds, "_medmm_per_frame", None)
    per_frame = fast if fast is not None else ds.PerFrameFunctionalGroupsSequence
    shared = _frame_values(first_item(ds, "SharedFunctionalGroupsSequence"))
    if len(per_frame) < n_frames:
        raise DicomError(
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {n_frames} frames",
            path=path,
            column="PerFrameFunctionalGroupsSequence",
            hint="the enhanced multi-frame header is damaged; re-export the series",
        )
    top_slope = num(ds.get("RescaleSlope"), 1.0)
    top_intercept = num(ds.get("RescaleIntercept"), 0.0)
    fallback_spacing = pixel_spacing(ds)[0]
    frames = []
    for f in range(n_frames):
        v = {**shared, **(fast[f] if fast is not None else _frame_values(per_frame[f]))}
        iop, ipp, geometry = frame_geometry(float_list(v.get("ImageOrientationPatient")),
                                            float_list(v.get("ImagePositionPatient")))
        sp = float_list(v.get("PixelSpacing"))
        slope = _first(v.get("RescaleSlope"))
        intercept = _first(v.get("RescaleIntercept"))
        keys: dict[str, Any] = {}
        if not geometry:  # e.g. enhanced XA/US: frames in time at one (unknown) place
            keys["frame"] = f
        echo = _first(v.get("EffectiveEchoTime"))
        if echo is not None:
            keys["echo"] = echo
        temporal = _first(v.get("TemporalPositionIndex"))
        if temporal is not None:
            keys["temporal"] = int(temporal)
        div = v.get("DimensionIndexValues")
        if div is not None:
            keys["dimension"] = tuple(int(x) for x in (div if isinstance(div, list) else [div]))
        b = _first(v.get("DiffusionBValue"))
        if b is not None:
            g = float_list(v.get("DiffusionGradientOrientation"))
            g = np.zeros(3) if g is None or len(g) != 3 or b <= 0 else g / max(float(np.linalg.norm(g)), 1e-12)
            keys["diffusion"] = (round(b, 3), *(round(float(x), 5) + 0.0 for x in g))
        keys["kind"] = image_kind(ds, v.get("FrameType"), v.get("ComplexImageComponent"))
        trig = _first(v.get("NominalCardiacTriggerDelayTime"))
        if trig is not None:
            keys["trigger"] = trig
        stack_id = v.get("StackID")
        frames.append(
            Frame(
                path=path, ds=ds, frame=f, rows=rows, cols=cols, iop=iop, ipp=ipp,
                spacing=(float(sp[0]), float(sp[1])) if sp is not None and len(sp) == 2 else fallback_spacing,
                slope=float(top_slope if slope is None else slope),
                intercept=float(top_intercept if intercept is None else intercept),
                instance=instance, stack_id=None if stack_id is None else str(stack_id), keys=keys,
                pixel_offset=offset, geometry=geometry,
            )
        )
    return frames
