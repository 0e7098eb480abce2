"""The ``medmm`` command.

Each sub-command lives in its own module, imported only when that sub-command runs, so
``medmm --help`` stays fast. A command module exposes ``add_arguments(parser)`` and
``run(args) -> int``; register it in :data:`COMMANDS` with its one-line help.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import MedmmError

# name -> (module, one-line help). Nested groups (``dicom ls``) are modules whose
# add_arguments adds their own sub-parsers.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("medmm.commands.synth", "write a synthetic multimodal cohort in real file formats"),
    "validate": ("medmm.commands.validate", "check a cohort manifest and every file it names"),
    "demo": ("medmm.commands.demo", "synthesise a cohort, train a fusion model, evaluate, log to MLflow"),
    "train": ("medmm.commands.train", "train a multimodal model on a cohort manifest"),
    "predict": ("medmm.commands.predict", "score a cohort manifest with a trained model into a Parquet file"),
    "dicom": ("medmm.commands.dicom", "DICOM tools: `ls` the series under a folder, `deid` de-identify"),
    "convert": ("medmm.commands.convert", "convert a DICOM series, NIfTI or NRRD image to NIfTI"),
    "evaluate": ("medmm.commands.evaluate", "score a cohort with a model: metrics with CIs, subgroups, missing data, report"),
    "fhir": ("medmm.commands.fhir", "FHIR tools: `import` a folder of FHIR R4 bundles as a cohort"),
    "serve": ("medmm.commands.serve", "serve a model over HTTP: /predict, the NEWS2 health monitor, /metrics"),
    "compress": ("medmm.commands.compress", "quantise, prune and distil a model; compare size, latency and AUROC"),
    "ask": ("medmm.commands.ask", "answer a question about one patient from the record, every statement cited"),
    "export": ("medmm.commands.export", "export a model to TorchScript and ONNX (checked against the eager model)"),
    "model": ("medmm.commands.model", "model folder tools: `upgrade` an old pickle-based folder to the data-only bundle"),
    "preprocess": ("medmm.commands.preprocess", "fill the image cache ahead of training (resumable; --workers, --engine ray)"),
    "drift": ("medmm.commands.drift", "compare a current cohort with a reference: input, missingness, prediction and calibration drift"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmm",
        description="medmm: a medical multimodal research workbench.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"medmm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # only the chosen command's module is imported (keeps `medmm --help` fast)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:])
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except MedmmError as exc:
        print(f"medmm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
