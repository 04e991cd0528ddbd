import numpy as np
import pytest
import torch

from ml.checkpoint import load_checkpoint, save_checkpoint
from ml.config import EncoderConfig, ViewConfig, get_config
from ml.encoder import build_encoder
from ml.train import pretrain, ssl_model
from ml.vicreg import VICReg, vicreg_loss


def test_spread_out_decorrelated_agreeing_views_cost_nothing():
    # Columns of +-2 in a Hadamard pattern: variance above 1, zero covariance, equal views.
    signs = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float32)
    z = 2 * torch.cat([signs, -signs])
    assert vicreg_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-5)


def test_each_term_costs_what_the_paper_says():
    z = torch.zeros(8, 4)  # collapsed: every std 0, so the variance hinge is 1 on both sides
    assert vicreg_loss(z, z).item() == pytest.approx(25.0 * (1 - 1e-2), rel=1e-3)  # std = sqrt(eps)
    z_1 = torch.randn(64, 4) * 3
    shifted = vicreg_loss(z_1, z_1 + 1.0, variance=0.0, covariance=0.0)
    assert shifted.item() == pytest.approx(25.0, rel=1e-5)  # mse of a shift by 1
    # Two identical columns: covariance var(x)^2 twice off the diagonal, over width 2, per side.
    x = torch.randn(256, 1) * 2
    twin = torch.cat([x, x], dim=1)
    expected = 2 * (2 * x.var().item() ** 2 / 2)
    assert vicreg_loss(twin, twin, invariance=0.0, variance=0.0).item() == pytest.approx(expected, rel=1e-4)


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        vicreg_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least two rows"):
        vicreg_loss(torch.zeros(1, 3), torch.zeros(1, 3))


def test_gradients_reach_the_encoder_and_there_is_no_target_network():
    encoder = build_encoder(EncoderConfig(stem_stride=2, view=ViewConfig(input_size=16)), seed=0)
    model = VICReg(encoder, hidden_dim=32, projection_dim=16)
    loss = model(torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16))
    loss.backward()
    assert encoder.backbone.conv1.weight.grad is not None
    before = [p.detach().clone() for p in model.parameters()]
    model.update_target(0.99)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"encoder", "expander"}


def test_a_vicreg_preset_pretrains_and_its_checkpoint_says_so(tmp_path):
    config = get_config("tiny", method="vicreg", projection_hidden_dim=32, projection_dim=32)
    assert isinstance(ssl_model(config), VICReg)
    images = np.random.default_rng(0).integers(0, 256, (16, 150, 150), dtype=np.uint8)
    result = pretrain(images, config, device="cpu", seed=0)
    assert all(np.isfinite(result.curves.step_loss))
    path = save_checkpoint(tmp_path / "v.pt", result)
    loaded = load_checkpoint(path)
    assert loaded.pretrain_config is not None and loaded.pretrain_config.method == "vicreg"
    assert get_config("cpu-vicreg").method == "vicreg" and get_config("cpu-quick").method == "byol"


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown pretraining method 'simclr'"):
        ssl_model(get_config("tiny", method="simclr"))


def test_a_diverging_run_stops_with_the_step_whose_loss_was_not_finite():
    from ml.errors import TrainingDiverged
    from ml.train import plan_loop, run_loop

    plan = plan_loop(n_items=40, batch_size=8, epochs=2, max_steps=None, warmup_epochs=1)
    losses = [1.0, 0.9, 0.8, 5.0, float("inf"), float("nan")] + [float("nan")] * 4
    seen: list[int] = []

    def step_fn(indices, step, lr_factor):
        seen.append(step)
        return torch.tensor(losses[step])

    with pytest.raises(TrainingDiverged, match="the loss was inf at step 5 .*lower the learning rate") as info:
        run_loop(plan, 40, step_fn, seed=0, progress=None, should_stop=None, progress_every=2)
    assert info.value.step == 5
    assert max(seen) <= 5  # found at the next report (every 2 steps), not at the end of the run
