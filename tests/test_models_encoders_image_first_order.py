"""tiny_cnn3d's first-order intensity path: statistics of the input volume into the read-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.models.encoders import create_encoder
from medmm.models.encoders.image import first_order_stats


def _ct(n: int, contrast: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Windowed 12^3 'CT' volumes: a body at 0.5 in air at 0, a spine clipped at 1, a sphere of
    radius 2 at a random place whose contrast is ``contrast``, voxel noise 0.04."""
    g = torch.Generator().manual_seed(seed)
    s = 12
    idx = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32)] * 3, indexing="ij"))
    c = (s - 1) / 2
    body = ((idx[0] - c) / 5) ** 2 + ((idx[1] - c) / 4.5) ** 2 <= 1
    spine = ((idx[0] - c) / 1.2) ** 2 + ((idx[1] - c - 3) / 1.2) ** 2 <= 1
    out = torch.zeros(n, 1, s, s, s)
    for i in range(n):
        v = torch.where(body, 0.5, 0.0)
        v[spine] = 1.0
        centre = 4 + 4 * torch.rand(3, generator=g)
        ball = ((idx - centre[:, None, None, None]) ** 2).sum(0) <= 4
        v[ball & body & ~spine] += float(contrast[i])
        out[i, 0] = (v + 0.04 * torch.randn(v.shape, generator=g)).clamp(0, 1)
    return out


def test_first_order_stats_match_numpy():
    x = torch.rand(3, 2, 5, 6, 7)
    f = first_order_stats(x).numpy()
    v = x.flatten(2).numpy()
    want = np.stack([v.mean(-1), v.std(-1), np.quantile(v, 0.01, axis=-1), np.quantile(v, 0.99, axis=-1)], -1)
    np.testing.assert_allclose(f, want.reshape(3, 8), rtol=1e-5, atol=1e-6)


def test_first_order_option_and_weights_saved_without_it():
    enc = create_encoder("tiny_cnn3d", in_shape=(1, 12, 12, 12), out_dim=8, channels=(4, 8), first_order=True)
    x = torch.rand(5, 1, 12, 12, 12)
    out = enc(x, torch.tensor([True, True, False, True, True]))
    assert out.shape == (5, 8) and torch.all(out[2] == 0) and torch.isfinite(out).all()
    pooled, tok, _ = create_encoder("tiny_cnn3d", in_shape=(1, 12, 12, 12), out_dim=8, channels=(4, 8),
                                    first_order=True, with_tokens=True).encode_tokens(x)
    assert pooled.shape == (5, 8) and tok.shape[0] == 5
    old = create_encoder("tiny_cnn3d", in_shape=(1, 12, 12, 12), out_dim=8, channels=(4, 8))
    create_encoder("tiny_cnn3d", in_shape=(1, 12, 12, 12), out_dim=8, channels=(4, 8)).load_state_dict(old.state_dict())
    with pytest.raises(RuntimeError):
        enc.load_state_dict(old.state_dict())


def test_signed_lesion_contrast_is_learnt_in_a_few_steps():
    # the label follows a lesion's signed contrast (bright or dark) at a random place, 96 training
    # volumes, 40 steps: the first-order path reads it from the volume's mean
    first_order = True
    torch.manual_seed(0)
    n = 96
    z = torch.randn(n)
    y = (z + 0.3 * torch.randn(n) > 0).float()
    x = _ct(n, 0.15 * z)
    xt = _ct(64, 0.15 * (zt := torch.randn(64)), seed=1)
    yt = (zt > 0).float()
    enc = create_encoder("tiny_cnn3d", in_shape=(1, 12, 12, 12), out_dim=8, channels=(4, 8), first_order=first_order)
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    mask = torch.ones(n, dtype=torch.bool)
    for _ in range(40):
        b = torch.randperm(n)[:32]
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(enc(x[b], mask[b]))[:, 0], y[b])
        loss.backward()
        opt.step()
    enc.eval()
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        auc = roc_auc_score(yt.numpy(), head(enc(xt, torch.ones(64, dtype=torch.bool)))[:, 0].numpy())
    assert auc > 0.9
