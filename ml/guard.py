"""A guarded choice of active-learning policy, made from a campaign's own labels.

An active-learning policy can be worse than random sampling (uncertainty sampling drawn to
outliers, a density weight tuned on another encoder), so the queue never runs one on faith.
A small share of the queue is served at random ("exploration"); those labels, with the gold
standard, are an unbiased sample of the pool. Periodically :func:`choose_policy` holds a
tournament in the spirit of Hsu & Lin (2015, "Active learning by learning"), whose reward is
the accuracy on randomly queried labels:

1. The audit labels (exploration + gold) are split into folds. For each fold, the other
   labelled sources form a replay pool (a random ``REPLAY_POOL_MAX`` of them at most, so the
   cost does not grow with the campaign) and the fold is the judge.
2. From one random start inside the replay pool, every candidate policy and ``random``
   choose further sources *among the replay pool* (only those have labels) in a few
   batches; after each batch the classifier is refitted and scored on the held-out fold.
3. A policy's score on a held-out source is its accuracy averaged over the batches (the
   area under its replayed learning curve); its gain on that source is that score minus
   random's on the same replay. Every audit source is held out once per repeat; the
   replays (folds x repeats) are the units of the t-interval, since the judges of one
   replay share its training labels.
4. The candidate with the highest lower bound is chosen if that bound is above
   ``margin`` (Bonferroni-corrected over the candidates); otherwise ``random`` runs.

Nothing here looks at a test set: the judge is the campaign's own random labels. The
replays answer "on sources like the ones labelled so far, does this policy pick a more
useful next batch than random?"; they are a proxy, which is why the queue keeps exploring
and re-runs the tournament as labels arrive.

:func:`accuracy_estimate` is the interval the dashboard shows for a classifier's accuracy
on unbiased labels (Wilson score interval), and :func:`labels_ratio` turns two replayed
learning curves into "labels random would need" (the estimated saving).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from scipy import stats

from ml.classifier import FewLabelClassifier, check_embeddings, fit_ensemble
from ml.config import LIVE_MAX_DIM, ClassifierConfig
from ml.errors import DataError, ShapeMismatchError
from ml.fastprobe import LinearProbe, fit_probe
from ml.policies import COLD_START_POLICY, POLICIES, PolicyConfigError, policy_inputs, rank

#: The baseline every candidate is judged against, and the fallback.
BASELINE = "random"
#: Fractions of the replay pool labelled after each replayed batch (the first is the random start).
REPLAY_FRACTIONS = (0.1, 0.2, 0.3, 0.4)
#: Labelled rows one replay chooses among, at most: a random subset of the campaign's labels
#: beyond this, so the tournament's cost stops growing with the campaign (at 10k sources and
#: ~7k labels the uncapped replays ran for over 45 minutes). The judges are never subsampled.
REPLAY_POOL_MAX = 1000
#: Below this many unbiased labels no policy is judged and random runs.
MIN_AUDIT = 20
#: The replayed classifier: the plain linear probe (uncalibrated: calibration adds cost and
#: does not change the predicted class much, and the replays only score predictions).
# The replays fit the plain (unweighted, uncalibrated) probe, fast enough to run many times;
# the live classifier weighs classes (ml.config.ClassifierConfig), which the replays do not.
# Wide embeddings are projected as the live classifier projects them (ml.config.LIVE_MAX_DIM).
REPLAY_CLASSIFIER = ClassifierConfig(calibrate_min_per_class=10**9, class_weight=None, max_dim=LIVE_MAX_DIM)


@dataclass(frozen=True)
class PolicyChoice:
    """Which policy the queue should run, and the evidence.

    Attributes:
        policy: The chosen policy (a name of ``ml.policies.POLICIES``); ``"random"`` when no
            candidate is measurably better.
        reason: One plain sentence for the dashboard.
        gains: Per candidate judged: (mean gain over random, CI low, CI high) in accuracy
            points (percent) on the audit labels, averaged over the replayed curve. Empty
            when there were too few audit labels to judge.
        n_audit: Unbiased (random-exploration + gold) labels used as the judge.
        labels_ratio: Per candidate judged: (labels random needs to match the candidate's
            replayed accuracy, as a multiple of the candidate's labels; CI low; CI high).
            Above 1 means the candidate saves labels. See :func:`labels_ratio`.
    """

    policy: str
    reason: str
    gains: dict[str, tuple[float, float, float]]
    n_audit: int
    labels_ratio: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def accuracy_estimate(correct: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Accuracy on unbiased labels with its Wilson score interval.

    Args:
        correct: bool or 0/1 (n,), whether the classifier was right on each audit source
            (sources served at random, or gold standard: an unbiased sample of the pool).
        confidence: Two-sided coverage of the interval.

    Returns:
        (mean, low, high) as fractions in [0, 1]. With no labels: (nan, 0.0, 1.0).

    Raises:
        DataError: Not 1-D, values other than 0/1, or a confidence outside (0, 1).
    """
    values = np.asarray(correct)
    if values.ndim != 1:
        raise ShapeMismatchError(f"correct must be 1-D, got shape {values.shape}")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must lie in (0, 1), got {confidence!r}")
    if values.dtype != np.bool_ and len(values) and not np.isin(values.astype(float), (0.0, 1.0)).all():
        raise DataError("correct must hold only booleans or 0/1")
    n = len(values)
    if n == 0:
        return math.nan, 0.0, 1.0
    p = float(values.astype(float).mean())
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # min/max with p: at p = 0 or 1 the Wilson bound equals p, up to rounding (1e-17 above 0).
    return p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` with a Student-t interval: (mean, low, high); (nan, nan, nan) when empty."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if n == 1:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(data.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def labels_ratio(budgets: np.ndarray, random_accuracy: np.ndarray, policy_accuracy: float) -> float:
    """Labels random sampling needs to reach ``policy_accuracy``, as a multiple of the last budget.

    The random curve (accuracy at ``budgets`` labels) is made monotone (a running maximum)
    and interpolated linearly in log-labels. ``policy_accuracy`` is the candidate's accuracy
    at ``budgets[-1]`` labels. 1.0: no saving; 1.5: random needs 50 % more labels; below 1:
    the candidate is worse. Beyond the curve, the last segment's slope is extended (capped at
    a ratio of 10, and floored at the first budget).

    Raises:
        DataError: Budgets not increasing, or arrays of different lengths.
    """
    n = np.asarray(budgets, dtype=float)
    accuracy = np.maximum.accumulate(np.asarray(random_accuracy, dtype=float))
    if n.ndim != 1 or n.shape != accuracy.shape or len(n) < 2 or np.any(np.diff(n) <= 0) or n[0] <= 0:
        raise DataError("budgets must be 2+ increasing positive label counts, one per random accuracy")
    log_n = np.log(n)
    last = n[-1]
    if policy_accuracy <= accuracy[0]:
        return float(n[0] / last)
    reached = np.flatnonzero(accuracy >= policy_accuracy)
    if len(reached):
        j = int(reached[0])
        low, high = accuracy[j - 1], accuracy[j]
        fraction = (policy_accuracy - low) / (high - low) if high > low else 1.0
        return float(np.exp(log_n[j - 1] + fraction * (log_n[j] - log_n[j - 1])) / last)
    slope = (accuracy[-1] - accuracy[-2]) / (log_n[-1] - log_n[-2])
    if slope <= 0:
        return 10.0
    exponent = log_n[-1] + (policy_accuracy - accuracy[-1]) / slope
    return float(min(10.0, np.exp(min(exponent, math.log(10 * last))) / last))


def _check_inputs(
    features: np.ndarray, labelled: np.ndarray, labels: np.ndarray, audit: np.ndarray, candidates: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    matrix = check_embeddings(features)
    rows = np.asarray(labelled)
    if rows.ndim != 1 or (len(rows) and not np.issubdtype(rows.dtype, np.integer)):
        raise DataError(f"labelled must be 1-D integer row indices, got dtype {rows.dtype} shape {rows.shape}")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(matrix)):
        raise DataError(f"labelled holds row indices outside the {len(matrix)} feature rows")
    if len(np.unique(rows)) != len(rows):
        raise DataError("labelled holds the same row twice")
    targets = np.asarray(labels)
    if targets.shape != rows.shape:
        raise ShapeMismatchError(f"{targets.shape} labels for {rows.shape} labelled rows")
    mask = np.asarray(audit)
    if mask.shape != rows.shape or mask.dtype != np.bool_:
        raise DataError(
            f"audit must be a bool mask aligned with labelled ({rows.shape}), got {mask.dtype} {mask.shape}"
        )
    for name in candidates:
        if name not in POLICIES:
            raise PolicyConfigError(f"unknown candidate policy {name!r}; choose from {sorted(POLICIES)}")
    _, codes = np.unique(targets, return_inverse=True)
    return matrix, rows.astype(np.int64), codes.astype(np.int64), mask


def _fit_predict(
    features: np.ndarray, labels: np.ndarray, test: np.ndarray, seed: int
) -> tuple[np.ndarray, LinearProbe | FewLabelClassifier | None]:
    """Predictions on ``test`` and the fitted classifier (None when one class only)."""
    if len(np.unique(labels)) < 2:
        return np.full(len(test), labels[0]), None
    classifier = fit_probe(features, labels, REPLAY_CLASSIFIER, seed=seed)
    return classifier.predict(test), classifier


def _replay(
    policy: str,
    pool: np.ndarray,
    pool_labels: np.ndarray,
    judge: np.ndarray,
    judge_labels: np.ndarray,
    start: np.ndarray,
    targets: Sequence[int],
    seed: int,
) -> np.ndarray:
    """Correctness (budgets, judge) of the classifier after each replayed batch of ``policy``."""
    labelled = np.zeros(len(pool), dtype=bool)
    labelled[start] = True
    needs = policy_inputs(policy)
    correct = []
    predictions, classifier = _fit_predict(pool[labelled], pool_labels[labelled], judge, seed)
    correct.append(predictions == judge_labels)
    for step, target in enumerate(targets[1:], start=1):
        inputs: dict[str, np.ndarray] = {}
        name = policy if classifier is not None else COLD_START_POLICY
        if classifier is not None and "probabilities" in needs:
            inputs["probabilities"] = classifier.predict_proba(pool)  # type: ignore[attr-defined]
        if classifier is not None and "committee_probabilities" in needs:
            committee = fit_ensemble(pool[labelled], pool_labels[labelled], REPLAY_CLASSIFIER, seed=seed)
            inputs["committee_probabilities"] = committee.member_proba(pool)
        batch = rank(
            name,
            embeddings=pool,
            labelled_mask=labelled,
            batch_size=int(target - labelled.sum()),
            seed=seed * 1_000 + step,
            **inputs,
        )
        labelled[batch] = True
        predictions, classifier = _fit_predict(pool[labelled], pool_labels[labelled], judge, seed)
        correct.append(predictions == judge_labels)
    return np.asarray(correct, dtype=float)


def choose_policy(
    features: np.ndarray,
    labelled: np.ndarray,
    labels: np.ndarray,
    audit: np.ndarray,
    candidates: Sequence[str],
    *,
    seed: int = 0,
    min_audit: int = MIN_AUDIT,
    folds: int = 5,
    repeats: int = 2,
    confidence: float = 0.95,
    margin: float = 0.0,
    pool_max: int = REPLAY_POOL_MAX,
) -> PolicyChoice:
    """Choose the queue's policy from the campaign's own labels, falling back to random.

    Args:
        features: (n_pool, d) embedding rows of the whole pool.
        labelled: int (n,) rows of ``features`` that have a (consensus or gold) label.
        labels: (n,) their labels, str or int.
        audit: bool (n,), True for labels whose source was served at random (exploration)
            or is gold standard: the unbiased judges.
        candidates: Policy names to judge against random (``"random"`` itself is skipped).
        seed: Seeds the folds, the replay starts and the policies' tie-breaking.
        min_audit: Below this many audit labels nothing is judged and random runs.
        folds: Folds the audit labels are split into (each is the judge once per repeat).
        repeats: Repeats with other folds and starts (more is steadier and slower).
        confidence: Coverage of each interval; the decision uses the Bonferroni-corrected
            level ``1 - (1 - confidence) / len(candidates)``, so judging many candidates does
            not make a lucky one more likely to be chosen.
        margin: Gain in accuracy points the lower bound must exceed (0: "measurably better").
        pool_max: Labelled rows each replay chooses among, at most (a fresh random subset per
            replay beyond it): bounds the cost, whatever the campaign's size.

    Returns:
        The choice, with per-candidate gains (accuracy points, mean and interval) and the
        audit labels used.

    Raises:
        DataError: Unusable arrays (mismatched shapes, bad indices, a non-bool audit mask).
        PolicyConfigError: An unknown candidate name.
    """
    matrix, rows, codes, mask = _check_inputs(features, labelled, labels, audit, candidates)
    judged = [name for name in dict.fromkeys(candidates) if name != BASELINE]
    n_audit = int(mask.sum())
    if not judged:
        return PolicyChoice(BASELINE, "No policy other than random is a candidate.", {}, n_audit)
    if n_audit < min_audit:
        return PolicyChoice(
            BASELINE,
            f"Random sampling until {min_audit} unbiased (exploration or gold) labels can judge the "
            f"policies; {n_audit} so far.",
            {},
            n_audit,
        )
    if folds < 2 or repeats < 1:
        raise DataError(f"need folds >= 2 and repeats >= 1, got {folds}, {repeats}")
    rng = np.random.default_rng(seed)
    audit_positions = np.flatnonzero(mask)
    folds = min(folds, n_audit)
    arms = [BASELINE, *judged]
    # Per audit label and arm: its correctness at the last replayed budget, summed over repeats.
    # One gain per replay (the mean over its judges): replays are the independent units,
    # since every judge of one replay shares its training labels.
    replay_gains: dict[str, list[float]] = {arm: [] for arm in judged}
    at_last = {arm: np.zeros(n_audit) for arm in arms}
    random_curve = np.zeros((len(REPLAY_FRACTIONS), n_audit))
    replay_budgets: list[np.ndarray] = []
    for repeat in range(repeats):
        order = rng.permutation(n_audit)
        for fold in range(folds):
            held = order[fold::folds]
            judge_rows = rows[audit_positions[held]]
            judge_labels = codes[audit_positions[held]]
            pool_positions = np.setdiff1d(np.arange(len(rows)), audit_positions[held])
            if len(pool_positions) > pool_max:
                pool_positions = np.sort(rng.choice(pool_positions, pool_max, replace=False))
            pool = matrix[rows[pool_positions]]
            pool_labels = codes[pool_positions]
            n_pool = len(pool_positions)
            targets = sorted({max(2, min(n_pool, round(f * n_pool))) for f in REPLAY_FRACTIONS})
            if len(targets) < 2:
                continue
            start = rng.choice(n_pool, targets[0], replace=False)
            replay_seed = seed * 7919 + repeat * 101 + fold
            judge = matrix[judge_rows]
            baseline_area = None
            for arm in arms:
                correct = _replay(arm, pool, pool_labels, judge, judge_labels, start, targets, replay_seed)
                if arm == BASELINE:
                    baseline_area = correct.mean()
                else:
                    replay_gains[arm].append(100 * float(correct.mean() - baseline_area))
                at_last[arm][held] += correct[-1]
                if arm == BASELINE and len(targets) == len(REPLAY_FRACTIONS):
                    random_curve[:, held] += correct
                    replay_budgets.append(np.asarray(targets, dtype=float))
    # Bonferroni over the candidates for the decision; the reported intervals use it too, so
    # the sentence and the numbers agree.
    level = 1 - (1 - confidence) / len(judged)
    gains: dict[str, tuple[float, float, float]] = {}
    ratios: dict[str, tuple[float, float, float]] = {}
    for arm in judged:
        gains[arm] = tuple(round(v, 2) for v in mean_interval(np.asarray(replay_gains[arm]), level))  # type: ignore[assignment]
        if replay_budgets:
            ratios[arm] = _ratio_interval(
                np.mean(replay_budgets, axis=0), random_curve / repeats, at_last[arm] / repeats, level, rng
            )
    best = max(judged, key=lambda name: gains[name][1])
    mean, low, high = gains[best]
    interval = f"({100 * level:.0f}% CI {low:+.1f} to {high:+.1f})"
    if low > margin:
        reason = (
            f"{best} beat random by {mean:.1f} accuracy points {interval} in replays judged by "
            f"{n_audit} unbiased labels."
        )
        return PolicyChoice(best, reason, gains, n_audit, ratios)
    reason = (
        f"Random sampling: no policy is measurably better over {n_audit} unbiased labels "
        f"(best, {best}: {mean:+.1f} points {interval})."
    )
    return PolicyChoice(BASELINE, reason, gains, n_audit, ratios)


def _ratio_interval(
    budgets: np.ndarray,
    random_curve: np.ndarray,
    policy_last: np.ndarray,
    level: float,
    rng: np.random.Generator,
    n_boot: int = 400,
) -> tuple[float, float, float]:
    """:func:`labels_ratio` on the audit labels, with a bootstrap interval over audit labels."""

    def ratio(sample: np.ndarray) -> float:
        return labels_ratio(budgets, random_curve[:, sample].mean(axis=1), float(policy_last[sample].mean()))

    everything = np.arange(random_curve.shape[1])
    draws = [ratio(rng.integers(0, len(everything), len(everything))) for _ in range(n_boot)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return round(ratio(everything), 3), round(float(low), 3), round(float(high), 3)
