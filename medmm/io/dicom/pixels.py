"""Step 3, pixels: stored values into a float32 volume (native fast path, pydicom decoding)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import DicomError
from .frame import Frame
from .values import num

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# ------------------------------------------------------------------------------ pixels


def _fix_bits(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    if arr.dtype.kind not in "iu":
        return arr
    alloc = arr.dtype.itemsize * 8
    stored = int(num(ds.get("BitsStored"), alloc) or alloc)
    if stored >= alloc:
        return arr
    signed = int(num(ds.get("PixelRepresentation"), 0) or 0) == 1
    if signed:
        if arr.dtype.kind == "u":
            arr = arr.view(arr.dtype.str.replace("u", "i"))
        shift = alloc - stored
        return (arr << shift) >> shift
    if arr.dtype.kind == "i":
        arr = arr.view(arr.dtype.str.replace("i", "u"))
    return arr & np.array((1 << stored) - 1, dtype=arr.dtype)


def _invert_monochrome1(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    alloc = arr.dtype.itemsize * 8
    stored = int(num(ds.get("BitsStored"), alloc) or alloc)
    if arr.dtype.kind == "i":
        return (-1 - arr.astype(np.int64)).astype(np.float64)
    return (float((1 << stored) - 1) - arr.astype(np.float64))


def _native_dtype(ds: Dataset) -> np.dtype | None:
    alloc = int(num(ds.get("BitsAllocated"), 0) or 0)
    if alloc not in (8, 16, 32) or int(num(ds.get("SamplesPerPixel"), 1) or 1) != 1:
        return None
    signed = int(num(ds.get("PixelRepresentation"), 0) or 0) == 1
    return np.dtype(f"<{'i' if signed else 'u'}{alloc // 8}")


def _samples(ds: Dataset) -> int:
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        return 3
    return int(num(ds.get("SamplesPerPixel"), 1) or 1)


def _apply_palette(stored: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """Palette indices to RGB through the dataset's Palette Color LUTs.

    pydicom's ``apply_color_lut`` reads non-segmented LUT data as little endian whatever
    the transfer syntax, so 16-bit palettes of explicit big-endian files come out byte
    swapped (256x too small); here the data are read in the file's byte order, and a LUT
    whose length does not match its descriptor is refused.
    """
    if "RedPaletteColorLookupTableData" not in ds:
        from pydicom.pixels import apply_color_lut  # segmented LUTs: pydicom honours the byte order

        try:
            return apply_color_lut(stored, ds)
        except (ValueError, AttributeError, KeyError) as exc:
            raise DicomError(
                f"palette colour image without a usable colour LUT ({exc})",
                path=path,
                column="RedPaletteColorLookupTableDescriptor",
                hint="the Palette Color Lookup Table module is missing or damaged; re-export the image",
            ) from exc
    ts = getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID")
    little = True
    if ts:
        from pydicom.uid import UID

        little = UID(str(ts)).is_little_endian if UID(str(ts)).is_transfer_syntax else True
    elif getattr(ds, "original_encoding", (None, None))[1] is not None:
        little = bool(ds.original_encoding[1])
    luts = []
    for colour in ("Red", "Green", "Blue"):
        desc = ds.get(f"{colour}PaletteColorLookupTableDescriptor")
        data = ds.get(f"{colour}PaletteColorLookupTableData")
        if desc is None or data is None:
            raise DicomError(
                f"palette colour image lacks the {colour} LUT",
                path=path,
                column=f"{colour}PaletteColorLookupTableData",
                hint="re-export the image with its Palette Color Lookup Table module",
            )
        n = int(desc[0]) or 65536
        first = int(desc[1])
        raw = bytes(data)
        width = len(raw) // n if n else 0
        if width not in (1, 2) or len(raw) not in (n * width, n * width + 1):
            raise DicomError(
                f"{colour}PaletteColorLookupTableData holds {len(raw)} bytes for {n} entries "
                f"(descriptor {list(desc)})",
                path=path,
                column=f"{colour}PaletteColorLookupTableData",
                hint="the colour LUT does not match its descriptor; re-export the image",
            )
        dtype = np.dtype("u1") if width == 1 else np.dtype("<u2" if little else ">u2")
        luts.append((np.frombuffer(raw[: n * width], dtype=dtype).astype(np.uint16 if width == 2 else np.uint8), first))
    n_entries = len(luts[0][0])
    first = luts[0][1]
    idx = np.clip(stored.astype(np.int64) - first, 0, n_entries - 1)
    return np.stack([lut[idx] for lut, _ in luts], axis=-1)


def _store(frame: Frame, stored: np.ndarray, dst: np.ndarray, invert: bool) -> None:
    """Write a ``(rows, cols)`` stored-value frame into ``dst`` (a ``(cols, rows)`` view).

    Colour frames (``(rows, cols, 3)``, or palette indices) go to a ``(cols, rows, 3)``
    view as RGB, unscaled.
    """
    if dst.ndim == 3:
        if stored.ndim == 2:  # palette colour: indices through the LUT
            stored = _apply_palette(stored, frame.ds, frame.path)
        np.copyto(dst.transpose(1, 0, 2), stored, casting="unsafe")
        return
    stored = _fix_bits(stored, frame.ds)
    if invert and str(frame.ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        stored = _invert_monochrome1(stored, frame.ds)
    out = dst.T
    if "ModalityLUTSequence" in frame.ds and "RescaleSlope" not in frame.ds:
        from pydicom.pixels import apply_modality_lut  # a non-linear modality LUT

        np.copyto(out, apply_modality_lut(stored, frame.ds), casting="unsafe")
        return
    if frame.slope == 1.0:
        np.copyto(out, stored, casting="unsafe")
    else:
        np.multiply(stored, np.float32(frame.slope), out=out, casting="unsafe")
    if frame.intercept != 0.0:
        out += np.float32(frame.intercept)


def _decode_file(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        return ds.pixel_array
    except Exception as exc:
        raise DicomError(
            f"pixel data cannot be decoded ({type(exc).__name__}: {exc})",
            path=path,
            column="PixelData",
            hint="install pylibjpeg with its -libjpeg, -openjpeg and -rle plugins (and "
            "pyjpegls for JPEG-LS), or convert the file to an uncompressed transfer syntax",
        ) from exc


_LOCAL = threading.local()


def _scratch(n: int, dtype: np.dtype) -> np.ndarray:
    """A per-thread reusable buffer (fresh pages cost more than the copy itself)."""
    buf = getattr(_LOCAL, "buf", None)
    nbytes = n * dtype.itemsize
    if buf is None or buf.nbytes < nbytes:
        buf = _LOCAL.buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes].view(dtype)


def _load_file(path: Path, jobs: list[tuple[Frame, np.ndarray]], invert: bool) -> None:
    first = jobs[0][0]
    dtype = _native_dtype(first.ds)
    n = first.rows * first.cols
    if first.pixel_offset is not None and dtype is not None and first.mosaic is None:
        nframes = int(num(first.ds.get("NumberOfFrames"), 1) or 1)
        length = getattr(first.ds, "_medmm_pixel_length", None)
        if length is None or length >= n * dtype.itemsize * nframes:
            with open(path, "rb") as fh:
                for frame, dst in jobs:
                    buf = _scratch(n, dtype)
                    fh.seek(first.pixel_offset + (frame.frame or 0) * n * dtype.itemsize)
                    if fh.readinto(buf.data.cast("B")) != buf.nbytes:
                        raise DicomError(
                            "pixel data is shorter than Rows x Columns x frames",
                            path=path,
                            column="PixelData",
                            hint="the file is truncated; replace it",
                        )
                    _store(frame, buf.reshape(first.rows, first.cols), dst, invert)
            return
    arr = _decode_file(path)
    nframes = int(num(first.ds.get("NumberOfFrames"), 1) or 1)
    for frame, dst in jobs:
        if frame.mosaic is not None:
            s, tiles = frame.mosaic
            r0, c0 = (s // tiles) * frame.rows, (s % tiles) * frame.cols
            plane = arr[r0 : r0 + frame.rows, c0 : c0 + frame.cols]
        elif nframes > 1:
            plane = arr[frame.frame]
        else:
            plane = arr
        if plane.ndim != 2 and dst.ndim != 3:
            raise DicomError(
                f"pixel array has shape {plane.shape}; only single-sample (grey) images are volumes",
                path=path,
                column="SamplesPerPixel",
                hint="colour DICOM is read by pydicom directly (ds.pixel_array)",
            )
        _store(frame, plane, dst, invert)


def load_pixels(volumes: list[list[Frame]], invert: bool, pool: ThreadPoolExecutor | None) -> np.ndarray:
    f0 = volumes[0][0]
    nk, nt = len(volumes[0]), len(volumes)
    samples = _samples(f0.ds)
    vol = np.empty((f0.cols, f0.rows, nk, nt, samples), dtype=np.float32, order="F")
    by_file: dict[Path, list[tuple[Frame, np.ndarray]]] = {}
    for t, frames in enumerate(volumes):
        for k, fr in enumerate(frames):
            dst = vol[:, :, k, t, :] if samples > 1 else vol[:, :, k, t, 0]
            by_file.setdefault(fr.path, []).append((fr, dst))
    items = list(by_file.items())
    if pool is None or len(items) < 4:
        for p, jobs in items:
            _load_file(p, jobs, invert)
    else:
        for fut in [pool.submit(_load_file, p, jobs, invert) for p, jobs in items]:
            fut.result()
    return vol[..., 0] if samples == 1 else vol
