"""The guarded policy chooser and the unbiased accuracy estimate (ml.guard), on generated data."""

import numpy as np
import pytest

from ml.config import ClassifierConfig
from ml.errors import DataError
from ml.fastprobe import fit_probe
from ml.guard import accuracy_estimate, choose_policy, labels_ratio
from ml.policies import PolicyConfigError
from ml.simulation import SimulationConfig, simulate

PLAIN = ClassifierConfig(calibrate_min_per_class=10**9, class_weight=None)  # the fast probe fits unweighted


def ambiguous_blob(seed: int, n: int = 1000, d: int = 8, share: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Two classes split by x0, plus a dense blob of ambiguous sources whose labels are coin flips.

    Density-weighted uncertainty sampling is drawn to the blob (uncertain and dense) and
    spends its labels there; random sampling meets it only at its share of the pool.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] > 0).astype(int)
    blob = rng.random(n) < share
    x[blob] = rng.normal(0, 0.02, (blob.sum(), d))
    y[blob] = rng.integers(0, 2, blob.sum())
    return x, y


def far_from_the_boundary(seed: int, n: int = 1200, d: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Two classes with most sources far from the boundary: uncertainty sampling finds it faster."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, 0] = np.where(y == 1, 1, -1) * rng.exponential(1.5, n)
    return x, y


def campaign_labels(x, y, seed, n_labelled, n_audit):
    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(x), n_labelled, replace=False)
    audit = np.zeros(n_labelled, dtype=bool)
    audit[rng.choice(n_labelled, n_audit, replace=False)] = True
    return labelled, y[labelled], audit


# --- the accuracy estimate ------------------------------------------------------------------------


def test_accuracy_estimate_is_unbiased_and_covers_the_truth():
    """Audit labels drawn at random from a pool with known accuracy: mean right, ~95 % coverage."""
    rng = np.random.default_rng(0)
    pool_correct = rng.random(5000) < 0.72  # the classifier is right on 72 % of the pool
    truth = pool_correct.mean()
    estimates, covered = [], []
    for _ in range(2000):
        sample = pool_correct[rng.choice(len(pool_correct), 40, replace=False)]
        mean, low, high = accuracy_estimate(sample)
        estimates.append(mean)
        covered.append(low <= truth <= high)
    assert abs(np.mean(estimates) - truth) < 0.005
    assert 0.93 <= np.mean(covered) <= 0.975


def test_accuracy_estimate_on_actively_chosen_labels_would_be_biased():
    """Why the estimate must use random labels: the most uncertain sources are the hardest."""
    x, y = far_from_the_boundary(1)
    probe = fit_probe(x[:200], y[:200], PLAIN)
    correct = probe.predict(x) == y
    uncertain = np.argsort(np.abs(probe.predict_proba(x)[:, 1] - 0.5))[:100]
    random = np.random.default_rng(2).choice(len(x), 100, replace=False)
    truth = correct.mean()
    _, low, high = accuracy_estimate(correct[random])
    assert low <= truth <= high
    assert accuracy_estimate(correct[uncertain])[2] < truth


def test_accuracy_estimate_refuses_non_binary_input_and_handles_none():
    with pytest.raises(DataError, match="0/1"):
        accuracy_estimate(np.array([0, 1, 2]))
    mean, low, high = accuracy_estimate(np.array([], dtype=bool))
    assert np.isnan(mean) and (low, high) == (0.0, 1.0)
    assert accuracy_estimate(np.ones(10, dtype=bool))[2] == pytest.approx(1.0)


# --- the chooser ----------------------------------------------------------------------------------


def test_density_weighting_is_harmful_on_the_blob():
    """The premise of the fallback test: on the full pool the candidate really loses to random."""
    x, y = ambiguous_blob(0)
    pool, test = slice(0, 800), slice(800, None)
    errors = {}
    for policy, cold_start in (("random", "random"), ("density_weighted", "random")):
        config = SimulationConfig(policy, cold_start=cold_start, initial=10, batch_size=10, budget=60, classifier=PLAIN)
        curves = [simulate(x[pool], y[pool], x[test], y[test], config, seed=seed) for seed in range(3)]
        errors[policy] = np.mean([curve.test_error[-1] for curve in curves])
    assert errors["density_weighted"] > errors["random"] + 0.10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chooser_falls_back_to_random_when_the_candidate_loses(seed):
    x, y = ambiguous_blob(seed)
    labelled, labels, audit = campaign_labels(x, y, seed, 240, 80)
    choice = choose_policy(x, labelled, labels, audit, ["density_weighted"], seed=seed)
    assert choice.policy == "random"
    mean, low, high = choice.gains["density_weighted"]
    assert low <= 0 and low <= mean <= high
    assert choice.n_audit == 80
    assert "no policy is measurably better" in choice.reason and "80 unbiased labels" in choice.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chooser_picks_a_clearly_better_policy(seed):
    x, y = far_from_the_boundary(seed)
    labelled, labels, audit = campaign_labels(x, y, seed, 400, 150)
    choice = choose_policy(x, labelled, labels.astype(str), audit, ["least_confident"], seed=seed, repeats=3)
    assert choice.policy == "least_confident"
    assert choice.gains["least_confident"][1] > 0
    assert choice.reason.startswith("least_confident beat random by")


def test_chooser_runs_random_until_enough_audit_labels():
    x, y = far_from_the_boundary(0, n=300)
    labelled, labels, audit = campaign_labels(x, y, 0, 100, 12)
    choice = choose_policy(x, labelled, labels, audit, ["least_confident", "bald"], min_audit=20)
    assert choice.policy == "random" and choice.gains == {} and choice.n_audit == 12
    assert "12 so far" in choice.reason


def test_chooser_refuses_bad_inputs():
    x, y = far_from_the_boundary(0, n=300)
    labelled, labels, audit = campaign_labels(x, y, 0, 100, 30)
    with pytest.raises(PolicyConfigError, match="nonsense"):
        choose_policy(x, labelled, labels, audit, ["nonsense"])
    with pytest.raises(DataError, match="audit"):
        choose_policy(x, labelled, labels, audit.astype(int), ["margin"])
    with pytest.raises(DataError, match="outside"):
        choose_policy(x, labelled + 1000, labels, audit, ["margin"])


def test_labels_ratio_reads_the_random_curve():
    budgets = np.array([10, 20, 40, 80])
    accuracy = np.array([0.6, 0.7, 0.8, 0.9])
    assert labels_ratio(budgets, accuracy, 0.9) == pytest.approx(1.0)
    assert labels_ratio(budgets, accuracy, 0.8) == pytest.approx(0.5)
    assert labels_ratio(budgets, accuracy, 0.85) == pytest.approx(np.sqrt(40 * 80) / 80)
    assert labels_ratio(budgets, accuracy, 0.5) == pytest.approx(10 / 80)
    assert 1.0 < labels_ratio(budgets, accuracy, 0.95) <= 10.0


# --- the fast probe -------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d"), [(40, 5), (30, 64)])
def test_fast_probe_finds_the_classifier_optimum(n, d):
    from ml.classifier import fit_classifier

    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, 3, d) + 1
    y = np.where(x[:, 0] + rng.normal(0, 1, n) > 1, "FRII", "FRI")
    fast = fit_probe(x, y, PLAIN)
    slow = fit_classifier(x, y, ClassifierConfig(calibrate_min_per_class=10**9, class_weight=None, max_iter=10_000))
    new = rng.normal(size=(100, d)) + 1
    assert list(fast.classes) == ["FRI", "FRII"]
    np.testing.assert_allclose(fast.predict_proba(new), slow.predict_proba(new), atol=0.02)
    assert (fast.predict(new) == slow.predict(new)).mean() > 0.97


def test_fast_probe_projects_wide_embeddings_as_the_classifier_does():
    """With max_dim, both keep the labelled rows' leading principal directions: the same model."""
    from ml.classifier import fit_classifier

    rng = np.random.default_rng(5)
    latent, mixing = rng.normal(size=(160, 3)), rng.normal(size=(3, 80))
    x = latent[:120] @ mixing + rng.normal(size=(120, 80))
    y = np.where(latent[:120, 0] + rng.normal(0, 0.5, 120) > 0, "FRII", "FRI")
    config = ClassifierConfig(calibrate_min_per_class=10**9, class_weight=None, max_iter=10_000, max_dim=12)
    fast, slow = fit_probe(x, y, config), fit_classifier(x, y, config)
    new = latent[120:] @ mixing + rng.normal(size=(40, 80))
    np.testing.assert_allclose(fast.predict_proba(new), slow.predict_proba(new), atol=0.02)
    unprojected = fit_probe(x, y, PLAIN)
    assert np.abs(unprojected.predict_proba(new) - fast.predict_proba(new)).max() > 0.02  # it did project


def test_the_accuracy_interval_holds_its_estimate_at_zero_and_one() -> None:
    # At p = 0 or 1 the Wilson bound equals p only up to rounding; the interval must still contain p.
    for correct in (np.zeros(20, dtype=bool), np.ones(20, dtype=bool), np.zeros(7, dtype=bool)):
        mean, low, high = accuracy_estimate(correct)
        assert low <= mean <= high
        assert low >= 0.0 and high <= 1.0 and high - low > 0.05


def test_chooser_still_picks_the_better_policy_from_a_capped_replay_pool():
    """Replays that choose among a random 150 of the 400 labels (the cap that bounds the cost of a
    large campaign) still find the policy that is clearly better."""
    x, y = far_from_the_boundary(0)
    labelled, labels, audit = campaign_labels(x, y, 0, 400, 150)
    choice = choose_policy(x, labelled, labels, audit, ["least_confident"], seed=0, repeats=3, pool_max=150)
    assert choice.policy == "least_confident" and choice.gains["least_confident"][1] > 0
