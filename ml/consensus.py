"""Aggregating volunteers' votes: majority vote and Dawid-Skene with per-volunteer confusion.

Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the EM
algorithm": each volunteer v has a confusion matrix pi_v[true, answer]; EM alternates the
posterior over each subject's true class and the maximum-likelihood confusion matrices.
The incremental form (:func:`posterior`) scores one subject's votes against the current
matrices, which is what a vote does on the hot path; the full EM runs in the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Dirichlet pseudo-counts added to every confusion row: a volunteer with three votes is
#: not declared perfect (or useless), and rows never hold zeros (log of 0).
SMOOTHING = 1.0
#: Prior weight on the diagonal of a new volunteer's confusion matrix (assumed better than chance).
DIAGONAL_PRIOR = 2.0


@dataclass(frozen=True)
class Votes:
    """Votes as parallel integer arrays: which subject, which volunteer, which class."""

    subjects: np.ndarray
    volunteers: np.ndarray
    labels: np.ndarray
    n_subjects: int
    n_volunteers: int
    n_classes: int

    def __post_init__(self) -> None:
        lengths = {len(self.subjects), len(self.volunteers), len(self.labels)}
        if len(lengths) != 1:
            raise ValueError(f"subjects, volunteers and labels differ in length: {sorted(lengths)}")
        for name, values, bound in (
            ("subjects", self.subjects, self.n_subjects),
            ("volunteers", self.volunteers, self.n_volunteers),
            ("labels", self.labels, self.n_classes),
        ):
            if len(values) and (values.min() < 0 or values.max() >= bound):
                raise ValueError(f"{name} must lie in [0, {bound}), got {values.min()}..{values.max()}")


def majority(labels: list[str]) -> tuple[str, float]:
    """The most common label and its share; ties go to the label voted first."""
    if not labels:
        raise ValueError("no votes to aggregate")
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    best = max(counts, key=lambda label: (counts[label], -labels.index(label)))
    return best, counts[best] / len(labels)


def prior_confusion(n_classes: int) -> np.ndarray:
    """The confusion matrix assumed for a volunteer with no history."""
    matrix = np.full((n_classes, n_classes), SMOOTHING) + DIAGONAL_PRIOR * np.eye(n_classes)
    return matrix / matrix.sum(axis=1, keepdims=True)


def posterior(answers: list[int], confusions: list[np.ndarray], class_prior: np.ndarray) -> np.ndarray:
    """P(true class | one subject's votes), given each voter's confusion matrix."""
    log_post = np.log(class_prior).copy()
    for answer, confusion in zip(answers, confusions, strict=True):
        log_post += np.log(confusion[:, answer])
    log_post -= log_post.max()
    post = np.exp(log_post)
    return post / post.sum()


def dawid_skene(
    votes: Votes, *, iterations: int = 50, tolerance: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit Dawid-Skene by EM, starting from the majority vote.

    Returns:
        (posteriors (n_subjects, C), confusions (n_volunteers, C, C), class prior (C,)).
        Subjects without votes get the class prior as posterior.
    """
    n, v, c = votes.n_subjects, votes.n_volunteers, votes.n_classes
    # Start: soft majority vote.
    counts = np.zeros((n, c))
    np.add.at(counts, (votes.subjects, votes.labels), 1.0)
    post = (counts + 1e-3) / (counts + 1e-3).sum(axis=1, keepdims=True)
    previous = None
    for _ in range(iterations):
        # M step: class prior and confusion matrices from the soft labels.
        class_prior = (post.sum(axis=0) + SMOOTHING) / (n + c * SMOOTHING)
        confusions = np.full((v, c, c), SMOOTHING) + DIAGONAL_PRIOR * np.eye(c)
        # confusions[v, true, answer] += P(true | subject); through a (v, answer, true) view.
        np.add.at(confusions.transpose(0, 2, 1), (votes.volunteers, votes.labels), post[votes.subjects])
        confusions /= confusions.sum(axis=2, keepdims=True)
        # E step: posteriors from all votes at once, in log space.
        log_post = np.tile(np.log(class_prior), (n, 1))
        np.add.at(log_post, votes.subjects, np.log(confusions[votes.volunteers, :, votes.labels]))
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        post /= post.sum(axis=1, keepdims=True)
        if previous is not None and np.abs(post - previous).max() < tolerance:
            break
        previous = post
    return post, confusions, class_prior
