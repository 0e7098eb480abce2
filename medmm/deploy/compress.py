"""Model compression: dynamic int8 quantisation, static int8 quantisation (ONNX Runtime, QDQ),
magnitude pruning and knowledge distillation into a smaller student, with a comparison table.

* **Dynamic int8** (:func:`quantize_dynamic`): ``torch.ao.quantization.quantize_dynamic`` over
  ``nn.Linear``, ``nn.GRU`` and ``nn.LSTM`` (weights int8, activations quantised on the fly);
  :func:`quantize_onnx_dynamic` does the same to the exported ONNX graph with
  ``onnxruntime.quantization``.
* **Static int8** (:func:`quantize_onnx_static`): weights and activations int8 with activation
  ranges calibrated on validation inputs (``onnxruntime.quantization.quantize_static``, QDQ
  format). It applies to the convolutions and matrix multiplications of the graph; recurrent
  ops (GRU) stay float, and :func:`quantized_op_report` says which ops were quantised.
* **Pruning** (:func:`prune_model`): global L1 magnitude pruning of Linear and Conv weights
  (``torch.nn.utils.prune``), made permanent.
* **Distillation** (:func:`distill`): a smaller :class:`MultimodalModel` trained on the
  teacher's probabilities (and the labels where known) on the training split.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["quantize_dynamic", "quantize_onnx_dynamic", "quantize_onnx_static", "prune_model", "distill",
           "student_config", "model_size_bytes", "compare_methods", "quantized_op_report", "sparsity"]


def quantize_dynamic(model: Any) -> Any:
    """A copy of ``model`` with Linear/GRU/LSTM layers dynamically quantised to int8 (CPU)."""
    import torch
    from torch import nn

    m = copy.deepcopy(model).cpu().eval()
    # nn.TransformerEncoderLayer reads its Linear weights directly (fused fast path), which a
    # dynamically quantised Linear no longer has: its layers stay float
    skip = [name for name, mod in m.named_modules() if isinstance(mod, nn.TransformerEncoderLayer)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (moving to torchao)
        from torch.ao.quantization import default_dynamic_qconfig
        from torch.ao.quantization import quantize_dynamic as qd

        spec = {name: default_dynamic_qconfig for name, mod in m.named_modules()
                if isinstance(mod, (nn.Linear, nn.GRU, nn.LSTM)) and name
                and not any(name == s or name.startswith(s + ".") for s in skip)}
        q = qd(m, spec, dtype=torch.qint8)
    q.preprocessor = model.preprocessor
    return q


#: ops ONNX Runtime quantises dynamically; convolutions are left float (its ConvInteger kernel is
#: slower than the float convolution on CPU)
ONNX_DYNAMIC_OPS = ("MatMul", "Gemm", "GRU", "LSTM", "Attention")


def quantize_onnx_dynamic(src: str | Path, dst: str | Path, *, op_types: tuple[str, ...] = ONNX_DYNAMIC_OPS) -> Path:
    """Dynamic int8 quantisation of an ONNX model (int8 weights of ``op_types``).

    Weights in 7 bits (``reduce_range``): ONNX Runtime multiplies uint8 activations by int8
    weights, and on x86 CPUs without VNNI (AVX2 only, e.g. this project's AMD EPYC of 2026-12-02)
    its kernels add pairs of those products in 16 bits, which saturate with full-range weights:
    there the int8 graph of tests/test_deploy.py's model was 0.086 off the float one (0.05
    allowed; 0.0036 with 7-bit weights), on the AVX-512 machine of earlier sessions within it. A quantised file may run on
    either kind of machine, so the range is always reduced, as ONNX Runtime advises for non-VNNI
    CPUs."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_qd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ort_qd(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
               reduce_range=True)
    return Path(dst)


def quantize_onnx_static(src: str | Path, dst: str | Path, calibration: list[dict[str, np.ndarray]], *,
                         per_channel: bool = True) -> Path:
    """Static int8 (QDQ) quantisation of an ONNX model with activation ranges from ``calibration``
    (a list of input feeds, e.g. validation batches)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ConfigError("static quantisation needs calibration inputs", hint="give validation records")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self):
            return next(self.it, None)

    dst = Path(dst)
    pre = dst.with_suffix(".pre.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the original instead
            source = Path(src)
        quantize_static(str(source), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel)
    pre.unlink(missing_ok=True)
    return dst


def quantized_op_report(path: str | Path) -> dict[str, int]:
    """Counts of op types in an ONNX graph (QuantizeLinear/DequantizeLinear/...Integer show quantisation)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in g.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def prune_model(model: Any, amount: float = 0.5) -> Any:
    """A copy of ``model`` with the ``amount`` smallest-magnitude weights of all Linear and Conv
    layers (taken together, global L1) set to zero, permanently."""
    import torch
    import torch.nn.utils.prune as prune
    from torch import nn

    if not 0.0 <= amount < 1.0:
        raise ConfigError(f"pruning amount {amount} is outside [0, 1)")
    # torch's global pruning flattens each weight with view(-1): channels-last convolution weights
    # (TinyCNN3D) are made contiguous first (same values)
    m = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    params = [(mod, "weight") for mod in m.modules()
              if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and getattr(mod, "weight", None) is not None]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for mod, name in params:
        prune.remove(mod, name)
    return m


def sparsity(model: Any) -> float:
    """Fraction of zero weights over all Linear and Conv layers."""
    from torch import nn

    zeros = total = 0
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = mod.weight.detach()
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / max(total, 1)


def model_size_bytes(model: Any, *, compressed: bool = False) -> int:
    """Bytes of the serialised state dict (gzip-compressed when ``compressed``: shows sparsity)."""
    import gzip

    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    data = buf.getvalue()
    return len(gzip.compress(data, compresslevel=6)) if compressed else len(data)


def student_config(teacher_config: Any, *, dim: int = 16) -> Any:
    """A smaller config of the teacher's kind: narrower features and encoders."""
    from ..models.multimodal import ModelConfig

    small = {
        "tiny_cnn3d": {"channels": (4, 8, 16)},
        "tfidf_mlp": {"hidden": 32},
        "gru": {"hidden": 16},
        "mlp": {"hidden": 16},
    }
    encoders = {}
    for m, spec in teacher_config.encoders.items():
        spec = dict(spec)
        spec.update(small.get(spec.get("name"), {}))
        encoders[m] = spec
    fusion = dict(teacher_config.fusion)
    if fusion.get("name") == "attention":
        fusion["heads"] = 2
    d = teacher_config.to_dict()
    d.update(encoders=encoders, fusion=fusion, dim=dim)
    return ModelConfig.from_dict(d)


def distill(teacher: Any, train_ds: Any, val_ds: Any = None, *, config: Any = None, epochs: int = 20,
            batch_size: int = 32, lr: float = 3e-3, alpha: float = 0.7, seed: int = 0, progress: bool = False) -> Any:
    """Train a smaller student on ``alpha`` x BCE(teacher probabilities) + (1 - alpha) x BCE(labels).

    Returns the student with the best validation distillation loss (the teacher's preprocessor attached).
    """
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    from ..models.multimodal import MultimodalModel
    from ..train.trainer import masked_bce, seed_everything

    kinds = [teacher.config.task_spec(t)[0] if hasattr(teacher.config, "task_spec") else "binary" for t in teacher.tasks]
    if any(k != "binary" for k in kinds):
        raise ConfigError("distillation supports binary tasks only", hint="drop 'distilled' from the methods")
    seed_everything(seed)
    teacher = teacher.cpu().eval()
    student = MultimodalModel(config or student_config(teacher.config), teacher.input_shapes, teacher.preprocessor)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=train_ds.collate,
                                         generator=g)

    def soft_loss(model, batch):
        with torch.no_grad():
            target = torch.sigmoid(teacher(batch.values, batch.present))
        logits = model(batch.values, batch.present)
        return alpha * bce(logits, target) + (1 - alpha) * masked_bce(logits, batch)

    best, best_state = float("inf"), copy.deepcopy(student.state_dict())
    for _epoch in range(epochs):
        student.train()
        for batch in loader:
            opt.zero_grad()
            loss = soft_loss(student, batch)
            loss.backward()
            opt.step()
        if val_ds is not None and len(val_ds):
            student.eval()
            with torch.no_grad():
                vb = val_ds.collate([val_ds[i] for i in range(len(val_ds))])
                v = float(soft_loss(student, vb))
            if v < best:
                best, best_state = v, copy.deepcopy(student.state_dict())
    if val_ds is not None and len(val_ds):
        student.load_state_dict(best_state)
    torch.set_grad_enabled(True)
    return student.eval()


def _auc_table(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, tasks: tuple[str, ...]) -> dict[str, float]:
    from ..evaluate.metrics import binary_metrics

    out = {}
    for k, t in enumerate(tasks):
        m = binary_metrics(np.where(mask[:, k], labels[:, k], np.nan), probs[:, k])
        out[f"auroc_{t}"] = m["auroc"]
        out[f"auprc_{t}"] = m["auprc"]
    return out


def compare_methods(model: Any, train_ds: Any, val_ds: Any, *, out_dir: str | Path,
                    methods: tuple[str, ...] = ("fp32", "torchscript", "onnx", "dynamic-int8", "onnx-dynamic-int8",
                                                "onnx-static-int8", "pruned", "distilled"),
                    prune_amount: float = 0.5, distill_epochs: int = 20, n_latency: int = 200, threads: int | None = None,
                    seed: int = 0) -> Any:
    """One row per method: size, single-patient latency p50/p99, AUROC/AUPRC per task and their
    change against the fp32 eager model on ``val_ds``. ``model`` is a loaded model, a folder or an
    MLflow URI (:func:`medmm.load_model`). Artifacts are written to ``out_dir``."""
    import pandas as pd
    import torch

    from ..train.hub import load_model
    from .bench import measure_latency
    from .export import output_probs
    from .export import export_onnx, export_torchscript, onnx_session

    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model)
    tasks = model.tasks
    full = val_ds.collate([val_ds[i] for i in range(len(val_ds))])
    inputs = [*[full.values[m].numpy() for m in model.modalities], full.present.numpy()]
    labels, lmask = full.labels.numpy(), full.label_mask.numpy()
    # the single patient: the validation row with the most modalities present
    best = int(np.argmax(full.present.numpy().sum(1)))
    one = [x[best:best + 1] for x in inputs]

    def torch_fn(m):
        m.eval()

        def fn(xs):
            with torch.inference_mode():
                vals = {mm: torch.from_numpy(xs[j]) for j, mm in enumerate(model.modalities)}
                return output_probs(m, m(vals, torch.from_numpy(xs[-1]))).numpy()
        return fn

    def ort_fn(path):
        sess = onnx_session(path, threads=threads)
        names = [i.name for i in sess.get_inputs()]
        return lambda xs: sess.run(None, dict(zip(names, xs)))[0]

    rows = []
    onnx_path = out / "model.onnx"
    for method in methods:
        t0 = time.perf_counter()
        note = ""
        if method == "fp32":
            fn, size = torch_fn(model), model_size_bytes(model)
        elif method == "torchscript":
            p = export_torchscript(model, out / "model.ts")
            ts = torch.jit.load(str(p))
            fn = lambda xs, ts=ts: ts(*[torch.from_numpy(x) for x in xs]).detach().numpy()  # noqa: E731
            size = p.stat().st_size
        elif method in ("onnx", "onnx-dynamic-int8", "onnx-static-int8"):
            if not onnx_path.exists():
                export_onnx(model, onnx_path)
            p = onnx_path
            if method == "onnx-dynamic-int8":
                p = quantize_onnx_dynamic(onnx_path, out / "model.dynamic-int8.onnx")
            elif method == "onnx-static-int8":
                calib = [dict(zip([*model.modalities, "present"], [x[s:s + 8] for x in inputs]))
                         for s in range(0, len(inputs[-1]), 8)]
                p = quantize_onnx_static(onnx_path, out / "model.static-int8.onnx", calib)
                ops = quantized_op_report(p)
                note = f"{ops.get('QuantizeLinear', 0)} QuantizeLinear, GRU ops left float: {ops.get('GRU', 0)}"
            fn, size = ort_fn(p), p.stat().st_size
        elif method == "dynamic-int8":
            q = quantize_dynamic(model)
            fn, size = torch_fn(q), model_size_bytes(q)
        elif method == "pruned":
            pm = prune_model(model, prune_amount)
            fn, size = torch_fn(pm), model_size_bytes(pm, compressed=True)
            note = f"{sparsity(pm):.0%} of Linear/Conv weights zero; size is gzip of the state dict"
        elif method == "distilled":
            st = distill(model, train_ds, val_ds, epochs=distill_epochs, seed=seed)
            st.save(out / "student")
            fn, size = torch_fn(st), model_size_bytes(st)
            note = f"student dim {st.config.dim}, {sum(p.numel() for p in st.parameters())} parameters " \
                   f"(teacher {sum(p.numel() for p in model.parameters())})"
        else:
            raise ConfigError(f"unknown compression method {method!r}")
        build_s = time.perf_counter() - t0
        probs = np.asarray(fn(inputs))
        lat = measure_latency(fn, one, n=n_latency, warmup=max(5, n_latency // 10))
        rows.append({"method": method, "size_mb": size / 1e6, "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                     **_auc_table(probs, labels, lmask, tasks), "build_s": build_s, "note": note})
    df = pd.DataFrame(rows)
    base = df[df.method == "fp32"].iloc[0] if (df.method == "fp32").any() else None
    if base is not None:
        for t in tasks:
            df[f"d_auroc_{t}"] = df[f"auroc_{t}"] - base[f"auroc_{t}"]
            df[f"d_auprc_{t}"] = df[f"auprc_{t}"] - base[f"auprc_{t}"]
        df["speedup_p50"] = base["p50_ms"] / df["p50_ms"]
    return df
