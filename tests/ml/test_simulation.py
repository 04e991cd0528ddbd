import numpy as np
import pytest

from bench import write_section
from ml.config import ClassifierConfig, get_config
from ml.errors import DataError, ShapeMismatchError
from ml.policies import PolicyConfigError
from ml.simulation import (
    Curve,
    SimulationConfig,
    VolunteerNoise,
    consensus_labels,
    image_features,
    label_schedule,
    simulate,
    summarise,
)

PLAIN = ClassifierConfig(calibrate_min_per_class=10**6)


@pytest.fixture(scope="module")
def blobs() -> dict[str, np.ndarray]:
    """Two linearly separable classes, each made of three sub-clusters, in 5 dims."""
    rng = np.random.default_rng(0)
    cluster = rng.integers(0, 6, 260)
    labels = (cluster % 2).astype(int)
    centres = rng.normal(0, 4, (6, 5))
    centres[:, 0] = np.where(np.arange(6) % 2, 12.0, -12.0)  # the classes sit either side of x0 = 0
    embeddings = centres[cluster] + rng.normal(0, 1, (260, 5))
    return {
        "pool": embeddings[:200],
        "pool_labels": labels[:200],
        "test": embeddings[200:],
        "test_labels": labels[200:],
    }


def _run(blobs, config: SimulationConfig, seed: int = 0) -> Curve:
    return simulate(blobs["pool"], blobs["pool_labels"], blobs["test"], blobs["test_labels"], config, seed=seed)


# --- schedule ----------------------------------------------------------------------------------


def test_schedule_hits_every_checkpoint_and_the_budget():
    schedule = label_schedule(10, 10, 291)
    assert schedule[0] == 10 and schedule[-1] == 291
    assert {36, 73, 145, 291} <= set(schedule)
    steps = np.diff(schedule)
    assert steps.min() >= 1 and steps.max() <= 10
    assert len(schedule) == 33


def test_schedule_refuses_a_budget_below_the_first_batch():
    with pytest.raises(ValueError, match="initial <= budget"):
        label_schedule(10, 10, 5)


# --- one campaign ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["margin", "bald", "ranked_batch", "diverse_uncertainty"])
def test_a_campaign_labels_distinct_sources_and_learns(blobs, policy):
    config = SimulationConfig(policy, budget=40, checkpoints=(25,), classifier=PLAIN)
    curve = _run(blobs, config)
    assert curve.n_labels.tolist() == [10, 20, 25, 30, 40]
    assert len(curve.queried) == 40 and len(set(curve.queried.tolist())) == 40
    # An oracle on separable classes: the labels are right and the classifier ends up good.
    assert curve.label_error.max() == 0.0
    np.testing.assert_array_equal(curve.given_labels, blobs["pool_labels"][curve.queried])
    assert curve.test_error[-1] <= 0.05


def test_a_campaign_is_reproducible_for_a_seed(blobs):
    config = SimulationConfig("vote_entropy", budget=30, checkpoints=(), classifier=PLAIN)
    first, second = _run(blobs, config, seed=4), _run(blobs, config, seed=4)
    np.testing.assert_array_equal(first.queried, second.queried)
    np.testing.assert_array_equal(first.test_error, second.test_error)
    other = _run(blobs, SimulationConfig("random", cold_start="random", budget=30, checkpoints=()), seed=5)
    assert not np.array_equal(first.queried, other.queried)


def test_random_baseline_does_not_use_the_cold_start_policy(blobs):
    random = _run(blobs, SimulationConfig("random", cold_start="random", budget=10, checkpoints=()), seed=1)
    typical = _run(blobs, SimulationConfig("random", budget=10, checkpoints=()), seed=1)
    assert set(random.queried.tolist()) != set(typical.queried.tolist())


def test_a_first_batch_of_one_class_falls_back_to_the_cold_start(blobs):
    # One label cannot train a classifier: the error is that of predicting its class everywhere.
    curve = _run(
        blobs, SimulationConfig("margin", initial=1, batch_size=5, budget=11, checkpoints=(), classifier=PLAIN)
    )
    only_class = curve.given_labels[0]
    assert curve.test_error[0] == pytest.approx(np.mean(blobs["test_labels"] != only_class))
    assert curve.n_labels.tolist() == [1, 6, 11]


def test_noisy_volunteers_give_each_source_the_same_answer_under_every_policy(blobs):
    noise = VolunteerNoise(error_range=(0.3, 0.45))
    margin = _run(blobs, SimulationConfig("margin", budget=60, checkpoints=(), noise=noise, classifier=PLAIN), seed=2)
    random = _run(
        blobs, SimulationConfig("random", cold_start="random", budget=60, checkpoints=(), noise=noise), seed=2
    )
    assert margin.label_error[-1] > 0  # the crowd does make mistakes
    answers = dict(zip(margin.queried.tolist(), margin.given_labels.tolist(), strict=True))
    shared = [
        (answers[q], a)
        for q, a in zip(random.queried.tolist(), random.given_labels.tolist(), strict=True)
        if q in answers
    ]
    assert shared and all(x == y for x, y in shared)


def test_majority_of_three_votes_has_the_expected_error_rate():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 20_000)
    consensus = consensus_labels(truth, np.full(10, 0.2), 3, 2, rng)
    # P(majority wrong) = 3 p^2 (1 - p) + p^3 = 0.104 for p = 0.2.
    assert np.mean(consensus != truth) == pytest.approx(0.104, abs=0.01)
    perfect = consensus_labels(truth[:100], np.zeros(5), 3, 2, rng)
    np.testing.assert_array_equal(perfect, truth[:100])


def test_wrong_answers_are_never_the_truth_with_many_classes():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, 500)
    consensus = consensus_labels(truth, np.full(3, 0.999), 1, 4, rng)
    assert np.mean(consensus == truth) < 0.01


# --- bad configurations and inputs -------------------------------------------------------------


def test_configuration_errors_are_clear():
    with pytest.raises(PolicyConfigError, match="unknown policy 'smart'"):
        SimulationConfig("smart")
    with pytest.raises(PolicyConfigError, match="needs a classifier"):
        SimulationConfig("margin", cold_start="margin")
    with pytest.raises(ValueError, match="error_range"):
        VolunteerNoise(error_range=(0.3, 0.1))


def test_input_errors_are_clear(blobs):
    config = SimulationConfig("margin", budget=30, checkpoints=())
    with pytest.raises(ShapeMismatchError, match="labels for 200 embeddings"):
        simulate(blobs["pool"], blobs["pool_labels"][:-1], blobs["test"], blobs["test_labels"], config, seed=0)
    with pytest.raises(ShapeMismatchError, match="test embeddings are 4 wide, pool embeddings 5"):
        simulate(blobs["pool"][:, :5], blobs["pool_labels"], blobs["test"][:, :4], blobs["test_labels"], config, seed=0)
    with pytest.raises(DataError, match="larger than the pool"):
        simulate(blobs["pool"][:20], blobs["pool_labels"][:20], blobs["test"], blobs["test_labels"], config, seed=0)
    nan_pool = blobs["pool"].copy()
    nan_pool[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        simulate(nan_pool, blobs["pool_labels"], blobs["test"], blobs["test_labels"], config, seed=0)


# --- summaries ---------------------------------------------------------------------------------


def _curve(errors: list[float], seed: int = 0) -> Curve:
    n = len(errors)
    return Curve("p", seed, np.arange(1, n + 1) * 10, np.array(errors), np.zeros(n), np.arange(n), np.zeros(n))


def test_summary_averages_seeds_and_finds_the_labels_needed():
    summary = summarise([_curve([0.5, 0.4, 0.3, 0.2, 0.2]), _curve([0.5, 0.2, 0.3, 0.2, 0.2], seed=1)])
    assert summary.error_at(30) == pytest.approx((0.3, 0.0))
    assert summary.error_at(20) == pytest.approx((0.3, 0.1))
    assert summary.n_seeds == 2
    # Smoothed over 3 rounds the curve reads 0.4, 0.367, 0.267, 0.233, 0.2.
    assert summary.labels_to_reach(0.25) == 40
    assert summary.labels_to_reach(0.3, window=1) == 20
    assert summary.labels_to_reach(0.1) is None
    with pytest.raises(KeyError, match="not a round"):
        summary.error_at(35)


def test_a_one_round_dip_does_not_count_as_reached():
    summary = summarise([_curve([0.5, 0.5, 0.2, 0.5, 0.5, 0.3, 0.3, 0.3])])
    assert summary.labels_to_reach(0.3) == 70


def test_curves_of_different_schedules_are_not_averaged():
    with pytest.raises(ValueError, match="different label schedules"):
        summarise([_curve([0.5, 0.4]), _curve([0.5, 0.4, 0.3])])


# --- features ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:150, :150]
    stack = []
    for _ in range(24):
        cy, cx = rng.uniform(50, 100, 2)
        stack.append(np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(3, 10) ** 2)))
    return np.round(255 * np.array(stack)).astype(np.uint8)


def test_pca_features_have_the_requested_width(images):
    features = image_features(images, "pca", pca_dim=8)
    assert features.shape == (24, 8) and np.isfinite(features).all()


def test_pca_can_be_fitted_without_the_test_images(images):
    pool_only = image_features(images, "pca", pca_dim=4, fit_rows=np.arange(16))
    everything = image_features(images, "pca", pca_dim=4)
    assert pool_only.shape == (24, 4)
    assert not np.allclose(np.abs(pool_only), np.abs(everything), atol=1e-3)


def test_encoder_features_come_from_a_saved_checkpoint(images, tmp_path):
    from ml.checkpoint import save_checkpoint
    from ml.embed import embed
    from ml.encoder import build_encoder

    encoder = build_encoder(get_config("tiny").encoder, seed=0)
    path = save_checkpoint(tmp_path / "encoder.pt", encoder)
    features = image_features(images, "encoder", checkpoint=path, device="cpu")
    assert features.shape == (24, 512) and features.dtype == np.float32
    np.testing.assert_allclose(features, embed(encoder, images, device="cpu"), atol=1e-5)
    dihedral = image_features(images, "encoder", checkpoint=path, device="cpu", views="dihedral")
    np.testing.assert_allclose(dihedral, embed(encoder, images, device="cpu", views="dihedral"), atol=1e-5)
    assert not np.allclose(dihedral, features, atol=1e-3)
    # The features feed a campaign like any others.
    labels = np.arange(24) % 2
    curve = simulate(
        features[:16],
        labels[:16],
        features[16:],
        labels[16:],
        SimulationConfig("margin", initial=4, batch_size=4, budget=12, checkpoints=()),
        seed=0,
    )
    assert curve.n_labels.tolist() == [4, 8, 12]


def test_feature_errors_are_clear(images):
    with pytest.raises(ValueError, match="needs a checkpoint"):
        image_features(images, "encoder")
    with pytest.raises(ValueError, match="unknown features 'pixels'"):
        image_features(images, "pixels")  # type: ignore[arg-type]


# --- the benchmark commands ----------------------------------------------------------------------


def test_write_section_replaces_its_own_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "benchmarks.md"
    write_section(path, "A", "first")
    write_section(path, "B", "other")
    write_section(path, "A", "second\n\n### sub\ntext")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "first" not in text and "second" in text and "### sub" in text and "other" in text
    assert text.index("## A") < text.index("## B")
    write_section(path, "A (variant)", "third", after="A")
    text = path.read_text()
    assert text.index("## A\n") < text.index("## A (variant)") < text.index("## B")


def test_simulation_command_writes_table_plot_and_section(shared_data, tmp_path, capsys):
    from bench.al_simulation import main

    markdown, plot = tmp_path / "benchmarks.md", tmp_path / "curves.png"
    archive = shared_data / "mirabest" / "MiraBest_F_batches.tar.gz"
    main(
        [
            "--data",
            str(archive),
            "--seeds",
            "2",
            "--budget",
            "40",
            "--policies",
            "margin",
            "--settings",
            "oracle",
            "--markdown",
            str(markdown),
            "--plot",
            str(plot),
        ]
    )
    printed = capsys.readouterr().out
    # Paired protocol: every row is an arm minus random, the null row (random vs random) always in.
    assert "Random's own mean error" in printed and "| margin |" in printed
    assert "| random (independent stream: null) |" in printed
    assert plot.stat().st_size > 10_000
    section = markdown.read_text()
    assert "## Active-learning simulation, paired statistic (pca, validation, oracle)" in section
    assert "2-core CPU, no GPU" in section and "146 validation sources" in section


def test_speed_command_times_every_policy(tmp_path, capsys):
    from bench.al_speed import CASES, main

    main(
        [
            "--rows",
            "3000",
            "--dim",
            "16",
            "--labelled",
            "60",
            "--repeats",
            "1",
            "--modal-picks",
            "1",
            "--markdown",
            str(tmp_path / "b.md"),
        ]
    )
    printed = capsys.readouterr().out
    for case in CASES:
        assert f"| {case.label} |" in printed
    assert "modAL uncertainty_batch_sampling" in (tmp_path / "b.md").read_text()
