"""Export (TorchScript, ONNX single and split graphs) with parity, runtimes, and compression."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from model_helpers import build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_loaded, tmp_path_factory):
    from medmm.deploy.export import export_model

    model = build_tiny_model(tiny_loaded)
    model_dir = model.save(tmp_path_factory.mktemp("model") / "model")
    res = export_model(model, model_dir / "export", records=tiny_loaded.split("val") + tiny_loaded.split("test"),
                       formats=("torchscript", "onnx"))
    return model, model_dir, res


def test_export_writes_artifacts_with_parity(exported):
    import json

    model, model_dir, res = exported
    assert res.torchscript.exists() and res.onnx.exists()
    assert set(res.parity) == {"torchscript", "onnx"}
    assert all(v <= 1e-4 for v in res.parity.values())
    meta = json.loads((model_dir / "export" / "export.json").read_text())
    assert meta["modalities"] == list(model.modalities) and meta["parity_tol"] == 1e-4


def test_export_only_forward_matches_present_row_encoders(exported):
    """The all-rows wrapper gives the eager model's output on every presence pattern, batch sizes 1..n."""
    from medmm.deploy.export import InferenceModule, eager_probs, validation_inputs

    model, _, _ = exported
    inputs = validation_inputs(model, n=24, seed=3)
    ref = eager_probs(model, inputs)
    got = InferenceModule(model)(*inputs).detach().numpy()
    assert np.abs(ref - got).max() <= 1e-5
    one = tuple(x[2:3] for x in inputs)
    assert np.abs(InferenceModule(model)(*one).detach().numpy() - ref[2:3]).max() <= 1e-5


@pytest.mark.parametrize("runtime", ["torchscript", "onnx-full", pytest.param("onnx", marks=pytest.mark.slow),
                                     pytest.param("onnx-int8", marks=pytest.mark.slow)])
def test_runtimes_agree_on_records_and_dynamic_batch(exported, tiny_loaded, runtime):
    from medmm.deploy.runtime import Predictor

    model, model_dir, _ = exported
    records = tiny_loaded.records[:9]
    ref = model.predict_records(records)
    pred = Predictor.load(model_dir, runtime=runtime)
    tol = 0.05 if runtime.endswith("int8") else 1e-4
    assert np.abs(pred.predict_records(records) - ref).max() <= tol
    assert np.abs(pred.predict_records(records[:1]) - ref[:1]).max() <= tol
    # every modality missing: the prior, finite
    from medmm.records import PatientRecord

    empty = pred.predict_records([PatientRecord("x")])
    assert np.isfinite(empty).all()
    assert np.abs(empty - model.predict_records([PatientRecord("x")])).max() <= tol


@pytest.mark.slow
def test_split_export_parity(exported, tmp_path):
    from medmm.deploy.export import export_model

    model, _, _ = exported
    res = export_model(model, tmp_path, formats=("onnx-split",))
    assert res.parity["onnx-split"] <= 1e-4
    assert sorted(p.name for p in (tmp_path / "split").glob("*.onnx")) == sorted(
        [f"encoder_{m}.onnx" for m in model.modalities] + ["fusion.onnx"])


def test_parity_check_refuses_a_wrong_graph():
    from medmm.deploy.export import ExportError, check_parity

    a = np.array([[0.2, 0.7]])
    assert check_parity(a, a + 5e-5) <= 1e-4
    with pytest.raises(ExportError, match="exceeds"):
        check_parity(a, a + 1e-3)
    with pytest.raises(ExportError, match="shape"):
        check_parity(a, a[:, :1])


def test_dynamic_quantisation_and_pruning(exported):
    from torch import nn

    from medmm.deploy.compress import model_size_bytes, prune_model, quantize_dynamic, sparsity
    from medmm.deploy.export import eager_probs, validation_inputs

    model, _, _ = exported
    inputs = validation_inputs(model, n=16)
    ref = eager_probs(model, inputs)
    q = quantize_dynamic(model)
    kinds = {type(m).__module__ for m in q.modules()}
    assert any("quantized" in k for k in kinds)
    assert not any(isinstance(m, nn.GRU) and type(m) is nn.GRU for m in q.modules())
    assert model_size_bytes(q) < model_size_bytes(model)
    assert np.abs(eager_probs(q, inputs) - ref).max() < 0.05
    before = sparsity(model)  # the zero-initialised wide layers are zeros already
    p = prune_model(model, 0.5)
    assert 0.49 <= sparsity(p) <= 0.51 and sparsity(model) == before < 0.1  # the original is untouched
    assert model_size_bytes(p, compressed=True) < model_size_bytes(model, compressed=True)


def test_onnx_static_quantisation_calibrates(exported, tmp_path):
    from medmm.deploy.compress import quantize_onnx_static, quantized_op_report
    from medmm.deploy.export import onnx_feed, onnx_session, validation_inputs

    model, model_dir, _ = exported
    inputs = validation_inputs(model, n=16)
    names = [*model.modalities, "present"]
    calib = [dict(zip(names, [x[s:s + 8].numpy() for x in inputs])) for s in (0, 8)]
    out = quantize_onnx_static(model_dir / "export" / "model.onnx", tmp_path / "q.onnx", calib)
    assert quantized_op_report(out).get("QuantizeLinear", 0) > 0
    sess = onnx_session(out)
    probs = sess.run(None, onnx_feed(sess, inputs))[0]
    assert probs.shape == (16, 2) and np.isfinite(probs).all()


def test_compare_methods_table(exported, tiny_loaded, tmp_path):
    from medmm.data import MultimodalDataset
    from medmm.deploy.compress import compare_methods

    model, model_dir, _ = exported
    train = MultimodalDataset(tiny_loaded.split("train"), model.preprocessor, model.tasks)
    val = MultimodalDataset(tiny_loaded.split("val") + tiny_loaded.split("test"), model.preprocessor, model.tasks)
    df = compare_methods(model_dir, train, val, out_dir=tmp_path, methods=("fp32", "dynamic-int8", "pruned", "distilled"),
                         distill_epochs=1, n_latency=5)
    assert list(df["method"]) == ["fp32", "dynamic-int8", "pruned", "distilled"]
    for col in ("size_mb", "p50_ms", "p99_ms", "auroc_tumor", "d_auroc_tumor", "auprc_disease", "d_auprc_disease"):
        assert col in df.columns
    fp32 = df.set_index("method").loc["fp32"]
    assert fp32["d_auroc_tumor"] == 0 and fp32["speedup_p50"] == 1
    assert df.set_index("method").loc["dynamic-int8", "size_mb"] < fp32["size_mb"]
    assert (tmp_path / "student" / "medmm_model.json").exists()


@pytest.mark.parametrize("deep_on", [True, False])
def test_split_export_carries_the_wide_path(tiny_loaded, tmp_path, deep_on):
    """The wide (linear) layers read the raw feature vector, which the fusion graph never sees: the
    encoder graph of a table/text modality returns its wide logits beside its features, so the
    split graphs equal the eager model, with the deep part on and switched off (wide_select)."""
    import torch

    from medmm.deploy.export import SplitOnnxRunner, eager_probs, export_onnx_split, validation_inputs
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor

    torch.manual_seed(0)
    pre = MultimodalPreprocessor(modalities=("notes", "ehr")).fit(tiny_loaded.split("train"))
    cfg = ModelConfig(tasks={"tumor": "binary", "disease": "binary"}, modalities=("notes", "ehr"), dim=8,
                      encoders={"notes": {"name": "tfidf_mlp", "hidden": 8}, "ehr": {"name": "mlp", "hidden": 8}})
    model = MultimodalModel(cfg, pre.output_shapes(), pre).eval()
    assert set(model.wide) == {"notes", "ehr"}
    with torch.no_grad():
        for p in model.wide.parameters():  # zero-initialised: give them weight, or a dropped path goes unseen
            p.normal_(0, 0.5)
        model.set_deep(deep_on)
        model.wide_prior.copy_(torch.tensor([0.3, -0.2]))
    inputs = validation_inputs(model, tiny_loaded.records[:20])
    ref = eager_probs(model, inputs)
    export_onnx_split(model, tmp_path)
    runner = SplitOnnxRunner(tmp_path, model.modalities, model.config.dim)
    got = runner([x.numpy() for x in inputs])
    assert np.abs(got - ref).max() <= 1e-4
    with torch.no_grad():
        for p in model.wide.parameters():
            p.zero_()
    assert np.abs(eager_probs(model, inputs) - ref).max() > 1e-3  # the wide path matters in this check
