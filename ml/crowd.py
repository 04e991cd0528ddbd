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
