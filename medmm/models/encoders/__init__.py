"""Modality encoders behind one contract: ``forward(x, mask) -> [B, D]`` (see :mod:`.base`).

============  ====================================================================================
kind          registered encoders (chosen by the modality's kind: ``text`` for notes, ...)
============  ====================================================================================
image         ``tiny_cnn3d`` (CPU), ``monai_resnet``, ``monai_densenet``, ``monai_efficientnet``,
              ``monai_seresnet``, ``monai_vit``, ``swin`` (2D or 3D by ``in_shape``)
text          ``tfidf_mlp`` (bag of n-grams), ``text_transformer`` (token ids), ``sentence_mlp``
              (frozen all-MiniLM-L6-v2 embedding)
series        ``gru``, ``grud`` (GRU-D), ``tcn`` (temporal CNN), ``vitals_transformer``
table         ``mlp``, ``ft_transformer``
============  ====================================================================================
"""

from . import image, tabular, text, vitals  # noqa: F401  (registers the encoders)
from .base import ENCODERS, Encoder, create_encoder, load_state_dict_file, register_encoder

__all__ = ["ENCODERS", "Encoder", "create_encoder", "register_encoder", "load_state_dict_file"]
