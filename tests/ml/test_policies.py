import numpy as np
import pytest
from modAL.batch import uncertainty_batch_sampling
from modAL.models import ActiveLearner
from sklearn.linear_model import LogisticRegression

from ml.errors import DataError, EmptyDataError, NonFiniteError, ShapeMismatchError
from ml.policies import (
    POLICIES,
    PolicyConfigError,
    disagreement_scores,
    policy_inputs,
    policy_parameters,
    rank,
    ranked_batch,
    typical_clusters,
    uncertainty_scores,
)

UNCERTAINTY_POLICIES = ["least_confident", "margin", "entropy"]
COMMITTEE_POLICIES = ["vote_entropy", "kl_disagreement", "bald"]


def _proba(p_second: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - p_second, p_second])


@pytest.fixture(scope="module")
def pool() -> dict[str, np.ndarray]:
    """60 sources in 4 dims, a logistic model's probabilities and a 5-member committee."""
    rng = np.random.default_rng(7)
    embeddings = rng.normal(size=(60, 4))
    labels = (embeddings[:, 0] + 0.7 * rng.normal(size=60) > 0).astype(int)
    labelled = np.zeros(60, dtype=bool)
    labelled[[0, 1, 2, 3, 5, 8, 13, 21, 34, 55]] = True
    model = LogisticRegression().fit(embeddings[labelled], labels[labelled])
    committee = np.stack(
        [
            LogisticRegression(C=c).fit(embeddings[labelled], labels[labelled]).predict_proba(embeddings)
            for c in (0.01, 0.1, 1, 10, 100)
        ]
    )
    return {
        "embeddings": embeddings,
        "labels": labels,
        "labelled_mask": labelled,
        "probabilities": model.predict_proba(embeddings),
        "committee_probabilities": committee,
    }


def _inputs(pool: dict[str, np.ndarray], **changes: object) -> dict[str, object]:
    inputs = {k: pool[k] for k in ("embeddings", "probabilities", "committee_probabilities", "labelled_mask")}
    inputs.update(changes)
    return inputs


# --- the contract every policy keeps -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_policy_returns_distinct_unlabelled_indices(pool, name):
    picked = rank(name, batch_size=12, seed=3, **_inputs(pool))
    assert picked.dtype == np.int64
    assert len(picked) == 12
    assert len(set(picked.tolist())) == 12
    assert not pool["labelled_mask"][picked].any()
    assert picked.min() >= 0 and picked.max() < 60


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_policy_is_deterministic_for_a_seed(pool, name):
    first = rank(name, batch_size=8, seed=11, **_inputs(pool))
    second = rank(name, batch_size=8, seed=11, **_inputs(pool))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_policy_returns_every_candidate_when_fewer_than_the_batch(pool, name):
    labelled = np.ones(60, dtype=bool)
    labelled[[4, 17, 42]] = False
    picked = rank(name, batch_size=10, seed=0, **_inputs(pool, labelled_mask=labelled))
    assert sorted(picked.tolist()) == [4, 17, 42]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_policy_returns_nothing_when_everything_is_labelled(pool, name):
    picked = rank(name, batch_size=5, seed=0, **_inputs(pool, labelled_mask=np.ones(60, dtype=bool)))
    assert picked.shape == (0,)


def test_random_depends_on_the_seed(pool):
    orders = {tuple(rank("random", labelled_mask=pool["labelled_mask"], batch_size=10, seed=s)) for s in range(5)}
    assert len(orders) == 5


# --- uncertainty -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNCERTAINTY_POLICIES)
def test_uncertainty_ranks_a_coin_flip_above_a_sure_thing(name):
    probabilities = _proba(np.array([0.01, 0.99, 0.5, 0.2, 0.7, 0.01]))
    picked = rank(name, probabilities=probabilities, labelled_mask=np.zeros(6, dtype=bool), batch_size=6, seed=0)
    assert picked[0] == 2
    assert set(picked[-2:].tolist()) <= {0, 1, 5}


def test_uncertainty_scores_follow_the_textbook_definitions():
    probabilities = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(uncertainty_scores(probabilities, "least_confident"), [0.5, 0.0])
    np.testing.assert_allclose(uncertainty_scores(probabilities, "margin"), [0.8, 0.0])
    expected = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2))
    np.testing.assert_allclose(uncertainty_scores(probabilities, "entropy"), [expected, 0.0])


def test_a_labelled_source_is_never_picked_however_uncertain():
    probabilities = _proba(np.array([0.5, 0.9, 0.95]))
    picked = rank(
        "margin", probabilities=probabilities, labelled_mask=np.array([True, False, False]), batch_size=1, seed=0
    )
    assert picked.tolist() == [1]


# --- committees -----------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", COMMITTEE_POLICIES)
def test_committee_disagreement_is_zero_when_members_agree(measure):
    member = _proba(np.array([0.1, 0.5, 0.8, 0.97]))
    scores = disagreement_scores(np.stack([member] * 4), measure)
    np.testing.assert_allclose(scores, 0.0, atol=1e-12)


@pytest.mark.parametrize("name", COMMITTEE_POLICIES)
def test_committee_policies_put_the_disputed_source_first(name):
    agreeing = _proba(np.array([0.9, 0.1, 0.8, 0.2]))
    disputing = agreeing.copy()
    disputing[2] = [0.95, 0.05]  # one member flips its vote on source 2
    committee = np.stack([agreeing, agreeing, disputing, agreeing, disputing])
    picked = rank(name, committee_probabilities=committee, labelled_mask=np.zeros(4, dtype=bool), batch_size=1, seed=0)
    assert picked.tolist() == [2]


def test_bald_prefers_confident_disagreement_to_shared_ambiguity():
    # Source 0: members sure but opposite (a label settles it). Source 1: all members 50/50.
    committee = np.array([[[0.99, 0.01], [0.5, 0.5]], [[0.01, 0.99], [0.5, 0.5]]])
    scores = disagreement_scores(committee, "bald")
    assert scores[0] > 0.5 and scores[1] == pytest.approx(0.0, abs=1e-12)


# --- ranked batch ---------------------------------------------------------------------------------


def test_ranked_batch_matches_modal_uncertainty_batch_sampling():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(300, 8))
    labels = (embeddings[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    labelled = np.zeros(300, dtype=bool)
    labelled[rng.choice(300, 20, replace=False)] = True
    model = LogisticRegression().fit(embeddings[labelled], labels[labelled])
    learner = ActiveLearner(estimator=model)
    learner.X_training = embeddings[labelled]  # teach() fails on scikit-learn 1.9; set the labelled rows directly
    unlabelled = np.flatnonzero(~labelled)
    expected, _ = uncertainty_batch_sampling(learner, embeddings[unlabelled], n_instances=15)
    picked = ranked_batch(
        probabilities=model.predict_proba(embeddings),
        embeddings=embeddings,
        labelled_mask=labelled,
        batch_size=15,
        seed=0,
    )
    np.testing.assert_array_equal(picked, unlabelled[expected])


def test_ranked_batch_spreads_a_batch_over_distant_groups():
    # Two tight groups of equally uncertain sources far apart, plus labelled sources elsewhere.
    rng = np.random.default_rng(1)
    groups = np.vstack([rng.normal(0, 0.01, (10, 2)) + [50, 0], rng.normal(0, 0.01, (10, 2)) + [0, 50]])
    embeddings = np.vstack([groups, [[0.0, 0.0], [1.0, 1.0]]])
    labelled = np.zeros(22, dtype=bool)
    labelled[20:] = True
    probabilities = _proba(np.full(22, 0.5))
    picked = ranked_batch(
        probabilities=probabilities, embeddings=embeddings, labelled_mask=labelled, batch_size=2, seed=0
    )
    assert {int(p) // 10 for p in picked} == {0, 1}


def test_ranked_batch_candidates_restrict_picks_to_the_most_uncertain(pool):
    picked = rank("ranked_batch", batch_size=5, seed=0, candidates=8, **_inputs(pool))
    unlabelled = np.flatnonzero(~pool["labelled_mask"])
    scores = uncertainty_scores(pool["probabilities"][unlabelled])
    eight_most_uncertain = set(unlabelled[np.argsort(-scores)[:8]].tolist())
    assert set(picked.tolist()) <= eight_most_uncertain


def test_ranked_batch_starts_without_labels_and_reads_a_memory_map(pool, tmp_path):
    path = tmp_path / "embeddings.npy"
    np.save(path, pool["embeddings"].astype(np.float32))
    memmap = np.load(path, mmap_mode="r")
    picked = ranked_batch(
        probabilities=pool["probabilities"],
        embeddings=memmap,
        labelled_mask=np.zeros(60, dtype=bool),
        batch_size=6,
        seed=0,
    )
    assert len(set(picked.tolist())) == 6


# --- cold start and diversity -------------------------------------------------------------------------


def _blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 100, (len(sizes), 6))
    blob = np.repeat(np.arange(len(sizes)), sizes)
    return centres[blob] + rng.normal(0, 1, (len(blob), 6)), blob


def test_cold_start_picks_one_source_from_every_blob():
    embeddings, blob = _blobs([40, 25, 15, 10, 5])
    picked = typical_clusters(
        embeddings=embeddings, labelled_mask=np.zeros(len(blob), dtype=bool), batch_size=5, seed=0
    )
    assert sorted(blob[picked].tolist()) == [0, 1, 2, 3, 4]


def test_cold_start_skips_blobs_that_already_have_labels():
    embeddings, blob = _blobs([30, 30, 30, 30])
    labelled = np.zeros(len(blob), dtype=bool)
    labelled[np.flatnonzero(blob == 0)[:3]] = True
    labelled[np.flatnonzero(blob == 2)[:1]] = True
    picked = typical_clusters(embeddings=embeddings, labelled_mask=labelled, batch_size=2, seed=0)
    assert sorted(blob[picked].tolist()) == [1, 3]


def test_cold_start_picks_a_typical_source_not_an_outlier():
    rng = np.random.default_rng(2)
    embeddings = np.vstack([rng.normal(0, 1, (50, 3)), [[0.0, 0.0, 0.0]]])
    picked = typical_clusters(embeddings=embeddings, labelled_mask=np.zeros(51, dtype=bool), batch_size=1, seed=0)
    assert np.linalg.norm(embeddings[picked[0]]) < 1.0


def test_diverse_uncertainty_takes_uncertain_sources_from_different_groups():
    embeddings, blob = _blobs([20, 20, 20])
    p_second = np.where(blob == 2, 0.99, 0.5)  # blob 2 is certain
    p_second[blob == 0] = 0.49  # blob 0 is the very most uncertain
    picked = rank(
        "diverse_uncertainty",
        probabilities=_proba(p_second),
        embeddings=embeddings,
        labelled_mask=np.zeros(60, dtype=bool),
        batch_size=2,
        seed=0,
        prefilter=20,
    )
    assert sorted(blob[picked].tolist()) == [0, 1]


def test_density_weighting_prefers_a_typical_uncertain_source_to_an_outlier():
    rng = np.random.default_rng(3)
    embeddings = np.vstack([rng.normal(0, 1, (40, 3)), [[30.0, 30.0, 30.0]]])
    p_second = np.full(41, 0.95)
    p_second[[0, 40]] = 0.5  # equally uncertain: one in the crowd, one far away
    picked = rank(
        "density_weighted",
        probabilities=_proba(p_second),
        embeddings=embeddings,
        labelled_mask=np.zeros(41, dtype=bool),
        batch_size=2,
        seed=0,
    )
    assert picked[0] == 0
    plain = rank(
        "least_confident", probabilities=_proba(p_second), labelled_mask=np.zeros(41, dtype=bool), batch_size=2, seed=0
    )
    assert set(plain.tolist()) == {0, 40}


# --- the registry -------------------------------------------------------------------------------------


def test_registry_says_what_each_policy_needs():
    assert policy_inputs("random") == frozenset()
    assert policy_inputs("margin") == {"probabilities"}
    assert policy_inputs("bald") == {"committee_probabilities"}
    assert policy_inputs("ranked_batch") == {"probabilities", "embeddings"}
    assert policy_inputs("typical_clusters") == {"embeddings"}
    assert policy_parameters("ranked_batch") == {"candidates": None}
    assert policy_parameters("margin") == {}


def test_rank_passes_stored_parameters_to_the_policy(pool):
    by_name = rank("ranked_batch", batch_size=4, seed=0, candidates=6, **_inputs(pool))
    direct = ranked_batch(
        probabilities=pool["probabilities"],
        embeddings=pool["embeddings"],
        labelled_mask=pool["labelled_mask"],
        batch_size=4,
        seed=0,
        candidates=6,
    )
    np.testing.assert_array_equal(by_name, direct)


# --- clear errors ------------------------------------------------------------------------------------


def test_unknown_policy_names_the_choices(pool):
    with pytest.raises(PolicyConfigError, match="unknown active-learning policy 'uncertain'.*margin"):
        rank("uncertain", batch_size=1, seed=0, **_inputs(pool))


def test_missing_input_is_named():
    with pytest.raises(PolicyConfigError, match="'bald' needs committee_probabilities"):
        rank("bald", labelled_mask=np.zeros(3, dtype=bool), batch_size=1, seed=0)


def test_unknown_parameter_is_named(pool):
    with pytest.raises(PolicyConfigError, match=r"no parameter\(s\) \['beta'\]; it takes none"):
        rank("margin", batch_size=1, seed=0, beta=2.0, **_inputs(pool))


@pytest.mark.parametrize("name", ["margin", "bald", "ranked_batch", "typical_clusters"])
def test_nan_inputs_are_refused(pool, name):
    bad = {
        "probabilities": pool["probabilities"].copy(),
        "committee_probabilities": pool["committee_probabilities"].copy(),
        "embeddings": pool["embeddings"].copy(),
    }
    bad["probabilities"][7, 0] = np.nan
    bad["committee_probabilities"][1, 7, 0] = np.nan
    bad["embeddings"][7, 2] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        rank(name, labelled_mask=pool["labelled_mask"], batch_size=3, seed=0, **bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probabilities": np.full((59, 2), 0.5)}, "probabilities have 59 rows but labelled_mask has 60"),
        ({"embeddings": np.zeros((61, 4))}, "embeddings have 61 rows but labelled_mask has 60"),
        ({"committee_probabilities": np.full((60, 2), 0.5)}, "must be 3-D"),
        ({"labelled_mask": np.zeros((60, 1), dtype=bool)}, "must be 1-D"),
    ],
)
def test_shape_mismatches_are_refused(pool, changes, message):
    name = "bald" if "committee_probabilities" in changes else "ranked_batch"
    with pytest.raises(ShapeMismatchError, match=message):
        rank(name, batch_size=3, seed=0, **_inputs(pool, **changes))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_an_empty_pool_is_refused(name):
    inputs = {
        "probabilities": np.empty((0, 2)),
        "embeddings": np.empty((0, 4)),
        "committee_probabilities": np.empty((3, 0, 2)),
    }
    with pytest.raises(EmptyDataError, match="empty"):
        rank(name, labelled_mask=np.zeros(0, dtype=bool), batch_size=3, seed=0, **inputs)


def test_errors_are_value_errors_with_readable_messages(pool):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        rank("random", labelled_mask=pool["labelled_mask"], batch_size=0, seed=0)
    with pytest.raises(DataError, match="labelled_mask must be boolean"):
        rank("random", labelled_mask=np.array([0, 1, 2]), batch_size=1, seed=0)
    with pytest.raises(DataError, match="sum to 1"):
        rank("margin", probabilities=np.full((3, 2), 0.9), labelled_mask=np.zeros(3, dtype=bool), batch_size=1, seed=0)
    assert issubclass(PolicyConfigError, ValueError)


def test_the_light_cold_start_name_is_the_policies_own() -> None:
    """The web pages read the name from ml.policy_names, without importing the policies."""
    from ml import policies
    from ml.policy_names import COLD_START_POLICY

    assert policies.COLD_START_POLICY == COLD_START_POLICY and COLD_START_POLICY in policies.POLICIES
