"""Few-label probes on frozen features beyond the paper's one logistic regression.

Each builder returns a ``FitPredict`` (``ml.evaluation``): fitted on the labelled rows a
subset names, it predicts the scored rows. They are candidates for issue 12's frozen-feature
targets, chosen or rejected on validation folds with ``bench.paper_benchmark``:

* :func:`view_augmented_probe`: the eight rotations/flips of every labelled source are eight
  training rows (the probe sees the poses a source can take, instead of their mean), and a
  scored source gets the mean of its eight poses' probabilities.
* :func:`self_training_probe`: the unlabelled rows of the training part are pseudo-labelled
  by the probe where it is surest, in class proportions fixed by the labels, and the probe is
  refitted on labels plus pseudo-labels (a growing share over a few rounds): the unlabelled
  pool is always there in a campaign.

No torch: features come in as arrays (``ml.embed.embed_poses`` gives the poses).
"""

from __future__ import annotations

import numpy as np

from ml.classifier import check_embeddings, check_labels, fit_classifier
from ml.config import ClassifierConfig
from ml.errors import ShapeMismatchError
from ml.evaluation import LINEAR_PROBE, FitPredict


def _check_poses(poses: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(poses)
    if array.ndim != 3:
        raise ShapeMismatchError(f"{name} must be (poses, N, D), got shape {array.shape}")
    return array


def view_augmented_probe(
    train_poses: np.ndarray,
    train_labels: np.ndarray,
    test_poses: np.ndarray,
    config: ClassifierConfig = LINEAR_PROBE,
) -> FitPredict:
    """A logistic regression fitted on every pose of the labelled sources, averaged over poses.

    Args:
        train_poses: (P, N_train, D) features of each pose of every training source.
        train_labels: (N_train,) labels.
        test_poses: (P, N_test, D) features of the same poses of the scored sources.
        config: Classifier settings (default: the paper's probe, C = 1).

    Raises:
        ShapeMismatchError: Not 3-D, or the two sides differ in poses or width.
    """
    train, test = _check_poses(train_poses, "train_poses"), _check_poses(test_poses, "test_poses")
    if train.shape[0] != test.shape[0] or train.shape[2] != test.shape[2]:
        raise ShapeMismatchError(f"train poses {train.shape} and test poses {test.shape} differ in poses or width")
    targets = check_labels(train_labels, train.shape[1])
    n_poses, width = train.shape[0], train.shape[2]
    flat_test = test.reshape(-1, width)

    def fit_predict(indices: np.ndarray, seed: int) -> np.ndarray:
        rows = train[:, indices].reshape(-1, width)
        classifier = fit_classifier(rows, np.tile(targets[indices], n_poses), config, seed=seed)
        probabilities = classifier.predict_proba(flat_test).reshape(n_poses, test.shape[1], -1).mean(axis=0)
        return classifier.classes[probabilities.argmax(axis=1)]

    return fit_predict


def self_training_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    config: ClassifierConfig = LINEAR_PROBE,
    *,
    share: float = 0.5,
    rounds: int = 3,
) -> FitPredict:
    """A logistic regression refitted on its own most confident predictions for the unlabelled rows.

    The unlabelled rows are the training rows a subset does not name (their labels are never
    read). Round ``r`` of ``rounds`` predicts them with the latest probe and refits on the
    labels plus the ``r / rounds * share`` of them it is surest of, a curriculum that grows to
    ``share``. The pseudo-labels of each class are in proportion to the labelled
    subset's class frequencies (a class gets its quota from the rows predicted as it, most
    probable first), so a probe leaning to one class cannot pseudo-label the other away. The
    scored rows are never pseudo-labelled.

    Args:
        train_features: (N_train, D) features of the whole training part.
        train_labels: (N_train,) labels; only those of a subset's rows are used.
        test_features: (N_test, D) features of the scored rows.
        config: Classifier settings of every fit.
        share: Fraction of the unlabelled rows pseudo-labelled in the last round, in (0, 1].
        rounds: Refits after the first fit (0: the plain probe).

    Raises:
        ValueError: ``share`` outside (0, 1] or negative ``rounds``.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share {share} must lie in (0, 1]")
    if rounds < 0:
        raise ValueError(f"rounds {rounds} must be 0 or more")
    features = check_embeddings(train_features)
    targets = check_labels(train_labels, len(features))
    scored = check_embeddings(test_features, features.shape[1])

    def fit_predict(indices: np.ndarray, seed: int) -> np.ndarray:
        unlabelled = np.setdiff1d(np.arange(len(features)), indices)
        classifier = fit_classifier(features[indices], targets[indices], config, seed=seed)
        classes, counts = np.unique(targets[indices], return_counts=True)
        frequencies = counts / counts.sum()
        for round_ in range(1, rounds + 1):
            if not len(unlabelled):
                break
            probabilities = classifier.predict_proba(features[unlabelled])  # columns ordered as ``classes``
            predicted = probabilities.argmax(axis=1)
            size = round_ / rounds * share * len(unlabelled)
            chosen, pseudo = [], []
            for column, frequency in enumerate(frequencies):
                members = np.flatnonzero(predicted == column)
                surest = members[np.argsort(-probabilities[members, column], kind="stable")][: int(size * frequency)]
                chosen.append(unlabelled[surest])
                pseudo.append(np.full(len(surest), classes[column]))
            rows = np.concatenate([indices, *chosen])
            classifier = fit_classifier(features[rows], np.concatenate([targets[indices], *pseudo]), config, seed=seed)
        return classifier.predict(scored)

    return fit_predict
