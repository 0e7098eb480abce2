"""One build_preprocessor: the experiment config's preprocess section and the encoders' own options."""

from __future__ import annotations

import pytest

from medmm.errors import ConfigError
from medmm.models import ModelConfig, build_preprocessor
from medmm.preprocess.image import ImagePreprocessor
from medmm.preprocess.text import TextPreprocessor
from medmm.preprocess.tokens import TokenPreprocessor
from medmm.preprocess.vitals import VitalsPreprocessor


def test_section_options_reach_the_default_named_modality_and_encoder_options_win() -> None:
    cfg = ModelConfig(encoders={"image": {"name": "tiny_cnn3d", "preprocess": {"window": "lung"}}})
    pre = build_preprocessor(cfg, preprocess={"image": {"spatial_size": [12, 12, 8], "window": "brain"},
                                              "vitals": {"hours": 12}})
    image = pre.steps["image"]
    assert isinstance(image, ImagePreprocessor)
    assert image.spatial_size == (12, 12, 8) and image.window == "lung"
    assert isinstance(pre.steps["vitals"], VitalsPreprocessor) and pre.steps["vitals"].hours == 12
    assert isinstance(pre.steps["notes"], TextPreprocessor)


def test_a_second_image_modality_keeps_its_own_options() -> None:
    cfg = ModelConfig(modalities=("image", "ct_prior"), modality_kinds={"ct_prior": "image"})
    pre = build_preprocessor(cfg, preprocess={"image": {"spatial_size": [10, 10, 10]}})
    assert pre.steps["image"].spatial_size == (10, 10, 10)
    assert pre.steps["ct_prior"].spatial_size != (10, 10, 10)


def test_token_encoder_gets_its_step_and_text_options_for_it_are_refused() -> None:
    cfg = ModelConfig(encoders={"notes": {"name": "text_transformer", "preprocess": {"max_len": 32}}})
    assert isinstance(build_preprocessor(cfg).steps["notes"], TokenPreprocessor)
    with pytest.raises(ConfigError, match="model.encoders.notes.preprocess") as info:
        build_preprocessor(cfg, preprocess={"notes": {"max_features": 500}})
    assert info.value.column == "preprocess.notes"


def test_an_unknown_option_names_the_section() -> None:
    with pytest.raises(ConfigError) as info:
        build_preprocessor(ModelConfig(), preprocess={"image": {"spacial_size": [8, 8, 8]}})
    assert info.value.column == "preprocess.image"
