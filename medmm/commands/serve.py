"""``medmm serve MODEL``: the FastAPI service (predict, health monitor, metrics) under uvicorn."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder written by `medmm train` / MultimodalModel.save, or an MLflow "
                                      "model URI (runs:/RUN_ID/model, models:/NAME/VERSION, models:/NAME@ALIAS)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for a runs:/ or models:/ MODEL "
                        "(default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--export-dir", default=None,
                        help="artefacts written by `medmm export MODEL --out DIR` (read only); default: exported "
                             "once into $MEDMM_CACHE_DIR (~/.cache/medmm), never into the model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--runtime", default="onnx",
                        choices=["eager", "torchscript", "onnx", "onnx-full", "eager-int8", "onnx-int8"],
                        help="inference runtime (default onnx: ONNX Runtime, each encoder on present rows only)")
    parser.add_argument("--api-key", action="append", default=[],
                        help="an accepted API key (repeatable); also read from $MEDMM_API_KEYS (comma-separated)")
    parser.add_argument("--max-body-bytes", type=int, default=1_000_000,
                        help="largest accepted request body in bytes (default 1000000); larger gets 413")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: runtime's own)")
    parser.add_argument("--model-threshold", type=float, default=0.5,
                        help="model risk at which the health monitor escalates to low-medium (default 0.5)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..deploy.app import create_app, freeze_heap
    from ..deploy.runtime import Predictor
    from ..errors import ConfigError
    from ..monitor.health import MonitorConfig

    keys = list(args.api_key) + [k.strip() for k in os.environ.get("MEDMM_API_KEYS", "").split(",") if k.strip()]
    if not keys:
        raise ConfigError("no API key given", hint="pass --api-key KEY or set MEDMM_API_KEYS")
    predictor = Predictor.load(args.model, runtime=args.runtime, threads=args.threads, export_dir=args.export_dir,
                               tracking_uri=args.tracking_uri)
    cfg = MonitorConfig(model_threshold=args.model_threshold, model_high=max(args.model_threshold, 0.8))
    app = create_app(predictor, api_keys=keys, max_body_bytes=args.max_body_bytes, monitor_config=cfg)
    freeze_heap()
    print(f"medmm serve: {args.model} ({args.runtime}) on http://{args.host}:{args.port}  (OpenAPI at /docs)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
