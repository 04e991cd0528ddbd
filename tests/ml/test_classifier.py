import numpy as np
import pytest

from ml.classifier import fit_classifier, fit_ensemble
from ml.config import ClassifierConfig
from ml.errors import DataError, EmptyDataError, NonFiniteError, ShapeMismatchError, SingleClassError


def two_blobs(n_per_class: int, seed: int = 0, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, width)) * 2
    labels = np.repeat([0, 1], n_per_class)
    return (centres[labels] + rng.normal(size=(len(labels), width))).astype(np.float32), labels


def test_it_beats_chance_on_a_separable_toy_set():
    train_x, train_y = two_blobs(10, seed=0)
    test_x, test_y = two_blobs(200, seed=0)[0][::-1], two_blobs(200, seed=0)[1][::-1]
    classifier = fit_classifier(train_x, train_y)
    assert (classifier.predict(test_x) == test_y).mean() > 0.9


def test_probabilities_are_calibrated_when_every_class_has_enough_labels():
    x, y = two_blobs(30)
    classifier = fit_classifier(x, y, ClassifierConfig(calibrate_min_per_class=10))
    proba = classifier.predict_proba(x)
    assert classifier.calibrated
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    assert not fit_classifier(x[25:35], y[25:35], ClassifierConfig(calibrate_min_per_class=10)).calibrated


def test_columns_follow_the_sorted_class_labels():
    x, y = two_blobs(10)
    names = np.where(y == 1, "FRII", "FRI")
    classifier = fit_classifier(x, names)
    assert classifier.classes.tolist() == ["FRI", "FRII"]
    assert set(classifier.predict(x)) <= {"FRI", "FRII"}


def test_the_ensemble_gives_one_probability_array_per_member():
    x, y = two_blobs(8)
    pool, _ = two_blobs(20, seed=3)
    ensemble = fit_ensemble(x, y, n_members=4, seed=0)
    member_proba = ensemble.member_proba(pool)
    assert member_proba.shape == (4, 40, 2)
    np.testing.assert_allclose(member_proba.sum(axis=2), 1, rtol=1e-6)
    # Bootstrap resamples differ, so members disagree somewhere.
    assert not np.allclose(member_proba[0], member_proba[1])
    again = fit_ensemble(x, y, n_members=4, seed=0).member_proba(pool)
    assert np.array_equal(member_proba, again)


@pytest.mark.parametrize("fit", [fit_classifier, fit_ensemble])
def test_bad_training_sets_are_clear_errors(fit):
    x, y = two_blobs(5)
    with pytest.raises(EmptyDataError):
        fit(np.zeros((0, 16), dtype=np.float32), np.array([], dtype=int))
    with pytest.raises(SingleClassError, match="two classes"):
        fit(x, np.zeros(10, dtype=int))
    for bad in (np.nan, np.inf):
        poisoned = x.copy()
        poisoned[3, 2] = bad
        with pytest.raises(NonFiniteError):
            fit(poisoned, y)
    with pytest.raises(ShapeMismatchError):
        fit(x, y[:-1])
    with pytest.raises(ShapeMismatchError):
        fit(x[0], y)
    with pytest.raises(ValueError):  # DataError is a ValueError for generic callers
        fit(x, np.zeros(10, dtype=int))


def test_predicting_on_the_wrong_width_or_non_finite_rows_is_a_clear_error():
    x, y = two_blobs(5)
    classifier = fit_classifier(x, y)
    with pytest.raises(ShapeMismatchError, match="16"):
        classifier.predict_proba(x[:, :8])
    with pytest.raises(DataError):
        classifier.predict_proba(np.full((1, 16), np.nan))


def test_by_default_it_is_uncalibrated_and_does_not_lean_to_the_majority_class():
    x, y = two_blobs(60, seed=3, width=16)
    x = x + np.random.default_rng(3).normal(0, 3, x.shape).astype(np.float32)  # overlapping classes
    unbalanced = np.concatenate([np.flatnonzero(y == 0)[:8], np.flatnonzero(y == 1)])
    classifier = fit_classifier(x[unbalanced], y[unbalanced])
    assert not classifier.calibrated
    plain = fit_classifier(x[unbalanced], y[unbalanced], ClassifierConfig(class_weight=None))
    # Balanced weights predict the rare class more often than the unweighted fit does.
    assert (classifier.predict(x) == 0).sum() > (plain.predict(x) == 0).sum()


def test_projecting_wide_embeddings_is_the_same_model_up_to_max_dim_labels():
    """An L2-penalised linear model's weights lie in the span of its (centred) training rows,
    so projecting on the labelled rows' principal directions changes nothing until there are
    more labels than directions kept; past that it keeps max_dim directions."""
    rng = np.random.default_rng(3)
    # A few latent factors shared by many features, as in an encoder's embedding, plus noise.
    latent = rng.normal(size=(200, 4))
    wide = latent @ rng.normal(size=(4, 96)) + rng.normal(size=(200, 96))
    labels = (latent.sum(axis=1) > 0).astype(int)
    few = np.arange(40)
    full = fit_classifier(wide[few], labels[few], ClassifierConfig(max_iter=10_000))
    projected = fit_classifier(wide[few], labels[few], ClassifierConfig(max_iter=10_000, max_dim=48))
    assert len(projected.estimator) == 3 and len(full.estimator) == 2  # scaler, PCA, model
    np.testing.assert_allclose(projected.predict_proba(wide), full.predict_proba(wide), atol=2e-3)

    many = fit_classifier(wide, labels, ClassifierConfig(max_dim=16))
    assert many.estimator[1].n_components_ == 16 and many.n_features == 96
    assert (many.predict(wide) == labels).mean() > 0.8
    # Narrow embeddings are never projected.
    assert len(fit_classifier(wide[:, :8], labels, ClassifierConfig(max_dim=16)).estimator) == 2
