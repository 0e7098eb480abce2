"""The few per-frame values medmm needs from an enhanced multi-frame file, read from bytes.

pydicom builds a full Dataset for every item of every nested sequence of the Per-frame
Functional Groups Sequence (5200,9230): in a Philips enhanced MR of 500 frames that is
some 10^5 elements and over a second of work, most of it for groups medmm never reads
(coils, averages, private per-frame sequences). This walker reads little-endian (explicit
or implicit VR) element headers, descends only into the functional groups that hold
geometry, rescale and volume keys, skips everything else by its length, and returns one
small dict per frame. Anything it does not expect raises :class:`PerFrameParseError`;
the caller then lets pydicom parse the sequence instead.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

__all__ = ["PER_FRAME_TAG", "PerFrameParseError", "read_per_frame"]

PER_FRAME_TAG = 0x52009230
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

#: leaf tag -> (name, parent sequence tag, how to decode)
_LEAVES: dict[int, tuple[str, int, str]] = {
    0x00200032: ("ImagePositionPatient", 0x00209113, "DS"),
    0x00200037: ("ImageOrientationPatient", 0x00209116, "DS"),
    0x00280030: ("PixelSpacing", 0x00289110, "DS"),
    0x00281053: ("RescaleSlope", 0x00289145, "DS"),
    0x00281052: ("RescaleIntercept", 0x00289145, "DS"),
    0x00189082: ("EffectiveEchoTime", 0x00189114, "FD"),
    0x00209128: ("TemporalPositionIndex", 0x00209111, "UL"),
    0x00209056: ("StackID", 0x00209111, "CS"),
    0x00209157: ("DimensionIndexValues", 0x00209111, "UL"),
    0x00189087: ("DiffusionBValue", 0x00189117, "FD"),
    0x00189089: ("DiffusionGradientOrientation", 0x00189076, "FD"),
    0x00209153: ("NominalCardiacTriggerDelayTime", 0x00189118, "FD"),
    0x00089007: ("FrameType", 0x00189226, "CS"),
    0x00089208: ("ComplexImageComponent", 0x00189226, "CS"),
}
#: sequences walked into: the functional groups above (and the gradient inside diffusion)
_WALK = {parent for _, parent, _ in _LEAVES.values()} | {0x00189117}
#: sequences whose implicit-VR encoding must be recognised when their length is defined
_IMPLICIT_SQ = _WALK | {PER_FRAME_TAG}


class PerFrameParseError(ValueError):
    """The bytes are not laid out as this reader expects; let pydicom parse them."""


class _Reader:
    def __init__(self, fh: BinaryIO, implicit: bool) -> None:
        self.fh = fh
        self.implicit = implicit

    def header(self) -> tuple[int, bytes | None, int]:
        raw = self.fh.read(8)
        if len(raw) != 8:
            raise PerFrameParseError("file ends inside the per-frame sequence")
        group, elem = struct.unpack_from("<HH", raw)
        tag = (group << 16) | elem
        if group == 0xFFFE or self.implicit:
            return tag, None, struct.unpack_from("<I", raw, 4)[0]
        vr = raw[4:6]
        if vr in _LONG_VRS:
            more = self.fh.read(4)
            if len(more) != 4:
                raise PerFrameParseError("file ends inside an element header")
            return tag, vr, struct.unpack("<I", more)[0]
        return tag, vr, struct.unpack_from("<H", raw, 6)[0]

    def is_sequence(self, tag: int, vr: bytes | None, length: int) -> bool:
        if vr is not None:
            return vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED)
        return length == _UNDEFINED or tag in _IMPLICIT_SQ

    def sequence(self, length: int, parent: int, out: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Read a sequence's items; ``out`` collects leaves (None: skip, keep nothing)."""
        items: list[dict[str, Any]] = []
        end = None if length == _UNDEFINED else self.fh.tell() + length
        while end is None or self.fh.tell() < end:
            tag, _, ilen = self.header()
            if tag == _SEQ_END:
                break
            if tag != _ITEM:
                raise PerFrameParseError(f"expected an item, found tag {tag:08X}")
            target = out if out is not None else None
            if parent == PER_FRAME_TAG:
                target = {}
                items.append(target)
            self.dataset(ilen, parent, target)
        if end is not None and self.fh.tell() != end:
            raise PerFrameParseError("sequence length does not match its items")
        return items

    def dataset(self, length: int, parent: int, out: dict[str, Any] | None) -> None:
        end = None if length == _UNDEFINED else self.fh.tell() + length
        while end is None or self.fh.tell() < end:
            tag, vr, vlen = self.header()
            if tag == _ITEM_END:
                break
            if self.is_sequence(tag, vr, vlen):
                walk = out is not None and tag in _WALK
                if not walk and vlen != _UNDEFINED:
                    self.fh.seek(vlen, 1)
                else:
                    self.sequence(vlen, tag, out if walk else None)
                continue
            if vlen == _UNDEFINED:
                raise PerFrameParseError(f"undefined length for non-sequence tag {tag:08X}")
            leaf = _LEAVES.get(tag)
            if out is not None and leaf is not None and leaf[1] == parent:
                out[leaf[0]] = _decode(self.fh.read(vlen), leaf[2])
            else:
                self.fh.seek(vlen, 1)
        if end is not None and self.fh.tell() != end:
            raise PerFrameParseError("item length does not match its elements")


def _decode(raw: bytes, kind: str) -> Any:
    if kind == "FD":
        return list(struct.unpack(f"<{len(raw) // 8}d", raw[: len(raw) // 8 * 8]))
    if kind == "UL":
        return list(struct.unpack(f"<{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    text = raw.decode("ascii", "replace").strip(" \x00")
    if kind == "CS":
        parts = [p.strip() for p in text.split("\\")]
        return parts if len(parts) > 1 else parts[0]
    try:
        return [float(p) for p in text.split("\\") if p.strip()]
    except ValueError as exc:
        raise PerFrameParseError(f"bad decimal string {text!r}") from exc


def read_per_frame(fh: BinaryIO, implicit: bool) -> list[dict[str, Any]]:
    """Per-frame values, one dict per item, with ``fh`` at the (5200,9230) element header;
    leaves ``fh`` just after the sequence."""
    reader = _Reader(fh, implicit)
    tag, vr, length = reader.header()
    if tag != PER_FRAME_TAG or not reader.is_sequence(tag, vr, length):
        raise PerFrameParseError("not at the Per-frame Functional Groups Sequence")
    return reader.sequence(length, PER_FRAME_TAG, {})
