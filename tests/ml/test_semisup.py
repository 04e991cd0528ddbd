"""Semi-supervised (FixMatch-style) fine-tuning: the consistency loss and ``finetune(..., unlabelled=...)``."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ml.config import (
    FINETUNE_PRESETS,
    FinetuneConfig,
    config_from_dict,
    config_to_dict,
    get_config,
    get_finetune_config,
)
from ml.encoder import build_encoder
from ml.errors import DataError
from ml.finetune import FinetuneResult, consistency_loss, finetune

ENCODER = get_config("tiny").encoder
#: Threshold 0: every pseudo-label counts, so the consistency loss acts from the first step.
SEMI = get_finetune_config("tiny", max_steps=2, unlabelled_weight=1.0, confidence_threshold=0.0, unlabelled_ratio=2)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 150, 150), dtype=np.uint8)
    pool = rng.integers(0, 256, (40, 150, 150), dtype=np.uint8)
    return images, np.arange(16) % 2, pool


def weights(result: FinetuneResult) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# consistency_loss


def test_no_confident_weak_prediction_gives_zero_loss_and_zero_mask_rate():
    generator = torch.Generator().manual_seed(0)
    weak = 0.1 * torch.randn(8, 3, generator=generator)  # max probability about 1/3
    strong = torch.randn(8, 3, generator=generator, requires_grad=True)
    loss, mask_rate = consistency_loss(weak, strong, threshold=0.9)
    assert loss.item() == 0.0
    assert mask_rate.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(strong.grad) == 0


def test_with_threshold_zero_it_is_the_cross_entropy_against_the_weak_argmax():
    generator = torch.Generator().manual_seed(1)
    weak = torch.randn(10, 4, generator=generator)
    strong = torch.randn(10, 4, generator=generator)
    loss, mask_rate = consistency_loss(weak, strong, threshold=0.0)
    torch.testing.assert_close(loss, F.cross_entropy(strong, weak.argmax(dim=1)))
    assert mask_rate.item() == 1.0
    # Not the soft cross-entropy against the weak probabilities, nor against the strong argmax.
    assert not torch.isclose(loss, -(weak.softmax(1) * strong.log_softmax(1)).sum(1).mean())
    assert not torch.isclose(loss, F.cross_entropy(strong, strong.argmax(dim=1)))


def test_the_gradient_reaches_the_strong_logits_only():
    generator = torch.Generator().manual_seed(2)
    weak = torch.randn(6, 3, generator=generator, requires_grad=True)
    strong = torch.randn(6, 3, generator=generator, requires_grad=True)
    loss, mask_rate = consistency_loss(weak, strong, threshold=0.0)
    loss.backward()
    assert strong.grad is not None and torch.count_nonzero(strong.grad) > 0
    assert weak.grad is None
    assert not mask_rate.requires_grad


def test_the_masked_mean_divides_by_the_whole_batch():
    confident = torch.tensor([[8.0, 0.0], [0.0, 8.0]])  # probability 0.9997 of classes 0 and 1
    unsure = torch.zeros(2, 2)  # probability 0.5
    weak = torch.cat([confident, unsure])
    strong = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    loss, mask_rate = consistency_loss(weak, strong, threshold=0.95)
    per_sample = F.cross_entropy(strong[:2], torch.tensor([0, 1]), reduction="none")
    torch.testing.assert_close(loss, per_sample.sum() / 4)
    assert mask_rate.item() == pytest.approx(0.5)


def test_a_threshold_is_reached_inclusively_and_shapes_must_agree():
    weak = torch.zeros(3, 2)  # probability exactly 0.5
    loss, mask_rate = consistency_loss(weak, torch.randn(3, 2), threshold=0.5)
    assert mask_rate.item() == 1.0 and loss.item() > 0
    with pytest.raises(DataError):
        consistency_loss(torch.zeros(3, 2), torch.zeros(4, 2), threshold=0.5)


# configuration


def test_the_semisup_preset_is_cpu_quick_with_the_unlabelled_loss_switched_on():
    expected = dataclasses.replace(FINETUNE_PRESETS["cpu-quick"], name="cpu-semisup", unlabelled_weight=1.0)
    assert FINETUNE_PRESETS["cpu-semisup"] == expected
    assert all(preset.unlabelled_weight == 0 for name, preset in FINETUNE_PRESETS.items() if name != "cpu-semisup")


def test_the_semi_supervised_config_round_trips_through_a_dict():
    config = get_finetune_config("cpu-semisup", strong_augment__blur_p=0.3)
    restored = config_from_dict(FinetuneConfig, config_to_dict(config))
    assert restored == config
    assert restored.strong_augment != restored.augment


# finetune(..., unlabelled=...)


def test_semi_supervised_finetuning_is_reproducible_and_not_the_supervised_run(data):
    images, labels, pool = data
    encoder = build_encoder(ENCODER, seed=0)
    before = weights_of(encoder)
    first = finetune(encoder, images, labels, SEMI, device="cpu", seed=3, unlabelled=pool)
    second = finetune(encoder, images, labels, SEMI, device="cpu", seed=3, unlabelled=pool)
    assert same_weights(weights(first), weights(second))
    assert first.curves.step_loss == second.curves.step_loss
    assert first.mask_rate == second.mask_rate == [1.0, 1.0]  # threshold 0: every weak view counts
    assert same_weights(weights_of(encoder), before)

    supervised = finetune(
        encoder, images, labels, dataclasses.replace(SEMI, unlabelled_weight=0.0), device="cpu", seed=3
    )
    assert not same_weights(weights(first), weights(supervised))
    assert supervised.mask_rate == []

    other_seed = finetune(encoder, images, labels, SEMI, device="cpu", seed=4, unlabelled=pool)
    assert not same_weights(weights(first), weights(other_seed))


def test_the_consistency_loss_trains_the_model_beyond_the_shared_batchnorm_batch(data):
    images, labels, pool = data
    encoder = build_encoder(ENCODER, seed=0)
    active = finetune(encoder, images, labels, SEMI, device="cpu", seed=6, unlabelled=pool)
    # Above 1 no pseudo-label passes: the unlabelled views still share the BatchNorm batch
    # but add no gradient.
    masked = dataclasses.replace(SEMI, confidence_threshold=1.01)
    silent = finetune(encoder, images, labels, masked, device="cpu", seed=6, unlabelled=pool)
    assert silent.mask_rate == [0.0, 0.0]
    assert not same_weights(weights(active), weights(silent))
    assert active.curves.step_loss[0] > silent.curves.step_loss[0]  # same first step, plus the unlabelled term


def test_unlabelled_images_are_ignored_when_their_weight_is_zero(data):
    images, labels, pool = data
    encoder = build_encoder(ENCODER, seed=0)
    config = dataclasses.replace(SEMI, unlabelled_weight=0.0)
    plain = finetune(encoder, images, labels, config, device="cpu", seed=5)
    given = finetune(encoder, images, labels, config, device="cpu", seed=5, unlabelled=pool)
    assert same_weights(weights(plain), weights(given))
    assert plain.curves.step_loss == given.curves.step_loss


def test_a_positive_unlabelled_weight_needs_unlabelled_images(data):
    images, labels, pool = data
    encoder = build_encoder(ENCODER)
    with pytest.raises(ValueError, match="unlabelled images"):
        finetune(encoder, images, labels, SEMI, device="cpu")
    with pytest.raises(ValueError, match="unlabelled_ratio"):
        finetune(encoder, images, labels, dataclasses.replace(SEMI, unlabelled_ratio=0), device="cpu", unlabelled=pool)
    with pytest.raises(DataError):
        finetune(encoder, images, labels, SEMI, device="cpu", unlabelled=pool.astype(np.float32))


def weights_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
