"""Image encoders: a tiny CNN for CPU work and MONAI networks in 2D and 3D.

``in_shape`` is ``(C, *spatial)``; two spatial axes give a 2D network, three a 3D one. MONAI
backbones live in ``self.net`` so that a MedicalNet or MONAI bundle checkpoint loads into it
(:meth:`~medmm.models.encoders.base.Encoder.load_pretrained`).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Encoder, register_encoder

_IMG3 = (1, 16, 16, 16)
_IMG2 = (1, 32, 32)


def _dims(in_shape: tuple[int, ...]) -> int:
    sd = len(in_shape) - 1
    if sd not in (2, 3):
        from ...errors import ConfigError

        raise ConfigError(f"an image encoder needs in_shape (C, X, Y[, Z]), got {tuple(in_shape)}")
    return sd


NORMS = ("batch", "group", "instance")


def _norm(norm: str, channels: int) -> str | tuple[str, dict]:
    """MONAI's norm argument for a layer of ``channels`` channels."""
    if norm not in NORMS:
        from ...errors import ConfigError

        raise ConfigError(f"norm={norm!r} is not supported", column="norm", hint=f"use one of {NORMS}")
    if norm == "group":
        groups = max(d for d in range(1, min(8, max(channels // 2, 1)) + 1) if channels % d == 0)
        return ("GROUP", {"num_groups": groups})
    return norm.upper()


def first_order_stats(x: torch.Tensor) -> torch.Tensor:
    """Per channel of ``x [B, C, *spatial]`` its mean, standard deviation, 1st and 99th
    percentile over the voxels: ``[B, 4C]`` (channel-major)."""
    v = x.flatten(2)
    q = torch.quantile(v, torch.tensor([0.01, 0.99], dtype=v.dtype, device=v.device), dim=-1)  # [2, B, C]
    return torch.stack([v.mean(-1), v.std(-1, unbiased=False), q[0], q[1]], dim=-1).flatten(1)


class _ImageEncoder(Encoder):
    modality = "image"

    def stages(self) -> list[nn.Module]:
        return self._stages

    def _set_stages(self, *groups) -> None:
        self._stages = [g if isinstance(g, nn.Module) else nn.ModuleList(list(g)) for g in groups]


@register_encoder("tiny_cnn3d", modality="image", kind="image", input="image", tokens=True,
                  example={"in_shape": _IMG3, "channels": (4, 8)})
class TinyCNN3D(_ImageEncoder):
    """A small residual CNN from MONAI blocks (3D, or 2D for a 2D ``in_shape``), pooled by mean
    and max (CPU friendly; ``stem_stride=2`` makes it about 4x cheaper). Its tokens are the
    positions of the last feature map.

    ``norm`` is ``batch`` (BatchNorm, the default and what models saved before the option had),
    ``group`` (GroupNorm with up to 8 groups of at least 2 channels: independent of the batch, so
    small or imbalanced batches do not shift it) or ``instance``.

    ``first_order=True`` adds the input's first-order intensity statistics per channel (mean,
    standard deviation, 1st and 99th percentile: pyradiomics' ``firstorder`` family), batch-
    normalised, to the pooled features: a wide path for evidence spread over the whole volume
    (a lesion's contrast shifts the mean by a fraction of a percent of the window, which the
    convolutions learn slowly from a few hundred images). Absent (``False``) is the CNN alone."""

    N_FIRST_ORDER = 4

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, channels: tuple[int, ...] = (8, 16, 32),
                 dropout: float = 0.1, stem_stride: int = 1, with_tokens: bool = False, norm: str = "batch",
                 first_order: bool = False) -> None:
        super().__init__(out_dim)
        from monai.networks.blocks import Convolution, ResidualUnit

        sd = _dims(in_shape)
        layers: list[nn.Module] = [Convolution(sd, int(in_shape[0]), channels[0], strides=stem_stride, kernel_size=3,
                                               norm=_norm(norm, channels[0]))]
        for a, b in zip(channels[:-1], channels[1:]):
            layers.append(ResidualUnit(sd, a, b, strides=2, kernel_size=3, subunits=2, norm=_norm(norm, b)))
        self.features = nn.Sequential(*layers)
        n_stats = self.N_FIRST_ORDER * int(in_shape[0]) if first_order else 0
        self.first_order = nn.BatchNorm1d(n_stats) if first_order else None
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * channels[-1] + n_stats, out_dim))
        self.token_proj = nn.Linear(channels[-1], out_dim) if with_tokens else None
        self._set_stages(*self.features, self.proj if self.first_order is None else (self.first_order, self.proj))
        # channels-last 3D convolutions: ~1.3x faster training steps on CPU at 32^3 (oneDNN;
        # benchmarks/bench_scale.py), same values; the saved weights stay contiguous (bundle.py)
        self._channels_last = sd == 3
        if self._channels_last:
            self.features.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def backbone(self) -> nn.Module:
        return self

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if self._channels_last and x.dim() == 5 else x

    def _pool(self, f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = [f.mean(-1), f.amax(-1)]
        if self.first_order is not None:
            parts.append(self.first_order(first_order_stats(x)))
        return self.proj(torch.cat(parts, dim=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.features(self._layout(x)).flatten(2), x)

    def encode_tokens(self, x):
        if self.token_proj is None:
            return super().encode_tokens(x)
        f = self.features(self._layout(x)).flatten(2)
        tok = self.token_proj(f.transpose(1, 2))
        return self._pool(f, x), tok, torch.ones(tok.shape[:2], dtype=torch.bool, device=x.device)


@register_encoder("monai_resnet", modality="image", kind="image", input="image",
                  example={"in_shape": _IMG3, "widths": (4, 8, 8, 16)})
class MonaiResNet(_ImageEncoder):
    """MONAI's ResNet (2D or 3D); ``depth`` in 10/18/34/50. With ``widths=(64, 128, 256, 512)`` and
    ``conv1_size=7`` its weights have MedicalNet's names and shapes."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, depth: int = 10,
                 widths: tuple[int, ...] = (16, 32, 64, 128), conv1_size: int = 3) -> None:
        super().__init__(out_dim)
        from monai.networks.nets import ResNet

        layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
        self.net = ResNet(
            block="bottleneck" if depth >= 50 else "basic", layers=layers, block_inplanes=list(widths),
            spatial_dims=_dims(in_shape), n_input_channels=int(in_shape[0]), conv1_t_size=conv1_size,
            conv1_t_stride=1, no_max_pool=True, num_classes=out_dim,
        )
        n = self.net
        self._set_stages((n.conv1, n.bn1), n.layer1, n.layer2, n.layer3, n.layer4, n.fc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("monai_densenet", modality="image", kind="image", input="image",
                  example={"in_shape": (1, 12, 12, 12), "init_features": 4, "growth_rate": 4, "block_config": (1, 1)})
class MonaiDenseNet(_ImageEncoder):
    """MONAI's DenseNet (DenseNet-121 with the default ``block_config``; smaller ones for small data)."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, init_features: int = 32,
                 growth_rate: int = 16, block_config: tuple[int, ...] = (4, 8, 8), dropout: float = 0.0) -> None:
        super().__init__(out_dim)
        from monai.networks.nets import DenseNet

        self.net = DenseNet(_dims(in_shape), int(in_shape[0]), out_dim, init_features=init_features,
                            growth_rate=growth_rate, block_config=tuple(block_config), dropout_prob=dropout)
        f = dict(self.net.features.named_children())
        groups = [[f[k] for k in ("conv0", "norm0") if k in f]]
        for i in range(1, len(block_config) + 1):
            groups.append([f[k] for k in (f"denseblock{i}", f"transition{i}") if k in f])
        groups.append([m for k, m in f.items() if k.startswith("norm") and k != "norm0"] + [self.net.class_layers])
        self._set_stages(*groups)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("monai_efficientnet", modality="image", kind="image", input="image", heavy=True,
                  example={"in_shape": _IMG2})
class MonaiEfficientNet(_ImageEncoder):
    """MONAI's EfficientNet-BN (``model_name`` efficientnet-b0 ... b7), randomly initialised;
    load ImageNet or MONAI weights with ``pretrained=<file>``. Needs at least 32 voxels a side."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, model_name: str = "efficientnet-b0") -> None:
        super().__init__(out_dim)
        from monai.networks.nets import EfficientNetBN

        self.net = EfficientNetBN(model_name, pretrained=False, progress=False, spatial_dims=_dims(in_shape),
                                  in_channels=int(in_shape[0]), num_classes=out_dim)
        n = self.net
        self._set_stages((n._conv_stem, n._bn0), *n._blocks, (n._conv_head, n._bn1, n._fc))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("monai_seresnet", modality="image", kind="image", input="image", heavy=True,
                  example={"in_shape": (1, 16, 16)})
class MonaiSEResNet(_ImageEncoder):
    """MONAI's SE-ResNet (squeeze-and-excitation bottlenecks); ``layers=(3, 4, 6, 3)`` is SE-ResNet-50."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, layers: tuple[int, ...] = (1, 1, 1, 1),
                 inplanes: int = 32, dropout: float | None = None) -> None:
        super().__init__(out_dim)
        from monai.networks.nets import SENet

        self.net = SENet(_dims(in_shape), int(in_shape[0]), "se_resnet_bottleneck", list(layers), groups=1,
                         reduction=16, dropout_prob=dropout, inplanes=inplanes, downsample_kernel_size=1,
                         input_3x3=False, num_classes=out_dim)
        n = self.net
        self._set_stages(n.layer0, n.layer1, n.layer2, n.layer3, n.layer4, n.last_linear)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("monai_vit", modality="image", kind="image", input="image", tokens=True,
                  example={"in_shape": _IMG3, "patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_layers": 1,
                           "num_heads": 4})
class MonaiViT(_ImageEncoder):
    """MONAI's Vision Transformer; its tokens are the image patches."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, patch_size: int = 8, hidden_size: int = 96,
                 mlp_dim: int = 192, num_layers: int = 4, num_heads: int = 4, dropout: float = 0.0,
                 with_tokens: bool = False) -> None:
        super().__init__(out_dim)
        from monai.networks.nets import ViT

        self.net = ViT(int(in_shape[0]), tuple(in_shape[1:]), patch_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
                       num_layers=num_layers, num_heads=num_heads, classification=False, dropout_rate=dropout,
                       spatial_dims=_dims(in_shape))
        self.proj = nn.Linear(hidden_size, out_dim)
        self.token_proj = nn.Linear(hidden_size, out_dim) if with_tokens else None
        self._set_stages(self.net.patch_embedding, *self.net.blocks, (self.net.norm, self.proj))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.net(x)[0].mean(1))

    def encode_tokens(self, x):
        if self.token_proj is None:
            return super().encode_tokens(x)
        h = self.net(x)[0]
        tok = self.token_proj(h)
        return self.proj(h.mean(1)), tok, torch.ones(tok.shape[:2], dtype=torch.bool, device=x.device)


@register_encoder("swin", modality="image", kind="image", input="image", tokens=True,
                  example={"in_shape": _IMG3, "embed_dim": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)})
class SwinEncoder(_ImageEncoder):
    """The Swin Transformer encoder of MONAI's SwinUNETR (``swinViT`` weights of a SwinUNETR
    checkpoint load into it). Pooled from the deepest stage; tokens from ``token_stage``."""

    def __init__(self, *, in_shape: tuple[int, ...], out_dim: int = 64, embed_dim: int = 24,
                 depths: tuple[int, ...] = (2, 2, 2, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 4, token_stage: int = 2, with_tokens: bool = False) -> None:
        super().__init__(out_dim)
        from monai.networks.nets.swin_unetr import SwinTransformer

        sd = _dims(in_shape)
        self.net = SwinTransformer(in_chans=int(in_shape[0]), embed_dim=embed_dim, window_size=(window_size,) * sd,
                                   patch_size=(2,) * sd, depths=tuple(depths), num_heads=tuple(num_heads),
                                   spatial_dims=sd)
        self.token_stage = int(token_stage)
        last = embed_dim * 2 ** len(depths)
        self.proj = nn.Sequential(nn.LayerNorm(last), nn.Linear(last, out_dim))
        self.token_proj = nn.Linear(embed_dim * 2 ** self.token_stage, out_dim) if with_tokens else None
        layers = [getattr(self.net, f"layers{i}") for i in range(1, len(depths) + 1)]
        self._set_stages(self.net.patch_embed, *layers, self.proj)

    def backbone(self) -> nn.Module:
        return self.net  # SwinUNETR checkpoints: keys under "swinViT." are stripped to these

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.net(x)[-1].flatten(2).mean(-1))

    def encode_tokens(self, x):
        if self.token_proj is None:
            return super().encode_tokens(x)
        hs = self.net(x)
        tok = self.token_proj(hs[self.token_stage].flatten(2).transpose(1, 2))
        return (self.proj(hs[-1].flatten(2).mean(-1)), tok,
                torch.ones(tok.shape[:2], dtype=torch.bool, device=x.device))
