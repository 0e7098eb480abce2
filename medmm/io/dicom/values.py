"""Header values as plain numbers: the small parsers every header step uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def float_list(value: Any) -> np.ndarray | None:
    if value is None or value == "":
        return None
    try:
        return np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None


@overload
def num(value: Any, default: float) -> float: ...
@overload
def num(value: Any, default: None = None) -> float | None: ...
def num(value: Any, default: float | None = None) -> float | None:
    if value is None or value == "":
        return default
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return default


def first_item(ds: Dataset | None, seq: str) -> Dataset | None:
    s = ds.get(seq) if ds is not None else None
    return s[0] if s else None


def functional_group(per_frame: Dataset | None, shared: Dataset | None, seq: str, attr: str) -> Any:
    for groups in (per_frame, shared):
        item = first_item(groups, seq)
        if item is not None and attr in item:
            return item[attr].value
    return None


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float], bool]:
    for tag in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        sp = float_list(ds.get(tag))
        if sp is not None and len(sp) == 2 and np.all(sp > 0):
            return (float(sp[0]), float(sp[1])), True
    return (1.0, 1.0), False


def plain_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__name__ == "MultiValue" or isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
