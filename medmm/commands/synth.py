"""``medmm synth OUT``: write a synthetic multimodal cohort."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder (created if needed)")
    p.add_argument("--patients", type=int, default=300, help="number of patients (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files (default 0)")
    p.add_argument("--missing-rate", type=float, default=0.2,
                   help="chance that each modality is missing for a patient, independently (default 0.2)")
    p.add_argument("--image-size", type=int, default=32, help="voxels along each image axis (default 32)")
    p.add_argument("--image-format", choices=("dicom", "nifti"), default="dicom",
                   help="write images as DICOM series (default) or NIfTI files")
    p.add_argument("--workers", type=int, default=1,
                   help="processes writing patients in parallel, 0 for one per CPU; the files do not depend on it "
                        "(default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..synth import generate_cohort

    path = generate_cohort(args.out, n_patients=args.patients, seed=args.seed, missing_rate=args.missing_rate,
                           image_size=args.image_size, image_format=args.image_format, progress=not args.quiet,
                           workers=args.workers)
    print(f"wrote {path} ({args.patients} patients); oracle scores in {path.parent / 'oracle.csv'}")
    return 0
