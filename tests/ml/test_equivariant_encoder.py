"""The p4m encoder (EncoderConfig(arch="p4m-resnet10")): exact invariance, checkpoints, product wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.checkpoint import load_checkpoint, load_encoder, save_checkpoint
from ml.config import EncoderConfig, ViewConfig
from ml.embed import embed
from ml.encoder import build_encoder, group_downsample
from ml.equivariant import GROUP_ORDER, transform, transform_group_tensor
from ml.errors import CheckpointError

P4M_CPU = EncoderConfig(arch="p4m-resnet10", stem_stride=2, width=4, view=ViewConfig(input_size=32))


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def trained_statistics(encoder: torch.nn.Module, size: int) -> torch.nn.Module:
    """Non-trivial batch-norm statistics (a fresh encoder's are 0 and 1), then eval mode."""
    encoder.train()
    with torch.no_grad():
        for _ in range(3):
            encoder(torch.randn(6, 1, size, size) * 2 + 0.5)
    return encoder.eval()


@pytest.mark.parametrize("size", [64, 70, 33])
def test_group_downsample_commutes_with_every_rotation_and_flip(size: int) -> None:
    y = torch.randn(2, 3, GROUP_ORDER, size, size)
    out = group_downsample(y)
    assert out.shape[-1] == (size + 1) // 2
    for h in range(GROUP_ORDER):
        torch.testing.assert_close(group_downsample(transform_group_tensor(y, h)), transform_group_tensor(out, h))


def test_group_downsample_refuses_non_square_maps() -> None:
    with pytest.raises(ValueError, match="square"):
        group_downsample(torch.randn(1, 1, GROUP_ORDER, 8, 6))


@pytest.mark.parametrize(
    ("stem_stride", "size"),
    [(1, 70), (2, 64), (2, 70)],  # the paper's geometry, the CPU preset's, and odd sizes on the way
)
def test_features_are_invariant_to_the_eight_poses_of_the_view(stem_stride: int, size: int) -> None:
    config = EncoderConfig(arch="p4m-resnet10", stem_stride=stem_stride, width=2, view=ViewConfig(input_size=size))
    encoder = trained_statistics(build_encoder(config, seed=0), size)
    views = torch.randn(3, 1, size, size)
    with torch.no_grad():
        reference = encoder(views)
        assert reference.shape == (3, config.feature_dim) == (3, 16)
        assert reference.abs().max() > 0
        for g in range(1, GROUP_ORDER):
            torch.testing.assert_close(encoder(transform(views, g)), reference, rtol=1e-4, atol=1e-5)
        # Invariance is not blindness: a different image (here a half-shifted one) gives other features.
        assert not torch.allclose(encoder(torch.roll(views, size // 4, dims=-1)), reference, atol=1e-3)


def test_the_resnet_is_not_invariant_so_the_test_above_can_fail() -> None:
    config = EncoderConfig(stem_stride=2, view=ViewConfig(input_size=32))
    encoder = trained_statistics(build_encoder(config, seed=0), 32)
    views = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(encoder(transform(views, 1)), encoder(views), rtol=1e-4, atol=1e-5)
    assert not encoder.invariant and build_encoder(P4M_CPU).invariant


def test_training_mode_is_invariant_when_the_whole_batch_turns_alike() -> None:
    encoder = build_encoder(P4M_CPU, seed=1).train()
    views = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(transform(views, 5)), encoder(views), rtol=1e-4, atol=1e-5)


def test_widths_set_the_feature_size_and_stages_cover_every_parameter_once() -> None:
    for width in (2, 5):
        config = EncoderConfig(arch="p4m-resnet10", stem_stride=2, width=width, view=ViewConfig(input_size=32))
        encoder = build_encoder(config)
        with torch.no_grad():
            assert encoder.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 8 * width) == (2, encoder.feature_dim)
        in_stages = [id(p) for stage in encoder.stages() for p in stage.parameters()]
        assert len(in_stages) == len(set(in_stages)) and set(in_stages) == {id(p) for p in encoder.parameters()}
        assert len(encoder.stages()) == 5
    with pytest.raises(ValueError, match="width"):
        build_encoder(EncoderConfig(arch="p4m-resnet10", width=0))


def test_it_trains_a_gradient_step_changes_the_features() -> None:
    encoder = build_encoder(P4M_CPU, seed=2).train()
    views = torch.randn(4, 1, 32, 32)
    before = encoder.eval()(views).detach()
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    encoder.train()(views).pow(2).mean().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    assert not torch.allclose(encoder.eval()(views).detach(), before)


def test_a_checkpoint_round_trips_and_another_architecture_is_a_clear_error(tmp_path) -> None:
    encoder = trained_statistics(build_encoder(P4M_CPU, seed=3), 32)
    path = save_checkpoint(tmp_path / "p4m.pt", encoder)
    loaded = load_checkpoint(path).encoder
    assert loaded.config == P4M_CPU and loaded.invariant
    views = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(views), encoder(views))
    resnet = EncoderConfig(stem_stride=2, view=ViewConfig(input_size=32))
    with pytest.raises(CheckpointError, match=r"p4m\.pt.*arch='p4m-resnet10' \(expected 'resnet18'\)"):
        load_encoder(path, expected=resnet)
    payload = torch.load(path, weights_only=True)
    payload["encoder_config"]["arch"] = "vit-tiny"  # written by code that knows another architecture
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"p4m\.pt: unknown encoder architecture 'vit-tiny'"):
        load_encoder(path)
    old = save_checkpoint(tmp_path / "resnet.pt", build_encoder(resnet, seed=0))
    payload = torch.load(old, weights_only=True)
    del payload["encoder_config"]["width"]  # written before p4m existed
    torch.save(payload, old)
    assert load_encoder(old).config == resnet


def test_dihedral_embedding_of_an_invariant_encoder_equals_the_centre_view() -> None:
    """The server embeds with views="dihedral"; for p4m that is one pass with the same rows."""
    encoder = trained_statistics(build_encoder(P4M_CPU, seed=4), 32)
    images = np.random.default_rng(0).integers(0, 256, (5, 150, 150), dtype=np.uint8)
    centre = embed(encoder, images, device="cpu")
    np.testing.assert_allclose(embed(encoder, images, device="cpu", views="dihedral"), centre, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        embed(encoder, np.rot90(images, 1, axes=(1, 2)).copy(), device="cpu"), centre, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(embed(encoder, images[:, :, ::-1].copy(), device="cpu"), centre, rtol=1e-4, atol=1e-5)


def test_byol_pretrains_the_p4m_encoder_and_fine_tuning_keeps_it_invariant() -> None:
    """The training loops place models channels-last; the 5-D group filters must survive that."""
    from ml.config import get_config, get_finetune_config
    from ml.finetune import finetune
    from ml.train import pretrain

    images = np.random.default_rng(1).integers(0, 256, (16, 150, 150), dtype=np.uint8)
    config = get_config("tiny", encoder=P4M_CPU)
    assert config.run.channels_last
    result = pretrain(images, config, device="cpu", seed=0)
    assert result.encoder.config == P4M_CPU and np.isfinite(result.curves.step_loss).all()
    tuned = finetune(result.encoder, images[:8], [0, 1] * 4, get_finetune_config("tiny"), device="cpu", seed=0)
    model = tuned.model.eval()
    views = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(transform(views, 6)), model(views), rtol=1e-4, atol=1e-5)
