"""Few-label classifiers on frozen embeddings (the paper's linear evaluation) and committees.

Slijepcevic et al. (2023) evaluate the representation with logistic regression on
standardised frozen features. Here the same model gives calibrated probabilities for the
active-learning loop, and a bootstrap committee gives per-member probabilities for
disagreement-based acquisition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ml.config import ClassifierConfig
from ml.errors import EmptyDataError, NonFiniteError, ShapeMismatchError, SingleClassError


def check_embeddings(embeddings: np.ndarray, n_features: int | None = None) -> np.ndarray:
    """Return ``embeddings`` as a 2-D float array after checking it is usable.

    Raises:
        EmptyDataError: No rows.
        ShapeMismatchError: Not 2-D, or not ``n_features`` wide.
        NonFiniteError: NaN or infinity anywhere.
    """
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2:
        raise ShapeMismatchError(f"embeddings must be 2-D (N, D), got shape {matrix.shape}")
    if len(matrix) == 0:
        raise EmptyDataError("no embeddings")
    if n_features is not None and matrix.shape[1] != n_features:
        raise ShapeMismatchError(f"embeddings have {matrix.shape[1]} features, model expects {n_features}")
    if not np.isfinite(matrix).all():
        raise NonFiniteError(f"{int((~np.isfinite(matrix)).any(axis=1).sum())} embedding rows hold NaN or inf")
    return matrix


def check_labels(labels: Sequence[int] | np.ndarray, n_items: int) -> np.ndarray:
    """Return ``labels`` as a 1-D array after checking it fits ``n_items`` and has 2+ classes.

    Raises:
        EmptyDataError: No labels.
        ShapeMismatchError: Not 1-D or a different count than the items.
        SingleClassError: Fewer than two distinct labels.
    """
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != n_items:
        raise ShapeMismatchError(f"{array.shape} labels for {n_items} items")
    if len(array) == 0:
        raise EmptyDataError("no labels")
    classes = np.unique(array)
    if len(classes) < 2:
        raise SingleClassError(f"need at least two classes, all labels are {classes[0]!r}")
    return array


@dataclass
class FewLabelClassifier:
    """A fitted classifier on embeddings.

    Attributes:
        estimator: The scikit-learn model (scaler + logistic regression, maybe calibrated).
        classes: Class labels, in the column order of ``predict_proba``.
        n_features: Embedding width it was fitted on.
        calibrated: Whether probabilities went through cross-validated sigmoid calibration.
    """

    estimator: ClassifierMixin
    classes: np.ndarray
    n_features: int
    calibrated: bool

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Class probabilities (N, n_classes), columns ordered as ``classes``."""
        matrix = check_embeddings(embeddings, self.n_features)
        return np.asarray(self.estimator.predict_proba(matrix))  # type: ignore[attr-defined]

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Most probable class of each row."""
        return self.classes[self.predict_proba(embeddings).argmax(axis=1)]


def _logistic(config: ClassifierConfig, seed: int, shape: tuple[int, int]) -> Pipeline:
    """Scaler, then (for embeddings wider than ``config.max_dim``) PCA of the labelled rows, then the model.

    With no more labels than ``config.max_dim`` the PCA keeps every direction the labels span,
    which is exactly the same model (an L2-penalised linear model's weights lie in the span
    of its training rows) solved in fewer dimensions; with more labels it keeps the
    ``max_dim`` leading ones.
    """
    steps: list = [StandardScaler()]
    n_rows, width = shape
    if config.max_dim is not None and width > config.max_dim:
        steps.append(PCA(n_components=min(config.max_dim, n_rows), svd_solver="full"))
    steps.append(
        LogisticRegression(C=config.C, max_iter=config.max_iter, class_weight=config.class_weight, random_state=seed)
    )
    return make_pipeline(*steps)


def fit_classifier(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    config: ClassifierConfig | None = None,
    *,
    seed: int = 0,
) -> FewLabelClassifier:
    """Fit standardised logistic regression on frozen embeddings (the paper's linear probe).

    Probabilities are sigmoid-calibrated with stratified cross-validation only when
    ``config.calibrate_min_per_class`` is set and every class has that many labels; by
    default they are the plain (class-balanced) logistic probabilities, because calibration
    folds of a few dozen labels can invert the model (docs/benchmarks.md).

    Raises:
        DataError: Empty, single-class, non-finite or mismatched inputs (see the checks).
    """
    config = config or ClassifierConfig()
    matrix = check_embeddings(embeddings)
    targets = check_labels(labels, len(matrix))
    classes, counts = np.unique(targets, return_counts=True)
    calibrated = config.calibrate_min_per_class is not None and counts.min() >= max(
        config.calibrate_min_per_class, config.calibration_folds
    )
    estimator: ClassifierMixin
    if calibrated:
        folds = StratifiedKFold(config.calibration_folds, shuffle=True, random_state=seed)
        # Each calibration fold fits on about (folds - 1) / folds of the rows.
        rows = len(matrix) * (config.calibration_folds - 1) // config.calibration_folds
        estimator = CalibratedClassifierCV(_logistic(config, seed, (rows, matrix.shape[1])), method="sigmoid", cv=folds)
    else:
        estimator = _logistic(config, seed, matrix.shape)
    estimator.fit(matrix, targets)
    return FewLabelClassifier(estimator, classes, matrix.shape[1], bool(calibrated))


@dataclass
class ClassifierEnsemble:
    """A bootstrap committee of logistic-regression classifiers."""

    members: list[FewLabelClassifier]
    classes: np.ndarray

    def member_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Each member's probabilities, shape (members, N, n_classes)."""
        return np.stack([member.predict_proba(embeddings) for member in self.members])

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """The committee's mean probabilities (N, n_classes)."""
        return self.member_proba(embeddings).mean(axis=0)


def fit_ensemble(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    config: ClassifierConfig | None = None,
    *,
    n_members: int = 5,
    seed: int = 0,
) -> ClassifierEnsemble:
    """Fit ``n_members`` classifiers on stratified bootstrap resamples of the labels.

    Each resample draws every class's labels with replacement from that class only, so
    every member sees every class and the probability columns of all members line up.
    Members are not calibrated: committee disagreement is what active learning uses.

    Raises:
        DataError: As ``fit_classifier``; ValueError for ``n_members < 1``.
    """
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    config = config or ClassifierConfig()
    matrix = check_embeddings(embeddings)
    targets = check_labels(labels, len(matrix))
    classes = np.unique(targets)
    by_class = [np.flatnonzero(targets == label) for label in classes]
    rng = np.random.default_rng(seed)
    members = []
    for member in range(n_members):
        sample = np.concatenate([rng.choice(rows, size=len(rows), replace=True) for rows in by_class])
        estimator = _logistic(config, seed + member, matrix.shape).fit(matrix[sample], targets[sample])
        members.append(FewLabelClassifier(estimator, classes, matrix.shape[1], calibrated=False))
    return ClassifierEnsemble(members, classes)
