"""``medmm export MODEL --out DIR``: TorchScript and ONNX artefacts, each checked against the eager model."""

from __future__ import annotations

import argparse

FORMATS = ("torchscript", "onnx", "onnx-split")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder or MLflow model URI (runs:/RUN_ID/model, models:/NAME/VERSION)")
    parser.add_argument("--out", "-o", required=True,
                        help="output folder (give it to `medmm serve --export-dir`); not inside the model folder")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated (default {','.join(FORMATS)})")
    parser.add_argument("--cohort", default=None,
                        help="manifest whose validation split is the parity batch (default: random inputs covering "
                             "every presence pattern)")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest accepted |eager - exported| (default 1e-4)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for a runs:/ or models:/ MODEL")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..deploy.export import export_model
    from ..errors import ConfigError
    from ..train.hub import is_mlflow_uri, load_model

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ConfigError(f"unknown export formats {unknown}", hint=f"choose among {FORMATS}")
    out = Path(args.out).resolve()
    if not is_mlflow_uri(args.model) and Path(args.model).resolve() in (out, *out.parents):
        raise ConfigError("the export folder is inside the model folder", path=out,
                          hint="write exports elsewhere: a model folder holds the bundle only")
    model = load_model(args.model, tracking_uri=args.tracking_uri)
    records = None
    if args.cohort:
        from ..cohort import load_cohort

        cohort = load_cohort(args.cohort, progress=False, modalities=model.modalities)
        records = cohort.split("val") or cohort.split("test") or cohort.records
    res = export_model(model, out, records=records, formats=formats, tol=args.tol)
    for name, diff in res.parity.items():
        print(f"{name:12s} max |eager - exported| = {diff:.2e}")
    print(f"wrote {out}")
    return 0
