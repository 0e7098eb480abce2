"""Modality encoders behind one contract: ``forward(x, mask) -> [B, D]``.

``mask`` is ``bool[B]``: the encoder runs only on the rows where the modality is present and
returns zeros elsewhere, so a present row's output never depends on the absent ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import Registry

__all__ = ["Encoder", "ENCODERS", "register_encoder", "create_encoder"]

ENCODERS = Registry("encoder")
register_encoder = ENCODERS.register


def create_encoder(name: str, **kwargs: Any) -> "Encoder":
    """Build a registered encoder, e.g. ``create_encoder("gru", in_shape=(24, 15), out_dim=64)``."""
    return ENCODERS.create(name, **kwargs)


class Encoder(nn.Module):
    """Base class: subclasses implement :meth:`encode` on present rows only."""

    modality: str = ""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = int(out_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        idx = torch.nonzero(mask, as_tuple=True)[0]
        out = x.new_zeros((x.shape[0], self.out_dim))
        if idx.numel() == 0:
            return out
        return out.index_copy(0, idx, self.encode(x.index_select(0, idx)).to(out.dtype))


@register_encoder("tiny_cnn3d", modality="image")
class TinyCNN3D(Encoder):
    """A small 3D residual CNN from MONAI blocks, pooled by mean and max (CPU friendly)."""

    modality = "image"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, channels: tuple[int, ...] = (8, 16, 32),
                 dropout: float = 0.1) -> None:
        super().__init__(out_dim)
        from monai.networks.blocks import Convolution, ResidualUnit

        c_in = int(in_shape[0])
        layers: list[nn.Module] = [Convolution(3, c_in, channels[0], strides=1, kernel_size=3, norm="BATCH")]
        for a, b in zip(channels[:-1], channels[1:]):
            layers.append(ResidualUnit(3, a, b, strides=2, kernel_size=3, subunits=2, norm="BATCH"))
        self.features = nn.Sequential(*layers)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * channels[-1], out_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).flatten(2)
        return self.proj(torch.cat([f.mean(-1), f.amax(-1)], dim=1))


@register_encoder("monai_resnet", modality="image")
class MonaiResNet(Encoder):
    """MONAI's ResNet (2D or 3D) as a feature extractor; ``depth`` in 10/18/34/50."""

    modality = "image"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, depth: int = 10,
                 widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__(out_dim)
        from monai.networks.nets import ResNet

        layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
        self.net = ResNet(
            block="bottleneck" if depth >= 50 else "basic", layers=layers, block_inplanes=list(widths),
            spatial_dims=len(in_shape) - 1, n_input_channels=int(in_shape[0]), conv1_t_size=3,
            conv1_t_stride=1, no_max_pool=True, num_classes=out_dim,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("tfidf_mlp", modality="notes")
class BagOfNgramsMLP(Encoder):
    """An MLP over a fitted TF-IDF bag of n-grams (the text baseline)."""

    modality = "notes"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 128, dropout: float = 0.2) -> None:
        super().__init__(out_dim)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(int(in_shape[0]), hidden), nn.GELU(),
                                 nn.Linear(hidden, out_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("gru", modality="vitals")
class GRUEncoder(Encoder):
    """A GRU over the gridded series (values, observation mask, time since last observation)."""

    modality = "vitals"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 64, layers: int = 1) -> None:
        super().__init__(out_dim)
        self.gru = nn.GRU(int(in_shape[-1]), hidden, num_layers=layers, batch_first=True)
        self.proj = nn.Linear(hidden, out_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.proj(h[-1])


@register_encoder("mlp", modality="ehr")
class TabularMLP(Encoder):
    """An MLP over the featurised EHR row."""

    modality = "ehr"

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__(out_dim)
        self.net = nn.Sequential(nn.Linear(int(in_shape[0]), hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
