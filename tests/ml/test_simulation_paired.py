"""The paired statistic, the volunteer model and the guarded arm of ml.simulation, on generated data."""

import numpy as np
import pytest

from ml.config import ClassifierConfig
from ml.simulation import (
    Curve,
    SimulationConfig,
    VolunteerModel,
    compare_paired,
    crowd_consensus,
    curve_area,
    label_schedule,
    labels_to_reach,
    simulate,
    volunteer_confusions,
)

PLAIN = ClassifierConfig(calibrate_min_per_class=10**9)
SCHEDULE = np.array(label_schedule(10, 10, 291))  # the simulation's own rounds


def learning_curve(n_labels: np.ndarray, speed: float = 1.0) -> np.ndarray:
    """A smooth error curve; ``speed`` 2 reaches at n labels what ``speed`` 1 reaches at 2n."""
    return 0.15 + 0.35 * (speed * n_labels / 10.0) ** -0.5


def noisy_curves(policy: str, rng: np.random.Generator, seeds: int, speed: float = 1.0, shared=None) -> list[Curve]:
    """Curves with a per-seed effect (``shared``: the same crowd for both arms) and own noise."""
    shared = np.zeros((seeds, len(SCHEDULE))) if shared is None else shared
    curves = []
    for seed in range(seeds):
        error = learning_curve(SCHEDULE, speed) + shared[seed] + rng.normal(0, 0.03, len(SCHEDULE))
        curves.append(
            Curve(policy, seed, SCHEDULE, error, np.zeros(len(SCHEDULE)), np.arange(291), np.zeros(291, dtype=int))
        )
    return curves


# --- the statistic --------------------------------------------------------------------------------


def test_null_comparison_comes_out_at_one_within_its_interval():
    """Two arms drawn from one curve: ratio 1.0x and zero differences, inside the intervals."""
    rng = np.random.default_rng(0)
    ratios_cover, area_cover, flagged = [], [], []
    for _ in range(30):
        shared = rng.normal(0, 0.02, (30, 1)) + np.zeros((30, len(SCHEDULE)))
        a, b = noisy_curves("random", rng, 30, shared=shared), noisy_curves("random", rng, 30, shared=shared)
        comparison = compare_paired(a, b, n_boot=200, seed=1)
        ratios_cover.append(comparison.ratio[1] <= 1.0 <= comparison.ratio[2])
        area_cover.append(comparison.area[1] <= 0 <= comparison.area[2])
        flagged.append(len(comparison.worse_at(simultaneous=True)) > 0)
    assert np.mean(ratios_cover) >= 0.85
    assert np.mean(area_cover) >= 0.85
    assert np.mean(flagged) <= 0.15  # "worse at some budget" is rarely claimed by chance


def test_first_crossing_of_a_noisy_curve_is_what_failed_the_null():
    """The old statistic (first raw crossing) comes early by chance; the isotonic one does not."""
    rng = np.random.default_rng(1)
    old, new = [], []
    for _ in range(200):
        a = learning_curve(SCHEDULE) + rng.normal(0, 0.02, len(SCHEDULE))
        b = learning_curve(SCHEDULE) + rng.normal(0, 0.02, len(SCHEDULE))
        target = b[SCHEDULE == 145][0]
        first = np.flatnonzero(a <= target)
        old.append(SCHEDULE[first[0]] / 145 if len(first) else np.inf)
        new.append(labels_to_reach(SCHEDULE, a, target) / 145)
    assert np.median(old) < 0.9
    assert 0.9 < np.median(new) < 1.1


def test_a_twice_as_fast_arm_needs_half_the_labels():
    rng = np.random.default_rng(2)
    fast, slow = noisy_curves("margin", rng, 30, speed=2.0), noisy_curves("random", rng, 30)
    comparison = compare_paired(fast, slow, n_boot=300)
    estimate, low, high = comparison.ratio
    assert 0.35 < estimate < 0.65 and low < estimate < high < 0.8
    assert comparison.area[2] < 0 and (comparison.high[1:10] < 0).all()  # early rounds: a clear gap
    assert len(comparison.worse_at()) == 0
    # The other way round the slow arm is flagged as worse.
    assert len(compare_paired(slow, fast, n_boot=50).worse_at(simultaneous=True)) > 0


def test_curve_area_is_the_mean_error_over_the_label_range():
    assert curve_area(np.array([10, 20, 30]), np.array([0.4, 0.2, 0.2])) == pytest.approx((0.3 * 10 + 0.2 * 10) / 20)


def test_compare_paired_refuses_unpaired_seeds():
    rng = np.random.default_rng(3)
    a, b = noisy_curves("random", rng, 5), noisy_curves("random", rng, 4)
    with pytest.raises(ValueError, match="same seeds"):
        compare_paired(a, b)


# --- volunteers -----------------------------------------------------------------------------------


def test_volunteer_confusion_depends_on_class_and_ambiguity():
    model = VolunteerModel(n_volunteers=200)
    confusion = volunteer_confusions(model, 2, np.random.default_rng(0))
    assert confusion.shape == (200, 2, 2, 2)
    np.testing.assert_allclose(confusion.sum(axis=-1), 1)
    clear_accuracy = confusion[:, 0, [0, 1], [0, 1]]
    ambiguous_accuracy = confusion[:, 1, [0, 1], [0, 1]]
    assert (clear_accuracy[:, 0] < clear_accuracy[:, 1]).all()  # FRI is harder than FRII
    assert ambiguous_accuracy.mean() < clear_accuracy.mean() - 0.2
    assert clear_accuracy.std() > 0.03  # a spread of skills


def test_crowd_consensus_is_much_worse_on_ambiguous_sources():
    rng = np.random.default_rng(1)
    model = VolunteerModel()
    truth = rng.integers(0, 2, 4000)
    ambiguous = rng.random(4000) < 0.5
    consensus = crowd_consensus(truth, ambiguous, volunteer_confusions(model, 2, rng), 3, rng)
    wrong = consensus != truth
    assert wrong[ambiguous].mean() > 0.25 > 0.12 > wrong[~ambiguous].mean()
    assert wrong[~ambiguous & (truth == 0)].mean() > wrong[~ambiguous & (truth == 1)].mean()


def test_volunteer_model_refuses_bad_ranges():
    with pytest.raises(ValueError, match="skill"):
        VolunteerModel(skill=(0.9, 0.5))
    with pytest.raises(ValueError, match="class_difficulty"):
        volunteer_confusions(VolunteerModel(class_difficulty=(1.0,)), 2, np.random.default_rng(0))


# --- exploration and the guarded arm --------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 6))
    x[:, 0] += np.where(y == 1, 2.0, -2.0)
    ambiguous = rng.random(400) < 0.2
    return x[:300], y[:300], x[300:], y[300:], ambiguous[:300]


def test_guarded_arm_explores_and_records_the_policy_it_ran(blobs):
    pool, labels, test, test_labels, ambiguous = blobs
    config = SimulationConfig(
        "guarded",
        cold_start="random",
        budget=80,
        exploration=0.2,
        guard_every=20,
        min_audit=20,
        noise=VolunteerModel(),
        classifier=PLAIN,
    )
    curve = simulate(pool, labels, test, test_labels, config, seed=0, ambiguous=ambiguous)
    assert len(curve.policies) == len(curve.n_labels) and curve.policies[0] == "random"
    assert set(curve.policies) <= {"random", "least_confident", "density_weighted"}
    assert len(np.unique(curve.queried)) == 80
    assert curve.test_error[-1] < 0.2


def test_independent_streams_ask_about_different_sources(blobs):
    pool, labels, test, test_labels, _ = blobs
    first = SimulationConfig("random", cold_start="random", budget=40, classifier=PLAIN)
    second = SimulationConfig("random", cold_start="random", budget=40, classifier=PLAIN, stream=1)
    a = simulate(pool, labels, test, test_labels, first, seed=0)
    b = simulate(pool, labels, test, test_labels, second, seed=0)
    again = simulate(pool, labels, test, test_labels, first, seed=0)
    assert np.array_equal(a.queried, again.queried)
    assert len(np.intersect1d(a.queried, b.queried)) < 20


def test_exploration_share_is_served_at_random(blobs):
    pool, labels, test, test_labels, _ = blobs
    config = SimulationConfig("least_confident", budget=60, exploration=0.3, classifier=PLAIN)
    plain = SimulationConfig("least_confident", budget=60, classifier=PLAIN)
    explored = simulate(pool, labels, test, test_labels, config, seed=0)
    greedy = simulate(pool, labels, test, test_labels, plain, seed=0)
    # Uncertainty sampling alone never asks about sources far from the boundary; exploration does.
    distance = np.abs(pool[:, 0])
    assert distance[explored.queried[10:]].max() > distance[greedy.queried[10:]].max()
    with pytest.raises(ValueError, match="exploration"):
        SimulationConfig("margin", exploration=1.5)
