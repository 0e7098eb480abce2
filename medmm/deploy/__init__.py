"""From model to bedside prototype: export (TorchScript, ONNX), compression, serving, drift.

Nothing here is imported by ``import medmm``; torch, onnxruntime and fastapi are imported by
the submodules that need them.
"""
