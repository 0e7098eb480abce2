"""The multimodal model: encoders -> fusion -> one head per task, saved with its preprocessing."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ReadError
from ..records import MODALITIES, PatientRecord
from .encoders import create_encoder
from .fusion import create_fusion
from .heads import create_head

__all__ = ["ModelConfig", "MultimodalModel", "DEFAULT_ENCODERS"]

DEFAULT_ENCODERS: dict[str, dict[str, Any]] = {
    "image": {"name": "tiny_cnn3d"},
    "notes": {"name": "tfidf_mlp"},
    "vitals": {"name": "gru"},
    "ehr": {"name": "mlp"},
}

FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    """What to build: encoders per modality, a fusion module and one head per task.

    ``modality_dropout`` is the chance, during training only, that a present modality is
    hidden from the model for one sample (ModDrop), which teaches it to predict from any
    subset of modalities.
    """

    tasks: dict[str, str] = field(default_factory=lambda: {"tumor": "binary", "disease": "binary"})
    modalities: tuple[str, ...] = MODALITIES
    encoders: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_ENCODERS.items()})
    fusion: dict[str, Any] = field(default_factory=lambda: {"name": "attention"})
    dim: int = 64
    modality_dropout: float = 0.25
    aux_weight: float = 0.5  # weight of the auxiliary unimodal heads' loss
    unimodal_residual: bool = True  # add the present modalities' unimodal logits to the fused logits

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ConfigError(f"unknown modalities {unknown}", hint=f"use a subset of {MODALITIES}")
        if not self.tasks:
            raise ConfigError("no task given", hint="set tasks, e.g. {'tumor': 'binary'}")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout {self.modality_dropout} is outside [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**d)


class MultimodalModel(nn.Module):
    """Encoders (one per modality) -> fusion over the presence mask -> heads (one per task).

    ``forward(values, present)`` takes ``{modality: tensor [B, ...]}`` and ``bool[B, M]`` and
    returns logits ``[B, T]`` in :attr:`tasks` order. With a fitted ``preprocessor``
    attached, :meth:`predict_records` scores raw :class:`PatientRecord` objects.
    """

    def __init__(self, config: ModelConfig, input_shapes: dict[str, tuple[int, ...]], preprocessor: Any = None) -> None:
        super().__init__()
        self.config = config
        self.input_shapes = {m: tuple(int(s) for s in input_shapes[m]) for m in config.modalities}
        self.preprocessor = preprocessor
        self.modalities = tuple(config.modalities)
        self.tasks = tuple(config.tasks)
        self.encoders = nn.ModuleDict()
        for m in self.modalities:
            spec = dict(config.encoders.get(m, DEFAULT_ENCODERS[m]))
            name = spec.pop("name")
            self.encoders[m] = create_encoder(name, in_shape=self.input_shapes[m], out_dim=config.dim, **spec)
        fspec = dict(config.fusion)
        self.fusion = create_fusion(fspec.pop("name"), modalities=self.modalities, dim=config.dim, **fspec)
        self.heads = nn.ModuleDict({t: create_head(kind, dim=config.dim) for t, kind in config.tasks.items()})
        if config.aux_weight > 0 or config.unimodal_residual:
            self.aux_heads = nn.ModuleDict({m: nn.Linear(config.dim, len(self.tasks)) for m in self.modalities})

    def forward(self, values: dict[str, torch.Tensor], present: torch.Tensor, return_aux: bool = False):
        """Logits ``[B, T]``; with ``return_aux`` also ``{modality: (logits [B, T], present [B])}``
        from the auxiliary unimodal heads (training only)."""
        present = present.bool()
        feats = {m: self.encoders[m](values[m], present[:, j]) for j, m in enumerate(self.modalities)}
        fused_present = present
        if self.training and self.config.modality_dropout > 0:
            keep = torch.rand(present.shape, device=present.device) >= self.config.modality_dropout
            fused_present = present & keep
            feats_fused = {m: feats[m] * fused_present[:, j : j + 1] for j, m in enumerate(self.modalities)}
        else:
            feats_fused = feats
        z = self.fusion(feats_fused, fused_present)
        logits = torch.cat([self.heads[t](z) for t in self.tasks], dim=1)
        uni = {}
        if hasattr(self, "aux_heads"):
            uni = {m: self.aux_heads[m](feats[m]) for m in self.modalities}
        if self.config.unimodal_residual:
            # late-fusion path: evidence from conditionally independent modalities adds up in logit space
            for j, m in enumerate(self.modalities):
                logits = logits + uni[m] * fused_present[:, j : j + 1].to(logits.dtype)
        if not return_aux:
            return logits
        aux = {}
        if self.config.aux_weight > 0:
            aux = {m: (uni[m], present[:, j]) for j, m in enumerate(self.modalities)}
        return logits, aux

    # ------------------------------------------------------------------ inference on records
    @torch.no_grad()
    def predict_records(self, records: list[PatientRecord], *, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``[N, T]`` for raw records (needs the fitted preprocessor)."""
        from ..data import encode_records, collate

        if self.preprocessor is None:
            raise ConfigError("this model has no preprocessor attached", hint="load it with MultimodalModel.load")
        self.eval()
        device = next(self.parameters()).device
        shapes = self.preprocessor.output_shapes()
        out = []
        for s in range(0, len(records), batch_size):
            items = encode_records(records[s:s + batch_size], self.preprocessor)
            batch = collate(items, self.modalities, shapes, ()).to(device)
            out.append(torch.sigmoid(self(batch.values, batch.present)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.tasks)), dtype=np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model and its fitted preprocessing to the folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "input_shapes": {m: list(s) for m, s in self.input_shapes.items()},
        }
        (path / "medmm_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save(state, path / "weights.pt")
        with open(path / "preprocessor.pkl", "wb") as fh:
            pickle.dump(self.preprocessor, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> "MultimodalModel":
        """Load a model written by :meth:`save`."""
        path = Path(path)
        meta_path = path / "medmm_model.json"
        if not meta_path.exists():
            raise ReadError("not a medmm model folder (no medmm_model.json)", path=path,
                            hint="give the folder written by MultimodalModel.save or `medmm train`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ReadError(f"model format version {meta.get('format_version')} is not supported", path=meta_path,
                            hint=f"this medmm reads version {FORMAT_VERSION}")
        with open(path / "preprocessor.pkl", "rb") as fh:
            pre = pickle.load(fh)
        model = cls(ModelConfig.from_dict(meta["config"]), meta["input_shapes"], pre)
        model.load_state_dict(torch.load(path / "weights.pt", map_location=map_location, weights_only=True))
        model.eval()
        return model
