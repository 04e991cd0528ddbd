import dataclasses

import numpy as np
import pytest

from ml.errors import ShapeMismatchError
from ml.evaluation import LINEAR_PROBE, error_rate, linear_probe
from ml.probes import self_training_probe, view_augmented_probe


def two_blobs(n: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.normal(0, spread, (n, 4))
    features[:, 0] += np.where(labels == 1, 2.0, -2.0)
    return features, labels


def test_eight_equal_poses_are_the_plain_probe_with_eight_times_the_weight():
    features, labels = two_blobs(60, 0, spread=2.5)
    test, _ = two_blobs(40, 1, spread=2.5)
    indices = np.arange(0, 60, 3)
    augmented = view_augmented_probe(np.stack([features] * 8), labels, np.stack([test] * 8))(indices, 0)
    # Repeating every row 8 times multiplies the data term by 8: the model of C * 8.
    same = linear_probe(features, labels, test, dataclasses.replace(LINEAR_PROBE, C=8.0))(indices, 0)
    assert np.array_equal(augmented, same)


def test_each_pose_is_labelled_with_its_own_source():
    # The class shows in feature 0 on pose 0 and in feature 1 on the other poses: a probe whose
    # rows and labels were paired across sources could not learn both.
    rng = np.random.default_rng(3)
    labels = np.arange(80) % 2
    sign = np.where(labels == 1, 1.0, -1.0)
    poses = rng.normal(0, 0.3, (8, 80, 3))
    poses[0, :, 0] += 2 * sign
    poses[1:, :, 1] += 2 * sign
    train, test = np.arange(40), np.arange(40, 80)
    predictions = view_augmented_probe(poses[:, train], labels[train], poses[:, test])(np.arange(0, 40, 3), 0)
    assert error_rate(predictions, labels[test]) == 0.0


def test_pose_arrays_must_agree():
    with pytest.raises(ShapeMismatchError, match="must be \\(poses, N, D\\)"):
        view_augmented_probe(np.zeros((10, 4)), np.arange(10) % 2, np.zeros((8, 5, 4)))
    with pytest.raises(ShapeMismatchError, match="differ in poses or width"):
        view_augmented_probe(np.zeros((8, 10, 4)), np.arange(10) % 2, np.zeros((4, 5, 4)))


def test_no_rounds_is_the_plain_probe():
    features, labels = two_blobs(100, 2)
    test, _ = two_blobs(50, 3)
    indices = np.arange(0, 100, 10)
    assert np.array_equal(
        self_training_probe(features, labels, test, rounds=0)(indices, 0),
        linear_probe(features, labels, test)(indices, 0),
    )


def test_the_labels_of_unlabelled_rows_are_never_read():
    features, labels = two_blobs(200, 4)
    test, _ = two_blobs(100, 5)
    indices = np.arange(0, 200, 20)
    garbled = 1 - labels
    garbled[indices] = labels[indices]
    honest = self_training_probe(features, labels, test, share=0.8)(indices, 0)
    assert np.array_equal(self_training_probe(features, garbled, test, share=0.8)(indices, 0), honest)


def test_pseudo_labels_move_the_boundary_into_the_gap():
    # Two clusters on feature 0 (class 0 around -2, class 1 around +2); the four labels sit far
    # out on class 0's side and near the gap on class 1's, so the plain probe's boundary cuts
    # into class 0. The unlabelled rows pull it back to the gap.
    rng = np.random.default_rng(6)
    labels = np.repeat([0, 1], 300)
    features = np.column_stack([np.where(labels == 1, 2.0, -2.0) + rng.normal(0, 0.7, 600), rng.normal(0, 1, 600)])
    test_labels = np.repeat([0, 1], 200)
    test = np.column_stack([np.where(test_labels == 1, 2.0, -2.0) + rng.normal(0, 0.7, 400), rng.normal(0, 1, 400)])
    order = np.argsort(features[:, 0])
    indices = np.sort(np.concatenate([order[:2], order[300:302]]))  # the two leftmost of each class
    plain = error_rate(linear_probe(features, labels, test)(indices, 0), test_labels)
    trained = error_rate(self_training_probe(features, labels, test, share=1.0)(indices, 0), test_labels)
    assert plain > 0.1
    assert trained < plain / 2


def test_pseudo_labels_keep_the_labelled_class_proportions():
    # The class-0 labels sit far out and the class-1 labels at the gap: the plain probe calls 90 %
    # of the rows class 1, and refitting on all its own predictions would only lean further.
    # With quotas from the labels (half and half) the refit predicts both classes again.
    rng = np.random.default_rng(8)
    labels = np.repeat([0, 1], 150)
    features = np.column_stack([np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 0.8, 300), rng.normal(0, 1, 300)])
    indices = np.array([0, 1, 150, 151])
    features[indices, 0] = [-4.0, -4.1, 0.2, 0.3]
    plain = linear_probe(features, labels, features)(indices, 0)
    trained = self_training_probe(features, labels, features, share=1.0, rounds=3)(indices, 0)
    assert plain.mean() > 0.85
    assert 0.4 < trained.mean() < 0.6
    assert error_rate(trained, labels) < error_rate(plain, labels) / 2


@pytest.mark.parametrize(("share", "rounds"), [(0.0, 3), (1.2, 3), (0.5, -1)])
def test_settings_out_of_range_are_refused(share, rounds):
    features, labels = two_blobs(20, 7)
    with pytest.raises(ValueError, match="share|rounds"):
        self_training_probe(features, labels, features, share=share, rounds=rounds)
