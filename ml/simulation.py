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

import math
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
from ml.fastprobe import fit_probe
from ml.guard import choose_policy
from ml.policies import COLD_START_POLICY, POLICIES, PolicyConfigError, policy_inputs, random_policy, rank

#: The pseudo-policy of the guarded queue: random exploration plus :func:`ml.guard.choose_policy`.
GUARDED = "guarded"

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


@dataclass(frozen=True)
class CampaignImages:
    """MiraBest as a labelling campaign sees it: a pool with ambiguous sources, clean judges.

    Attributes:
        images: uint8 cutouts (N, 150, 150).
        labels: int (N,), 0 = FRI, 1 = FRII (the catalogue's class, also for uncertain sources).
        ambiguous: bool (N,), True for MiraBest's "uncertain" FRI / FRII sources.
        part: str (N,), ``"pool"`` (training batches, Confident and Uncertain), or ``"test"``
            (the 104 Confident test sources).
    """

    images: np.ndarray
    labels: np.ndarray
    ambiguous: np.ndarray
    part: np.ndarray


def load_mirabest_campaign(path: str | Path) -> CampaignImages:
    """MiraBest's FRI / FRII sources, Confident and Uncertain, with the official test split.

    The training batches' Confident and Uncertain FRI / FRII sources form the pool (volunteers
    would meet both); hybrids are left out (no FRI / FRII truth). Only Confident test
    sources are kept as test, so the test set is the paper's 104.

    Raises:
        DatasetError: The archive cannot be read.
    """
    from ml.datasets import MIRABEST_CONFIDENT_FRI, MIRABEST_CONFIDENT_FRII, read_mirabest

    images, labels, ambiguous, part = [], [], [], []
    for record in read_mirabest(path):
        if record.label not in ("FRI", "FRII"):
            continue
        confident = record.extra["label_index"] in MIRABEST_CONFIDENT_FRI | MIRABEST_CONFIDENT_FRII
        if record.split == "test" and not confident:
            continue
        images.append(record.image)
        labels.append(0 if record.label == "FRI" else 1)
        ambiguous.append(not confident)
        part.append("test" if record.split == "test" else "pool")
    return CampaignImages(np.stack(images), np.asarray(labels), np.asarray(ambiguous), np.asarray(part))


def validation_split(labels: np.ndarray, candidates: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified random subset of ``candidates`` (row indices) held out for validation.

    Product choices are made on it, never on the test set.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels[candidates]):
        rows = candidates[labels[candidates] == label]
        chosen.append(rng.choice(rows, int(round(fraction * len(rows))), replace=False))
    return np.sort(np.concatenate(chosen))


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


@dataclass(frozen=True)
class VolunteerModel:
    """A crowd whose mistakes depend on the volunteer, the class and the source's ambiguity.

    Every volunteer gets a confusion matrix per kind of source (clear, ambiguous). On clear
    sources a volunteer of skill ``s`` (drawn uniformly from ``skill``) errs on class ``c``
    with probability ``(1 - s) x class_difficulty[c]`` (FRI, with its fainter, more varied
    morphologies, is harder than FRII by default). On ambiguous sources (MiraBest's
    "uncertain" flag) every volunteer is close to a coin: accuracy drawn uniformly from
    ``ambiguous_accuracy``, with the same class difficulty. Wrong answers go to the other
    classes uniformly.

    Attributes:
        votes_per_source: Votes per source, from distinct volunteers.
        n_volunteers: Size of the crowd.
        skill: Range of volunteers' accuracy on clear sources of an average class.
        class_difficulty: Error multiplier per class (index = class).
        ambiguous_accuracy: Range of accuracy on ambiguous sources.
    """

    votes_per_source: int = 3
    n_volunteers: int = 30
    skill: tuple[float, float] = (0.70, 0.97)
    class_difficulty: tuple[float, ...] = (1.3, 0.7)
    ambiguous_accuracy: tuple[float, float] = (0.50, 0.70)

    def __post_init__(self) -> None:
        for name in ("skill", "ambiguous_accuracy"):
            low, high = getattr(self, name)
            if not 0 <= low <= high <= 1:
                raise ValueError(f"{name} must satisfy 0 <= low <= high <= 1, got {(low, high)}")
        if not 1 <= self.votes_per_source <= self.n_volunteers:
            raise ValueError("votes_per_source must be between 1 and n_volunteers")
        if min(self.class_difficulty, default=0) <= 0:
            raise ValueError("class_difficulty must be positive")


def volunteer_confusions(model: VolunteerModel, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Each volunteer's confusion matrices: (volunteers, 2, C, C), [v, ambiguous, true, answer].

    Rows sum to one.

    Raises:
        ValueError: ``class_difficulty`` has fewer entries than classes.
    """
    if len(model.class_difficulty) < n_classes:
        raise ValueError(f"class_difficulty has {len(model.class_difficulty)} entries for {n_classes} classes")
    difficulty = np.asarray(model.class_difficulty[:n_classes], dtype=float)
    clear_error = (1 - rng.uniform(*model.skill, model.n_volunteers))[:, None] * difficulty
    ambiguous_error = (1 - rng.uniform(*model.ambiguous_accuracy, model.n_volunteers))[:, None] * difficulty
    confusion = np.empty((model.n_volunteers, 2, n_classes, n_classes))
    for kind, error in enumerate((clear_error, ambiguous_error)):
        error = np.clip(error, 0, (n_classes - 1) / n_classes)  # never worse than a uniform guess
        off = error / max(1, n_classes - 1)
        confusion[:, kind] = off[:, :, None] * (1 - np.eye(n_classes))
        confusion[:, kind, np.arange(n_classes), np.arange(n_classes)] = 1 - error
    return confusion


def crowd_consensus(
    true_labels: np.ndarray,
    ambiguous: np.ndarray,
    confusions: np.ndarray,
    votes_per_source: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Majority consensus (:func:`ml.consensus.majority`) of votes drawn from confusion matrices.

    Args:
        true_labels: int (n,) true classes.
        ambiguous: bool (n,) sources on which volunteers use their ambiguous matrix.
        confusions: (volunteers, 2, C, C) from :func:`volunteer_confusions`.
        votes_per_source: Votes per source, from distinct random volunteers.
        rng: Source of randomness.

    Returns:
        int (n,) consensus labels.
    """
    n_classes = confusions.shape[-1]
    consensus = np.empty(len(true_labels), dtype=np.int64)
    for row, (truth, unclear) in enumerate(zip(np.asarray(true_labels), np.asarray(ambiguous), strict=True)):
        voters = rng.choice(len(confusions), votes_per_source, replace=False)
        answers = [rng.choice(n_classes, p=confusions[v, int(unclear), truth]) for v in voters]
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
        stream: Offsets the policy's random draws: two ``random`` arms with different
            streams are independent campaigns on the same seed (the null comparison).
        exploration: Share of every batch served at random (the audit labels of
            :func:`ml.guard.choose_policy`); the rest comes from the policy.
        guard_candidates: With ``policy="guarded"``, the policies the guard judges.
        guard_every: With ``policy="guarded"``, labels between two runs of the chooser.
        min_audit: With ``policy="guarded"``, audit labels before anything but random runs.
    """

    policy: str
    cold_start: str = COLD_START_POLICY
    initial: int = 10
    batch_size: int = 10
    budget: int = 291
    checkpoints: tuple[int, ...] = PAPER_CHECKPOINTS
    n_members: int = 5
    noise: VolunteerNoise | VolunteerModel | None = None
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    stream: int = 0
    exploration: float = 0.0
    guard_candidates: tuple[str, ...] = ("least_confident", "density_weighted")
    guard_every: int = 30
    min_audit: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.exploration <= 1:
            raise ValueError(f"exploration must lie in [0, 1], got {self.exploration}")
        names = [self.cold_start, *([self.policy] if self.policy != GUARDED else self.guard_candidates)]
        for name in names:
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
        policies: The policy that served each round (the guarded queue's choice).
    """

    policy: str
    seed: int
    n_labels: np.ndarray
    test_error: np.ndarray
    label_error: np.ndarray
    queried: np.ndarray
    given_labels: np.ndarray
    policies: tuple[str, ...] = ()


def _check_split(embeddings: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    matrix = check_embeddings(embeddings)
    targets = np.asarray(labels)
    if targets.shape != (len(matrix),):
        raise ShapeMismatchError(f"{name}: {targets.shape} labels for {len(matrix)} embeddings")
    return matrix, targets


def _fit(features: np.ndarray, labels: np.ndarray, config: ClassifierConfig, seed: int) -> Any:
    """The live classifier; the plain probe goes through ml.fastprobe (same optimum, faster)."""
    counts = np.unique(labels, return_counts=True)[1]
    calibrates = config.calibrate_min_per_class is not None and counts.min() >= max(
        config.calibrate_min_per_class, config.calibration_folds
    )
    # ml.fastprobe fits the unweighted probe only; class-balanced weights go through scikit-learn.
    if calibrates or len(counts) > 2 or config.class_weight is not None:
        return fit_classifier(features, labels, config, seed=seed)
    return fit_probe(features, labels, config, seed=seed)


def simulate(
    pool_embeddings: np.ndarray,
    pool_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    config: SimulationConfig,
    *,
    seed: int,
    ambiguous: np.ndarray | None = None,
    on_round: Callable[[int], None] | None = None,
) -> Curve:
    """Run one simulated labelling campaign.

    Each round: serve a batch -- ``config.exploration`` of it at random, the rest by the
    policy (the cold-start policy first) -- label it (the truth, or the volunteers'
    consensus), refit the classifier on all labels so far and record its test error.
    Probabilities and committee come from the same labels the policy sees, never from the
    truth. With volunteers, the crowd's answer for every source is fixed by the seed (drawn
    up front, independent of when it is asked), so arms compared on one seed differ only in
    which sources they ask about.

    With ``config.policy == "guarded"`` the queue starts random and every
    ``config.guard_every`` labels :func:`ml.guard.choose_policy` decides, from the labels so
    far and with the randomly served ones as judges, which candidate (or random) serves the
    non-exploration part of the next batches.

    Args:
        pool_embeddings: (N, D) features of the unlabelled pool.
        pool_labels: int (N,) true classes of the pool (the oracle).
        test_embeddings: (T, D) features of the held-out set scored (test or validation).
        test_labels: int (T,) its true classes.
        config: Policy and protocol.
        seed: Seeds the policy, the volunteers and the classifier.
        ambiguous: bool (N,) ambiguous pool sources (used by a :class:`VolunteerModel`).
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
    unclear = np.zeros(len(pool), dtype=bool) if ambiguous is None else np.asarray(ambiguous, dtype=bool)
    if unclear.shape != (len(pool),):
        raise ShapeMismatchError(f"ambiguous has shape {unclear.shape}, the pool {len(pool)} rows")
    n_classes = int(max(truth.max(), test_truth.max())) + 1
    rng = np.random.default_rng(seed)
    answers = truth
    if isinstance(config.noise, VolunteerNoise):
        # The crowd's consensus on every source is drawn up front from the seed alone, so
        # all policies run with the same seed meet the same volunteers giving the same
        # answers, and differ only in which sources they ask about.
        error_rates = crowd_error_rates(config.noise, rng)
        answers = consensus_labels(truth, error_rates, config.noise.votes_per_source, n_classes, rng)
    elif isinstance(config.noise, VolunteerModel):
        confusions = volunteer_confusions(config.noise, n_classes, rng)
        answers = crowd_consensus(truth, unclear, confusions, config.noise.votes_per_source, rng)
    guarded = config.policy == GUARDED
    active = "random" if guarded else config.policy
    labelled = np.zeros(len(pool), dtype=bool)
    audit = np.zeros(len(pool), dtype=bool)
    given = np.full(len(pool), -1, dtype=np.int64)
    queried: list[np.ndarray] = []
    schedule = label_schedule(config.initial, config.batch_size, config.budget, config.checkpoints)
    errors, label_errors, served = [], [], []
    classifier = None
    explore_due, last_check = 0.0, 0
    stream = config.stream * 1_000_003
    for round_index, target in enumerate(schedule):
        n_new = target - int(labelled.sum())
        if guarded and classifier is not None and target - last_check >= config.guard_every:
            rows = np.flatnonzero(labelled)
            choice = choose_policy(
                pool, rows, given[rows], audit[rows], config.guard_candidates, seed=seed, min_audit=config.min_audit
            )
            active, last_check = choice.policy, target
        explore_due += config.exploration * n_new
        n_explore = min(n_new, int(explore_due + 1e-9))
        explore_due -= n_explore
        round_seed = seed * 100_003 + round_index + stream
        policy = active if classifier is not None else config.cold_start
        explored = np.empty(0, dtype=np.int64)
        if n_explore:
            explored = random_policy(labelled_mask=labelled, batch_size=n_explore, seed=round_seed + 500_009)
        taken = labelled.copy()
        taken[explored] = True
        inputs: dict[str, np.ndarray] = {}
        needs = policy_inputs(policy)
        if classifier is not None and "probabilities" in needs:
            inputs["probabilities"] = classifier.predict_proba(pool)
        if classifier is not None and "committee_probabilities" in needs:
            committee = fit_ensemble(
                pool[labelled], given[labelled], config.classifier, n_members=config.n_members, seed=seed
            )
            inputs["committee_probabilities"] = committee.member_proba(pool)
        params = config.policy_params if policy == config.policy else {}
        chosen = np.empty(0, dtype=np.int64)
        if n_new - n_explore:
            chosen = rank(
                policy,
                embeddings=pool,
                labelled_mask=taken,
                batch_size=n_new - n_explore,
                seed=round_seed,
                **inputs,
                **params,
            )
        batch = np.concatenate([explored, chosen])
        given[batch] = answers[batch]
        labelled[batch] = True
        audit[explored] = True
        if policy == "random":
            audit[chosen] = True  # random picks are unbiased judges too
        queried.append(batch)
        served.append(policy)
        classifier = None
        if len(np.unique(given[labelled])) >= 2:
            classifier = _fit(pool[labelled], given[labelled], config.classifier, seed)
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
        policies=tuple(served),
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


# --- paired comparison --------------------------------------------------------------------------


def decreasing_fit(values: np.ndarray) -> np.ndarray:
    """The closest non-increasing sequence in least squares (pool-adjacent-violators), equal weights."""
    blocks: list[list[float]] = []  # [mean, count]
    for value in np.asarray(values, dtype=float):
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            mean, count = blocks.pop()
            previous = blocks[-1]
            previous[0] = (previous[0] * previous[1] + mean * count) / (previous[1] + count)
            previous[1] += count
    return np.concatenate([np.full(int(count), mean) for mean, count in blocks])


def labels_to_reach(n_labels: np.ndarray, error: np.ndarray, target: float) -> float:
    """Labels at which a learning curve reaches ``target`` error, interpolated; inf if never.

    The curve is first made non-increasing by isotonic regression (:func:`decreasing_fit`),
    so that neither a one-round dip of a noisy mean nor a bump counts: the first crossing of
    a raw noisy curve comes early by chance, which is why "first reaches" failed its null
    test. Between rounds the crossing is interpolated linearly in log-labels.
    """
    x = np.log(np.asarray(n_labels, dtype=float))
    fitted = decreasing_fit(np.asarray(error, dtype=float))
    if fitted[0] <= target:
        return float(n_labels[0])
    below = np.flatnonzero(fitted <= target + 1e-12)
    if not len(below):
        return math.inf
    j = int(below[0])
    high, low = fitted[j - 1], fitted[j]
    fraction = (high - target) / (high - low) if high > low else 1.0
    return float(np.exp(x[j - 1] + fraction * (x[j] - x[j - 1])))


def curve_area(n_labels: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Area under learning curves divided by the label range: the mean error over the campaign.

    Args:
        n_labels: (rounds,) label counts.
        error: (..., rounds) errors.

    Returns:
        (...,) trapezoid area over ``n_labels[0]..n_labels[-1]`` divided by that range.
    """
    n = np.asarray(n_labels, dtype=float)
    values = np.asarray(error, dtype=float)
    area = ((values[..., 1:] + values[..., :-1]) / 2 * np.diff(n)).sum(axis=-1)
    return np.asarray(area / (n[-1] - n[0]))


@dataclass(frozen=True)
class PairedComparison:
    """An arm against the baseline, seed by seed (same seed = same crowd, same start).

    All differences are arm minus baseline in error points (percent): negative is better.

    Attributes:
        n_labels: (rounds,) label counts.
        difference: (rounds,) mean paired difference of test error.
        low: (rounds,) lower end of its interval (Student t over seeds).
        high: (rounds,) upper end.
        area: (mean, low, high) paired difference of the area under the curve
            (:func:`curve_area`: mean error over the campaign).
        ratio: (estimate, low, high) labels the arm needs to reach the baseline's error at
            ``reference`` labels, as a multiple of ``reference`` (below 1: fewer labels);
            bootstrap over seeds (percentile interval); inf when never reached.
        reference: The baseline budget of ``ratio``.
        n_seeds: Paired seeds.
        confidence: Coverage of the intervals.
        per_seed: (seeds, rounds) the paired differences themselves (points).
    """

    n_labels: np.ndarray
    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    area: tuple[float, float, float]
    ratio: tuple[float, float, float]
    reference: int
    n_seeds: int
    confidence: float
    per_seed: np.ndarray

    def at(self, n_labels: int) -> tuple[float, float, float]:
        """(mean, low, high) error difference at a round of the schedule."""
        where = np.flatnonzero(self.n_labels == n_labels)
        if not len(where):
            raise KeyError(f"{n_labels} labels is not a round of the schedule")
        i = int(where[0])
        return float(self.difference[i]), float(self.low[i]), float(self.high[i])

    def worse_at(self, simultaneous: bool = False) -> np.ndarray:
        """Label counts at which the arm is worse than the baseline beyond the interval.

        Args:
            simultaneous: Bonferroni-correct over the rounds, so that the chance of any
                round being flagged by chance alone is ``1 - confidence`` (pointwise
                intervals over 30 rounds flag some round by chance most of the time).
        """
        if not simultaneous:
            return self.n_labels[self.low > 0]
        level = 1 - (1 - self.confidence) / len(self.n_labels)
        _, low, _ = _t_interval(self.per_seed, level)
        return self.n_labels[low > 0]


def _t_interval(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy import stats

    mean = values.mean(axis=0)
    n = len(values)
    if n < 2:
        return mean, np.full_like(mean, -np.inf), np.full_like(mean, np.inf)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def compare_paired(
    arm: Sequence[Curve],
    baseline: Sequence[Curve],
    *,
    reference: int = 145,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Paired per-seed differences of an arm against the baseline, with intervals.

    Args:
        arm: One curve per seed.
        baseline: One curve per seed, the same seeds (matched by ``Curve.seed``).
        reference: Budget whose baseline error the labels ratio is read against.
        confidence: Coverage of the intervals.
        n_boot: Bootstrap resamples of seeds for the labels ratio.
        seed: Seed of the bootstrap.

    Raises:
        ValueError: The seeds or schedules differ, or ``reference`` is not a round.
    """
    by_seed = {curve.seed: curve for curve in baseline}
    if sorted(by_seed) != sorted(curve.seed for curve in arm) or len(by_seed) != len(arm):
        raise ValueError("arm and baseline must have one curve for each of the same seeds")
    n_labels = arm[0].n_labels
    if any(not np.array_equal(c.n_labels, n_labels) for c in [*arm, *baseline]):
        raise ValueError("curves have different label schedules")
    if reference not in set(n_labels.tolist()):
        raise ValueError(f"reference {reference} is not a round of the schedule")
    ours = np.stack([curve.test_error for curve in arm])
    theirs = np.stack([by_seed[curve.seed].test_error for curve in arm])
    difference, low, high = _t_interval(100 * (ours - theirs), confidence)
    area_mean, area_low, area_high = _t_interval(
        100 * (curve_area(n_labels, ours) - curve_area(n_labels, theirs)), confidence
    )
    at = int(np.flatnonzero(n_labels == reference)[0])

    def ratio(rows: np.ndarray) -> float:
        base = decreasing_fit(theirs[rows].mean(axis=0))
        return labels_to_reach(n_labels, ours[rows].mean(axis=0), float(base[at])) / reference

    rng = np.random.default_rng(seed)
    draws = np.array([ratio(rng.integers(0, len(ours), len(ours))) for _ in range(n_boot)])
    tail = 100 * (1 - confidence) / 2
    ratio_low, ratio_high = np.percentile(draws, [tail, 100 - tail], method="nearest")
    return PairedComparison(
        n_labels=n_labels,
        difference=difference,
        low=low,
        high=high,
        area=(float(area_mean), float(area_low), float(area_high)),
        ratio=(ratio(np.arange(len(ours))), float(ratio_low), float(ratio_high)),
        reference=reference,
        n_seeds=len(ours),
        confidence=confidence,
        per_seed=100 * (ours - theirs),
    )
