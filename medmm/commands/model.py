"""``medmm model upgrade FOLDER``: rewrite an old model folder (preprocessor.pkl) as a data-only bundle."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("upgrade", help="convert a format 1/2 folder (pickled preprocessing) to format 3",
                        description="Convert a model folder whose preprocessing is a pickle (formats 1 and 2) to the "
                                    "data-only bundle (format 3). This unpickles it once, which runs code stored in "
                                    "the folder: upgrade only models you trust.")
    up.add_argument("folder", help="the old model folder")
    up.add_argument("--out", default=None, help="write the upgraded bundle here (default: in place)")
    info = sub.add_parser("info", help="print a model folder's format, tasks and modalities (reads JSON only)")
    info.add_argument("folder")


def run(args: argparse.Namespace) -> int:
    from ..models.bundle import FORMAT_VERSION, bundle_version, read_meta, upgrade_bundle

    if args.action == "info":
        meta = read_meta(args.folder)
        cfg = meta.get("config") or {}
        print(f"format {meta.get('format_version')}  model {meta.get('model', 'multimodal')}  tasks {list(cfg.get('tasks', {}))}  "
              f"modalities {cfg.get('modalities')}  fusion {cfg.get('fusion', {}).get('name')}")
        return 0
    before = bundle_version(args.folder)
    out = upgrade_bundle(args.folder, args.out)
    print(f"{args.folder}: format {before} -> {FORMAT_VERSION} ({out})" if before != FORMAT_VERSION or args.out
          else f"{args.folder} is already format {FORMAT_VERSION}")
    return 0
