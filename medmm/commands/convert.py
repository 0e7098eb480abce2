"""``medmm convert INPUT OUT.nii.gz``: any readable image to NIfTI (or NRRD)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a DICOM folder/file/DICOMDIR, NIfTI or NRRD file")
    parser.add_argument("output", help="output .nii.gz / .nii (or .nrrd)")
    parser.add_argument("--series", default=None, help="SeriesInstanceUID or stack id (see `medmm dicom ls`)")
    parser.add_argument(
        "--irregular",
        choices=("error", "accept", "resample"),
        default="error",
        help="what to do with missing slices, irregular spacing, gantry tilt or duplicates",
    )
    parser.add_argument("--deidentify", action="store_true", help="de-identify the header fields kept")
    parser.add_argument(
        "--no-invert",
        dest="invert",
        action="store_false",
        help="keep MONOCHROME1 values as stored (as dcm2niix does) instead of inverting them",
    )
    parser.add_argument(
        "--float", dest="as_float", action="store_true",
        help="always store float32 (default: int16 when every value is an int16 integer)",
    )


def run(args: argparse.Namespace) -> int:
    import warnings

    from medmm.errors import ReadError
    from medmm.io.image import read_image

    options = {}
    if args.series:
        options["series_uid"] = args.series
    out = Path(args.output)
    name = out.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz") or name.endswith(".nrrd")):
        raise ReadError("output must end in .nii, .nii.gz or .nrrd", path=out, hint="rename the output")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = read_image(
                args.input,
                irregular=args.irregular,
                deidentify=args.deidentify,
                invert_monochrome1=args.invert,
                **options,
            )
        except TypeError:  # NIfTI/NRRD readers take no DICOM options
            image = read_image(args.input)
    for w in caught:
        print(f"warning: {w.message}")
    if name.endswith(".nrrd"):
        from medmm.io.nrrd import write_nrrd

        write_nrrd(image, out)
    else:
        from medmm.io.nifti import write_nifti

        write_nifti(image, out, dtype="float32" if args.as_float else "auto")
    print(f"{args.input} -> {out}: {image!r} {image.orientation}")
    return 0
