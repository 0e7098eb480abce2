"""The GRU's trend read-out: per-signal mean and least-squares slope of the observed bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.errors import ConfigError
from medmm.models.encoders import create_encoder
from medmm.models.encoders.vitals import trend_features
from medmm.preprocess.vitals import VitalsPreprocessor
from medmm.records import Vitals


def _vitals(rows: list[tuple[float, str, float]], end: str = "2024-03-01T12:00:00") -> Vitals:
    import pandas as pd

    t_end = pd.Timestamp(end)
    frame = pd.DataFrame({"time": [t_end - pd.Timedelta(hours=h) for h, _, _ in rows],
                          "signal": [s for _, s, _ in rows], "value": [v for _, _, v in rows],
                          "unit": ["" for _ in rows]}).sort_values("time", ignore_index=True)
    return Vitals(frame=frame)


def test_trend_matches_a_least_squares_fit_on_irregular_charting():
    # heart rate charted irregularly and rising 10 bpm a day; SpO2 charted once (no slope)
    rng = np.random.default_rng(3)
    hours = np.sort(rng.choice(np.arange(0.5, 47.5, 2.0), size=9, replace=False))
    rows = [(float(h), "heart_rate", 80.0 + 10.0 * (48 - h) / 24) for h in hours] + [(5.0, "spo2", 96.0)]
    pre = VitalsPreprocessor(hours=48, step_hours=2).fit([_vitals(rows)])
    x = torch.as_tensor(pre.transform(_vitals(rows)))[None]
    f = trend_features(x)[0].numpy()
    c = len(pre.signals_)
    hr, spo2 = pre.signals_.index("heart_rate"), pre.signals_.index("spo2")
    grid = x[0].numpy()
    obs = grid[:, c + hr] > 0
    t = np.linspace(0, 1, grid.shape[0])[obs]
    slope, intercept = np.polyfit(t, grid[obs, hr], 1)
    assert f[c + hr] == pytest.approx(slope, rel=1e-4)
    assert f[hr] == pytest.approx(grid[obs, hr].mean(), rel=1e-4)
    assert slope > 0  # rising toward the index time
    assert f[c + spo2] == 0.0  # one observation: no slope
    assert np.isfinite(f).all()


def test_trend_ignores_carried_forward_bins():
    x = torch.zeros(1, 6, 3)  # one channel, six bins
    x[0, :, 0] = torch.tensor([1.0, 1.0, 3.0, 3.0, 3.0, 5.0])  # LOCF between observations
    x[0, [0, 2, 5], 1] = 1.0
    f = trend_features(x)[0]
    t = np.linspace(0, 1, 6)[[0, 2, 5]]
    assert float(f[1]) == pytest.approx(np.polyfit(t, [1.0, 3.0, 5.0], 1)[0], rel=1e-5)
    assert float(f[0]) == pytest.approx(3.0)


def test_gru_trend_option_shapes_and_old_weights():
    enc = create_encoder("gru", in_shape=(24, 15), out_dim=8, trend=True)
    x = torch.randn(4, 24, 15)
    x[..., 5:10] = (torch.rand(4, 24, 5) > 0.5).float()
    mask = torch.tensor([True, False, True, True])
    out = enc(x, mask)
    assert out.shape == (4, 8) and torch.all(out[1] == 0)
    pooled, tok, tmask = enc.encode_tokens(x)
    assert pooled.shape == (4, 8) and tok.shape == (4, 24, 8) and tmask.all()
    old = create_encoder("gru", in_shape=(24, 15), out_dim=8)  # a model saved before the option
    again = create_encoder("gru", in_shape=(24, 15), out_dim=8)
    again.load_state_dict(old.state_dict())
    with pytest.raises(RuntimeError):
        enc.load_state_dict(old.state_dict())  # a different read-out: never silently half-loaded
    with pytest.raises(ConfigError, match="3 features per channel"):
        create_encoder("gru", in_shape=(24, 16), trend=True)


def test_gru_trend_learns_a_slow_ramp_under_per_patient_offsets():
    # 64 patients, 24 bins, label = sign of a slow ramp buried in a per-patient offset
    torch.manual_seed(0)
    n, t = 64, 24
    y = (torch.rand(n) < 0.5).float()
    ramp = (2 * y - 1)[:, None] * torch.linspace(0, 1, t)[None] * 0.8
    val = ramp + 2.0 * torch.randn(n, 1) + 0.3 * torch.randn(n, t)
    x = torch.cat([val[..., None], torch.ones(n, t, 1), torch.zeros(n, t, 1)], dim=2)
    enc = create_encoder("gru", in_shape=(t, 3), out_dim=4, trend=True)
    head = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=0.02)
    mask = torch.ones(n, dtype=torch.bool)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(enc(x, mask))[:, 0], y)
        loss.backward()
        opt.step()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y.numpy(), head(enc(x, mask))[:, 0].detach().numpy()) > 0.95
