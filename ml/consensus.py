"""Aggregating volunteers' votes: majority vote and Dawid-Skene with per-volunteer confusion.

Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the EM
algorithm": each volunteer v has a confusion matrix pi_v[true, answer]; EM alternates the
posterior over each subject's true class and the maximum-likelihood confusion matrices.
The incremental form (:func:`posterior`) scores one subject's votes against the current
matrices, which is what a vote does on the hot path; the full EM runs in the background.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

LabelT = TypeVar("LabelT", bound=Hashable)

#: Dirichlet pseudo-counts added to the class prior, so no class has probability 0.
SMOOTHING = 1.0
#: Pseudo-votes of chance-level answering in every row of every volunteer's confusion matrix.
#: A volunteer's matrix leaves chance only as far as their own votes and gold answers outweigh
#: these, so a new, unproven volunteer's vote barely moves a posterior and a burst of fresh
#: accounts cannot outvote volunteers with a record (rows never hold zeros: no log of 0).
CHANCE_PSEUDO_VOTES = 8.0
#: Extra pseudo-votes on the diagonal: a volunteer with no record is assumed a little better than chance.
DIAGONAL_PRIOR = 1.0


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


def majority(labels: Sequence[LabelT]) -> tuple[LabelT, float]:
    """The most common label and its share; ties go to the label voted first."""
    if not labels:
        raise ValueError("no votes to aggregate")
    counts: dict[LabelT, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    best = max(counts, key=lambda label: (counts[label], -labels.index(label)))
    return best, counts[best] / len(labels)


def prior_counts(n_classes: int) -> np.ndarray:
    """Pseudo-counts of every confusion row before a volunteer's own answers: near chance."""
    return np.full((n_classes, n_classes), CHANCE_PSEUDO_VOTES / n_classes) + DIAGONAL_PRIOR * np.eye(n_classes)


def prior_confusion(n_classes: int) -> np.ndarray:
    """The confusion matrix assumed for a volunteer with no history: slightly better than chance."""
    matrix = prior_counts(n_classes)
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
    votes: Votes,
    *,
    known: np.ndarray | None = None,
    class_prior: np.ndarray | None = None,
    prior_strength: float = 1.0,
    iterations: int = 50,
    tolerance: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit Dawid-Skene by EM, starting from the majority vote.

    Args:
        votes: The votes.
        known: Optional (n_subjects,) true class of each subject whose answer is known (an
            expert's gold label), -1 elsewhere. Those posteriors are held at the known class,
            so answers to gold subjects measure each volunteer directly.
        class_prior: Optional (C,) class prior held fixed (e.g. uniform); by default it is
            estimated from the posteriors in every M step.
        prior_strength: The weight of the class prior in every E step (:func:`temper_prior`):
            1 is the classic model; below 1 the prior's pull on a subject with few votes is
            weakened while fitting, so the fit does not teach volunteers' matrices that their
            votes for a rare class mean a common one.
        iterations: At most this many EM rounds.
        tolerance: Stop when no posterior moves by more than this.

    Returns:
        (posteriors (n_subjects, C), confusions (n_volunteers, C, C), class prior (C,)).
        Subjects without votes get the class prior as posterior.
    """
    n, v, c = votes.n_subjects, votes.n_volunteers, votes.n_classes
    if known is not None and (known.shape != (n,) or known.min(initial=-1) < -1 or known.max(initial=-1) >= c):
        raise ValueError(f"known must be ({n},) class indices in [0, {c}) or -1")
    # Start: soft majority vote.
    counts = np.zeros((n, c))
    np.add.at(counts, (votes.subjects, votes.labels), 1.0)
    post = (counts + 1e-3) / (counts + 1e-3).sum(axis=1, keepdims=True)
    clamped = np.flatnonzero(known >= 0) if known is not None else np.array([], dtype=np.int64)
    truth = np.eye(c)[known[clamped]] if known is not None else np.zeros((0, c))
    post[clamped] = truth
    fixed_prior: np.ndarray | None = None
    if class_prior is not None:
        fixed_prior = np.asarray(class_prior, dtype=float)
        if fixed_prior.shape != (c,) or np.any(fixed_prior <= 0):
            raise ValueError(f"class_prior must be ({c},) positive probabilities")
        fixed_prior = fixed_prior / fixed_prior.sum()
    if not 0.0 <= prior_strength <= 1.0:
        raise ValueError(f"prior_strength must lie in [0, 1], got {prior_strength}")
    prior = np.full(c, 1.0 / c) if fixed_prior is None else fixed_prior
    # Gold subjects are picked per class, not at the pool's rates: they do not inform the class prior.
    free = np.ones(n, dtype=bool)
    free[clamped] = False
    previous = None
    for _ in range(iterations):
        # M step: class prior and confusion matrices from the soft labels.
        if fixed_prior is None:
            prior = (post[free].sum(axis=0) + SMOOTHING) / (free.sum() + c * SMOOTHING)
        confusions = np.broadcast_to(prior_counts(c), (v, c, c)).copy()
        # confusions[v, true, answer] += P(true | subject); through a (v, answer, true) view.
        np.add.at(confusions.transpose(0, 2, 1), (votes.volunteers, votes.labels), post[votes.subjects])
        confusions /= confusions.sum(axis=2, keepdims=True)
        # E step: posteriors from all votes at once, in log space.
        log_post = np.tile(prior_strength * np.log(prior), (n, 1))
        np.add.at(log_post, votes.subjects, np.log(confusions[votes.volunteers, :, votes.labels]))
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        post /= post.sum(axis=1, keepdims=True)
        post[clamped] = truth
        if previous is not None and np.abs(post - previous).max() < tolerance:
            break
        previous = post
    return post, confusions, prior


def temper_prior(post: np.ndarray, class_prior: np.ndarray, strength: float) -> np.ndarray:
    """Posteriors (n, C) or (C,) with the class prior's weight set to ``strength``, renormalised.

    Dawid-Skene's posterior multiplies the volunteers' evidence by the fitted class prior. At
    ``strength`` 1 that is kept: the most probable class, which maximises expected accuracy
    when the model is right, and which, with a few votes per subject from volunteers the fit
    knows little about, pulls rare classes into common ones (MiraBest's hybrids all but vanish:
    docs/benchmarks.md, "Consensus rules"). At 0 the prior is divided out: the class the votes
    themselves favour, every class equally likely beforehand. In between the posterior is
    ``P(c | votes) * prior(c) ** (strength - 1)``.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"the class prior's strength must lie in [0, 1], got {strength}")
    prior = np.asarray(class_prior, dtype=float)
    log_post = np.log(np.clip(np.asarray(post, dtype=float), 1e-300, None)) + (strength - 1.0) * np.log(prior)
    log_post -= log_post.max(axis=-1, keepdims=True)
    tempered = np.exp(log_post)
    return tempered / tempered.sum(axis=-1, keepdims=True)


def assisted_posterior(
    volunteer_posterior: np.ndarray | None, classifier_proba: np.ndarray, class_prior: np.ndarray | None = None
) -> np.ndarray:
    """P(true class | votes, image): the volunteers' posterior and the classifier's as independent evidence.

    Both already contain the class prior, so it is divided out once:
    ``P(c | votes, image) ∝ P(c | votes) P(c | image) / P(c)``. With no votes
    (``volunteer_posterior`` None) this is the classifier's probability alone.
    """
    proba = np.asarray(classifier_proba, dtype=float)
    if volunteer_posterior is None:
        return proba / proba.sum()
    volunteers = np.asarray(volunteer_posterior, dtype=float)
    if volunteers.shape != proba.shape:
        raise ValueError(f"volunteer posterior {volunteers.shape} and classifier probabilities {proba.shape} differ")
    prior = np.full(len(proba), 1.0 / len(proba)) if class_prior is None else np.asarray(class_prior, dtype=float)
    combined = volunteers * np.clip(proba, 1e-12, None) / prior
    return combined / combined.sum()


def assisted_decision(
    volunteer_posterior: np.ndarray | None,
    classifier_proba: np.ndarray,
    threshold: float,
    class_prior: np.ndarray | None = None,
) -> tuple[int, float]:
    """The class to retire a subject with, or -1, and the combined probability of the best class.

    A subject retires only when the volunteers' most probable class, the classifier's and
    the combined one are the same class and its combined probability reaches ``threshold``:
    the classifier can speed up a consensus, never overturn one. With no votes
    (``volunteer_posterior`` None) the classifier decides alone, which the caller allows
    only where the workflow says so.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    combined = assisted_posterior(volunteer_posterior, classifier_proba, class_prior)
    best = int(np.argmax(combined))
    agree = int(np.argmax(classifier_proba)) == best and (
        volunteer_posterior is None or int(np.argmax(volunteer_posterior)) == best
    )
    return (best if agree and combined[best] >= threshold else -1), float(combined[best])
