"""Export a :class:`~medmm.models.multimodal.MultimodalModel`'s inference path to TorchScript and ONNX.

The model's encoders run only on present rows (``index_select``/``index_copy`` over
``nonzero(mask)``), a data-dependent shape that tracing bakes in and that ONNX exporters handle
poorly. The exported graph therefore uses an *export-only* encoder wrapper that encodes every
row and zeroes the absent ones with ``torch.where``. In eval mode every encoder is row-wise
(BatchNorm uses running statistics, dropout is off), so a present row's output is the same,
and absent rows are zeros exactly as before; :func:`export_model` proves it with a parity check
of the probabilities against the eager model on a validation batch (max abs difference
<= ``tol``, 1e-4 by default) and refuses to write an artifact that fails it.

The exported graph takes one tensor per modality (zeros where absent) and ``present``
(bool ``[B, M]``), and returns probabilities ``[B, T]``; the batch dimension is dynamic.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import MedmmError

__all__ = ["ExportError", "InferenceModule", "ExportResult", "export_model", "export_torchscript", "export_onnx",
           "example_inputs", "check_parity", "EXPORT_META", "export_onnx_split", "SplitOnnxRunner"]

EXPORT_META = "export.json"


class ExportError(MedmmError):
    """An export failed or did not match the eager model."""


def output_probs(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """The model's output function (sigmoid, softmax ...) on its logits."""
    if hasattr(model, "predict_from_logits"):
        return model.predict_from_logits(logits)
    return torch.sigmoid(logits)


class _AllRowsEncoder(nn.Module):
    """Export-only stand-in for an encoder: encode every row, zero the absent rows."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder.encode(x)
        return torch.where(mask[:, None], out.float(), torch.zeros_like(out, dtype=torch.float32))

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, tok, valid = self.encoder.encode_tokens(x)
        z = torch.where(mask[:, None], z.float(), torch.zeros_like(z, dtype=torch.float32))
        tok = torch.where(mask[:, None, None], tok.float(), torch.zeros_like(tok, dtype=torch.float32))
        return z, tok, valid & mask[:, None]


def export_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with export-friendly encoders (the original is untouched)."""
    m = copy.deepcopy(model).eval()
    m.preprocessor = None
    for name, enc in list(m.encoders.items()):
        if hasattr(enc, "encode"):
            m.encoders[name] = _AllRowsEncoder(enc)
    return m


class _FeaturesIn(nn.Module):
    """Export-only stand-in for an encoder whose input already is its features: the first ``dim``
    columns of ``[B, D (+ wide logits)]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x[:, : self.dim]
        return torch.where(mask[:, None], x, torch.zeros_like(x))


class _WideIn(nn.Module):
    """Export-only stand-in for a wide (linear) layer whose logits the encoder graph already
    computed: the columns after the features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.dim :]


class _EncodeOnly(nn.Module):
    """An encoder graph: features ``[B, D]``, followed by the modality's wide-path logits when it
    has one (the wide layer reads the raw feature vector, which the fusion graph never sees)."""

    def __init__(self, encoder: nn.Module, wide: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.wide = wide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder.encode(x)
        return z if self.wide is None else torch.cat([z, self.wide(x).to(z.dtype)], dim=1)


class InferenceModule(nn.Module):
    """Positional tensors in (one per modality, then ``present``), probabilities out."""

    def __init__(self, model: nn.Module, *, all_rows: bool = True) -> None:
        super().__init__()
        self.model = export_copy(model) if all_rows else copy.deepcopy(model).eval()
        if not all_rows:
            self.model.preprocessor = None
        self.modalities = tuple(model.modalities)
        self.tasks = tuple(model.tasks)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        values = {m: args[j] for j, m in enumerate(self.modalities)}
        return output_probs(self.model, self.model(values, args[len(self.modalities)]))


def example_inputs(model: Any, batch: int = 2, *, seed: int = 0, present: Any = None) -> tuple[torch.Tensor, ...]:
    """Random inputs of the model's shapes (every modality present unless ``present`` is given)."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn((batch, *model.input_shapes[m]), generator=g) for m in model.modalities]
    if present is None:
        present = torch.ones((batch, len(model.modalities)), dtype=torch.bool)
    return (*xs, torch.as_tensor(present, dtype=torch.bool))


def batch_inputs(batch: Any) -> tuple[torch.Tensor, ...]:
    """A :class:`~medmm.data.Batch` as the exported graph's positional inputs."""
    return (*[batch.values[m] for m in batch.modalities], batch.present.bool())


def input_names(model: Any) -> list[str]:
    return [*model.modalities, "present"]


@torch.no_grad()
def eager_probs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    model.eval()
    values = {m: inputs[j] for j, m in enumerate(model.modalities)}
    return output_probs(model, model(values, inputs[-1])).numpy()


def _onnx_export(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, names: list[str],
                 opset: int, *, varargs: bool = False) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = tuple({0: batch} for _ in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=names, output_names=["out"],
                          dynamic_shapes=(shapes,) if varargs else shapes, opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)


def export_onnx_split(model: nn.Module, out_dir: str | Path, *, opset: int = 18) -> dict[str, Path]:
    """Export one ONNX graph per encoder (``encoder_<m>.onnx``: input ``[B, ...]`` -> features
    ``[B, D]``) and one for the rest (``fusion.onnx``: features per modality + ``present`` ->
    probabilities). A runtime then encodes only the present rows of each modality, exactly as
    the eager model does, and skips an absent modality's encoder altogether."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    if getattr(model, "uses_tokens", False):
        raise ExportError("this model's fusion reads encoder tokens, which the split graphs do not carry",
                          hint="use the single graph (runtime onnx-full)")
    paths: dict[str, Path] = {}
    for m in model.modalities:
        enc = model.encoders[m]
        if not hasattr(enc, "encode"):
            raise ExportError(f"encoder of {m!r} has no encode() method", hint="split export needs encode()")
        ex = (torch.randn((2, *model.input_shapes[m])),)
        paths[m] = out / f"encoder_{m}.onnx"
        wide = copy.deepcopy(model.wide[m]).eval() if m in getattr(model, "wide", {}) else None
        _onnx_export(_EncodeOnly(copy.deepcopy(enc).eval(), wide), ex, paths[m], [m], opset)
    head = _SplitHead(model)
    ex = (*[torch.randn(2, split_width(model, m)) for m in model.modalities],
          torch.ones(2, len(model.modalities), dtype=torch.bool))
    paths["fusion"] = out / "fusion.onnx"
    _onnx_export(head, ex, paths["fusion"], [*[f"feat_{m}" for m in model.modalities], "present"], opset,
                 varargs=True)
    return paths


class _SplitHead(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        self.model.preprocessor = None
        dim = int(model.config.dim)
        for name in list(self.model.encoders):
            self.model.encoders[name] = _FeaturesIn(dim)
        for name in list(getattr(self.model, "wide", {})):
            self.model.wide[name] = _WideIn(dim)
        self.modalities = tuple(model.modalities)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        feats = {m: args[j] for j, m in enumerate(self.modalities)}
        return output_probs(self.model, self.model(feats, args[len(self.modalities)]))


def split_width(model: nn.Module, modality: str) -> int:
    """Columns of a split encoder graph's output: the features, plus the wide-path logits when
    the modality has a wide layer."""
    return int(model.config.dim) + (int(model.n_outputs) if modality in getattr(model, "wide", {}) else 0)


class SplitOnnxRunner:
    """Runs the split graphs: each encoder on its present rows only, then fusion and heads."""

    def __init__(self, out_dir: str | Path, modalities: tuple[str, ...], dim: int, *, threads: int | None = None) -> None:
        out = Path(out_dir)
        self.modalities = tuple(modalities)
        self.dim = int(dim)
        self.encoders = {m: onnx_session(out / f"encoder_{m}.onnx", threads=threads) for m in self.modalities}
        self.enc_input = {m: s.get_inputs()[0].name for m, s in self.encoders.items()}
        self.fusion = onnx_session(out / "fusion.onnx", threads=threads)
        self.fusion_inputs = [i.name for i in self.fusion.get_inputs()]
        # features, then wide-path logits for a modality with a wide layer (the fusion graph's input width)
        self.width = {m: _static_width(i.shape, self.dim) for m, i in zip(self.modalities, self.fusion.get_inputs())}

    def __call__(self, inputs: list[np.ndarray] | tuple[np.ndarray, ...]) -> np.ndarray:
        present = np.asarray(inputs[-1], dtype=bool)
        b = present.shape[0]
        feats = []
        for j, m in enumerate(self.modalities):
            f = np.zeros((b, self.width[m]), dtype=np.float32)
            rows = np.flatnonzero(present[:, j])
            if rows.size:
                x = np.asarray(inputs[j], dtype=np.float32)
                x = x if rows.size == b else x[rows]
                f[rows] = self.encoders[m].run(None, {self.enc_input[m]: np.ascontiguousarray(x)})[0]
            feats.append(f)
        return self.fusion.run(None, dict(zip(self.fusion_inputs, [*feats, present])))[0]


def _static_width(shape: Any, default: int) -> int:
    last = shape[-1] if shape else None
    return int(last) if isinstance(last, int) else int(default)


def export_torchscript(model: nn.Module, path: str | Path, *, example: tuple[torch.Tensor, ...] | None = None) -> Path:
    """Trace the inference path (all-rows encoders) to a TorchScript file."""
    path = Path(path)
    module = InferenceModule(model).eval()
    example = example or example_inputs(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        traced = torch.jit.freeze(traced.eval())
    traced.save(str(path))
    return path


def export_onnx(model: nn.Module, path: str | Path, *, example: tuple[torch.Tensor, ...] | None = None,
                opset: int = 18, dynamo: bool | None = None, all_rows: bool = True) -> tuple[Path, str]:
    """Export the inference path to ONNX with a dynamic batch axis; returns (path, exporter used).

    ``dynamo=None`` tries the dynamo exporter (``torch.export``) first and falls back to the
    TorchScript-based one.
    """
    path = Path(path)
    module = InferenceModule(model, all_rows=all_rows).eval()
    example = example or example_inputs(model)
    names = input_names(model)
    errors = []
    for use_dynamo in ([True, False] if dynamo is None else [dynamo]):
        try:
            # grad mode stays on: under no_grad nn.TransformerEncoderLayer takes its fused fast path
            # (aten::_transformer_encoder_layer_fwd), which the TorchScript-based exporter cannot write
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if use_dynamo:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    shapes = (tuple({0: batch} for _ in names),)  # forward(*args): one varargs tuple
                    torch.onnx.export(module, example, str(path), input_names=names, output_names=["probs"],
                                      dynamic_shapes=shapes, opset_version=opset, dynamo=True,
                                      external_data=False, verbose=False)
                else:
                    torch.onnx.export(module, example, str(path), input_names=names, output_names=["probs"],
                                      dynamic_axes={n: {0: "batch"} for n in [*names, "probs"]},
                                      opset_version=opset, dynamo=False)
            return path, "dynamo" if use_dynamo else "torchscript"
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types; reported below
            errors.append(f"{'dynamo' if use_dynamo else 'torchscript'} exporter: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    raise ExportError("ONNX export failed; " + " | ".join(errors), path=path,
                      hint="check that every encoder has an encode() method that runs row-wise")


def onnx_session(path: str | Path, *, threads: int | None = None):
    """An onnxruntime CPU session (CUDA when available) with full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), opts, providers=providers)


def onnx_feed(session: Any, inputs: tuple[torch.Tensor, ...] | tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return {n: np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x) for n, x in zip(names, inputs)}


def check_parity(reference: np.ndarray, other: np.ndarray, *, tol: float = 1e-4, name: str = "export") -> float:
    """Max abs difference of probabilities; raises :class:`ExportError` above ``tol``."""
    reference, other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise ExportError(f"{name}: output shape {other.shape} differs from the eager model's {reference.shape}")
    diff = float(np.max(np.abs(reference - other))) if reference.size else 0.0
    if not np.isfinite(other).all() or diff > tol:
        raise ExportError(f"{name}: max abs probability difference {diff:.3g} exceeds {tol:g}",
                          hint="the exported graph does not reproduce the eager model")
    return diff


@dataclass
class ExportResult:
    out_dir: Path
    torchscript: Path | None
    onnx: Path | None
    onnx_exporter: str | None
    parity: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def validation_inputs(model: Any, records: list | None = None, *, n: int = 32, seed: int = 0
                      ) -> tuple[torch.Tensor, ...]:
    """A parity batch: the records' preprocessed tensors when given, else random inputs with
    every presence pattern represented (all present, all absent and random masks)."""
    if records:
        from ..data import collate, encode_records

        items = encode_records(list(records)[:n], model.preprocessor)
        return batch_inputs(collate(items, model.modalities, model.preprocessor.output_shapes(), ()))
    g = torch.Generator().manual_seed(seed)
    present = torch.rand((n, len(model.modalities)), generator=g) > 0.4
    present[0] = True
    present[1] = False
    xs = example_inputs(model, n, seed=seed, present=present)
    # absent rows carry zeros, as collate writes them
    return (*[torch.where(present[:, j].view(-1, *[1] * (x.dim() - 1)), x, torch.zeros_like(x))
              for j, x in enumerate(xs[:-1])], present)


def export_model(model: Any, out_dir: str | Path, *, records: list | None = None, formats: tuple[str, ...] =
                 ("torchscript", "onnx", "onnx-split"), tol: float = 1e-4, opset: int = 18) -> ExportResult:
    """Export ``model`` (a MultimodalModel, a model folder or an MLflow URI: :func:`medmm.load_model`) to ``out_dir``.

    Writes ``model.ts``, ``model.onnx``, ``split/`` (:func:`export_onnx_split`) and ``export.json`` (inputs, shapes, tasks, parity),
    after checking each artifact against the eager model on ``records`` (the validation batch;
    random inputs covering every presence pattern when not given).
    """
    from ..train.hub import load_model, model_fingerprint

    model = load_model(model).cpu().eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    val = validation_inputs(model, records)
    ref = eager_probs(model, val)
    res = ExportResult(out, None, None, None)
    if "torchscript" in formats:
        t = time.perf_counter()
        res.torchscript = export_torchscript(model, out / "model.ts")
        ts = torch.jit.load(str(res.torchscript))
        with torch.no_grad():
            res.parity["torchscript"] = check_parity(ref, ts(*val).numpy(), tol=tol, name="TorchScript")
        res.seconds["torchscript"] = time.perf_counter() - t
    if "onnx" in formats:
        t = time.perf_counter()
        res.onnx, res.onnx_exporter = export_onnx(model, out / "model.onnx", opset=opset)
        sess = onnx_session(res.onnx)
        got = sess.run(None, onnx_feed(sess, val))[0]
        res.parity["onnx"] = check_parity(ref, got, tol=tol, name="ONNX Runtime")
        res.seconds["onnx"] = time.perf_counter() - t
    if "onnx-split" in formats and not getattr(model, "uses_tokens", False):
        t = time.perf_counter()
        export_onnx_split(model, out / "split", opset=opset)
        runner = SplitOnnxRunner(out / "split", model.modalities, model.config.dim)
        res.parity["onnx-split"] = check_parity(ref, runner(tuple(x.numpy() for x in val)), tol=tol,
                                                name="ONNX Runtime (split graphs)")
        res.seconds["onnx-split"] = time.perf_counter() - t
    meta = {
        "modalities": list(model.modalities), "tasks": list(model.tasks),
        "inputs": {m: [None, *model.input_shapes[m]] for m in model.modalities},
        "present": [None, len(model.modalities)], "output": "probs [batch, tasks]",
        "torchscript": res.torchscript.name if res.torchscript else None,
        "onnx": res.onnx.name if res.onnx else None, "onnx_exporter": res.onnx_exporter,
        "onnx_split": "split/" if "onnx-split" in res.parity else None,
        "parity_max_abs_diff": res.parity, "parity_tol": tol, "parity_batch": int(val[-1].shape[0]),
        "parity_patterns": int(len({tuple(r) for r in val[-1].tolist()})),
        "torch": torch.__version__, "model_fingerprint": model_fingerprint(model),
    }
    old = out / EXPORT_META
    if old.exists():  # a partial re-export keeps what an earlier one recorded
        prev = json.loads(old.read_text())
        if prev.get("model_fingerprint") == meta["model_fingerprint"]:
            meta["parity_max_abs_diff"] = {**prev.get("parity_max_abs_diff", {}), **res.parity}
            for k in ("torchscript", "onnx", "onnx_exporter", "onnx_split"):
                meta[k] = meta[k] or prev.get(k)
    old.write_text(json.dumps(meta, indent=2) + "\n")
    return res
