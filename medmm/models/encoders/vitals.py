"""Vital-sign encoders over the gridded series of :class:`~medmm.preprocess.vitals.VitalsPreprocessor`:
``float [T, 3C]`` = per channel the last observed z-scored value, the observation mask of the
bin, and the time since the last observation (as a fraction of the window). Their tokens are
the time steps."""

from __future__ import annotations

import torch
from torch import nn

from .base import Encoder, register_encoder
from .text import CLSTransformer, sinusoidal

_SEQ = {"in_shape": (6, 9)}


def trend_features(x: torch.Tensor) -> torch.Tensor:
    """Per channel the mean and the least-squares slope (per window) of the observed bins of a
    gridded series ``[B, T, 3C]`` (values, mask, time since last): ``[B, 2C]``, zeros for a
    channel observed in fewer than two bins."""
    c = x.shape[-1] // 3
    val, w = x[..., :c], x[..., c:2 * c]
    t = torch.linspace(0.0, 1.0, x.shape[1], device=x.device, dtype=x.dtype)[None, :, None]
    n = w.sum(1)
    safe = n.clamp_min(1.0)
    mean = (w * val).sum(1) / safe
    tbar = (w * t).sum(1) / safe
    dt = (t - tbar[:, None]) * w
    sxx = (dt * (t - tbar[:, None])).sum(1)
    slope = (dt * (val - mean[:, None])).sum(1) / sxx.clamp_min(1e-6)
    ok = (n >= 2) & (sxx > 1e-6)
    return torch.cat([torch.where(n > 0, mean, torch.zeros_like(mean)),
                      torch.where(ok, slope, torch.zeros_like(slope))], dim=1)


class _SequenceEncoder(Encoder):
    modality = "vitals"

    def _tokens(self, h: torch.Tensor, pooled: torch.Tensor):
        return pooled, h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)


@register_encoder("gru", modality="vitals", kind="series", input="sequence", tokens=True, example=dict(_SEQ))
class GRUEncoder(_SequenceEncoder):
    """A GRU over the gridded series (values, observation mask, time since last observation).

    ``trend=True`` also feeds the projection each signal's mean and least-squares slope over the
    observed bins (:func:`trend_features`): a deterioration over hours is then one linear step
    from the output instead of something the GRU must learn to integrate from few patients.
    Absent (``False``, what models saved before the option had) is the GRU alone."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 64, layers: int = 1,
                 with_tokens: bool = False, trend: bool = False) -> None:
        super().__init__(out_dim)
        f = int(in_shape[-1])
        if trend and f % 3:
            from ...errors import ConfigError

            raise ConfigError(f"trend=True needs 3 features per channel (value, mask, delta), got {f}",
                              column="trend", hint="use the VitalsPreprocessor grid or trend=False")
        self.trend = bool(trend)
        self.gru = nn.GRU(f, hidden, num_layers=layers, batch_first=True)
        self.proj = nn.Linear(hidden + (2 * (f // 3) if trend else 0), out_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.proj(torch.cat([h[-1], trend_features(x)], dim=1) if self.trend else h[-1])

    def encode_tokens(self, x):
        seq, h = self.gru(x)
        if not self.trend:
            return self._tokens(self.proj(seq), self.proj(h[-1]))
        tr = trend_features(x)  # once: the read-out and every token get the same trend
        tok = self.proj(torch.cat([seq, tr[:, None].expand(-1, seq.shape[1], -1)], dim=2))
        return self._tokens(tok, self.proj(torch.cat([h[-1], tr], dim=1)))


@register_encoder("grud", modality="vitals", kind="series", input="sequence", tokens=True, example=dict(_SEQ))
class GRUD(_SequenceEncoder):
    """GRU-D (Che et al. 2018): between observations an input decays from its last value toward a
    learned mean, and the hidden state decays, both at learned rates of the time since the last
    observation; the mask enters the cell as input."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 64, dropout: float = 0.1,
                 with_tokens: bool = False) -> None:
        super().__init__(out_dim)
        f = int(in_shape[-1])
        if f % 3:
            from ...errors import ConfigError

            raise ConfigError(f"GRU-D needs 3 features per channel (value, mask, delta), got {f}")
        c = f // 3
        self.c = c
        self.x_mean = nn.Parameter(torch.zeros(c))
        self.decay_x = nn.Parameter(torch.zeros(c))  # diagonal input decay (W_gamma_x)
        self.decay_x_b = nn.Parameter(torch.zeros(c))
        self.decay_h = nn.Linear(c, hidden)
        self.cell = nn.GRUCell(2 * c, hidden)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, out_dim)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.c
        val, m, delta = x[..., :c], x[..., c:2 * c], x[..., 2 * c:]
        gx = torch.exp(-torch.relu(delta * self.decay_x + self.decay_x_b))
        gh = torch.exp(-torch.relu(self.decay_h(delta)))
        # val carries the last observation forward; decay it toward the mean when unobserved
        xin = m * val + (1 - m) * (gx * val + (1 - gx) * self.x_mean)
        h = x.new_zeros((x.shape[0], self.cell.hidden_size))
        states = []
        for t in range(x.shape[1]):
            h = self.cell(torch.cat([xin[:, t], m[:, t]], dim=1), gh[:, t] * h)
            states.append(h)
        return torch.stack(states, dim=1), h

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(self._run(x)[1]))

    def encode_tokens(self, x):
        seq, h = self._run(x)
        return self._tokens(self.proj(seq), self.proj(self.drop(h)))


class _CausalBlock(nn.Module):
    def __init__(self, ch: int, dilation: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(ch, ch, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(ch, ch, kernel, dilation=dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(torch.relu(self.conv1(nn.functional.pad(x, (self.pad, 0)))))
        y = self.drop(torch.relu(self.conv2(nn.functional.pad(y, (self.pad, 0)))))
        return torch.relu(x + y)


@register_encoder("tcn", modality="vitals", kind="series", input="sequence", tokens=True, example=dict(_SEQ))
class TemporalCNN(_SequenceEncoder):
    """A temporal convolutional network (Bai et al. 2018): residual blocks of causal dilated 1-D
    convolutions (dilation 1, 2, 4, ...), read out at the last step and by mean."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, channels: int = 32, levels: int = 3,
                 kernel: int = 3, dropout: float = 0.1, with_tokens: bool = False) -> None:
        super().__init__(out_dim)
        self.inp = nn.Conv1d(int(in_shape[-1]), channels, 1)
        self.blocks = nn.Sequential(*[_CausalBlock(channels, 2**i, kernel, dropout) for i in range(levels)])
        self.proj = nn.Linear(2 * channels, out_dim)
        self.token_proj = nn.Linear(channels, out_dim) if with_tokens else None

    def stages(self) -> list[nn.Module]:
        return [self.inp, *self.blocks, self.proj]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.inp(x.transpose(1, 2)))
        return self.proj(torch.cat([h[..., -1], h.mean(-1)], dim=1))

    def encode_tokens(self, x):
        if self.token_proj is None:
            return super().encode_tokens(x)
        h = self.blocks(self.inp(x.transpose(1, 2)))
        return self._tokens(self.token_proj(h.transpose(1, 2)), self.proj(torch.cat([h[..., -1], h.mean(-1)], dim=1)))


@register_encoder("vitals_transformer", modality="vitals", kind="series", input="sequence", tokens=True,
                  example={**_SEQ, "layers": 1, "heads": 2, "dim": 16})
class VitalsTransformer(_SequenceEncoder):
    """A Transformer over time steps with a time encoding: each step's features are projected and
    a sinusoidal encoding of its time before the index time (in steps) is added; CLS read-out."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, dim: int = 64, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1, with_tokens: bool = False) -> None:
        super().__init__(out_dim)
        t = int(in_shape[0])
        self.inp = nn.Linear(int(in_shape[-1]), dim)
        self.register_buffer("time_code", sinusoidal(torch.arange(t - 1, -1, -1), dim), persistent=False)
        self.transformer = CLSTransformer(dim, heads, layers, dropout)
        self.proj = nn.Linear(dim, out_dim)

    def stages(self) -> list[nn.Module]:
        return [self.inp, *self.transformer.encoder.layers, self.proj]

    def encode_tokens(self, x):
        h = self.inp(x) + self.time_code
        cls, tok = self.transformer(h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device))
        return self._tokens(self.proj(tok), self.proj(cls))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_tokens(x)[0]
