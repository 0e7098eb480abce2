"""Step 2, stacks: frames grouped into images, split into volumes, sorted, their problems found."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...problems import Problem
from .frame import ORIENT_TOL, POS_TOL, Frame, Stack, plane_name

# ------------------------------------------------------------------------------ stacks


def slice_positions(frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
    pos = np.array([f.ipp for f in frames], dtype=np.float64)
    return pos, pos @ frames[0].normal


def _has_duplicates(dist: np.ndarray) -> bool:
    if len(dist) < 2:
        return False
    return bool(np.any(np.diff(np.sort(dist)) < POS_TOL))


def _same_positions(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool(np.allclose(np.sort(a), np.sort(b), atol=POS_TOL * 10))


#: Header fields that tell the volumes of a 4D stack apart, in the order they are tried.
_VOLUME_KEYS = ("echo", "echo_time", "temporal", "diffusion", "trigger", "dimension", "acquisition", "frame")


def _position_ids(dist: np.ndarray) -> np.ndarray:
    """An integer per frame: frames closer than the tolerance along the normal share one."""
    order = np.argsort(dist, kind="stable")
    ids = np.empty(len(dist), dtype=np.int64)
    current, last = 0, None
    for i in order:
        if last is not None and dist[i] - last >= POS_TOL:
            current += 1
        ids[i] = current
        last = dist[i]
    return ids


def _key_values(frames: list[Frame], key: str) -> list[Any] | None:
    if key == "dimension":
        if any("dimension" not in f.keys for f in frames):
            return None
        keep = _dimension_indices_without_position(frames)
        return [tuple(f.keys["dimension"][i] for i in keep if i < len(f.keys["dimension"])) for f in frames]
    values = [f.keys.get(key) for f in frames]
    return None if any(v is None for v in values) else values


def _split_by_order(frames: list[Frame], pos_id: np.ndarray) -> list[list[Frame]] | None:
    """Volumes of frames that no header field tells apart: the t-th frame (by instance
    number, acquisition time, frame index) at every position is volume t, as dcm2niix does.
    None when positions hold different numbers of frames."""
    at: dict[int, list[Frame]] = {}
    for f, pid in zip(frames, pos_id):
        at.setdefault(int(pid), []).append(f)
    counts = {len(v) for v in at.values()}
    if len(counts) != 1:
        return None
    for v in at.values():
        v.sort(key=lambda f: (f.instance, str(f.keys.get("acquisition_time", "")), f.frame or 0, str(f.path)))
    n = counts.pop()
    return [[at[p][t] for p in sorted(at)] for t in range(n)]


def _split_volumes(frames: list[Frame]) -> tuple[list[list[Frame]], str | None, list[Any], bool]:
    """Split a stack's frames into volumes: ``(volumes, key, labels, same_positions)``.

    A header field is a volume key when it varies among the frames at one position and
    takes no more values than there are frames at a position (echo, temporal position,
    b-value and gradient, trigger time, enhanced dimension index, acquisition, frame).
    Frames still sharing a position within one label are told apart by instance order.
    Volumes are ordered by their labels, diffusion volumes by acquisition (instance) order.
    """
    _, dist = slice_positions(frames)
    if not _has_duplicates(dist):
        return [frames], None, [], True
    pos_id = _position_ids(dist)
    per_position = int(np.bincount(pos_id).max())
    keys: list[str] = []
    columns: list[list[Any]] = []
    n_groups = 1
    for key in _VOLUME_KEYS:
        if key == "echo_time" and "echo" in keys:
            continue
        values = _key_values(frames, key)
        if values is None or not 2 <= len(set(values)) <= per_position:
            continue
        seen: dict[int, Any] = {}
        if all(seen.setdefault(int(pid), v) == v for pid, v in zip(pos_id, values)):
            continue  # constant at each position: varies by slice, not by volume
        groups = len(set(zip(*columns, values))) if columns else len(set(values))
        if groups == n_groups:
            continue  # adds nothing to the keys already chosen
        keys.append(key)
        columns.append(values)
        n_groups = groups
    by_label: dict[tuple[Any, ...], list[int]] = {}
    for i, label in enumerate(zip(*columns) if columns else [()] * len(frames)):
        by_label.setdefault(tuple(label), []).append(i)
    parts: list[tuple[tuple[Any, ...], int, list[Frame]]] = []
    by_order = False
    for label, idx in by_label.items():
        group = [frames[i] for i in idx]
        sub = _split_by_order(group, pos_id[idx]) if _has_duplicates(dist[idx]) else None
        if sub is None:
            parts.append((label, 0, group))
        else:
            by_order = True
            parts.extend((label, r, v) for r, v in enumerate(sub))
    if len(parts) < 2:
        return [frames], None, [], True

    def order(part: tuple[tuple[Any, ...], int, list[Frame]]) -> tuple[Any, ...]:
        label, r, group = part
        first = min((f.instance, f.frame or 0) for f in group)
        return tuple(first if k == "diffusion" else v for k, v in zip(keys, label)) + (first, r)

    parts.sort(key=order)
    name = "+".join(keys + (["instance"] if by_order else []))
    labels: list[Any] = []
    for label, r, _ in parts:
        full = label + ((r,) if by_order else ())
        labels.append(full[0] if len(full) == 1 else full)
    volumes = [p[2] for p in parts]
    first = slice_positions(volumes[0])[1]
    same = all(_same_positions(first, slice_positions(v)[1]) for v in volumes[1:])
    return volumes, name, labels, same


def _dimension_indices_without_position(frames: list[Frame]) -> list[int]:
    """Indices of DimensionIndexValues that do not enumerate the in-stack position.

    The index whose number of distinct values equals the number of distinct positions is
    the in-stack position; the others tell volumes apart.
    """
    n_pos = len({round(float(v), 2) for v in slice_positions(frames)[1]})
    width = max(len(f.keys.get("dimension", ())) for f in frames)
    keep = []
    for i in range(width):
        values = {f.keys["dimension"][i] for f in frames if len(f.keys.get("dimension", ())) > i}
        if len(values) != n_pos:
            keep.append(i)
    return keep


def _sort_volume(frames: list[Frame]) -> list[Frame]:
    if len(frames) < 2:
        return frames
    _, dist = slice_positions(frames)
    order = np.lexsort((np.array([f.instance for f in frames]), dist))
    return [frames[i] for i in order]


def _geometry_problems(frames: list[Frame]) -> list[Problem]:
    """Problems of one sorted volume."""
    if len(frames) < 2 or not frames[0].geometry:
        return []
    problems = []
    pos, dist = slice_positions(frames)
    steps = np.diff(dist)
    dup = int(np.sum(steps < POS_TOL))
    if dup:
        problems.append(
            Problem(
                "warning",
                kind="duplicate",
                message=f"{dup} duplicate slice position(s) that no header field tells apart (echo, "
                "temporal position, b-value/gradient, image type, instance order)",
            )
        )
        keep = np.concatenate([[True], steps >= POS_TOL])
        pos, dist = pos[keep], dist[keep]
        steps = np.diff(dist)
        if len(pos) < 2:
            return problems
    normal = frames[0].normal
    inplane = (pos - pos[0]) - np.outer(dist - dist[0], normal)
    span = dist[-1] - dist[0]
    off = np.linalg.norm(inplane, axis=1)
    if off.max() > max(POS_TOL, 1e-4 * span):
        shear = inplane[-1] / span if span > 0 else inplane[-1]
        angle = math.degrees(math.atan(float(np.linalg.norm(shear))))
        problems.append(
            Problem("warning", kind="tilt", message=f"slice positions are not along the slice normal (gantry tilt {angle:.2f} deg)")
        )
    med = float(np.median(steps))
    tol = max(0.02, 0.01 * med)
    bad = np.abs(steps - med) > tol
    if np.any(bad):
        ratio = steps[bad] / med
        if np.all((np.abs(ratio - np.round(ratio)) < 0.1) & (np.round(ratio) >= 2)):
            n_missing = int(np.sum(np.round(ratio) - 1))
            problems.append(Problem("warning", kind="missing", message=f"{n_missing} missing slice(s) (spacing {med:.4g} mm, gaps up to {steps.max():.4g} mm)"))
        else:
            problems.append(Problem("warning", kind="irregular", message=f"irregular slice spacing ({steps.min():.4g} to {steps.max():.4g} mm)"))
    return problems


def scan_stacks(frames: list[Frame]) -> list[Stack]:
    """Group frames into stacks (one per readable image), with their problems."""
    by_uid: dict[str, list[Frame]] = {}
    for f in frames:
        by_uid.setdefault(f.uid, []).append(f)
    stacks: list[Stack] = []
    for uid in sorted(by_uid):
        groups: list[list[Frame]] = []
        reps: list[Frame] = []
        for f in by_uid[uid]:
            for g, r in zip(groups, reps):
                if (
                    r.rows == f.rows
                    and r.cols == f.cols
                    and r.stack_id == f.stack_id
                    and r.geometry == f.geometry
                    and r.keys.get("kind") == f.keys.get("kind")
                    and r.keys.get("series_number") == f.keys.get("series_number")
                    and (r.geometry or r.path == f.path)
                    and np.allclose(r.iop, f.iop, atol=ORIENT_TOL)
                    and np.allclose(r.spacing, f.spacing, rtol=1e-4)
                ):
                    g.append(f)
                    break
            else:
                groups.append([f])
                reps.append(f)
        uid_stacks: list[Stack] = []
        for g in groups:
            parts, key, labels, same = _split_volumes(g)
            if same:
                uid_stacks.append(Stack(uid, uid, [_sort_volume(p) for p in parts], key, list(labels)))
            else:  # e.g. two acquisitions covering different ranges: separate images
                uid_stacks.extend(Stack(uid, uid, [_sort_volume(p)]) for p in parts)
        uid_stacks.sort(key=lambda s: (-s.n_frames, s.first.instance, str(s.first.path)))
        for n, s in enumerate(uid_stacks, 1):
            s.n_stacks_in_uid = len(uid_stacks)
            if len(uid_stacks) > 1:
                s.id = f"{uid}:{n}"
            probs: list[Problem] = []
            for v in s.volumes:
                for p in _geometry_problems(v):
                    if all(p.kind != q.kind for q in probs):
                        probs.append(p)
            if len({len(v) for v in s.volumes}) > 1:
                probs.append(Problem("warning", kind="irregular", message="volumes have different numbers of slices"))
            s.problems = probs
            stacks.append(s)
    return stacks


def dedupe_positions(frames: list[Frame]) -> list[Frame]:
    out = [frames[0]]
    for f in frames[1:]:
        if abs(float((f.ipp - out[-1].ipp) @ f.normal)) >= POS_TOL:
            out.append(f)
    return out


def stack_label(stack: Stack) -> str:
    """``'8x6x4x2 axial phase, series 7'``: what tells a stack apart in a listing."""
    words = ["x".join(map(str, stack.shape)), plane_name(stack.first)]
    if stack.kind:
        words.append(stack.kind)
    label = " ".join(words)
    series = stack.first.keys.get("series_number")
    return label + (f", series {series}" if series is not None and stack.n_stacks_in_uid > 1 else "")
