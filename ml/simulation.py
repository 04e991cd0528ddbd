"""Simulated active-learning campaigns: how many labels a policy needs for a given accuracy.

An oracle (the known label) or a crowd of simulated volunteers answers every source a policy
queries; after each batch the few-label classifier of :mod:`ml.classifier` is refitted on
the labels so far and scored on a held-out test set. The protocol follows the paper's
few-label evaluation (MiraBest Confident, 729 pool / 104 test, 10 seeds) with the labels
chosen by the policy instead of at random.

Everything here is a pure function of arrays and a seed; the command that runs it over
MiraBest and writes the tables is ``bench/al_simulation.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ml.classifier import check_embeddings, fit_classifier, fit_ensemble
from ml.config import ClassifierConfig
from ml.consensus import majority
from ml.errors import DataError, ShapeMismatchError
from ml.evaluation import load_mirabest_confident_split
from ml.policies import COLD_START_POLICY, POLICIES, PolicyConfigError, policy_inputs, rank

#: Label counts the paper reports (5, 10, 20 and 40 % of the 729 MiraBest Confident pool).
PAPER_CHECKPOINTS = (36, 73, 145, 291)


# --- data and features --------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledImages:
    """Images with known labels and a pool / test split.

    Attributes:
        images: uint8 cutouts (N, 150, 150).
        labels: int (N,), 0 = FRI, 1 = FRII.
        is_test: bool (N,), True for the held-out test sources.
    """

    images: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray


def load_mirabest_confident(path: str | Path) -> LabelledImages:
    """MiraBest Confident (729 train / 104 test) from the official batches archive.

    Args:
        path: ``MiraBest_F_batches.tar.gz``.

    Raises:
        DatasetError: The archive cannot be read (from :func:`ml.datasets.read_mirabest`).
    """
    split = load_mirabest_confident_split(path)  # the benchmark's own loader: one reading of the protocol
    return LabelledImages(
        images=np.concatenate([split.train_images, split.test_images]),
        labels=np.concatenate([split.train_labels, split.test_labels]),
        is_test=np.repeat([False, True], [len(split.train_labels), len(split.test_labels)]),
    )


def image_features(
    images: np.ndarray,
    features: Literal["pca", "encoder"],
    *,
    checkpoint: str | Path | None = None,
    pca_dim: int = 64,
    seed: int = 0,
    device: str | None = None,
    fit_rows: np.ndarray | None = None,
    views: Literal["centre", "dihedral"] = "centre",
) -> np.ndarray:
    """Embed images with raw-pixel PCA or a stored encoder.

    Args:
        images: uint8 cutouts (N, 150, 150).
        features: ``"pca"`` (:func:`ml.baseline.pixel_pca_embeddings`) or ``"encoder"``
            (:func:`ml.embed.embed` with the encoder of ``checkpoint``).
        checkpoint: Encoder checkpoint, required for ``"encoder"``.
        pca_dim: PCA components.
        seed: Seed of the randomised PCA.
        device: Torch device for the encoder (CUDA when available by default).
        fit_rows: Images the PCA is fitted on (e.g. the pool only, so that test images stay
            unseen); all by default. The encoder was trained elsewhere and ignores it.
        views: The encoder's test views (``ml.augment.TestViews``); PCA ignores it.

    Returns:
        float32 (N, D).

    Raises:
        ValueError: Unknown feature kind, or ``"encoder"`` without a checkpoint.
        CheckpointError: The checkpoint cannot be loaded.
    """
    if features == "pca":
        from ml.baseline import pixel_pca_embeddings

        return pixel_pca_embeddings(images, dim=pca_dim, seed=seed, fit_rows=fit_rows)
    if features == "encoder":
        if checkpoint is None:
            raise ValueError("features='encoder' needs a checkpoint path")
        # Imported here: torch costs seconds to import and the PCA path does not need it.
        from ml.checkpoint import load_encoder
        from ml.embed import embed

        return embed(load_encoder(checkpoint), images, device=device, views=views)
    raise ValueError(f"unknown features {features!r}; choose 'pca' or 'encoder'")


# --- simulated volunteers -----------------------------------------------------------------------


@dataclass(frozen=True)
class VolunteerNoise:
    """A crowd of imperfect volunteers.

    Attributes:
        votes_per_source: Votes collected for each queried source, each from a different volunteer.
        error_range: Each volunteer's error rate is drawn uniformly from this range.
        n_volunteers: Size of the crowd.
    """

    votes_per_source: int = 3
    error_range: tuple[float, float] = (0.10, 0.25)
    n_volunteers: int = 30

    def __post_init__(self) -> None:
        low, high = self.error_range
        if not 0 <= low <= high < 1:
            raise ValueError(f"error_range must satisfy 0 <= low <= high < 1, got {self.error_range}")
        if not 1 <= self.votes_per_source <= self.n_volunteers:
            raise ValueError("votes_per_source must be between 1 and n_volunteers")


def crowd_error_rates(noise: VolunteerNoise, rng: np.random.Generator) -> np.ndarray:
    """Draw each volunteer's error rate."""
    low, high = noise.error_range
    return rng.uniform(low, high, noise.n_volunteers)


def consensus_labels(
    true_labels: np.ndarray, error_rates: np.ndarray, votes_per_source: int, n_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Majority consensus of simulated votes, one entry per source.

    Each source is shown to ``votes_per_source`` distinct random volunteers; a volunteer
    answers the true class with probability ``1 - error rate`` and a uniformly random other
    class otherwise. The votes are combined by :func:`ml.consensus.majority`.

    Args:
        true_labels: int (n,) true classes.
        error_rates: (volunteers,) error rate of each volunteer.
        votes_per_source: Votes per source.
        n_classes: Number of classes (wrong answers are drawn among the others).
        rng: Source of randomness.

    Returns:
        int (n,) consensus labels.
    """
    consensus = np.empty(len(true_labels), dtype=np.int64)
    for row, truth in enumerate(np.asarray(true_labels)):
        voters = rng.choice(len(error_rates), votes_per_source, replace=False)
        wrong = rng.random(votes_per_source) < error_rates[voters]
        # A wrong answer is truth + k (mod C) with k uniform in 1..C-1: never the truth.
        answers = np.where(wrong, (truth + rng.integers(1, n_classes, votes_per_source)) % n_classes, truth)
        consensus[row] = int(majority([str(answer) for answer in answers])[0])
    return consensus


# --- the campaign -------------------------------------------------------------------------------


def label_schedule(
    initial: int, batch_size: int, budget: int, checkpoints: Sequence[int] = PAPER_CHECKPOINTS
) -> list[int]:
    """Label counts after each round: ``initial``, then steps of ``batch_size`` up to ``budget``.

    A batch is cut short where needed so that every checkpoint (and the budget) is itself a
    round: 10, 20, 30, 36, 40, ... gives the error at exactly 36 labels, not an interpolation.

    Raises:
        ValueError: Non-positive sizes or ``initial > budget``.
    """
    if initial < 1 or batch_size < 1 or budget < initial:
        raise ValueError(f"need 1 <= initial <= budget and batch_size >= 1, got {initial}, {batch_size}, {budget}")
    regular = set(range(initial, budget + 1, batch_size))
    extra = {c for c in checkpoints if initial <= c <= budget}
    return sorted(regular | extra | {budget})


@dataclass(frozen=True)
class SimulationConfig:
    """One policy's simulated campaign.

    Attributes:
        policy: Name in :data:`ml.policies.POLICIES` used after the first batch.
        cold_start: Policy for the first batch and whenever no classifier can be fitted
            (fewer than two classes labelled). ``"random"`` makes an all-random baseline.
        initial: Size of the cold-start batch.
        batch_size: Labels per later round.
        budget: Stop at this many labels.
        checkpoints: Label counts that must be rounds of their own.
        n_members: Committee size for committee policies (a bootstrap ensemble).
        noise: Simulated volunteers; None: an oracle gives the true label.
        policy_params: Extra parameters of the policy (see ``ml.policies.policy_parameters``).
        classifier: The few-label classifier evaluated and used for probabilities.
    """

    policy: str
    cold_start: str = COLD_START_POLICY
    initial: int = 10
    batch_size: int = 10
    budget: int = 291
    checkpoints: tuple[int, ...] = PAPER_CHECKPOINTS
    n_members: int = 5
    noise: VolunteerNoise | None = None
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        for name in (self.policy, self.cold_start):
            if name not in POLICIES:
                raise PolicyConfigError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)}")
        if "probabilities" in policy_inputs(self.cold_start) or "committee_probabilities" in policy_inputs(
            self.cold_start
        ):
            raise PolicyConfigError(f"cold_start {self.cold_start!r} needs a classifier; use one that does not")


@dataclass(frozen=True)
class Curve:
    """The learning curve of one simulated campaign.

    Attributes:
        policy: Policy name (as configured).
        seed: Seed of the run.
        n_labels: int (rounds,) labels after each round.
        test_error: (rounds,) test error of the classifier fitted on those labels.
        label_error: (rounds,) fraction of the labels so far that disagree with the truth.
        queried: int (budget,) pool indices in the order they were labelled.
        given_labels: int (budget,) the label each queried source got (truth or consensus).
    """

    policy: str
    seed: int
    n_labels: np.ndarray
    test_error: np.ndarray
    label_error: np.ndarray
    queried: np.ndarray
    given_labels: np.ndarray


def _check_split(embeddings: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    matrix = check_embeddings(embeddings)
    targets = np.asarray(labels)
    if targets.shape != (len(matrix),):
        raise ShapeMismatchError(f"{name}: {targets.shape} labels for {len(matrix)} embeddings")
    return matrix, targets


def simulate(
    pool_embeddings: np.ndarray,
    pool_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    config: SimulationConfig,
    *,
    seed: int,
    on_round: Callable[[int], None] | None = None,
) -> Curve:
    """Run one simulated labelling campaign.

    Each round: query a batch with the policy (the cold-start policy first), label it (the
    truth, or the volunteers' consensus), refit the classifier on all labels so far and
    record its test error. Probabilities and committee come from the same labels the policy
    sees, never from the truth. With ``config.noise``, the crowd's answer for every source is
    fixed by the seed (independent of the source's difficulty and of when it is asked), so
    policies compared on one seed differ only in which sources they ask about.

    Args:
        pool_embeddings: (N, D) features of the unlabelled pool.
        pool_labels: int (N,) true classes of the pool (the oracle).
        test_embeddings: (T, D) features of the held-out test set.
        test_labels: int (T,) its true classes.
        config: Policy and protocol.
        seed: Seeds the policy, the volunteers and the classifier.
        on_round: Called with the label count after every round (progress bars).

    Returns:
        The learning curve.

    Raises:
        DataError: Unusable arrays, or a budget larger than the pool.
    """
    pool, truth = _check_split(pool_embeddings, pool_labels, "pool")
    test, test_truth = _check_split(test_embeddings, test_labels, "test")
    if test.shape[1] != pool.shape[1]:
        raise ShapeMismatchError(f"test embeddings are {test.shape[1]} wide, pool embeddings {pool.shape[1]}")
    if config.budget > len(pool):
        raise DataError(f"budget {config.budget} is larger than the pool ({len(pool)} sources)")
    n_classes = int(max(truth.max(), test_truth.max())) + 1
    rng = np.random.default_rng(seed)
    answers = truth
    if config.noise is not None:
        # The crowd's consensus on every source is drawn up front from the seed alone, so
        # all policies run with the same seed meet the same volunteers giving the same
        # answers, and differ only in which sources they ask about.
        error_rates = crowd_error_rates(config.noise, rng)
        answers = consensus_labels(truth, error_rates, config.noise.votes_per_source, n_classes, rng)
    needs = policy_inputs(config.policy)
    labelled = np.zeros(len(pool), dtype=bool)
    given = np.full(len(pool), -1, dtype=np.int64)
    queried: list[np.ndarray] = []
    schedule = label_schedule(config.initial, config.batch_size, config.budget, config.checkpoints)
    errors, label_errors = [], []
    classifier = None
    for round_index, target in enumerate(schedule):
        inputs: dict[str, np.ndarray] = {}
        policy = config.cold_start
        if classifier is not None:
            policy = config.policy
            if "probabilities" in needs:
                inputs["probabilities"] = classifier.predict_proba(pool)
            if "committee_probabilities" in needs:
                committee = fit_ensemble(
                    pool[labelled], given[labelled], config.classifier, n_members=config.n_members, seed=seed
                )
                inputs["committee_probabilities"] = committee.member_proba(pool)
        params = config.policy_params if policy == config.policy else {}
        batch = rank(
            policy,
            embeddings=pool,
            labelled_mask=labelled,
            batch_size=target - int(labelled.sum()),
            seed=seed * 100_003 + round_index,
            **inputs,
            **params,
        )
        given[batch] = answers[batch]
        labelled[batch] = True
        queried.append(batch)
        classifier = None
        if len(np.unique(given[labelled])) >= 2:
            classifier = fit_classifier(pool[labelled], given[labelled], config.classifier, seed=seed)
            predictions = classifier.predict(test)
        else:
            # One class seen so far: the only possible prediction is that class.
            predictions = np.full(len(test), given[labelled][0])
        errors.append(float(np.mean(predictions != test_truth)))
        label_errors.append(float(np.mean(given[labelled] != truth[labelled])))
        if on_round is not None:
            on_round(target)
    return Curve(
        policy=config.policy,
        seed=seed,
        n_labels=np.asarray(schedule),
        test_error=np.asarray(errors),
        label_error=np.asarray(label_errors),
        queried=np.concatenate(queried),
        given_labels=given[np.concatenate(queried)],
    )


# --- summaries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurveSummary:
    """Mean and spread of a policy's curves over seeds.

    Attributes:
        policy: Policy name.
        n_labels: (rounds,) label counts.
        mean_error: (rounds,) mean test error over seeds.
        std_error: (rounds,) standard deviation over seeds.
        mean_label_error: (rounds,) mean fraction of wrong labels.
        n_seeds: Number of curves averaged.
    """

    policy: str
    n_labels: np.ndarray
    mean_error: np.ndarray
    std_error: np.ndarray
    mean_label_error: np.ndarray
    n_seeds: int

    def error_at(self, n_labels: int) -> tuple[float, float]:
        """(mean, std) test error at exactly ``n_labels``.

        Raises:
            KeyError: ``n_labels`` is not a round of the schedule.
        """
        where = np.flatnonzero(self.n_labels == n_labels)
        if len(where) == 0:
            raise KeyError(f"{n_labels} labels is not a round of the schedule")
        return float(self.mean_error[where[0]]), float(self.std_error[where[0]])

    def smoothed_error(self, window: int = 3) -> np.ndarray:
        """The mean error averaged over ``window`` consecutive rounds, centred (shorter at the ends).

        Reading crossings off the smoothed curve keeps a one-round dip of a noisy mean (one
        test image is ~1 % of 104) from counting as "reached".
        """
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {window}")
        half = window // 2
        return np.array([self.mean_error[max(0, i - half) : i + half + 1].mean() for i in range(len(self.mean_error))])

    def labels_to_reach(self, error: float, window: int = 3) -> int | None:
        """The fewest labels at which the smoothed mean error is at or below ``error`` (None: never)."""
        reached = np.flatnonzero(self.smoothed_error(window) <= error + 1e-12)
        return int(self.n_labels[reached[0]]) if len(reached) else None


def summarise(curves: Sequence[Curve]) -> CurveSummary:
    """Average curves of one policy over seeds.

    Raises:
        ValueError: No curves, or curves with different schedules or policies.
    """
    if not curves:
        raise ValueError("no curves to summarise")
    schedule = curves[0].n_labels
    if any(not np.array_equal(curve.n_labels, schedule) for curve in curves):
        raise ValueError("curves have different label schedules")
    if len({curve.policy for curve in curves}) != 1:
        raise ValueError("curves of different policies")
    errors = np.stack([curve.test_error for curve in curves])
    return CurveSummary(
        policy=curves[0].policy,
        n_labels=schedule,
        mean_error=errors.mean(axis=0),
        std_error=errors.std(axis=0),
        mean_label_error=np.stack([curve.label_error for curve in curves]).mean(axis=0),
        n_seeds=len(curves),
    )
