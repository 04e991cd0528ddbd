import numpy as np
import pytest

from ml.consensus import Votes, dawid_skene, majority, posterior, prior_confusion


def test_majority_takes_the_most_common_and_breaks_ties_by_order() -> None:
    assert majority(["FRI", "FRII", "FRII"]) == ("FRII", pytest.approx(2 / 3))
    assert majority(["FRII", "FRI"]) == ("FRII", 0.5)
    with pytest.raises(ValueError, match="no votes"):
        majority([])


def simulate(rng, n_subjects=300, accuracies=(0.95, 0.9, 0.9, 0.55, 0.5)):
    truth = rng.integers(0, 2, n_subjects)
    subjects, volunteers, labels = [], [], []
    for v, accuracy in enumerate(accuracies):
        for s in range(n_subjects):
            correct = rng.random() < accuracy
            subjects.append(s)
            volunteers.append(v)
            labels.append(truth[s] if correct else 1 - truth[s])
    votes = Votes(np.array(subjects), np.array(volunteers), np.array(labels), n_subjects, len(accuracies), 2)
    return truth, votes


def test_dawid_skene_learns_who_to_trust() -> None:
    truth, votes = simulate(np.random.default_rng(0))
    post, confusions, _ = dawid_skene(votes)
    estimated_accuracy = confusions[:, [0, 1], [0, 1]].mean(axis=1)
    assert estimated_accuracy[0] > 0.9 and estimated_accuracy[4] < 0.65
    ds_error = (post.argmax(axis=1) != truth).mean()
    counts = np.zeros((len(truth), 2))
    np.add.at(counts, (votes.subjects, votes.labels), 1)
    majority_error = (counts.argmax(axis=1) != truth).mean()
    assert ds_error <= majority_error


def test_a_trusted_voice_outweighs_two_coin_flips() -> None:
    expert = np.array([[0.98, 0.02], [0.02, 0.98]])
    coin = np.array([[0.5, 0.5], [0.5, 0.5]])
    post = posterior([1, 0, 0], [expert, coin, coin], np.array([0.5, 0.5]))
    assert post[1] > 0.95


def test_the_prior_confusion_is_a_better_than_chance_stochastic_matrix() -> None:
    matrix = prior_confusion(4)
    assert np.allclose(matrix.sum(axis=1), 1)
    assert (np.diag(matrix) > matrix.max(axis=1, where=~np.eye(4, dtype=bool), initial=0)).all()


def test_votes_outside_their_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="labels must lie in"):
        Votes(np.array([0]), np.array([0]), np.array([3]), 1, 1, 2)


def test_assisted_decision_speeds_a_consensus_up_and_never_overturns_it() -> None:
    from ml.consensus import assisted_decision, assisted_posterior

    volunteers_fri = np.array([0.8, 0.2])
    # Agreement: 0.8 x 0.9 against 0.2 x 0.1 -> 0.97 for FRI, above a 0.95 threshold.
    best, combined = assisted_decision(volunteers_fri, np.array([0.9, 0.1]), 0.95)
    assert best == 0 and combined == pytest.approx(0.72 / 0.74)
    assert assisted_decision(volunteers_fri, np.array([0.9, 0.1]), 0.99)[0] == -1  # not beyond the threshold
    # A confident classifier against the volunteers: the combined class may be the classifier's,
    # but the volunteers' class differs, so nothing retires whatever the threshold.
    best, combined = assisted_decision(volunteers_fri, np.array([0.001, 0.999]), 0.5)
    assert best == -1 and combined > 0.99
    # No votes: the classifier alone (the caller allows this only where the workflow does).
    assert assisted_decision(None, np.array([0.2, 0.8]), 0.75) == (1, pytest.approx(0.8))
    # The class prior is counted once: uniform evidence from both sides leaves the prior.
    prior = np.array([0.25, 0.75])
    assert assisted_posterior(prior, prior, prior) == pytest.approx(prior)
    with pytest.raises(ValueError, match="threshold"):
        assisted_decision(volunteers_fri, np.array([0.9, 0.1]), 0.0)


def test_the_class_prior_at_strength_one_is_the_fit_and_at_zero_the_votes_alone() -> None:
    from ml.consensus import temper_prior

    confusions = [prior_confusion(3)] * 3
    prior = np.array([0.6, 0.37, 0.03])
    answers = [2, 2, 0]  # two votes for the rare class, one for the common one
    fitted = posterior(answers, confusions, prior)
    assert fitted.argmax() == 0  # the prior outweighs two weak votes for the rare class
    assert np.allclose(temper_prior(fitted, prior, 1.0), fitted)
    votes_alone = posterior(answers, confusions, np.full(3, 1 / 3))
    assert np.allclose(temper_prior(fitted, prior, 0.0), votes_alone)
    assert votes_alone.argmax() == 2
    # In between, the same as a posterior under the prior raised to the strength.
    half = prior**0.5 / (prior**0.5).sum()
    assert np.allclose(temper_prior(fitted[None], prior, 0.5)[0], posterior(answers, confusions, half))
    with pytest.raises(ValueError, match="strength"):
        temper_prior(fitted, prior, 1.5)


def test_a_class_prior_held_fixed_is_not_refitted() -> None:
    truth, votes = simulate(np.random.default_rng(1))
    _, _, fitted = dawid_skene(votes)
    _, _, held = dawid_skene(votes, class_prior=np.array([1.0, 3.0]))
    assert np.allclose(held, [0.25, 0.75])
    assert abs(fitted[0] - np.mean(truth == 0)) < 0.05  # fitted: the pool's share
    with pytest.raises(ValueError, match="class_prior"):
        dawid_skene(votes, class_prior=np.array([0.5, 0.0]))


def test_a_prior_weakened_while_fitting_is_the_uniform_prior_at_zero() -> None:
    _, votes = simulate(np.random.default_rng(2))
    weakened, _, _ = dawid_skene(votes, prior_strength=0.0)
    uniform, _, _ = dawid_skene(votes, class_prior=np.array([0.5, 0.5]))
    assert np.allclose(weakened, uniform, atol=1e-6)
    with pytest.raises(ValueError, match="prior_strength"):
        dawid_skene(votes, prior_strength=-0.1)
