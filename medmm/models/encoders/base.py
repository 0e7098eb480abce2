"""The encoder contract, its registry, pretrained weights and stage freezing.

Every encoder implements ``forward(x, mask) -> [B, D]`` where ``mask`` is ``bool[B]``: it runs
only on the rows where the modality is present and returns zeros elsewhere, so a present
row's output never depends on the absent ones. Encoders that have a natural token sequence
(image patches, words, time steps, feature tokens) also give it through
:meth:`Encoder.forward_tokens` for token-level fusion (``cross_attention``).

Registry metadata (``register_encoder(name, modality=..., input=..., example=...)``):

``kind``      the modality kind it reads (``image``, ``text``, ``series``, ``table``): any
              modality of that kind may use it;
``modality``  the default modality of that kind;
``input``     what its preprocessor gives: ``image`` (``float [C, *spatial]``), ``vector``
              (``float [F]``), ``sequence`` (``float [T, F]``), ``tokens`` (token ids
              ``[L]``, 0 = padding) or ``embedding`` (a frozen sentence embedding);
``example``   small keyword arguments (``in_shape`` included) for CPU tests, used by the
              shared contract test in ``tests/test_models_contract.py``;
``tokens``    it has a native token sequence (built with ``with_tokens=True``);
``heavy``     its contract tests are slow on CPU (run by ``make test-slow``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, ReadError
from ..registry import Registry

__all__ = ["Encoder", "ENCODERS", "register_encoder", "create_encoder", "load_state_dict_file"]

ENCODERS = Registry("encoder")
register_encoder = ENCODERS.register

_PREFIXES = ("module.", "model.", "net.", "backbone.", "encoder.", "swinViT.")


def create_encoder(name: str, *, pretrained: str | Path | None = None, freeze_stages: int | None = None,
                   **kwargs: Any) -> "Encoder":
    """Build a registered encoder, e.g. ``create_encoder("gru", in_shape=(24, 15), out_dim=64)``.

    ``pretrained`` is a local checkpoint file loaded with :meth:`Encoder.load_pretrained`;
    ``freeze_stages`` freezes that many stages from the input side (:meth:`Encoder.freeze`).
    """
    enc = ENCODERS.create(name, **kwargs)
    if pretrained:
        enc.load_pretrained(pretrained)
    if freeze_stages:
        enc.freeze(freeze_stages)
    return enc


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a plain state dict, or one under ``state_dict``, ``model``,
    ``net`` or ``network`` (MedicalNet, MONAI bundle and Lightning checkpoints)."""
    path = Path(path)
    if not path.is_file():
        raise ReadError("pretrained weights file not found", path=path, hint="give a local .pt/.pth file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or torch errors all mean the same to the user
        raise ReadError(f"cannot read pretrained weights ({type(exc).__name__}: {exc})", path=path,
                        hint="save the weights with torch.save(model.state_dict(), path)") from exc
    for key in ("state_dict", "model", "net", "network"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict):
        raise ReadError("the file holds no state dict", path=path)
    return {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


class Encoder(nn.Module):
    """Base class: subclasses implement :meth:`encode` (and optionally :meth:`encode_tokens`) on
    present rows only, and :meth:`stages` for transfer learning."""

    modality: str = ""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = int(out_dim)
        self.frozen_stages = 0

    # ------------------------------------------------------------------ contract
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pooled [n, D], tokens [n, L, D], valid bool[n, L])`` for present rows; by default
        the pooled feature is the only token."""
        z = self.encode(x)
        return z, z[:, None], torch.ones((z.shape[0], 1), dtype=torch.bool, device=z.device)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        idx = torch.nonzero(mask, as_tuple=True)[0]
        out = x.new_zeros((x.shape[0], self.out_dim), dtype=torch.float32)
        if idx.numel() == 0:
            return out
        return out.index_copy(0, idx, self.encode(x.index_select(0, idx)).to(out.dtype))

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pooled [B, D], tokens [B, L, D], valid bool[B, L])``: zeros and no valid token on absent rows."""
        b = x.shape[0]
        idx = torch.nonzero(mask, as_tuple=True)[0]
        if idx.numel() == 0:
            z = x.new_zeros((b, self.out_dim), dtype=torch.float32)
            return z, z[:, None], torch.zeros((b, 1), dtype=torch.bool, device=x.device)
        z, tok, valid = self.encode_tokens(x.index_select(0, idx))
        pooled = x.new_zeros((b, self.out_dim), dtype=torch.float32).index_copy(0, idx, z.float())
        tokens = x.new_zeros((b, *tok.shape[1:]), dtype=torch.float32).index_copy(0, idx, tok.float())
        vmask = torch.zeros((b, tok.shape[1]), dtype=torch.bool, device=x.device).index_copy(0, idx, valid)
        return pooled, tokens, vmask

    # ------------------------------------------------------------------ transfer learning
    def stages(self) -> list[nn.Module]:
        """The encoder's stages from input to output (freezing goes in this order); by default its
        children that hold parameters, looking through a lone wrapper such as one ``Sequential``."""
        node: nn.Module = self
        while True:
            kids = [c for c in node.children() if any(True for _ in c.parameters())]
            if len(kids) == 1 and any(True for _ in kids[0].children()):
                node = kids[0]
                continue
            return kids or [self]

    def backbone(self) -> nn.Module:
        """The module whose weights a pretrained checkpoint holds."""
        return getattr(self, "net", self)

    def freeze(self, stages: int | None = None) -> "Encoder":
        """Freeze the first ``stages`` stages (all when ``None``): no gradient, and their batch
        norms keep their running statistics in training mode."""
        all_stages = self.stages()
        n = len(all_stages) if stages is None else int(stages)
        if not 0 <= n <= len(all_stages):
            raise ConfigError(f"cannot freeze {n} stages: this encoder has {len(all_stages)}")
        self.unfreeze()
        for st in all_stages[:n]:
            for p in st.parameters():
                p.requires_grad_(False)
        self.frozen_stages = n
        return self.train(self.training)

    def unfreeze(self, stages: int | None = None) -> "Encoder":
        """Unfreeze the last ``stages`` frozen stages (all when ``None``), e.g. one per epoch."""
        all_stages = self.stages()
        keep = 0 if stages is None else max(0, self.frozen_stages - int(stages))
        for st in all_stages[keep:]:
            for p in st.parameters():
                p.requires_grad_(True)
        self.frozen_stages = keep
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        for st in self.stages()[: self.frozen_stages]:
            for m in st.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def load_pretrained(self, path: str | Path, *, strict: bool = False) -> dict[str, list[str]]:
        """Load the tensors of a local checkpoint whose names (after stripping ``module.``-style
        prefixes) and shapes match :meth:`backbone`'s; returns ``{"loaded": [...], "skipped": [...]}``.

        With ``strict`` every backbone tensor must be found. A MedicalNet ResNet checkpoint fits
        ``monai_resnet`` with the same depth and widths ``(64, 128, 256, 512)``.
        """
        src = load_state_dict_file(path)
        target = self.backbone().state_dict()
        stripped: dict[str, torch.Tensor] = {}
        for k, v in src.items():
            key = k
            while key.startswith(_PREFIXES) and key not in target:
                key = key.split(".", 1)[1]
            stripped[key] = v
        use = {k: v for k, v in stripped.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
        skipped = sorted(set(stripped) - set(use))
        missing = sorted(set(target) - set(use))
        if not use or (strict and missing):
            raise ConfigError(
                f"the checkpoint does not fit this encoder ({len(use)} of {len(target)} tensors match)",
                path=path, hint=f"first unmatched: {missing[:3]}; check the architecture settings")
        self.backbone().load_state_dict(use, strict=False)
        self.pretrained_report_ = {"loaded": sorted(use), "skipped": skipped, "missing": missing}
        return self.pretrained_report_
