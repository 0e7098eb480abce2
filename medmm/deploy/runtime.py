"""One predictor interface over several runtimes: eager PyTorch, TorchScript, ONNX Runtime.

``Predictor.load(model_dir, runtime=...)`` reads a folder written by
:meth:`MultimodalModel.save` (for the preprocessing and the eager model) and, for the exported
runtimes, the artifacts :func:`~medmm.deploy.export.export_model` wrote next to it (exported on
the fly into ``<model_dir>/export`` when missing).
"""

from __future__ import annotations

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
    def load(cls, model_dir: str | Path, *, runtime: str = "onnx", export_dir: str | Path | None = None,
             threads: int | None = None) -> "Predictor":
        from ..models.multimodal import MultimodalModel

        model_dir = Path(model_dir)
        model = MultimodalModel.load(model_dir)
        return cls.from_model(model, runtime=runtime, export_dir=Path(export_dir) if export_dir else model_dir / "export",
                              threads=threads)

    @classmethod
    def from_model(cls, model: Any, *, runtime: str = "onnx", export_dir: str | Path, threads: int | None = None
                   ) -> "Predictor":
        """A predictor of a loaded model; exported artifacts are read from (or written to) ``export_dir``."""
        import torch

        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}", hint=f"choose one of {RUNTIMES}")
        if threads:
            torch.set_num_threads(int(threads))
        export_dir = Path(export_dir)
        model = model.cpu().eval()
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
                qdir.mkdir(parents=True, exist_ok=True)
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


def _eager_fn(model: Any):
    import torch

    from .export import output_probs

    model.eval()

    def fn(inputs):
        with torch.inference_mode():
            values = {m: torch.from_numpy(inputs[j]) for j, m in enumerate(model.modalities)}
            return output_probs(model, model(values, torch.from_numpy(inputs[-1]))).numpy()

    return fn
