import math

import pytest
import torch

from ml.byol import BYOL, MLPHead, byol_loss, ema_tau, update_ema
from ml.config import EncoderConfig, ViewConfig
from ml.encoder import build_encoder

# Convention (ml.byol): loss = mean(2 - 2cos(p1, z2)) + mean(2 - 2cos(p2, z1)), in [0, 8].


def test_the_loss_is_zero_when_predictions_point_along_the_other_views_targets():
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    # Only the direction matters, so scaled copies are "identical views" too.
    loss = byol_loss(online_1=3 * z2, online_2=0.5 * z1, target_1=z1, target_2=z2)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_the_loss_is_eight_for_opposite_directions_and_four_for_orthogonal_ones():
    z = torch.randn(4, 8)
    assert byol_loss(-z, -z, z, z).item() == pytest.approx(8.0, abs=1e-5)
    e1, e2 = torch.eye(2)[:1], torch.eye(2)[1:]
    assert byol_loss(e1, e1, e2, e2).item() == pytest.approx(4.0, abs=1e-6)


def test_the_loss_is_symmetric_in_the_two_views():
    p1, p2, z1, z2 = (torch.randn(6, 8) for _ in range(4))
    assert byol_loss(p1, p2, z1, z2).item() == pytest.approx(byol_loss(p2, p1, z2, z1).item(), rel=1e-6)
    assert byol_loss(p1, p2, z1, z2).item() != pytest.approx(byol_loss(p1, p2, z2, z1).item(), rel=1e-3)


def test_no_gradient_flows_into_the_targets():
    p1, p2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    z1, z2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    byol_loss(p1, p2, z1, z2).backward()
    assert p1.grad is not None and z1.grad is None and z2.grad is None


def test_the_ema_update_moves_targets_by_one_minus_tau():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = target.weight.detach().clone()
    update_ema(online, target, tau=0.9)
    expected = 0.9 * before + 0.1 * online.weight.detach()
    assert torch.allclose(target.weight, expected, atol=1e-7)
    assert not torch.allclose(target.weight, before)


def test_tau_is_constant_or_rises_on_a_cosine_to_one():
    assert ema_tau(50, 100, 0.996, "constant") == 0.996
    assert ema_tau(0, 100, 0.996, "cosine") == pytest.approx(0.996)
    assert ema_tau(50, 100, 0.996, "cosine") == pytest.approx(0.998)
    assert ema_tau(100, 100, 0.996, "cosine") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="linear"):
        ema_tau(1, 10, 0.99, "linear")


def test_heads_have_the_papers_shape():
    head = MLPHead(512, 512, 256)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.randn(4, 512)).shape == (4, 256)


def test_byol_trains_the_online_network_and_only_averages_into_the_target():
    encoder = build_encoder(EncoderConfig(stem_stride=2, view=ViewConfig(input_size=16)), seed=0)
    model = BYOL(encoder, hidden_dim=32, projection_dim=16)
    assert torch.equal(model.target_encoder.backbone.conv1.weight, encoder.backbone.conv1.weight)
    assert not any(p.requires_grad for p in model.target_projector.parameters())
    loss = model(torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16))
    assert 0 <= loss.item() <= 8 and math.isfinite(loss.item())
    loss.backward()
    assert encoder.backbone.conv1.weight.grad is not None
    assert model.target_encoder.backbone.conv1.weight.grad is None
