"""Vendor header fields: private tags (GE, Siemens, Philips, Canon), image kind and diffusion."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .frame import slice_normal
from .values import functional_group, float_list, first_item, num

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# ----------------------------------------------------------------- vendor header fields


def _private(ds: Dataset, group: int, creator: str, element: int) -> Any:
    """The value of private element ``element`` (low byte) of ``creator``'s block, or None."""
    try:
        return ds.private_block(group, creator)[element].value
    except (KeyError, ValueError, AttributeError):
        return None


def _private_numbers(value: Any, binary: str | None = None) -> list[float] | None:
    """Numbers of a private value: as parsed, or from raw bytes (implicit VR: VR ``UN``)
    decoded as text (IS/DS) or, with ``binary`` (a numpy dtype), as binary FL/FD."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        if binary is not None and len(value) % np.dtype(binary).itemsize == 0:
            return [float(v) for v in np.frombuffer(bytes(value), dtype=binary)]
        try:
            value = bytes(value).decode("ascii").strip(" \x00").split("\\")
        except UnicodeDecodeError:
            return None
    if isinstance(value, (str, int, float)):
        value = [value]
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


_GE_IMAGE_TYPES = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}
_DERIVED_TYPES = ("ADC", "EADC", "TRACEW", "ISOTROPIC", "FA", "EXP")


def image_kind(ds: Dataset, frame_type: Any = None, component: Any = None) -> str:
    """``magnitude``, ``phase``, ``real``, ``imaginary``, a derived map (``adc``, ``tracew``,
    ...) or ``""`` when the header does not say: dcm2niix's ImageType reading plus GE's
    private image type (0043,102F) and enhanced MR's ComplexImageComponent."""
    if component:
        c = str(component).upper()
        if c in ("MAGNITUDE", "PHASE", "REAL", "IMAGINARY"):
            return c.lower()
    tokens = {str(v).upper() for v in (frame_type or ds.get("ImageType") or [])}
    for derived in _DERIVED_TYPES:
        if derived in tokens:
            return derived.lower()
    if str(ds.get("Manufacturer", "") or "").upper().startswith("GE"):
        ge = _private_numbers(_private(ds, 0x0043, "GEMS_PARM_01", 0x2F), "<i2")
        if ge:
            return _GE_IMAGE_TYPES.get(int(ge[0]), "")
    for kind, names in (("phase", ("P", "PHASE")), ("real", ("R", "REAL")), ("imaginary", ("I", "IMAGINARY")),
                        ("magnitude", ("M", "MAGNITUDE"))):
        if tokens.intersection(names):
            return kind
    return ""


def diffusion_key(ds: Dataset, iop: np.ndarray | None) -> tuple[float, float, float, float] | None:
    """``(b, gx, gy, gz)`` with the gradient direction a unit vector in patient LPS (zero
    when there is none, e.g. b = 0), or None when the header holds no b-value.

    Read from the standard fields, or where vendors put them in classic MR files: GE
    (0043,1039) and (0019,10BB-BD), Canon (0018,9089) (both in the image's logical
    frame, as dcm2niix reads them), Siemens
    (0019,100C/100E) or its CSA image header, Philips (2001,1003) and (2005,10B0-B2).
    """
    b = num(ds.get("DiffusionBValue"), None)
    g = float_list(ds.get("DiffusionGradientOrientation"))
    seq = first_item(ds, "MRDiffusionSequence")
    if seq is not None:
        b = num(seq.get("DiffusionBValue"), b)
        if g is None:
            g = float_list(functional_group(seq, None, "DiffusionGradientDirectionSequence", "DiffusionGradientOrientation"))
    maker = str(ds.get("Manufacturer", "") or "").upper()
    if maker.startswith("GE"):
        if b is None:
            v = _private_numbers(_private(ds, 0x0043, "GEMS_PARM_01", 0x39))
            b = float(v[0]) % 1e9 if v else None
        if g is None and iop is not None and len(iop) == 6:
            comps = [_private_numbers(_private(ds, 0x0019, "GEMS_ACQU_01", e)) for e in (0xBB, 0xBC, 0xBD)]
            if all(comps):
                g = _logical_to_lps([c[0] for c in comps], iop, ds)  # type: ignore[index]
    elif maker.startswith(("CANON", "TOSHIBA")):
        if g is not None and iop is not None and len(iop) == 6:
            g = _logical_to_lps(g, iop, ds)
    elif maker.startswith("SIEMENS"):
        if b is None:
            v = _private_numbers(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0C))
            b = v[0] if v else None
        if g is None:
            v = _private_numbers(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0E), "<f8")
            g = np.asarray(v) if v and len(v) == 3 else None
        if b is None or g is None and b:
            b, g = _csa_diffusion(ds, b, g)
    elif maker.startswith("PHILIPS"):
        if b is None:
            v = _private_numbers(_private(ds, 0x2001, "Philips Imaging DD 001", 0x03), "<f4")
            b = v[0] if v else None
        if g is None:
            comps = [_private_numbers(_private(ds, 0x2005, "Philips MR Imaging DD 001", e), "<f4")
                     for e in (0xB0, 0xB1, 0xB2)]
            g = np.array([c[0] for c in comps]) if all(comps) else None  # type: ignore[index]
    if b is None:
        return None
    g = np.zeros(3) if g is None or len(g) != 3 else np.asarray(g, dtype=np.float64)
    norm = float(np.linalg.norm(g))
    g = g / norm if norm > 1e-6 and b > 0 else np.zeros(3)
    return (round(float(b), 3), *(round(float(x), 5) + 0.0 for x in g))  # type: ignore[return-value]


def _logical_to_lps(g: Any, iop: np.ndarray, ds: Dataset) -> np.ndarray:
    """A GE or Canon gradient direction, given along the (frequency, phase, slice) axes of
    the image, in patient LPS: dcm2niix's ``geCorrectBvecs`` (phase encoding along rows
    swaps the in-plane axes; coronal slices reverse the phase axis; the slice axis is
    reversed)."""
    g0, g1, g2 = (float(v) for v in g)
    normal = slice_normal(iop)
    if int(np.argmax(np.abs(normal))) == 1:
        g1 = -g1
    rot = np.stack([iop[:3], iop[3:], normal], axis=1)
    rows = str(ds.get("InPlanePhaseEncodingDirection", "") or "").upper() == "ROW"
    return rot @ (np.array([g1, -g0, -g2]) if rows else np.array([g0, g1, -g2]))


def _csa_diffusion(ds: Dataset, b: float | None, g: Any) -> tuple[float | None, Any]:
    try:
        with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
            warnings.simplefilter("ignore")
            from nibabel.nicom import csareader

        csa = csareader.get_csa_header(ds, "image")
    except Exception:
        return b, g
    if not csa:
        return b, g
    if b is None:
        b = csareader.get_b_value(csa)
    if g is None:
        try:
            g = csareader.get_g_vector(csa)
        except Exception:
            g = None
    return (None if b is None else float(b)), g
