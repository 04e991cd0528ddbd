"""The paper's linear probe, solved fast: for simulations that fit it thousands of times.

:func:`fit_probe` minimises exactly the objective of :func:`ml.classifier.fit_classifier`
without calibration -- standardised features, logistic regression with an L2 penalty
``||w||^2 / 2`` against ``C x`` the summed log-loss, intercept unpenalised (scikit-learn's
``LogisticRegression(C=C)``) -- by Newton's method, so it reaches the same optimum (to
scikit-learn's tolerance) in a few milliseconds instead of tens. With more features than
labels the weights lie in the span of the labelled rows (the penalty's optimum has no
component outside it), so Newton runs in that span, never in a 512 x 512 Hessian.

Two classes take the Newton path; more classes fall back to :func:`ml.classifier.fit_classifier`
(multinomial, uncalibrated), which gives the same kind of object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

from ml.classifier import FewLabelClassifier, check_embeddings, check_labels, fit_classifier
from ml.config import ClassifierConfig


@dataclass(frozen=True)
class LinearProbe:
    """A fitted binary probe: standardisation, then a logistic model.

    Attributes:
        classes: The two class labels, in the column order of ``predict_proba``.
        mean: (D,) feature means of the training rows.
        scale: (D,) their standard deviations (1 where a feature is constant).
        weights: (D,) weights on the standardised features.
        intercept: The bias.
    """

    classes: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float

    def decision(self, embeddings: np.ndarray) -> np.ndarray:
        """Logit of the second class."""
        matrix = check_embeddings(embeddings, len(self.mean))
        return np.asarray(((matrix - self.mean) / self.scale) @ self.weights + self.intercept)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, 2) class probabilities, columns ordered as ``classes``."""
        second = expit(self.decision(embeddings))
        return np.column_stack([1 - second, second])

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Most probable class of each row."""
        return self.classes[(self.decision(embeddings) > 0).astype(int)]


def _objective(design: np.ndarray, theta: np.ndarray, target: np.ndarray, c: float) -> float:
    logits = design @ theta
    loss = -(target * log_expit(logits) + (1 - target) * log_expit(-logits)).sum()
    return float(c * loss + 0.5 * theta[:-1] @ theta[:-1])


def _newton(design: np.ndarray, target: np.ndarray, c: float, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Minimise the penalised log-loss over theta = (weights, bias); the bias is unpenalised."""
    theta = np.zeros(design.shape[1])
    penalty = np.ones(design.shape[1])
    penalty[-1] = 1e-12  # keeps the Hessian invertible when one class is separable
    current = _objective(design, theta, target, c)
    for _ in range(max_iter):
        p = expit(design @ theta)
        gradient = c * design.T @ (p - target) + penalty * theta
        hessian = c * (design.T * (p * (1 - p))) @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while True:  # backtracking: Newton's full step can overshoot on separable data
            candidate = theta - size * step
            value = _objective(design, candidate, target, c)
            if value <= current + 1e-12 or size < 1e-6:
                break
            size /= 2
        theta, improvement, current = candidate, current - value, value
        if np.abs(size * step).max() < 1e-8 or improvement < tol * max(1.0, abs(current)):
            break
    return theta


def fit_probe(
    embeddings: np.ndarray, labels: Sequence[int] | np.ndarray, config: ClassifierConfig | None = None, *, seed: int = 0
) -> LinearProbe | FewLabelClassifier:
    """Fit the uncalibrated linear probe; a :class:`LinearProbe` for two classes.

    Args:
        embeddings: (N, D) features.
        labels: (N,) labels with at least two classes.
        config: Only ``C`` is used (the probe is never calibrated).
        seed: Passed to the scikit-learn fallback for three or more classes.

    Returns:
        An object with ``classes``, ``predict_proba`` and ``predict``.

    Raises:
        DataError: Empty, single-class, non-finite or mismatched inputs.
    """
    config = config or ClassifierConfig()
    matrix = np.asarray(check_embeddings(embeddings), dtype=np.float64)
    targets = check_labels(labels, len(matrix))
    classes, codes = np.unique(targets, return_inverse=True)
    if len(classes) > 2:
        multiclass = ClassifierConfig(C=config.C, calibrate_min_per_class=10**9, max_dim=config.max_dim)
        return fit_classifier(matrix, targets, multiclass, seed=seed)
    mean = matrix.mean(axis=0)
    scale = matrix.std(axis=0)
    scale[scale == 0] = 1.0
    standard = (matrix - mean) / scale
    basis = None
    projected = config.max_dim is not None and standard.shape[1] > config.max_dim
    if standard.shape[1] >= standard.shape[0] or projected:
        # Weights lie in the row space: Newton over its coordinates (at most N of them). With
        # ``max_dim`` only the leading directions are kept, as fit_classifier's PCA keeps them.
        _, singular, right = np.linalg.svd(standard, full_matrices=False)
        keep = singular > singular.max() * 1e-10
        if projected:
            keep[config.max_dim :] = False
        basis = right[keep].T  # (D, r), orthonormal columns
        reduced = standard @ basis
    else:
        reduced = standard
    design = np.column_stack([reduced, np.ones(len(reduced))])
    theta = _newton(design, codes.astype(np.float64), float(config.C))
    weights = theta[:-1] if basis is None else basis @ theta[:-1]
    return LinearProbe(classes, mean, scale, weights, float(theta[-1]))
