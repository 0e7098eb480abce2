"""Encoders, fusion modules, heads and the multimodal model (torch imported here, not by ``import medmm``)."""

from .encoders import ENCODERS, Encoder, create_encoder, register_encoder
from .fusion import FUSIONS, create_fusion, register_fusion
from .heads import HEADS, create_head, register_head
from . import survival  # noqa: F401  (registers the survival heads)
from .losses import LossWeighting, multitask_loss
from .multimodal import ModelConfig, MultimodalModel, build_preprocessor
from .factory import create_model

__all__ = [
    "ENCODERS", "Encoder", "create_encoder", "register_encoder",
    "FUSIONS", "create_fusion", "register_fusion",
    "HEADS", "create_head", "register_head",
    "LossWeighting", "multitask_loss",
    "ModelConfig", "MultimodalModel", "build_preprocessor", "create_model",
]
