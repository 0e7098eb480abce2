"""One predictor interface over several runtimes: eager PyTorch, TorchScript, ONNX Runtime.

``Predictor.load(ref, runtime=...)`` loads a model through :func:`medmm.load_model` (a folder
or an MLflow URI) and, for the exported runtimes, reads the artefacts ``medmm export`` wrote
(``export_dir``), or exports once into the cache (:func:`medmm.train.hub.export_cache_dir`),
never into the model folder: a read-only model mount works and replicas do not race (each
export is written aside and renamed into place).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["Predictor", "RUNTIMES"]

#: ``onnx`` runs the split graphs (each encoder on its present rows only, then fusion); ``onnx-full``
#: the single graph (every encoder on every row); ``*-int8`` are dynamically quantised variants
RUNTIMES = ("eager", "torchscript", "onnx", "onnx-full", "eager-int8", "onnx-int8")


class Predictor:
    """Probabilities from preprocessed arrays or raw records, whatever the runtime."""

    def __init__(self, model: Any, runtime: str, fn: Any, *, threads: int | None = None) -> None:
        self.model = model  # the eager MultimodalModel (preprocessor, names, shapes)
        self.runtime = runtime
        self._fn = fn
        self.modalities = tuple(model.modalities)
        self.tasks = tuple(model.tasks)
        #: names of the probability columns (one per binary task; one per class of a multi-class task)
        self.columns = tuple(getattr(model, "output_columns", None) or model.tasks)
        self.preprocessor = model.preprocessor
        self.shapes = {m: tuple(model.input_shapes[m]) for m in self.modalities}

    @classmethod
    def load(cls, ref: Any, *, runtime: str = "onnx", export_dir: str | Path | None = None,
             threads: int | None = None, tracking_uri: str | None = None) -> "Predictor":
        """A predictor of the model ``ref`` names (folder, MLflow URI or loaded model)."""
        from ..train.hub import load_model

        model = load_model(ref, tracking_uri=tracking_uri)
        return cls.from_model(model, runtime=runtime, export_dir=export_dir, threads=threads)

    @classmethod
    def from_model(cls, model: Any, *, runtime: str = "onnx", export_dir: str | Path | None = None,
                   threads: int | None = None) -> "Predictor":
        """A predictor of a loaded model. Exported artefacts are read from ``export_dir`` (written
        by ``medmm export``, checked to be this model's), or from the export cache, filled on
        first use."""
        import torch

        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}", hint=f"choose one of {RUNTIMES}")
        if threads:
            torch.set_num_threads(int(threads))
        model = model.cpu().eval()
        fmt = {"torchscript": "torchscript", "onnx-full": "onnx"}.get(runtime, "onnx-split")
        if runtime not in ("eager", "eager-int8"):
            export_dir = _export_dir(model, fmt, export_dir)
        if runtime == "eager":
            return cls(model, runtime, _eager_fn(model), threads=threads)
        if runtime == "eager-int8":
            from .compress import quantize_dynamic

            return cls(model, runtime, _eager_fn(quantize_dynamic(model)), threads=threads)
        if runtime == "torchscript":
            path = export_dir / "model.ts"
            if not path.exists():
                from .export import export_model

                export_model(model, export_dir, formats=("torchscript",))
            ts = torch.jit.load(str(path))

            def fn(inputs):
                with torch.no_grad():
                    return ts(*[torch.from_numpy(x) for x in inputs]).numpy()

            return cls(model, runtime, fn, threads=threads)
        from .export import SplitOnnxRunner, export_model, onnx_session

        if runtime == "onnx-full":
            path = export_dir / "model.onnx"
            if not path.exists():
                export_model(model, export_dir, formats=("onnx",))
            sess = onnx_session(path, threads=threads)
            names = [i.name for i in sess.get_inputs()]
            return cls(model, runtime, lambda inputs: sess.run(None, dict(zip(names, inputs)))[0], threads=threads)
        split = export_dir / "split"
        if getattr(model, "uses_tokens", False):
            raise ConfigError("this model's fusion reads encoder tokens: the split ONNX runtime cannot run it",
                              hint="use --runtime onnx-full")
        if not (split / "fusion.onnx").exists():
            export_model(model, export_dir, formats=("onnx-split",))
        if runtime == "onnx-int8":
            from .compress import quantize_onnx_dynamic

            qdir = export_dir / "split-int8"
            if not (qdir / "fusion.onnx").exists():
                qdir = Path(tempfile.mkdtemp(prefix="medmm-int8-"))  # quantised per process, not written back
                for f in split.glob("*.onnx"):
                    quantize_onnx_dynamic(f, qdir / f.name)
            split = qdir
        return cls(model, runtime, SplitOnnxRunner(split, model.modalities, model.config.dim, threads=threads),
                   threads=threads)

    # ------------------------------------------------------------------ inputs
    def arrays(self, items: list[dict[str, np.ndarray | None]]) -> list[np.ndarray]:
        """Preprocessed ``{modality: array or None}`` dicts -> the positional input arrays."""
        b = len(items)
        out = []
        present = np.zeros((b, len(self.modalities)), dtype=bool)
        for j, m in enumerate(self.modalities):
            arr = np.zeros((b, *self.shapes[m]), dtype=np.float32)
            for i, it in enumerate(items):
                v = it.get(m)
                if v is not None:
                    arr[i] = v
                    present[i, j] = True
            out.append(arr)
        out.append(present)
        return out

    def predict_arrays(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.asarray(self._fn(inputs), dtype=np.float32)

    def predict_values(self, items: list[dict[str, np.ndarray | None]]) -> np.ndarray:
        return self.predict_arrays(self.arrays(items))

    def predict_records(self, records: list[Any]) -> np.ndarray:
        """Probabilities ``[N, T]`` for raw :class:`~medmm.records.PatientRecord` objects."""
        return self.predict_values(self.preprocessor.transform_many(records))


def _export_dir(model: Any, fmt: str, export_dir: str | Path | None) -> Path:
    """``export_dir`` checked against the model, or the cache folder of ``fmt``, exported there
    atomically (a temporary sibling renamed into place) when missing."""
    import json
    import os
    import shutil

    from ..train.hub import export_cache_dir, model_fingerprint
    from .export import EXPORT_META, export_model

    if export_dir is not None:
        export_dir = Path(export_dir)
        meta = export_dir / EXPORT_META
        recorded = json.loads(meta.read_text()).get("model_fingerprint") if meta.exists() else None
        if recorded is not None and recorded != model_fingerprint(model):
            raise ConfigError("the export folder holds another model's artefacts", path=export_dir,
                              hint="re-run `medmm export MODEL --out DIR` for this model, or omit --export-dir")
        return export_dir
    final = export_cache_dir(model) / fmt
    if (final / EXPORT_META).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fmt}-", dir=final.parent))
    try:
        export_model(model, tmp, formats=(fmt,))
        try:
            os.replace(tmp, final)
        except OSError:  # another process put it there first: use theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _eager_fn(model: Any):
    import torch

    from .export import output_probs

    model.eval()

    def fn(inputs):
        with torch.inference_mode():
            values = {m: torch.from_numpy(inputs[j]) for j, m in enumerate(model.modalities)}
            return output_probs(model, model(values, torch.from_numpy(inputs[-1]))).numpy()

    return fn
