"""A registered encoder, fusion or head given an option it does not take: a ConfigError naming it."""

import pytest

from medmm.errors import ConfigError


def test_an_option_the_encoder_does_not_take_is_named_with_the_ones_it_does():
    from medmm.models.encoders.base import create_encoder

    # the GRU has no dropout (the TCN and the tabular MLP have): before, a TypeError from inside the build
    with pytest.raises(ConfigError, match=r"encoder 'gru' has no option 'dropout'.*'hidden'"):
        create_encoder("gru", in_shape=(24, 15), out_dim=8, dropout=0.1)
    with pytest.raises(ConfigError, match=r"'hiden' \(did you mean 'hidden'\?\)"):
        create_encoder("gru", in_shape=(24, 15), out_dim=8, hiden=4)
    assert create_encoder("gru", in_shape=(24, 15), out_dim=8, hidden=4).out_dim == 8


def test_the_model_config_s_typo_reaches_the_user_as_a_config_error():
    from medmm.models.multimodal import ModelConfig, MultimodalModel

    cfg = ModelConfig(tasks={"tumor": "binary"}, modalities=("vitals", "ehr"), dim=8,
                      encoders={"vitals": {"name": "gru", "dropout": 0.2}, "ehr": {"name": "mlp"}})
    with pytest.raises(ConfigError, match="encoder 'gru' has no option 'dropout'"):
        MultimodalModel(cfg, {"vitals": (24, 15), "ehr": (6,)})
    cfg = ModelConfig(tasks={"tumor": {"kind": "binary", "dropuot": 0.0}}, modalities=("ehr",), dim=8)
    with pytest.raises(ConfigError, match=r"'dropuot' \(did you mean 'dropout'\?\)"):
        MultimodalModel(cfg, {"ehr": (6,)})
