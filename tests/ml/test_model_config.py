import pytest

from ml.config import (
    FinetuneConfig,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
    get_config,
    get_finetune_config,
)


def test_the_paper_preset_follows_the_paper():
    paper = get_config("paper")
    assert paper.encoder.stem_stride == 1 and paper.encoder.view.crop_size == 70
    assert paper.lr == pytest.approx(0.8)  # 0.2 x 1024 / 256
    assert (paper.momentum, paper.weight_decay, paper.tau) == (0.9, 1.5e-6, 0.996)
    assert get_finetune_config("paper").layer_decay == 0.75


def test_the_cpu_preset_is_a_cheaper_encoder_over_the_same_field_of_view():
    quick = get_config("cpu-quick")
    assert quick.encoder.stem_stride == 2
    assert quick.encoder.view.crop_size == get_config("paper").encoder.view.crop_size
    assert quick.encoder.view.input_size < quick.encoder.view.crop_size


def test_overrides_reach_nested_fields_and_leave_presets_alone():
    config = get_config("paper", epochs=3, encoder__view__input_size=48)
    assert (config.epochs, config.encoder.view.input_size) == (3, 48)
    assert get_config("paper").encoder.view.input_size == 70
    with pytest.raises(TypeError):
        get_config("paper", no_such_field=1)
    with pytest.raises(KeyError, match="cpu-quick"):
        get_config("gpu-slow")


@pytest.mark.parametrize("config", [get_config("cpu-quick"), get_finetune_config("tiny")])
def test_configs_round_trip_through_plain_dicts(config):
    assert config_from_dict(type(config), config_to_dict(config)) == config


def test_unknown_stored_fields_are_refused():
    stored = config_to_dict(PretrainConfig())
    stored["encoder"]["depth_multiplier"] = 2  # a field of newer code
    with pytest.raises(TypeError, match="depth_multiplier"):
        config_from_dict(PretrainConfig, stored)
    assert isinstance(config_from_dict(FinetuneConfig, config_to_dict(FinetuneConfig())), FinetuneConfig)
