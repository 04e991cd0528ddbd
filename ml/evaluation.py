"""The paper's few-label evaluation protocol on MiraBest Confident, as pure functions.

Slijepcevic et al. (2023) report test error on the 104 MiraBest Confident test sources
after training on stratified subsets of the 729 training sources (36, 73, 145, 291 and 729
labels, i.e. 5-100 %), mean and spread over seeds 0-9. This module draws those subsets,
runs any ``fit_predict`` over every (budget, seed) and summarises the errors; the linear
probe (standardised logistic regression on frozen features, ``ml.classifier``) is one such
``fit_predict``. The command that runs every method and writes tables and plots is
``bench/paper_benchmark.py``.

Subsets are drawn so that, for one seed, every method sees the same labels, and a smaller
budget's labels are a subset of a larger budget's (see :func:`stratified_subset`).

Choices (architecture, presets, probe settings) must not be made on the test sources:
:func:`validation_split` turns one stratified fold of the training set into a stand-in test
set, with the other folds as its training set, so the same protocol can run without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ml.classifier import check_labels, fit_classifier
from ml.config import ClassifierConfig
from ml.datasets import mirabest_confident, read_mirabest

#: Label budgets of the paper (5, 10, 20, 40 and 100 % of the 729 training sources).
PAPER_BUDGETS = (36, 73, 145, 291, 729)
#: Seeds of the paper's few-label runs.
PAPER_SEEDS = tuple(range(10))
#: Class names in label order (0 = FRI, 1 = FRII).
CLASS_NAMES = ("FRI", "FRII")
#: The paper's linear probe: C = 1 and no probability calibration (only argmax matters for
#: the error, and calibration would refit on cross-validation folds of a few labels).
LINEAR_PROBE = ClassifierConfig(C=1.0, calibrate_min_per_class=None, class_weight=None)


@dataclass(frozen=True)
class BenchmarkSplit:
    """The fixed train / test split of a labelled benchmark.

    Attributes:
        train_images: uint8 (N_train, 150, 150).
        train_labels: int64 (N_train,), indices into ``class_names``.
        test_images: uint8 (N_test, 150, 150).
        test_labels: int64 (N_test,).
        class_names: Class names in label order (default: MiraBest Confident's FRI, FRII).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def n_classes(self) -> int:
        """Number of classes (labels are indices into ``class_names``)."""
        return len(self.class_names)


def load_mirabest_confident_split(path: str | Path) -> BenchmarkSplit:
    """MiraBest Confident with the official split: 729 train, 104 test (FRI = 0, FRII = 1).

    Args:
        path: ``MiraBest_F_batches.tar.gz``.

    Raises:
        DatasetError: The archive cannot be read (:func:`ml.datasets.read_mirabest`).
    """
    records = mirabest_confident(read_mirabest(path))

    def part(split: str) -> tuple[np.ndarray, np.ndarray]:
        chosen = [record for record in records if record.split == split]
        images = np.stack([record.image for record in chosen])
        labels = np.array([CLASS_NAMES.index(str(record.label)) for record in chosen], dtype=np.int64)
        return images, labels

    train_images, train_labels = part("train")
    test_images, test_labels = part("test")
    return BenchmarkSplit(train_images, train_labels, test_images, test_labels)


def validation_split(split: BenchmarkSplit, fold: int, folds: int = 5, seed: int = 0) -> BenchmarkSplit:
    """One fold of a stratified K-fold of ``split``'s training set, as a split of its own.

    The training sources are divided into ``folds`` class-stratified folds (scikit-learn's
    ``StratifiedKFold``, shuffled with ``seed``); fold ``fold`` becomes the test part and the
    other folds the training part, both in the training set's order. The test part of
    ``split`` is not used: choices made on these folds never see the test sources. Over
    ``fold = 0 .. folds - 1`` every training source is scored exactly once.

    Args:
        split: The benchmark; only its training part is read.
        fold: Which fold to hold out, in ``0 .. folds - 1``.
        folds: Number of folds, at least 2 and at most the size of the smallest class.
        seed: Seed of the shuffle that assigns sources to folds (the same seed, the same folds).

    Returns:
        A split with the other folds as ``train_*``, fold ``fold`` as ``test_*`` and
        ``split.class_names``.

    Raises:
        ValueError: ``folds`` below 2 or above the smallest class's size, or ``fold`` out of range.
    """
    labels = np.asarray(split.train_labels)
    train, held_out = validation_indices(labels, fold, folds, seed)
    return BenchmarkSplit(
        train_images=split.train_images[train],
        train_labels=labels[train],
        test_images=split.train_images[held_out],
        test_labels=labels[held_out],
        class_names=split.class_names,
    )


def validation_indices(
    labels: Sequence[int] | np.ndarray, fold: int, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of :func:`validation_split`'s training part and held-out fold, in ascending order.

    Raises:
        ValueError: As :func:`validation_split`.
    """
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"{folds} folds: a validation split needs at least 2")
    smallest = int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0
    if folds > smallest:
        raise ValueError(f"{folds} folds: the smallest class of the training set has only {smallest} sources")
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} must lie in 0..{folds - 1}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, held_out = list(splitter.split(np.zeros(len(labels)), labels))[fold]
    return train, held_out


def class_counts(labels: np.ndarray, budget: int) -> dict[int, int]:
    """How many labels of each class a stratified subset of ``budget`` holds.

    Largest-remainder apportionment of ``budget`` to the class frequencies, with at least
    one label per class (a classifier needs both classes). With two classes the count of
    each class never falls as the budget grows, which is what makes subsets nested.

    Raises:
        ValueError: ``budget`` is below the number of classes or above ``len(labels)``.
    """
    classes, available = np.unique(labels, return_counts=True)
    if not len(classes) <= budget <= len(labels):
        raise ValueError(f"budget {budget} must lie in {len(classes)}..{len(labels)}")
    quotas = budget * available / available.sum()
    counts = np.maximum(np.floor(quotas).astype(np.int64), 1)
    # Hand out what flooring left over by largest remainder; ties go to the smaller class
    # index so the allocation is deterministic. np.maximum can overshoot only by lifting an
    # empty class to one, so the loop below also takes labels back from the largest class.
    order = sorted(range(len(classes)), key=lambda i: (-(quotas[i] - np.floor(quotas[i])), i))
    position = 0
    while counts.sum() < budget:
        index = order[position % len(order)]
        if counts[index] < available[index]:
            counts[index] += 1
        position += 1
    while counts.sum() > budget:
        counts[int(np.argmax(counts))] -= 1
    return {int(label): int(count) for label, count in zip(classes, counts, strict=True)}


def stratified_subset(labels: Sequence[int] | np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subset of ``budget`` labels.

    Deterministic for a seed, independent of the method that will use it. Each class's
    members are shuffled once per seed and the subset takes the first ``class_counts``
    of each, so for one seed the subsets of growing budgets are nested (36 labels are
    part of the 73, which are part of the 145, ...) whenever per-class counts grow with
    the budget (always with two classes). Nesting makes a learning curve measure the
    effect of more labels rather than of a fresh draw.

    Args:
        labels: Class of every training item.
        budget: Subset size; ``len(labels)`` gives every item (the same for all seeds).
        seed: Seed of the draw.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        ValueError: ``budget`` outside ``n_classes..len(labels)``.
    """
    targets = np.asarray(labels)
    counts = class_counts(targets, budget)
    orders = _class_orders(targets, seed)
    chosen = [orders[label][:count] for label, count in counts.items()]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def per_class_subset(labels: Sequence[int] | np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced random subset: ``per_class`` labels of every class.

    The members of each class are shuffled as in :func:`stratified_subset` (the same order
    for the same seed), so subsets of one seed are nested as ``per_class`` grows.

    Args:
        labels: Class of every training item.
        per_class: Labels drawn from each class.
        seed: Seed of the draw.

    Returns:
        Sorted int64 indices into ``labels`` (``per_class`` times the number of classes).

    Raises:
        ValueError: ``per_class`` below 1 or above the size of the smallest class.
    """
    targets = np.asarray(labels)
    orders = _class_orders(targets, seed)
    smallest = min((len(members) for members in orders.values()), default=0)
    if not 1 <= per_class <= smallest:
        raise ValueError(f"{per_class} labels per class must lie in 1..{smallest} (the smallest class)")
    return np.sort(np.concatenate([members[:per_class] for members in orders.values()])).astype(np.int64)


def _class_orders(targets: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """The members of each class (ascending class order) in a random order fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    return {int(label): rng.permutation(np.flatnonzero(targets == label)) for label in np.unique(targets)}


@dataclass(frozen=True)
class SubsetResult:
    """One method trained on one labelled subset and scored on the test set.

    Attributes:
        method: Method name, e.g. ``"linear"``.
        budget: Number of training labels.
        seed: Seed of the subset draw (and of the method's own randomness).
        error: Test error, a fraction in 0..1.
        seconds: Wall-clock time of fitting and predicting.
    """

    method: str
    budget: int
    seed: int
    error: float
    seconds: float


#: Fit on the given training indices and return predicted test labels; the int is the seed.
FitPredict = Callable[[np.ndarray, int], np.ndarray]
#: Draw the training indices of a budget: ``(labels, budget, seed) -> indices``.
SubsetDraw = Callable[[np.ndarray, int, int], np.ndarray]


def error_rate(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of wrong predictions."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape} predictions for {labels.shape} labels")
    return float(np.mean(predictions != labels))


def evaluate_subsets(
    method: str,
    fit_predict: FitPredict,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    budgets: Iterable[int],
    seeds: Iterable[int],
    *,
    on_result: Callable[[SubsetResult], None] | None = None,
    draw: SubsetDraw = stratified_subset,
) -> list[SubsetResult]:
    """Run ``fit_predict`` on the stratified subset of every (budget, seed) and score it.

    Args:
        method: Name recorded in the results.
        fit_predict: ``(train indices, seed) -> predicted test labels``.
        train_labels: Labels of the whole training set (the subsets index into it).
        test_labels: True test labels.
        budgets: Label budgets.
        seeds: Seeds; the subset for (budget, seed) is ``draw(train_labels, budget, seed)``.
        on_result: Called after each result (progress bars, saving as results arrive).
        draw: How a budget's subset is drawn: :func:`stratified_subset` (a total budget,
            by default) or :func:`per_class_subset` (a budget per class).

    Returns:
        One result per (budget, seed), budgets outermost.
    """
    results = []
    seed_list = list(seeds)
    for budget in budgets:
        for seed in seed_list:
            indices = draw(train_labels, budget, seed)
            started = time.perf_counter()
            predictions = fit_predict(indices, seed)
            result = SubsetResult(
                method=method,
                budget=budget,
                seed=seed,
                error=error_rate(predictions, test_labels),
                seconds=time.perf_counter() - started,
            )
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    config: ClassifierConfig = LINEAR_PROBE,
) -> FitPredict:
    """The paper's linear evaluation as a ``FitPredict``: logistic regression on frozen features.

    Args:
        train_features: (N_train, D) features of the whole training set.
        train_labels: (N_train,) labels.
        test_features: (N_test, D) features of the test set.
        config: Classifier settings (default: C = 1, uncalibrated).
    """
    targets = check_labels(train_labels, len(train_features))

    def fit_predict(indices: np.ndarray, seed: int) -> np.ndarray:
        classifier = fit_classifier(train_features[indices], targets[indices], config, seed=seed)
        return classifier.predict(test_features)

    return fit_predict


@dataclass(frozen=True)
class ErrorSummary:
    """Test error of one method at one budget over seeds.

    Attributes:
        mean: Mean error (fraction).
        std: Sample standard deviation over seeds (ddof = 1; 0 for a single seed).
        n_seeds: Number of seeds.
    """

    mean: float
    std: float
    n_seeds: int


def summarise(results: Iterable[SubsetResult]) -> dict[tuple[str, int], ErrorSummary]:
    """Mean and spread of the error per (method, budget)."""
    errors: dict[tuple[str, int], list[float]] = {}
    for result in results:
        errors.setdefault((result.method, result.budget), []).append(result.error)
    return {
        key: ErrorSummary(
            mean=float(np.mean(values)),
            std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            n_seeds=len(values),
        )
        for key, values in errors.items()
    }


def markdown_table(
    summary: dict[tuple[str, int], ErrorSummary],
    methods: Sequence[str],
    budgets: Sequence[int],
    *,
    labels: dict[str, str] | None = None,
    column: str = "{} labels",
) -> str:
    """A markdown table: one row per method, one column per budget, ``mean ± std (n)`` in %.

    Args:
        summary: Output of :func:`summarise`.
        methods: Row order.
        budgets: Column order.
        labels: Display names of methods (default: the method names).
        column: Heading of a budget's column, ``{}`` standing for the budget.
    """
    labels = labels or {}
    lines = [
        "| method | " + " | ".join(column.format(budget) for budget in budgets) + " |",
        "| --- | " + " | ".join("---" for _ in budgets) + " |",
    ]
    for method in methods:
        cells = []
        for budget in budgets:
            cell = summary.get((method, budget))
            cells.append("" if cell is None else f"{100 * cell.mean:.1f} ± {100 * cell.std:.1f} (n={cell.n_seeds})")
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
