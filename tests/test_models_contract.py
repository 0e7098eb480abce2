"""One shared contract test per pluggable family, run over every registered member (as
scikit-learn's ``check_estimator`` and timm's registry-driven tests do): encoders and fusions.

Members registered with ``heavy=True`` (large MONAI networks) run under ``make test-slow``.
A new encoder must register an ``example`` (small keyword arguments with ``in_shape``) and an
``input`` kind; a new fusion is built from ``modalities`` and ``dim`` alone.
"""

from __future__ import annotations

import pytest
import torch

from medmm.models import ENCODERS, FUSIONS, create_encoder, create_fusion

B = 5
MODS = ("image", "notes", "vitals", "ehr")
DIM = 16
ATOL = 1e-5


def make_input(name: str, batch: int = B, seed: int = 0) -> torch.Tensor:
    meta = ENCODERS.meta[name]
    shape = tuple(meta["example"]["in_shape"])
    g = torch.Generator().manual_seed(seed)
    kind = meta["input"]
    if kind == "tokens":
        ids = torch.randint(2, meta["example"]["vocab_size"], (batch, *shape), generator=g)
        ids[:, shape[0] // 2:] = 0  # padding
        ids[1, 1:] = 0
        return ids.float()
    if kind == "sequence":
        x = torch.rand((batch, *shape), generator=g)
        c = shape[-1] // 3
        x[..., :c] = torch.randn((batch, shape[0], c), generator=g)
        x[..., c:2 * c] = (x[..., c:2 * c] > 0.5).float()
        return x
    return torch.randn((batch, *shape), generator=g)


def build(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    meta = ENCODERS.meta[name]
    kw = dict(meta["example"], out_dim=DIM, **extra)
    if meta.get("tokens"):
        kw.setdefault("with_tokens", True)
    return create_encoder(name, **kw).eval()


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.slow) if ENCODERS.meta[n].get("heavy") else n
                        for n in ENCODERS])
def encoder_name(request):
    return request.param


def test_every_encoder_declares_what_the_contract_test_needs(encoder_name):
    meta = ENCODERS.meta[encoder_name]
    assert meta["modality"] in MODS
    assert meta["kind"] in ("image", "text", "series", "table")
    assert meta["input"] in ("image", "vector", "sequence", "tokens", "embedding")
    assert "in_shape" in meta["example"]


def test_encoder_forward_backward_and_zero_on_absent_rows(encoder_name):
    enc = build(encoder_name).train()
    x = make_input(encoder_name)
    mask = torch.tensor([True, False, True, True, False])
    out = enc(x, mask)
    assert out.shape == (B, DIM) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    out.pow(2).sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


def test_encoder_present_row_ignores_the_other_rows(encoder_name):
    enc = build(encoder_name)
    x = make_input(encoder_name)
    with torch.no_grad():
        alone = enc(x, torch.tensor([True, False, False, False, False]))
        full = enc(x, torch.ones(B, dtype=torch.bool))
        other = x.clone()
        other[1:] = make_input(encoder_name, seed=1)[1:]
        changed = enc(other, torch.tensor([True, True, False, True, False]))
    torch.testing.assert_close(alone[0], full[0], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(alone[0], changed[0], atol=ATOL, rtol=1e-4)


def test_encoder_all_missing_rows_are_finite(encoder_name):
    enc = build(encoder_name)
    x = make_input(encoder_name)
    with torch.no_grad():
        out = enc(x, torch.zeros(B, dtype=torch.bool))
        pooled, tok, valid = enc.forward_tokens(x, torch.zeros(B, dtype=torch.bool))
    assert torch.isfinite(out).all() and not out.any()
    assert torch.isfinite(tok).all() and not valid.any()


def test_encoder_batch_permutation_permutes_outputs(encoder_name):
    enc = build(encoder_name)
    x = make_input(encoder_name)
    mask = torch.tensor([True, True, False, True, True])
    perm = torch.tensor([3, 0, 4, 2, 1])
    with torch.no_grad():
        out = enc(x, mask)
        out_p = enc(x[perm], mask[perm])
        _, tok, valid = enc.forward_tokens(x, mask)
        _, tok_p, valid_p = enc.forward_tokens(x[perm], mask[perm])
    torch.testing.assert_close(out[perm], out_p, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(tok[perm], tok_p, atol=ATOL, rtol=1e-4)
    assert torch.equal(valid[perm], valid_p)


def test_encoder_is_deterministic_under_a_seed(encoder_name):
    x = make_input(encoder_name)
    mask = torch.tensor([True, True, False, True, True])
    outs = []
    for _ in range(2):
        enc = build(encoder_name, seed=3).train()
        torch.manual_seed(5)  # dropout draws
        outs.append(enc(x, mask).detach())
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    assert not torch.equal(outs[0], build(encoder_name, seed=4).train()(x, mask).detach())


def test_encoder_exports_to_torchscript(encoder_name):
    enc = build(encoder_name)
    x = make_input(encoder_name)
    mask = torch.tensor([True, False, True, True, True])
    with torch.no_grad():
        traced = torch.jit.trace(enc, (x, mask), check_trace=False)
        x2 = make_input(encoder_name, seed=2)
        mask2 = torch.tensor([False, True, True, False, True])
        torch.testing.assert_close(traced(x2, mask2), enc(x2, mask2), atol=1e-4, rtol=1e-4)


def test_encoder_tokens_match_the_pooled_contract(encoder_name):
    enc = build(encoder_name)
    x = make_input(encoder_name)
    mask = torch.tensor([True, False, True, True, False])
    with torch.no_grad():
        pooled, tok, valid = enc.forward_tokens(x, mask)
        out = enc(x, mask)
    assert tok.shape[0] == B and tok.shape[2] == DIM and valid.shape == tok.shape[:2]
    assert not valid[~mask].any() and valid[mask].any(dim=1).all()
    torch.testing.assert_close(pooled, out, atol=ATOL, rtol=1e-4)


def test_encoder_freezes_and_unfreezes_by_stage(encoder_name):
    enc = build(encoder_name)
    stages = enc.stages()
    assert stages and all(isinstance(s, torch.nn.Module) for s in stages)
    enc.freeze(1)
    assert all(not p.requires_grad for p in stages[0].parameters())
    assert any(p.requires_grad for p in enc.parameters())
    enc.freeze()
    assert not any(p.requires_grad for s in stages for p in s.parameters())
    enc.train()
    bns = [m for s in stages for m in s.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in bns)  # frozen batch norms keep their statistics
    enc.unfreeze()
    assert all(p.requires_grad for p in enc.parameters())


def test_encoder_loads_pretrained_weights_from_a_local_file(encoder_name, tmp_path):
    src = build(encoder_name, seed=1)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.backbone().state_dict().items()}}, path)
    dst = build(encoder_name, seed=2)
    report = dst.load_pretrained(path)
    assert report["loaded"] and not report["missing"]
    want = src.backbone().state_dict()
    got = dst.backbone().state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


# --------------------------------------------------------------------------- fusion

def fusion_inputs(seed: int = 0, batch: int = B):
    g = torch.Generator().manual_seed(seed)
    present = torch.rand((batch, len(MODS)), generator=g) > 0.4
    present[0] = True
    present[1] = False  # a row with nothing
    feats = {m: torch.randn((batch, DIM), generator=g) * present[:, j:j + 1] for j, m in enumerate(MODS)}
    lengths = {"image": 8, "notes": 6, "vitals": 4, "ehr": 3}
    tokens = {}
    for j, m in enumerate(MODS):
        valid = torch.ones((batch, lengths[m]), dtype=torch.bool) & present[:, j:j + 1]
        valid[:, -1] &= torch.rand(batch, generator=g) > 0.5
        tokens[m] = (torch.randn((batch, lengths[m], DIM), generator=g) * valid[..., None], valid)
    return feats, present, tokens


def build_fusion(name: str, seed: int = 0):
    torch.manual_seed(seed)
    kw = {"n_outputs": 3} if FUSIONS.meta[name].get("output") == "logits" else {}
    return create_fusion(name, modalities=MODS, dim=DIM, **kw).eval()


def run_fusion(f, feats, present, tokens):
    return f(feats, present, tokens) if FUSIONS.meta[_name(f)].get("tokens") else f(feats, present)


def _name(f):
    return next(n for n in FUSIONS if type(f) is FUSIONS._items[n])


@pytest.fixture(params=list(FUSIONS))
def fusion_name(request):
    return request.param


def _subset(feats, present, tokens, idx):
    return ({m: v[idx] for m, v in feats.items()}, present[idx], {m: (t[idx], v[idx]) for m, (t, v) in tokens.items()})


def test_fusion_forward_backward(fusion_name):
    f = build_fusion(fusion_name).train()
    feats, present, tokens = fusion_inputs()
    feats = {m: v.requires_grad_() for m, v in feats.items()}
    out = run_fusion(f, feats, present, tokens)
    width = 3 if FUSIONS.meta[fusion_name].get("output") == "logits" else DIM
    assert out.shape == (B, width) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in f.parameters())
    assert all(torch.isfinite(p.grad).all() for p in f.parameters() if p.grad is not None)
    assert all(torch.isfinite(v.grad).all() for v in feats.values() if v.grad is not None)


def test_fusion_all_missing_row_is_finite_and_absent_features_are_ignored(fusion_name):
    f = build_fusion(fusion_name)
    feats, present, tokens = fusion_inputs()
    nothing = torch.zeros_like(present)
    with torch.no_grad():
        out = run_fusion(f, feats, nothing, tokens)
        noise = {m: torch.randn_like(v) for m, v in feats.items()}
        noisy_tokens = {m: (torch.randn_like(t), v) for m, (t, v) in tokens.items()}
        out_noise = run_fusion(f, noise, nothing, noisy_tokens)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out_noise, atol=ATOL, rtol=1e-4)  # the prior, whatever absent inputs hold
    torch.testing.assert_close(out, out[:1].expand_as(out), atol=ATOL, rtol=1e-4)


def test_fusion_present_row_ignores_the_other_rows(fusion_name):
    f = build_fusion(fusion_name)
    feats, present, tokens = fusion_inputs()
    other_feats, other_present, other_tokens = fusion_inputs(seed=9)
    other_present[0] = present[0]
    for m in MODS:
        other_feats[m][0] = feats[m][0]
        other_tokens[m][0][0] = tokens[m][0][0]
        other_tokens[m][1][0] = tokens[m][1][0]
    with torch.no_grad():
        a = run_fusion(f, feats, present, tokens)
        b = run_fusion(f, other_feats, other_present, other_tokens)
        alone = run_fusion(f, *_subset(feats, present, tokens, torch.tensor([0])))
    torch.testing.assert_close(a[0], b[0], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(a[0], alone[0], atol=ATOL, rtol=1e-4)


def test_fusion_batch_permutation_permutes_outputs(fusion_name):
    f = build_fusion(fusion_name)
    feats, present, tokens = fusion_inputs()
    perm = torch.tensor([2, 4, 0, 1, 3])
    with torch.no_grad():
        out = run_fusion(f, feats, present, tokens)
        out_p = run_fusion(f, *_subset(feats, present, tokens, perm))
    torch.testing.assert_close(out[perm], out_p, atol=ATOL, rtol=1e-4)


def test_fusion_is_deterministic_under_a_seed(fusion_name):
    feats, present, tokens = fusion_inputs()
    outs = []
    for _ in range(2):
        f = build_fusion(fusion_name, seed=3).train()
        torch.manual_seed(1)
        outs.append(run_fusion(f, feats, present, tokens).detach())
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


class _FlatFusion(torch.nn.Module):
    """Tensors in, so that tracing sees no dicts."""

    def __init__(self, f, uses_tokens: bool) -> None:
        super().__init__()
        self.f = f
        self.uses_tokens = uses_tokens

    def forward(self, feats, present, t0, v0, t1, v1, t2, v2, t3, v3):
        d = {m: feats[:, j] for j, m in enumerate(MODS)}
        tok = dict(zip(MODS, ((t0, v0), (t1, v1), (t2, v2), (t3, v3))))
        return self.f(d, present, tok) if self.uses_tokens else self.f(d, present)


def test_fusion_exports_to_torchscript(fusion_name):
    f = build_fusion(fusion_name)
    flat = _FlatFusion(f, bool(FUSIONS.meta[fusion_name].get("tokens")))

    def args(seed):
        feats, present, tokens = fusion_inputs(seed)
        return (torch.stack([feats[m] for m in MODS], 1), present, *[x for m in MODS for x in tokens[m]])

    with torch.no_grad():
        traced = torch.jit.trace(flat, args(0), check_trace=False)
        torch.testing.assert_close(traced(*args(4)), flat(*args(4)), atol=1e-4, rtol=1e-4)
