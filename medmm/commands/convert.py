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
    parser.add_argument(
        "--volume", type=int, default=None, metavar="N",
        help="write only volume N (0-based) of a 4D series (echo, time point, diffusion direction)",
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
    if args.volume is not None:
        options["volume"] = args.volume
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
    if args.volume is not None and "volume" not in image.meta:  # NIfTI/NRRD: pick it here
        from medmm.records import Image

        n = image.data.shape[3] if image.data.ndim == 4 else 1
        if not -n <= args.volume < n:
            raise ReadError(f"image has {n} volume(s); volume {args.volume} does not exist", path=args.input,
                            hint=f"pass --volume from 0 to {n - 1}")
        data = image.data[..., args.volume] if image.data.ndim == 4 else image.data
        image = Image(data=data, affine=image.affine, meta={**image.meta, "volume": args.volume})
    if name.endswith(".nrrd"):
        from medmm.io.nrrd import write_nrrd

        write_nrrd(image, out)
    else:
        from medmm.io.nifti import write_nifti

        write_nifti(image, out, dtype="float32" if args.as_float else "auto")
    extra = ""
    if image.meta.get("b_values") is not None:
        from medmm.io.nifti import write_fsl_gradients

        bval, bvec = write_fsl_gradients(image, out)
        extra = f" (+ {bval.name}, {bvec.name})"
    print(f"{args.input} -> {out}{extra}: {image!r} {image.orientation}")
    return 0
