import numpy as np
import pytest
import torch

from ml.config import get_config, get_finetune_config
from ml.encoder import build_encoder
from ml.errors import DataError, SingleClassError, TrainingCancelled
from ml.finetune import EncoderClassifier, finetune, layerwise_param_groups, predict_proba, train_supervised_baseline

ENCODER = get_config("tiny").encoder
TINY = get_finetune_config("tiny")


@pytest.fixture(scope="module")
def labelled() -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).integers(0, 256, (16, 150, 150), dtype=np.uint8)
    return images, np.arange(16) % 2


def test_layerwise_groups_decay_the_lr_by_depth_and_skip_decay_on_1d_weights():
    model = EncoderClassifier(build_encoder(ENCODER), n_classes=2)
    groups = layerwise_param_groups(model, lr=2.5e-4, layer_decay=0.75, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.head.weight)] == pytest.approx(2.5e-4)
    assert lr_of[id(model.encoder.backbone.layer4[0].conv1.weight)] == pytest.approx(2.5e-4 * 0.75)
    assert lr_of[id(model.encoder.backbone.conv1.weight)] == pytest.approx(2.5e-4 * 0.75**5)
    assert all(g["weight_decay"] == 0 for g in groups if any(p.ndim == 1 for p in g["params"]))


def test_finetuning_trains_a_copy_and_returns_probabilities(labelled):
    images, labels = labelled
    encoder = build_encoder(ENCODER, seed=0)
    before = encoder.backbone.conv1.weight.detach().clone()
    steps = []
    result = finetune(encoder, images, labels, TINY, device="cpu", progress=lambda p: steps.append(p.step))
    assert steps == [1, 2, 3, 4]
    assert torch.equal(encoder.backbone.conv1.weight, before)
    assert not torch.equal(result.model.encoder.backbone.conv1.weight, before)
    proba = predict_proba(result.model, images[:5], batch_size=2, device="cpu")
    assert proba.shape == (5, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    # Averaged over the eight rotations/flips, a turned image gets the same probabilities.
    dihedral = predict_proba(result.model, images[:5], device="cpu", views="dihedral")
    turned = np.ascontiguousarray(np.rot90(images[:5], 1, axes=(1, 2)))
    np.testing.assert_allclose(predict_proba(result.model, turned, device="cpu", views="dihedral"), dihedral, atol=1e-5)
    np.testing.assert_allclose(dihedral.sum(axis=1), 1, rtol=1e-5)


def test_the_supervised_baseline_starts_from_a_seeded_fresh_encoder(labelled):
    images, labels = labelled
    config = get_finetune_config("tiny", max_steps=1)
    first = train_supervised_baseline(images, labels, config, ENCODER, device="cpu", seed=2)
    second = train_supervised_baseline(images, labels, config, ENCODER, device="cpu", seed=2)
    assert first.curves.step_loss == second.curves.step_loss
    assert first.n_classes == 2


def test_bad_labels_and_cancellation_are_clear(labelled):
    images, labels = labelled
    encoder = build_encoder(ENCODER)
    with pytest.raises(SingleClassError):
        finetune(encoder, images, np.zeros(16, dtype=int), TINY, device="cpu")
    with pytest.raises(DataError):
        finetune(encoder, images, labels[:-1], TINY, device="cpu")
    with pytest.raises(DataError, match=r"0\.\.1"):
        finetune(encoder, images, labels * 2, TINY, n_classes=2, device="cpu")
    with pytest.raises(TrainingCancelled):
        finetune(encoder, images, labels, TINY, device="cpu", should_stop=lambda: True)
