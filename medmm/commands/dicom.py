"""``medmm dicom ls DIR`` and ``medmm dicom deid IN OUT``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dicom_command", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list the series (stacks) under a folder tree or DICOMDIR")
    ls.add_argument("path", help="a folder, a DICOMDIR or a DICOM file")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    deid = sub.add_parser(
        "deid", help="de-identify DICOM files (PS3.15 basic profile, modified dates option)"
    )
    deid.add_argument("input", help="a DICOM file or folder")
    deid.add_argument("output", help="output folder (or file, for a single input file)")
    deid.add_argument(
        "--salt",
        default=os.environ.get("MEDMM_DEID_SALT"),
        help="secret that keys the UID, ID and date mapping (default: $MEDMM_DEID_SALT); "
        "the same salt links several exports of one patient",
    )
    deid.add_argument(
        "--keep-descriptors",
        action="store_true",
        help="keep series/study descriptions and protocol name (free text: check them yourself)",
    )


def _display_shape(stack: Any) -> tuple[int, ...]:
    from medmm.io.dicom import PROJECTION_MODALITIES

    f0 = stack.first
    shape = stack.shape
    projection = not f0.geometry or str(f0.ds.get("Modality", "")) in PROJECTION_MODALITIES
    if len(shape) == 3 and shape[2] == 1 and projection:
        return shape[:2]
    return shape


def _describe(stack: Any) -> dict[str, Any]:
    import nibabel as nib
    import numpy as np

    from medmm.io.dicom import LPS_TO_RAS, affine_lps, plane_name, stack_label

    f0 = stack.first
    axcodes = "".join(nib.aff2axcodes(LPS_TO_RAS @ affine_lps(stack.volumes[0]))) if f0.geometry else "-"
    spacing = (*f0.spacing[::-1],)
    if len(stack.volumes[0]) > 1:
        d = np.diff(sorted(float(f.ipp @ f0.normal) for f in stack.volumes[0]))
        spacing += (float(np.median(d)),)
    return {
        "id": stack.id,
        "description": str(f0.ds.get("SeriesDescription", "") or ""),
        "modality": str(f0.ds.get("Modality", "") or ""),
        "size": "x".join(str(s) for s in _display_shape(stack)),
        "spacing": "x".join(f"{s:.3g}" for s in spacing),
        "orientation": f"{plane_name(f0)} {axcodes}",
        "files": len({f.path for v in stack.volumes for f in v}),
        "problems": [p.message for p in stack.problems]
        + (
            [f"UID holds {stack.n_stacks_in_uid} stacks; this one: {stack_label(stack)}"]
            if stack.n_stacks_in_uid > 1
            else []
        ),
        "series_number": stack.first.keys.get("series_number"),
        "image_kind": stack.kind,
        "volumes": stack.volume_key or "",
    }


def _ls(args: argparse.Namespace) -> int:
    from medmm.io.dicom import collect_frames, scan_stacks

    frames, skipped = collect_frames(args.path)
    rows = [_describe(s) for s in scan_stacks(frames)]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    head = ("UID", "DESCRIPTION", "MOD", "SIZE", "SPACING", "ORIENTATION", "FILES", "PROBLEMS")
    table = [
        (r["id"], (r["description"][:32] + (f" [{r['image_kind']}]" if r["image_kind"] else "")), r["modality"], r["size"], r["spacing"], r["orientation"],
         str(r["files"]), "; ".join(r["problems"]) or "-")
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    for line in (head, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(line[:-1], widths)) + "  " + line[-1])
    if skipped:
        from medmm.io.dicom import GZIP_SKIP

        gz = [s for s in skipped if GZIP_SKIP in s]
        rest = len(skipped) - len(gz)
        if rest:
            print(f"({rest} file(s) skipped: not DICOM images)", file=sys.stderr)
        for line in gz:
            print(f"skipped {line}", file=sys.stderr)
    return 0


def _deid(args: argparse.Namespace) -> int:
    from medmm.io.deid import Deidentifier, deidentify_path

    if not args.salt:
        print(
            "medmm dicom deid: warning: no --salt or $MEDMM_DEID_SALT; using the public default, "
            "so the UID and date mapping can be reproduced by anyone",
            file=sys.stderr,
        )
    deid = Deidentifier(salt=args.salt, keep_descriptors=args.keep_descriptors)
    written = deidentify_path(args.input, args.output, deidentifier=deid)
    print(f"de-identified {len(written)} file(s) into {args.output}")
    if deid.burned_in:
        print(
            f"warning: {len(deid.burned_in)} image(s) declare burned-in annotation; "
            "their pixels were not cleaned",
            file=sys.stderr,
        )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dicom_command == "ls":
        return _ls(args)
    return _deid(args)
