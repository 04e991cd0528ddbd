import pytest
import torch

from ml.config import EncoderConfig, ViewConfig
from ml.encoder import RadioEncoder, build_encoder


def test_it_maps_one_channel_views_to_512_features():
    encoder = build_encoder(EncoderConfig(), seed=0).eval()
    with torch.no_grad():
        features = encoder(torch.randn(2, 1, 70, 70))
    assert features.shape == (2, 512)


def test_it_uses_the_papers_3x3_stride_1_stem_and_keeps_the_max_pool():
    backbone = build_encoder(EncoderConfig()).backbone
    assert backbone.conv1.in_channels == 1
    assert backbone.conv1.kernel_size == (3, 3)
    assert backbone.conv1.stride == (1, 1)
    assert isinstance(backbone.maxpool, torch.nn.MaxPool2d)


def test_the_cpu_variant_has_a_stride_2_stem_and_the_same_feature_width():
    encoder = build_encoder(EncoderConfig(stem_stride=2, view=ViewConfig(input_size=32))).eval()
    assert encoder.backbone.conv1.stride == (2, 2)
    with torch.no_grad():
        assert encoder(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_a_seed_fixes_the_initial_weights_without_touching_the_global_rng():
    state = torch.random.get_rng_state()
    first, second = build_encoder(EncoderConfig(), seed=3), build_encoder(EncoderConfig(), seed=3)
    other = build_encoder(EncoderConfig(), seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.backbone.conv1.weight, second.backbone.conv1.weight)
    assert not torch.equal(first.backbone.conv1.weight, other.backbone.conv1.weight)


def test_stages_cover_every_parameter_once():
    encoder = build_encoder(EncoderConfig())
    in_stages = [id(p) for stage in encoder.stages() for p in stage.parameters()]
    assert len(in_stages) == len(set(in_stages))
    assert set(in_stages) == {id(p) for p in encoder.parameters()}


def test_it_refuses_an_unknown_architecture():
    with pytest.raises(ValueError, match="resnet50"):
        RadioEncoder(EncoderConfig(arch="resnet50"))  # type: ignore[arg-type]
