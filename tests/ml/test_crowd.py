"""The campaign crowd: heavy-tailed activity, own confusions, more errors and skips when ambiguous."""

from __future__ import annotations

import numpy as np
import pytest

from ml.crowd import CrowdConfig, make_crowd


def test_a_crowd_is_a_spread_of_volunteers_with_their_own_habits() -> None:
    crowd = make_crowd(CrowdConfig(n_volunteers=2000), n_classes=3, seed=4)

    assert crowd.confusions.shape == (2000, 2, 3, 3)
    np.testing.assert_allclose(crowd.confusions.sum(axis=-1), 1.0)
    assert crowd.quotas.min() >= 5 and crowd.quotas.max() <= 500
    assert 12 <= np.median(crowd.quotas) <= 30  # most label a handful ...
    assert np.mean(crowd.quotas >= 200) > 0.01  # ... a few label hundreds
    accuracy = np.diagonal(crowd.confusions, axis1=2, axis2=3).mean(axis=2)  # (volunteers, clear/ambiguous)
    assert accuracy[:, 1].mean() < accuracy[:, 0].mean() - 0.15  # much worse on ambiguous sources
    assert accuracy[:, 0].std() > 0.03  # skills differ
    assert np.all(crowd.skip[:, 1] >= crowd.skip[:, 0]) and crowd.skip[:, 1].mean() > 3 * crowd.skip[:, 0].mean()


def test_the_same_seed_gives_the_same_volunteers_and_answers() -> None:
    one, two = (make_crowd(CrowdConfig(n_volunteers=50), n_classes=4, seed=7) for _ in range(2))
    np.testing.assert_array_equal(one.confusions, two.confusions)
    np.testing.assert_array_equal(one.quotas, two.quotas)
    rng_one, rng_two = one.answers_rng(3), two.answers_rng(3)
    answers = [(one.respond(3, 1, False, rng_one), two.respond(3, 1, False, rng_two)) for _ in range(100)]
    assert all(a == b for a, b in answers)
    assert not np.array_equal(one.quotas, make_crowd(CrowdConfig(n_volunteers=50), 4, seed=8).quotas)


def test_answers_follow_the_volunteers_confusion() -> None:
    crowd = make_crowd(CrowdConfig(n_volunteers=3, skip_clear=0.0, skip_ambiguous=0.0), n_classes=2, seed=1)
    rng = crowd.answers_rng(0)
    answers = np.array([crowd.respond(0, 0, True, rng) for _ in range(4000)])
    assert abs(np.mean(answers == 0) - crowd.confusions[0, 1, 0, 0]) < 0.03


@pytest.mark.parametrize("bad", [{"sources_range": (0, 5)}, {"skip_clear": 0.6}, {"n_volunteers": 0}])
def test_a_bad_crowd_setting_is_refused(bad) -> None:
    with pytest.raises(ValueError):
        CrowdConfig(**bad)


def campaign(retire_after=3, n_volunteers=400, seed=0):
    from ml.crowd import simulate_campaign

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, 150)
    ambiguous = rng.random(150) < 0.3
    gold_ids = np.array([0, 1, 2, 3, 4, 5])
    crowd = make_crowd(CrowdConfig(n_volunteers=n_volunteers, sources_range=(5, 60)), 3, seed)
    return truth, gold_ids, simulate_campaign(crowd, truth, ambiguous, gold_ids, retire_after=retire_after, seed=seed)


def test_a_simulated_campaign_retires_every_subject_after_its_votes() -> None:
    truth, gold_ids, votes = campaign()
    is_gold = np.isin(votes.subjects, gold_ids)
    assert np.array_equal(votes.gold, is_gold) and votes.gold.any()
    counts = np.bincount(votes.subjects[~votes.gold], minlength=len(truth))
    open_ids = np.setdiff1d(np.arange(len(truth)), gold_ids)
    assert votes.retired[open_ids].all() and not votes.retired[gold_ids].any()
    assert (counts[open_ids] == 3).all()  # retired at its third vote, never voted on again
    pairs = set(zip(votes.subjects.tolist(), votes.volunteers.tolist(), strict=True))
    assert len(pairs) == len(votes.subjects)  # nobody answers the same source twice
    # Breadth first: the first 144 answers to open subjects cover nearly 144 different subjects
    # (only a volunteer who skipped the last unvoted ones moves on to a second vote).
    assert len(set(votes.subjects[~votes.gold][:144].tolist())) >= 140


def test_a_small_crowd_leaves_subjects_open_and_the_same_seed_repeats() -> None:
    _, _, few = campaign(n_volunteers=3)
    assert not few.retired.all()
    _, _, again = campaign(n_volunteers=3)
    assert np.array_equal(few.labels, again.labels) and np.array_equal(few.subjects, again.subjects)


def test_a_sequential_rule_retires_each_subject_at_the_first_vote_that_meets_it() -> None:
    from ml.retirement import RetirementRule

    rule = RetirementRule(retire_after=9, margin=3)
    truth, gold_ids, votes = campaign(retire_after=rule, n_volunteers=800)
    open_ids = np.setdiff1d(np.arange(len(truth)), gold_ids)
    assert votes.retired[open_ids].all()
    counts = []
    for subject in open_ids:
        answers = votes.labels[(votes.subjects == subject) & ~votes.gold].tolist()
        assert rule.reason(answers) and not any(rule.reason(answers[:k]) for k in range(len(answers)))
        counts.append(len(answers))
    # Clear sources retire on three agreeing votes; ambiguous ones need more.
    assert min(counts) == 3 and max(counts) > 3
