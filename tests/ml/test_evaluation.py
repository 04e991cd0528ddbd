"""The few-label evaluation protocol: stratified subsets, linear probe, summaries."""

from __future__ import annotations

import numpy as np
import pytest

from ml.baseline import pixel_pca_embeddings
from ml.evaluation import (
    BenchmarkSplit,
    SubsetResult,
    class_counts,
    error_rate,
    evaluate_subsets,
    linear_probe,
    markdown_table,
    stratified_subset,
    summarise,
    validation_split,
)

#: The MiraBest Confident training set's class balance (348 FRI, 381 FRII).
MIRABEST_TRAIN_LABELS = np.array([0] * 348 + [1] * 381)


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated Gaussian blobs in 8 dimensions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    features = rng.normal(size=(n, 8)) + 6.0 * labels[:, None]
    return features.astype(np.float32), labels


@pytest.mark.parametrize("budget", [36, 73, 145, 291, 729])
def test_a_stratified_subset_keeps_the_class_ratio(budget: int) -> None:
    subset = stratified_subset(MIRABEST_TRAIN_LABELS, budget, seed=3)
    assert len(subset) == len(np.unique(subset)) == budget
    share = np.mean(MIRABEST_TRAIN_LABELS[subset] == 1)
    # Rounding to whole labels moves the share by at most one label.
    assert abs(share - 381 / 729) <= 1 / budget


def test_a_stratified_subset_is_the_same_for_the_same_seed_and_differs_between_seeds() -> None:
    first = stratified_subset(MIRABEST_TRAIN_LABELS, 145, seed=0)
    assert np.array_equal(first, stratified_subset(MIRABEST_TRAIN_LABELS, 145, seed=0))
    assert not np.array_equal(first, stratified_subset(MIRABEST_TRAIN_LABELS, 145, seed=1))


def test_subsets_of_one_seed_are_nested_across_budgets() -> None:
    budgets = [36, 73, 145, 291, 729]
    subsets = [set(stratified_subset(MIRABEST_TRAIN_LABELS, budget, seed=7).tolist()) for budget in budgets]
    for smaller, larger in zip(subsets, subsets[1:], strict=False):
        assert smaller <= larger


def test_every_class_gets_a_label_even_when_rare() -> None:
    labels = np.array([0] * 98 + [1] * 2)
    assert class_counts(labels, 10) == {0: 9, 1: 1}
    assert set(labels[stratified_subset(labels, 2, seed=0)]) == {0, 1}


def test_the_full_budget_takes_every_item() -> None:
    assert np.array_equal(stratified_subset(MIRABEST_TRAIN_LABELS, 729, seed=5), np.arange(729))


@pytest.mark.parametrize("budget", [1, 730])
def test_an_impossible_budget_is_refused(budget: int) -> None:
    with pytest.raises(ValueError, match="budget"):
        stratified_subset(MIRABEST_TRAIN_LABELS, budget, seed=0)


def test_the_linear_probe_on_separable_data_makes_no_mistakes() -> None:
    train_features, train_labels = separable(200, seed=0)
    test_features, test_labels = separable(100, seed=1)
    probe = linear_probe(train_features, train_labels, test_features)
    results = evaluate_subsets("linear", probe, train_labels, test_labels, budgets=[10, 50], seeds=[0, 1, 2])
    assert [(r.budget, r.seed) for r in results] == [(10, 0), (10, 1), (10, 2), (50, 0), (50, 1), (50, 2)]
    assert all(r.error <= 0.01 for r in results)


def test_every_method_sees_the_same_labels_for_a_budget_and_seed() -> None:
    labels = MIRABEST_TRAIN_LABELS
    seen: dict[str, list[np.ndarray]] = {"a": [], "b": []}

    def recorder(method: str):
        def fit_predict(indices: np.ndarray, seed: int) -> np.ndarray:
            seen[method].append(indices)
            return np.zeros(4, dtype=np.int64)

        return fit_predict

    for method in seen:
        evaluate_subsets(method, recorder(method), labels, np.array([0, 0, 1, 1]), [36, 145], [0, 1])
    assert all(np.array_equal(a, b) for a, b in zip(seen["a"], seen["b"], strict=True))


def test_results_are_reported_as_they_arrive() -> None:
    arrived: list[SubsetResult] = []
    results = evaluate_subsets(
        "constant",
        lambda indices, seed: np.array([0, 1, 1, 1]),
        MIRABEST_TRAIN_LABELS,
        np.array([0, 0, 1, 1]),
        [36],
        [0, 1],
        on_result=arrived.append,
    )
    assert arrived == results
    assert [r.error for r in results] == [0.25, 0.25]


def test_error_rate_counts_mistakes_and_checks_shapes() -> None:
    assert error_rate(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])) == 0.25
    with pytest.raises(ValueError):
        error_rate(np.array([0, 1]), np.array([0, 1, 1]))


def test_the_summary_gives_mean_sample_std_and_seed_count() -> None:
    results = [SubsetResult("linear", 36, seed, error, 0.0) for seed, error in enumerate([0.1, 0.2, 0.3])]
    results.append(SubsetResult("pca", 36, 0, 0.4, 0.0))
    summary = summarise(results)
    assert summary["linear", 36].mean == pytest.approx(0.2)
    assert summary["linear", 36].std == pytest.approx(0.1)
    assert summary["linear", 36].n_seeds == 3
    assert summary["pca", 36].std == 0.0
    table = markdown_table(summary, ["linear", "pca"], [36, 145], labels={"linear": "BYOL linear"})
    assert "| BYOL linear | 20.0 ± 10.0 (n=3) |  |" in table
    assert "| pca | 40.0 ± 0.0 (n=1) |  |" in table


def test_pca_can_be_fitted_on_training_rows_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, size=(20, 80, 80), dtype=np.uint8)
    test = np.full((3, 80, 80), 255, dtype=np.uint8)  # far from anything the fit saw
    both = np.concatenate([train, test])
    features = pixel_pca_embeddings(both, dim=5, crop=70, fit_rows=np.arange(20))
    alone = pixel_pca_embeddings(train, dim=5, crop=70)
    assert features.shape == (23, 5)
    # Fitting on the training rows gives the same components as fitting on them alone.
    np.testing.assert_allclose(np.abs(features[:20]), np.abs(alone), rtol=1e-3, atol=1e-3)


# --- validation folds inside the training set ---------------------------------------------------
#: Three classes of unequal size, so that stratification is visible (smallest class: 12).
FOLD_CLASS_SIZES = (12, 17, 23)


def indexed_split(n_test: int = 9) -> BenchmarkSplit:
    """A split whose every image is filled with its own index (training 0..51, test 52..60)."""
    rng = np.random.default_rng(4)
    train_labels = rng.permutation(np.repeat(np.arange(3), FOLD_CLASS_SIZES))
    n_train = len(train_labels)
    images = np.arange(n_train + n_test, dtype=np.int64)[:, None, None] * np.ones((1, 3, 3), dtype=np.int64)
    return BenchmarkSplit(
        train_images=images[:n_train],
        train_labels=train_labels,
        test_images=images[n_train:],
        test_labels=rng.integers(0, 3, size=n_test),
        class_names=("a", "b", "c"),
    )


def image_ids(images: np.ndarray) -> np.ndarray:
    """The index each image was filled with (checking that the image is uniform)."""
    assert (images == images[:, :1, :1]).all()
    return images[:, 0, 0]


@pytest.mark.parametrize("folds", [2, 5])
def test_validation_folds_never_hold_a_test_source(folds: int) -> None:
    split = indexed_split()
    test_ids = set(image_ids(split.test_images).tolist())
    for fold in range(folds):
        part = validation_split(split, fold, folds)
        assert not test_ids & set(image_ids(part.train_images).tolist())
        assert not test_ids & set(image_ids(part.test_images).tolist())
        # Each image keeps its own label.
        assert np.array_equal(part.train_labels, split.train_labels[image_ids(part.train_images)])
        assert np.array_equal(part.test_labels, split.train_labels[image_ids(part.test_images)])
        assert part.class_names == ("a", "b", "c")


@pytest.mark.parametrize("folds", [2, 3, 5, 12])
def test_validation_folds_partition_the_training_set(folds: int) -> None:
    split = indexed_split()
    n_train = len(split.train_labels)
    held_out = []
    for fold in range(folds):
        part = validation_split(split, fold, folds)
        train, test = image_ids(part.train_images), image_ids(part.test_images)
        # Within a fold: the other folds train, this one is scored, nothing in both.
        assert not set(train.tolist()) & set(test.tolist())
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n_train))
        held_out.append(test)
    # Over the folds: every training source is scored exactly once.
    assert np.array_equal(np.sort(np.concatenate(held_out)), np.arange(n_train))


@pytest.mark.parametrize("folds", [3, 5])
def test_validation_folds_are_stratified(folds: int) -> None:
    split = indexed_split()
    for fold in range(folds):
        part = validation_split(split, fold, folds)
        for label, size in enumerate(FOLD_CLASS_SIZES):
            assert abs(np.sum(part.test_labels == label) - size / folds) <= 1


def test_validation_folds_are_fixed_by_their_seed() -> None:
    split = indexed_split()
    first = image_ids(validation_split(split, 0, 5, seed=0).test_images)
    assert np.array_equal(first, image_ids(validation_split(split, 0, 5, seed=0).test_images))
    assert not np.array_equal(first, image_ids(validation_split(split, 0, 5, seed=1).test_images))


@pytest.mark.parametrize(
    "fold, folds, message",
    [(-1, 5, "fold -1"), (5, 5, "fold 5"), (0, 1, "at least 2"), (0, 13, "smallest class")],
)
def test_impossible_validation_folds_are_refused(fold: int, folds: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validation_split(indexed_split(), fold, folds)
