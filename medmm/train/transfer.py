"""Transfer learning: pretrain unimodal encoders alone, then fuse them frozen, partly frozen or fine-tuned.

MedFuse's two-stage recipe: each encoder is first trained in a unimodal model (that
modality's encoder and a head, on the patients who have the modality), its weights are
copied into the multimodal model, and the fused model is then trained with the encoders

* ``frozen``: not trained at all (and their batch-norm statistics kept),
* ``partial``: only the last ``unfreeze_last`` stages of each encoder trained
  (:meth:`~medmm.models.encoders.Encoder.stages`),
* ``finetune``: trained with the rest (``TrainConfig.encoder_lr_scale`` can slow them down),
  except the stages a model-config ``freeze_stages`` froze.

Encoder weights can also come from a file (:func:`load_encoder_weights`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ReadError

__all__ = ["UnimodalView", "DatasetView", "pretrain_encoders", "freeze_encoders", "load_encoder_weights"]


class UnimodalView(nn.Module):
    """One modality's encoder and auxiliary head of a multimodal model, as a model of its own.

    Training the view trains those modules of the multimodal model in place.
    """

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = model.encoders[modality]
        self.head = model.aux_heads[modality]
        if modality in getattr(model, "wide", {}):
            self.wide_layer = model.wide[modality]  # trained with the view
        self.model_ref = (model,)  # not a submodule: the view owns only its modality's modules

    def forward(self, values: dict[str, torch.Tensor], present: torch.Tensor, return_aux: bool = False):
        x, mask = values[self.modality], present[:, 0]
        logits = self.head(self.encoder(x, mask))
        if self.modality in getattr(self.model_ref[0], "wide", {}):
            logits = logits + self.model_ref[0].wide_logits(self.modality, x, mask)
        return (logits, {}) if return_aux else logits


def _trains_in_place(model: nn.Module) -> bool:
    """True for a model whose auxiliary unimodal heads feed its logits (binary tasks only)."""
    cfg = getattr(model, "config", None)
    return (hasattr(model, "aux_heads") and bool(getattr(cfg, "unimodal_residual", False))
            and all(kind == "binary" for kind in getattr(cfg, "tasks", {}).values()))


class DatasetView(torch.utils.data.Dataset):
    """Some of a dataset's patients, seen through some of its modalities (no re-preprocessing).

    Built from a list of items, or (:meth:`of`) over a base dataset whose ``__getitem__`` it
    uses, so that lazily read images (:class:`~medmm.train.datasets.CachedImageDataset`) work too.
    """

    def __init__(self, items: list[dict[str, Any]], tasks: tuple[str, ...], modalities: tuple[str, ...],
                 shapes: dict[str, tuple[int, ...]], *, base: Any = None, indices: list[int] | None = None) -> None:
        self.items = items
        self.tasks = tuple(tasks)
        self.modalities = tuple(modalities)
        self.shapes = shapes
        self.base = base
        self.indices = indices

    @classmethod
    def of(cls, ds: Any, *, modalities: tuple[str, ...] | None = None, present_only: bool = False,
           indices: Any = None) -> "DatasetView":
        idx = list(range(len(ds))) if indices is None else [int(i) for i in indices]
        mods = tuple(modalities or ds.modalities)
        if present_only:
            def has(it, m):
                return it["values"].get(m) is not None or (it.get("image_sources") or {}).get(m) is not None
            idx = [i for i in idx if all(has(ds.items[i], m) for m in mods)]
        return cls([ds.items[i] for i in idx], ds.tasks, mods, ds.shapes, base=ds, indices=idx)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.base is None:
            return self.items[i]
        if hasattr(self.base, "item"):  # only this view's images are read
            return self.base.item(self.indices[i], self.modalities)
        return self.base[self.indices[i]]

    def collate(self, items: list[dict[str, Any]]):
        from ..data import collate

        return collate(items, self.modalities, self.shapes, self.tasks)


def freeze_encoders(model: nn.Module, mode: str, *, unfreeze_last: int = 1,
                    modalities: tuple[str, ...] | None = None) -> dict[str, dict[str, int]]:
    """Freeze the model's encoders per ``mode`` through :meth:`~medmm.models.encoders.Encoder.freeze`
    (so each encoder's own :meth:`~medmm.models.encoders.Encoder.stages` apply, and frozen stages
    keep their batch-norm statistics); returns trainable/total parameter counts per encoder.

    ``finetune`` leaves the encoders as configured (a model-config ``freeze_stages`` stays).
    """
    if mode not in ("finetune", "frozen", "partial"):
        raise ConfigError(f"unknown transfer mode {mode!r}", column="transfer.mode",
                          hint="use finetune, frozen or partial")
    counts = {}
    for m in modalities or tuple(model.encoders.keys()):
        enc = model.encoders[m]
        if mode != "finetune":
            # parameters outside every stage (some encoders' CLS tokens, norms, GRU-D decays)
            # are frozen too; freeze() then unfreezes exactly the stages it leaves trainable
            enc.requires_grad_(False)
            n = len(enc.stages())
            enc.freeze(n if mode == "frozen" else n - min(max(unfreeze_last, 0), n))
        total = sum(p.numel() for p in enc.parameters())
        counts[m] = {"trainable": sum(p.numel() for p in enc.parameters() if p.requires_grad), "total": total}
    return counts


def load_encoder_weights(model: nn.Module, modality: str, source: str | Path) -> None:
    """Initialise ``model.encoders[modality]`` from a medmm model folder or a ``.pt`` state dict
    (a whole model's, whose ``encoders.<modality>.*`` keys are used, or the encoder's own)."""
    source = Path(source)
    file = source / "weights.pt" if source.is_dir() else source
    if not file.exists():
        raise ReadError("pretrained weights not found", path=file, hint="give a medmm model folder or a .pt file")
    state = torch.load(file, map_location="cpu", weights_only=True)
    prefix = f"encoders.{modality}."
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or state
    try:
        model.encoders[modality].load_state_dict(sub)
    except RuntimeError as exc:
        raise ReadError(f"weights do not fit the {modality} encoder: {str(exc).splitlines()[0]}", path=file,
                        hint="use weights of the same encoder architecture and input shape") from exc


def pretrain_encoders(model: nn.Module, train_ds: Any, val_ds: Any, config: Any, *, epochs: int,
                      modalities: tuple[str, ...] | None = None, progress: bool = False,
                      callbacks_for: Any = None) -> dict[str, Any]:
    """Stage one: train each encoder in a unimodal model, copy its weights into ``model``.

    Returns ``{modality: TrainResult}``. ``callbacks_for(modality)`` may give callbacks
    (for instance a tracker prefixing metrics with ``pretrain_<modality>_``).
    """
    from ..models.multimodal import DEFAULT_ENCODERS, ModelConfig, MultimodalModel
    from .trainer import train

    results = {}
    base = model.config
    for m in modalities or model.modalities:
        if m not in model.modalities:
            raise ConfigError(f"cannot pretrain {m!r}: the model does not use it", column="transfer.pretrain_modalities")
        tr = DatasetView.of(train_ds, modalities=(m,), present_only=True)
        va = DatasetView.of(val_ds, modalities=(m,), present_only=True) if val_ds is not None else None
        if not len(tr):
            continue
        cbs = callbacks_for(m) if callbacks_for else []
        ckpt = Path(config.checkpoint_dir) / f"pretrain_{m}" if config.checkpoint_dir else None
        tc = dataclasses.replace(config, epochs=epochs, min_epochs=min(config.min_epochs, epochs),
                                 checkpoint_dir=str(ckpt) if ckpt else None)
        if _trains_in_place(model):
            # the encoder and its auxiliary unimodal head are trained together, in place: the
            # fused model then starts from calibrated unimodal logits on its residual path
            results[m] = train(UnimodalView(model, m), tr, va if va is not None and len(va) else None, tc,
                               callbacks=cbs, progress=progress, resume=bool(ckpt))
            continue
        spec = dict(base.encoders.get(m) or DEFAULT_ENCODERS[m])
        cfg = ModelConfig(tasks=dict(base.tasks), modalities=base.modalities.subset([m]), encoders={m: spec},
                          fusion={"name": "concat"}, dim=base.dim, modality_dropout=0.0, aux_weight=0.0,
                          unimodal_residual=False)
        uni = MultimodalModel(cfg, {m: model.input_shapes[m]}, None)
        uni.encoders[m].load_state_dict(model.encoders[m].state_dict())
        results[m] = train(uni, tr, va if va is not None and len(va) else None, tc, callbacks=cbs,
                           progress=progress, resume=bool(ckpt))
        model.encoders[m].load_state_dict(uni.encoders[m].state_dict())
    return results
