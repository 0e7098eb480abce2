"""The public reader: choose a stack, check its problems, read its pixels into an :class:`~medmm.records.Image`."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import DicomError, GeometryError
from ...problems import Problem
from ...records import Image
from .frame import DicomWarning, Stack, plane_name
from .geometry import LPS_TO_RAS, resample_regular, affine_lps
from .headers import collect_frames
from .pixels import load_pixels
from .stacks import dedupe_positions, scan_stacks, stack_label
from .values import plain_value

if TYPE_CHECKING:
    from ...deid.dicom import Deidentifier

IRREGULAR_OPTIONS = ("error", "accept", "resample")

#: Header fields copied into ``Image.meta`` when present.
META_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "SeriesNumber",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "StudyTime",
    "KVP",
    "XRayTubeCurrent",
    "ConvolutionKernel",
    "ContrastBolusAgent",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RepetitionTime",
    "EchoTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "BodyPartExamined",
    "PatientID",
    "PatientSex",
    "PatientAge",
    "PhotometricInterpretation",
    "BitsStored",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
)

#: Modalities whose single images are projections (read as 2D).
PROJECTION_MODALITIES = frozenset(
    {"CR", "DX", "MG", "IO", "PX", "XA", "RF", "SC", "OT", "US", "ES", "XC", "GM", "SM", "RG"}
)


# -------------------------------------------------------------------------------- read


def list_series(path: str | Path) -> list[Stack]:
    """The stacks (readable images) found under ``path``, each with its problems."""
    frames, _ = collect_frames(path)
    return scan_stacks(frames)


_PROBLEM_HINT = {
    "duplicate": "pass irregular='accept' to keep the first slice (by instance number) at each position",
    "tilt": "pass irregular='resample' to resample onto an untilted grid, or irregular='accept' to keep a sheared affine",
    "missing": "pass irregular='resample' to interpolate onto a regular grid, or irregular='accept' to read with a warning",
    "irregular": "pass irregular='resample' to interpolate onto a regular grid, or irregular='accept' to read with a warning",
}


def _select(stacks: list[Stack], path: Path, series_uid: str | None, irregular: str) -> Stack:
    if not stacks:
        raise DicomError("no DICOM image in this path", path=path, hint="check the folder")
    ids = [s.id for s in stacks]
    if series_uid is not None:
        chosen = [s for s in stacks if s.id == series_uid or s.uid == series_uid]
        if not chosen:
            raise DicomError(
                f"series {series_uid} not found", path=path, hint=f"choose one of {ids}"
            )
    else:
        chosen = stacks
        uids = sorted({s.uid for s in stacks})
        if len(uids) > 1:
            raise DicomError(
                f"folder holds {len(uids)} series",
                path=path,
                hint=f"pass series_uid= (CLI: --series) one of {uids}; `medmm dicom ls` lists them",
            )
    if len(chosen) > 1:
        volumes = [s for s in chosen if not _is_localizer(s)]
        if len(volumes) == 1 and len(volumes[0].volumes[0]) > 1:
            # a scout stored in the volume's series: read the volume, say so in meta
            n_loc = len(chosen) - 1
            volumes[0].problems = [
                *volumes[0].problems,
                Problem("warning", kind="localizer", message=f"ignored {n_loc} localizer stack(s) in the same series"),
            ]
            return volumes[0]
        desc = "; ".join(f"{s.id}: {stack_label(s)}" for s in chosen)
        differ = "image type (magnitude/phase/...)" if len({s.kind for s in chosen}) > 1 else (
            "series number" if len({s.first.keys.get("series_number") for s in chosen}) > 1
            else "orientation, size or coverage"
        )
        msg = f"series {chosen[0].uid} holds {len(chosen)} stacks of mixed {differ} ({desc})"
        if irregular == "error":
            raise GeometryError(
                msg,
                path=path,
                column="SeriesInstanceUID",
                hint="read one stack with series_uid='<uid>:<n>' (CLI: --series), or pass "
                "irregular='accept' to read the largest stack with a warning",
            )
        warnings.warn(f"{path}: {msg}; reading the largest ({chosen[0].id})", DicomWarning, stacklevel=4)
        chosen[0].problems = [*chosen[0].problems, Problem("warning", kind="mixed", message=msg)]
    return chosen[0]


def _is_localizer(stack: Stack) -> bool:
    image_type = [str(v).upper() for v in (stack.first.ds.get("ImageType") or [])]
    return "LOCALIZER" in image_type


def read_dicom(
    path: str | Path,
    *,
    series_uid: str | None = None,
    irregular: str = "error",
    deidentify: bool | Deidentifier = False,
    invert_monochrome1: bool = True,
    threads: int | None = None,
    volume: int | None = None,
    **_: Any,
) -> Image:
    """Read a DICOM series folder, a DICOMDIR or a single (multi-frame) file into an :class:`Image`.

    Parameters
    ----------
    path:
        A folder tree, a DICOMDIR or one file.
    series_uid:
        The SeriesInstanceUID to read (or a stack id ``"<uid>:<n>"`` from
        :func:`list_series`), required when ``path`` holds several series.
    irregular:
        What to do with missing slices, irregular spacing, gantry tilt, duplicate
        positions or a series mixing stacks: ``"error"`` (raise
        :class:`~medmm.errors.GeometryError`), ``"accept"`` (read as is with a
        :class:`DicomWarning`) or ``"resample"`` (interpolate onto a regular grid).
    deidentify:
        ``True`` (or a :class:`medmm.io.deid.Deidentifier`) to de-identify ``meta`` by the
        PS3.15 basic profile.
    invert_monochrome1:
        Invert MONOCHROME1 images so that higher values are brighter.
    threads:
        Threads for pixel decoding (default: up to 8, one per CPU).
    volume:
        Read only this volume (0-based, negative counts from the end) of a 4D series
        (echoes, time points, diffusion directions); ``meta["volume"]`` records it.

    Returns
    -------
    Image
        float32 data ``(X, Y, Z)`` (``(X, Y, Z, T)`` for several echoes/time points/
        diffusion directions, ``(X, Y)`` for a single projection image), RAS+ affine,
        header fields in ``meta``. A diffusion series also has ``meta["b_values"]`` and
        ``meta["gradient_directions"]`` (one unit vector per volume, RAS+ world axes;
        zero for b = 0); :func:`medmm.io.nifti.write_fsl_gradients` writes them as FSL
        ``.bval``/``.bvec``.
    """
    if irregular not in IRREGULAR_OPTIONS:
        raise ValueError(f"irregular must be one of {IRREGULAR_OPTIONS}, got {irregular!r}")
    if volume is not None and (isinstance(volume, bool) or not isinstance(volume, (int, np.integer))):
        raise DicomError(
            f"volume must be an int (a 0-based volume index), got {volume!r}",
            path=path,
            column="volume",
            hint="pass volume=N (CLI: --volume N)",
        )
    path = Path(path)
    workers = threads if threads is not None else min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        return _read(path, pool, series_uid, irregular, deidentify, invert_monochrome1, volume)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _read(
    path: Path,
    pool: ThreadPoolExecutor | None,
    series_uid: str | None,
    irregular: str,
    deidentify: bool | Deidentifier,
    invert_monochrome1: bool,
    volume: int | None = None,
) -> Image:
    # no prefetch: reading pixels while headers are parsed costs more in GIL switches
    # than it saves (measured); pixels are read after ordering, in the pool
    frames, skipped = collect_frames(path)
    stack = _select(scan_stacks(frames), path, series_uid, irregular)
    volumes = stack.volumes
    labels = list(stack.volume_labels)
    if volume is not None:
        n = len(volumes)
        if not -n <= int(volume) < n:
            raise DicomError(
                f"series {stack.id} has {n} volume(s); volume {volume} does not exist",
                path=path,
                hint=f"pass volume= (CLI: --volume) from 0 to {n - 1}",
            )
        volumes = [volumes[int(volume)]]
        labels = labels[int(volume) : int(volume) + 1 or None] if labels else []
    kinds = {p.kind for p in stack.problems}
    blocking = [p for p in stack.problems if p.kind not in ("mixed", "localizer")]
    if blocking and irregular == "error":
        default = "pass irregular='accept' or 'resample'"
        hints = list(dict.fromkeys(_PROBLEM_HINT.get(p.kind or "", default) for p in blocking))
        raise GeometryError(
            f"series {stack.id}: {'; '.join(p.message for p in blocking)}",
            path=path,
            column="ImagePositionPatient",
            hint="; ".join(hints),
        )
    msgs = [p.message for p in stack.problems]
    if blocking:
        warnings.warn(
            f"{path}: series {stack.id}: {'; '.join(p.message for p in blocking)} "
            f"(irregular={irregular!r})",
            DicomWarning,
            stacklevel=3,
        )
    if "duplicate" in kinds or "irregular" in kinds and len({len(v) for v in volumes}) > 1:
        volumes = [dedupe_positions(v) for v in volumes]
        n = min(len(v) for v in volumes)
        volumes = [v[:n] for v in volumes]
    try:
        vol = load_pixels(volumes, invert_monochrome1, pool)
    except DicomError as exc:  # name the series as well as the file
        raise type(exc)(
            f"series {stack.id}: {exc.message}", path=exc.path, column=exc.column, hint=exc.hint
        ) from exc
    ref = volumes[0]
    color = vol.ndim == 5
    if irregular == "resample" and kinds & {"tilt", "missing", "irregular"} and not color:
        vol, lps = resample_regular(vol, ref)
    else:
        lps = affine_lps(ref)
    f0 = ref[0]
    if color:  # (X, Y, Z, [T,] RGB)
        data: np.ndarray = vol[:, :, :, 0, :] if vol.shape[3] == 1 else vol
    else:
        data = vol if vol.shape[3] > 1 else vol[:, :, :, 0]
    modality = str(f0.ds.get("Modality", "") or "")
    two_d = (
        not color
        and data.ndim == 3
        and data.shape[2] == 1
        and (not f0.geometry or modality in PROJECTION_MODALITIES)
    )
    if two_d:
        data = data[:, :, 0]
    header = f0.ds
    deid = None
    if deidentify:
        from ...deid.dicom import Deidentifier

        deid = deidentify if isinstance(deidentify, Deidentifier) else Deidentifier()
        header = deid.dataset(header)
    meta: dict[str, Any] = {t: plain_value(header.get(t)) for t in META_TAGS if t in header}
    meta.update(
        format="dicom",
        series_id=stack.id,
        transfer_syntax=str(getattr(getattr(f0.ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID") or ""),
        n_files=len({f.path for v in volumes for f in v}),
        n_frames=sum(len(v) for v in volumes),
        plane=plane_name(f0),
        problems=msgs,
    )
    if stack.volume_key:
        meta["volume_key"] = stack.volume_key
        meta["volume_labels"] = [plain_value(v) if not isinstance(v, tuple) else [plain_value(x) for x in v] for v in labels]
    if volume is not None:
        meta["volume"] = int(volume)
        meta["n_volumes"] = len(stack.volumes)
    if stack.kind:
        meta["image_kind"] = stack.kind
    diffusion = [d for v in volumes if (d := v[0].keys.get("diffusion")) is not None]
    if len(diffusion) == len(volumes):
        meta["b_values"] = [float(d[0]) for d in diffusion]
        meta["gradient_directions"] = [
            [round(float(-d[1]), 5) + 0.0, round(float(-d[2]), 5) + 0.0, float(d[3])] for d in diffusion
        ]
    if not f0.geometry:
        meta["geometry"] = "none: no ImagePositionPatient/ImageOrientationPatient; axes assumed"
    if f0.mosaic is not None:
        meta["mosaic"] = True
    if color:
        meta["channels"] = "RGB"
    if "PerFrameFunctionalGroupsSequence" in f0.ds or getattr(f0.ds, "_medmm_per_frame", None) is not None:
        meta["enhanced"] = True
    if str(f0.ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        meta["monochrome1_inverted"] = bool(invert_monochrome1)
    if skipped and deid is None:
        meta["skipped_files"] = skipped
    if deid is not None:
        meta["deidentified"] = True
    else:
        meta["files"] = sorted({str(f.path) for v in volumes for f in v})
    return Image(data=data, affine=LPS_TO_RAS @ lps, meta=meta)


def read_dicom_series(path: str | Path, series_uid: str | None = None, **options: Any) -> Image:
    """Read the series under ``path`` (see :func:`read_dicom` for the options)."""
    return read_dicom(path, series_uid=series_uid, **options)
