"""A crowd of simulated volunteers for replaying a whole campaign (``bench/campaign.py``).

Unlike the fixed crowd of :class:`ml.simulation.VolunteerModel`, which answers a fixed number
of votes per source, a campaign crowd behaves like Radio Galaxy Zoo's: volunteers arrive one
after another, each labels a heavy-tailed number of sources (most a handful, a few hundreds)
and leaves, each has a confusion matrix of their own that depends on the class and on
whether the source is ambiguous, and some sources are skipped rather than answered.

Pure numpy; every draw comes from a seed, so two arms of a replay meet the same volunteers
in the same order with the same habits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.retirement import RetirementRule
from ml.simulation import VolunteerModel, volunteer_confusions


@dataclass(frozen=True)
class CrowdConfig:
    """How a campaign's volunteers behave.

    Attributes:
        n_volunteers: Volunteers who arrive, in order, during the campaign.
        skill: Range of a volunteer's accuracy on clear sources of an average class.
        class_difficulty: Error multiplier per class (index = class); ``None``: 1 for every class.
        ambiguous_accuracy: Range of a volunteer's accuracy on ambiguous sources.
        median_sources: Median number of sources a volunteer labels before leaving
            (log-normal, spread ``activity_sigma``), clipped to ``sources_range``.
        activity_sigma: Log-normal spread of the number of sources per volunteer.
        sources_range: Fewest and most sources one volunteer labels.
        skip_clear: Mean probability of skipping a clear source.
        skip_ambiguous: Mean probability of skipping an ambiguous source.
    """

    n_volunteers: int = 400
    skill: tuple[float, float] = (0.70, 0.97)
    class_difficulty: tuple[float, ...] | None = None
    ambiguous_accuracy: tuple[float, float] = (0.45, 0.70)
    median_sources: float = 20.0
    activity_sigma: float = 1.3
    sources_range: tuple[int, int] = (5, 500)
    skip_clear: float = 0.02
    skip_ambiguous: float = 0.15

    def __post_init__(self) -> None:
        low, high = self.sources_range
        if not 1 <= low <= high:
            raise ValueError(f"sources_range must satisfy 1 <= low <= high, got {self.sources_range}")
        if self.n_volunteers < 1:
            raise ValueError("n_volunteers must be at least 1")
        for name in ("skip_clear", "skip_ambiguous"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be in [0, 0.5)")


@dataclass(frozen=True)
class Crowd:
    """Drawn volunteers, in arrival order.

    Attributes:
        confusions: (V, 2, C, C): [volunteer, ambiguous, true class, answer], rows sum to one.
        quotas: int (V,) sources each volunteer labels (answers and skips) before leaving.
        skip: (V, 2) probability of skipping a clear / an ambiguous source.
        seed: The seed every volunteer's own answers are drawn from (see :meth:`answers_rng`).
    """

    confusions: np.ndarray
    quotas: np.ndarray
    skip: np.ndarray
    seed: int

    @property
    def n_classes(self) -> int:
        return int(self.confusions.shape[-1])

    def answers_rng(self, volunteer: int) -> np.random.Generator:
        """The volunteer's own stream of answers: independent of who else is labelling, and when."""
        return np.random.default_rng([self.seed, 1, volunteer])

    def respond(self, volunteer: int, truth: int, ambiguous: bool, rng: np.random.Generator) -> int | None:
        """The volunteer's answer (a class index) to a source, or ``None`` for a skip."""
        kind = int(bool(ambiguous))
        if rng.random() < self.skip[volunteer, kind]:
            return None
        return int(rng.choice(self.n_classes, p=self.confusions[volunteer, kind, truth]))


def make_crowd(config: CrowdConfig, n_classes: int, seed: int) -> Crowd:
    """Draw a crowd: confusions, how much each volunteer labels, how often each skips."""
    rng = np.random.default_rng([seed, 0])
    difficulty = config.class_difficulty or (1.0,) * n_classes
    model = VolunteerModel(
        votes_per_source=1,
        n_volunteers=config.n_volunteers,
        skill=config.skill,
        class_difficulty=tuple(difficulty),
        ambiguous_accuracy=config.ambiguous_accuracy,
    )
    confusions = volunteer_confusions(model, n_classes, rng)
    low, high = config.sources_range
    quotas = np.clip(np.rint(rng.lognormal(np.log(config.median_sources), config.activity_sigma, config.n_volunteers)),
                     low, high).astype(np.int64)  # fmt: skip
    # Each volunteer's propensity to skip: uniform around the mean, so some never skip.
    propensity = rng.uniform(0, 2, config.n_volunteers)
    skip = np.stack([propensity * config.skip_clear, propensity * config.skip_ambiguous], axis=1)
    return Crowd(confusions=confusions, quotas=quotas, skip=np.clip(skip, 0, 0.95), seed=seed)


@dataclass(frozen=True)
class GoldSchedule:
    """How often a volunteer is shown a gold source (the product's ``Workflow.gold_rate_*``).

    A new volunteer sees gold at ``start``; the share halves after every ``halving`` correct
    gold answers, down to ``minimum``.
    """

    start: float = 0.2
    minimum: float = 0.02
    halving: int = 5

    def rate(self, correct: int) -> float:
        return max(self.minimum, self.start * 0.5 ** (correct // max(1, self.halving)))


@dataclass(frozen=True)
class CampaignVotes:
    """Every vote of a simulated campaign, in the order given.

    Attributes:
        subjects, volunteers, labels: int arrays, one entry per vote.
        gold: bool per vote: an answer to a gold source.
        retired: bool (n,) subjects that the retirement rule retired.
    """

    subjects: np.ndarray
    volunteers: np.ndarray
    labels: np.ndarray
    gold: np.ndarray
    retired: np.ndarray


def simulate_campaign(
    crowd: Crowd,
    truth: np.ndarray,
    ambiguous: np.ndarray,
    gold_ids: np.ndarray,
    *,
    retire_after: int | RetirementRule,
    gold: GoldSchedule | None = None,
    seed: int = 0,
) -> CampaignVotes:
    """The votes of a campaign that retires a subject after ``retire_after`` votes (or by a
    :class:`ml.retirement.RetirementRule`: early on agreement or margin, at most its ``retire_after``).

    Volunteers arrive one after another and each labels their quota: the open subject with
    the fewest votes they have not seen (random among ties, as the product's unranked queue),
    or, at the gold schedule's rate, a gold source they have not seen. A skip counts against
    the quota and the source is not served to them again. Gold sources never retire and do not
    count as subjects to finish. The campaign ends when every non-gold subject is retired or the
    crowd has left. Offline and sequential: what the consensus rules see, not the loop's timing
    (``bench/campaign.py`` replays through the real stack).
    """
    n = len(truth)
    if len(ambiguous) != n:
        raise ValueError(f"truth has {n} entries, ambiguous {len(ambiguous)}")
    rule = retire_after if isinstance(retire_after, RetirementRule) else RetirementRule(retire_after=retire_after)
    schedule = gold or GoldSchedule()
    rng = np.random.default_rng([seed, 2])
    is_gold = np.zeros(n, dtype=bool)
    is_gold[np.asarray(gold_ids, dtype=np.int64)] = True
    gold_list = np.flatnonzero(is_gold)
    counts = np.zeros(n, dtype=np.int64)
    # Open subjects by vote count; each bucket in random order, so taking the first unseen one
    # is a random choice among the fewest-voted.
    cap = rule.retire_after
    buckets: list[list[int]] = [rng.permutation(np.flatnonzero(~is_gold)).tolist()] + [[] for _ in range(cap)]
    answered: list[list[int]] = [[] for _ in range(n)]
    retired = np.zeros(n, dtype=bool)
    subjects: list[int] = []
    volunteers: list[int] = []
    labels: list[int] = []
    gold_votes: list[bool] = []
    open_left = int((~is_gold).sum())
    for volunteer in range(len(crowd.quotas)):
        if open_left == 0:
            break
        answers = crowd.answers_rng(volunteer)
        seen: set[int] = set()
        correct_gold = 0
        for _ in range(int(crowd.quotas[volunteer])):
            subject = -1
            if len(gold_list) and rng.random() < schedule.rate(correct_gold):
                unseen = [g for g in gold_list.tolist() if g not in seen]
                subject = int(rng.choice(unseen)) if unseen else -1
            if subject < 0:
                subject = next((s for bucket in buckets for s in bucket if s not in seen), -1)
            if subject < 0:
                break  # nothing left this volunteer has not seen
            seen.add(subject)
            answer = crowd.respond(volunteer, int(truth[subject]), bool(ambiguous[subject]), answers)
            if answer is None:
                continue
            subjects.append(subject)
            volunteers.append(volunteer)
            labels.append(answer)
            gold_votes.append(bool(is_gold[subject]))
            if is_gold[subject]:
                correct_gold += answer == truth[subject]
                continue
            buckets[counts[subject]].remove(subject)
            counts[subject] += 1
            answered[subject].append(answer)
            if rule.reason(answered[subject]):
                retired[subject] = True
                open_left -= 1
            else:
                # A newly promoted subject goes to a random place in its bucket (random among ties).
                bucket = buckets[counts[subject]]
                bucket.insert(int(rng.integers(len(bucket) + 1)), subject)
    return CampaignVotes(
        subjects=np.asarray(subjects, dtype=np.int64),
        volunteers=np.asarray(volunteers, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64),
        gold=np.asarray(gold_votes, dtype=bool),
        retired=retired,
    )
