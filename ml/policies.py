"""Active-learning policies: which unlabelled sources volunteers should see next.

Every policy is a pure function of arrays, (probabilities / embeddings, labelled mask,
batch size, seed) -> indices of unlabelled pool rows, most useful first, and gives the same
answer for the same seed. The caller (the labelling queue) materialises the ranking, so a
policy runs when the queue is refreshed, never per volunteer request.

Inputs, for a pool of N sources:
    probabilities: (N, C) class probabilities of the current classifier (rows of labelled
        sources are ignored).
    embeddings: (N, D) frozen encoder features.
    committee_probabilities: (M, N, C) probabilities of M committee members (e.g. the
        bootstrap ensemble of :func:`ml.classifier.fit_ensemble`).
    labelled_mask: (N,) bool, True where a source already has a (consensus) label.

Policies (``POLICIES``):
    ``random``: uniform sampling, the baseline every other policy is judged against.
    ``least_confident``, ``margin``, ``entropy``: uncertainty sampling, scored with modAL's
        ``classifier_uncertainty`` / ``classifier_margin`` / ``classifier_entropy``.
    ``ranked_batch``: ranked batch-mode uncertainty with diversity (Cardoso et al. 2017), the
        semantics of modAL's ``uncertainty_batch_sampling``, re-implemented incrementally
        because modAL's version rescans the whole labelled set for every pick.
    ``vote_entropy``, ``kl_disagreement``: query-by-committee, scored with modAL's
        ``vote_entropy`` / ``KL_max_disagreement``.
    ``bald``: mutual information between the label and the committee member (Houlsby et al.
        2011), the acquisition Walmsley et al. (2020) used for Galaxy Zoo.
    ``typical_clusters``: the cold start, needing no classifier (TypiClust-like, Hacohen et
        al. 2022): k-means with (labelled + batch) clusters, the most central source of the
        largest clusters that hold the fewest labels.
    ``diverse_uncertainty``: diverse mini-batch uncertainty (Zhdanov 2019): the most
        uncertain ``prefilter x batch`` sources by margin, clustered by uncertainty-weighted
        k-means into ``batch`` groups, the source nearest each centre.
    ``density_weighted``: least-confident uncertainty times k-NN density (Settles & Craven
        2008): uncertain sources that many others resemble, not outliers.

Use :func:`rank` to call a policy by name with parameters stored elsewhere (a database row).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import entr
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from ml.classifier import check_embeddings
from ml.errors import DataError, EmptyDataError, MLError, NonFiniteError, ShapeMismatchError
from ml.policy_names import COLD_START_POLICY  # noqa: F401 - re-exported: the cold-start policy's name

#: The array inputs a policy may take; everything else in its signature is a parameter.
INPUTS = ("probabilities", "embeddings", "committee_probabilities")

#: Rows gathered at a time when scanning embeddings, which bounds temporary memory
#: (8192 x 512 float32 = 16 MB per block) on survey-sized pools.
_CHUNK_ROWS = 8192
#: Values in a (block rows x reference rows) distance temporary: 64 MB in float32, whatever
#: the number of labelled sources the distances are measured to.
_BLOCK_VALUES = 2**24

#: Probabilities must sum to one per row within this tolerance (float32 softmax outputs).
_SUM_TOLERANCE = 1e-3


class PolicyConfigError(MLError, ValueError):
    """A policy was asked for by an unknown name, without its inputs, or with unknown parameters."""


# --- input checks ---------------------------------------------------------------------------


def _check_mask(labelled_mask: np.ndarray, batch_size: int) -> np.ndarray:
    mask = np.asarray(labelled_mask)
    if mask.ndim != 1:
        raise ShapeMismatchError(f"labelled_mask must be 1-D (N,), got shape {mask.shape}")
    if len(mask) == 0:
        raise EmptyDataError("the pool is empty: nothing to rank")
    if mask.dtype != np.bool_:
        # An integer mask is almost always a list of indices passed by mistake.
        raise DataError(f"labelled_mask must be boolean, got dtype {mask.dtype}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    return mask


def _check_probabilities(probabilities: np.ndarray, n_rows: int, name: str = "probabilities") -> np.ndarray:
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.ndim != 2:
        raise ShapeMismatchError(f"{name} must be 2-D (N, classes), got shape {proba.shape}")
    if len(proba) != n_rows:
        raise ShapeMismatchError(f"{name} have {len(proba)} rows but labelled_mask has {n_rows}")
    if proba.shape[1] < 1:
        raise ShapeMismatchError(f"{name} have no class columns")
    if not np.isfinite(proba).all():
        raise NonFiniteError(f"{int((~np.isfinite(proba)).any(axis=1).sum())} rows of {name} hold NaN or inf")
    if proba.min() < 0 or proba.max() > 1 or np.abs(proba.sum(axis=1) - 1).max() > _SUM_TOLERANCE:
        raise DataError(f"{name} must lie in [0, 1] and sum to 1 per row (pass predict_proba output)")
    return proba


def _check_committee(committee_probabilities: np.ndarray, n_rows: int) -> np.ndarray:
    committee = np.asarray(committee_probabilities, dtype=np.float64)
    if committee.ndim != 3:
        raise ShapeMismatchError(
            f"committee_probabilities must be 3-D (members, N, classes), got shape {committee.shape}"
        )
    if len(committee) == 0:
        raise EmptyDataError("the committee has no members")
    for member in committee:
        _check_probabilities(member, n_rows, "committee_probabilities")
    return committee


def _check_pool_embeddings(embeddings: np.ndarray, n_rows: int) -> np.ndarray:
    # np.asarray keeps a memory map as it is: survey-scale pools are never copied whole.
    matrix = check_embeddings(embeddings)
    if len(matrix) != n_rows:
        raise ShapeMismatchError(f"embeddings have {len(matrix)} rows but labelled_mask has {n_rows}")
    return matrix


# --- ranking helpers -----------------------------------------------------------------------------


def _rank_by_score(scores: np.ndarray, candidates: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """The ``batch_size`` candidates with the highest score; ties broken by a seeded shuffle.

    Equal scores are common (a committee of five has three possible vote entropies for two
    classes), and always taking the lowest index would bias the queue towards the order in
    which sources were ingested.
    """
    shuffled = np.random.default_rng(seed).permutation(len(candidates))
    order = np.argsort(-scores[shuffled], kind="stable")[:batch_size]
    return candidates[shuffled[order]].astype(np.int64)


class _GivenProbabilities:
    """A stand-in for a fitted modAL learner whose prediction for X is X itself.

    modAL's scoring functions only call ``predict_proba``; handing them the probability
    matrix as "X" reuses their exact definitions without a model or a refit.
    """

    def predict_proba(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities


class _GivenCommittee:
    """A stand-in for a modAL ``Committee`` whose X is the members' probabilities (N, M, C)."""

    def __init__(self, n_members: int, n_classes: int) -> None:
        self.n_members = n_members
        self.classes_ = np.arange(n_classes)

    def __len__(self) -> int:
        return self.n_members

    def __iter__(self) -> Any:
        return iter(range(self.n_members))

    def vote(self, member_probabilities: np.ndarray) -> np.ndarray:
        return member_probabilities.argmax(axis=2)

    def vote_proba(self, member_probabilities: np.ndarray) -> np.ndarray:
        return member_probabilities


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) along the last axis; 0 log 0 = 0."""
    return np.asarray(entr(probabilities).sum(axis=-1))


def _uncertainty(proba: np.ndarray, measure: str) -> np.ndarray:
    # modAL is imported where it scores: it imports torch, which the web process (that reads
    # this module's names, e.g. for the dashboard) must never load.
    from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty

    if measure == "least_confident":
        return np.asarray(classifier_uncertainty(_GivenProbabilities(), proba))
    if measure == "margin":
        return 1 - np.asarray(classifier_margin(_GivenProbabilities(), proba))
    if measure == "entropy":
        return np.asarray(classifier_entropy(_GivenProbabilities(), proba))
    raise PolicyConfigError(f"unknown uncertainty measure {measure!r}; choose least_confident, margin or entropy")


def _disagreement(committee: np.ndarray, measure: str) -> np.ndarray:
    from modAL.disagreement import KL_max_disagreement
    from modAL.disagreement import vote_entropy as modal_vote_entropy

    members = committee.transpose(1, 0, 2)  # modAL's layout: (N, members, classes)
    if measure == "vote_entropy":
        return np.asarray(modal_vote_entropy(_GivenCommittee(*committee.shape[::2]), members))
    if measure == "kl_disagreement":
        return np.asarray(KL_max_disagreement(_GivenCommittee(*committee.shape[::2]), members))
    if measure == "bald":
        return _entropy(committee.mean(axis=0)) - _entropy(committee).mean(axis=0)
    raise PolicyConfigError(f"unknown disagreement measure {measure!r}; choose vote_entropy, kl_disagreement or bald")


def uncertainty_scores(probabilities: np.ndarray, measure: str = "least_confident") -> np.ndarray:
    """Per-source uncertainty of a classifier, higher = more uncertain (modAL's definitions).

    Args:
        probabilities: (N, C) class probabilities.
        measure: ``"least_confident"`` (1 - max p), ``"margin"`` (1 - (p1 - p2) of the two
            most probable classes) or ``"entropy"`` (nats).

    Returns:
        float (N,).

    Raises:
        DataError: Not (N, C), NaN, or not probabilities.
        PolicyConfigError: Unknown measure.
    """
    proba = np.asarray(probabilities)
    return _uncertainty(_check_probabilities(proba, len(proba)), measure)


def disagreement_scores(committee_probabilities: np.ndarray, measure: str = "vote_entropy") -> np.ndarray:
    """Per-source disagreement of a committee, 0 where all members agree.

    Args:
        committee_probabilities: (M, N, C) members' class probabilities.
        measure: ``"vote_entropy"`` (entropy of the hard votes), ``"kl_disagreement"`` (largest
            KL divergence of a member from the mean) or ``"bald"`` (entropy of the mean minus
            mean entropy: the mutual information of label and member).

    Returns:
        float (N,).

    Raises:
        DataError: Not (M, N, C), NaN, or not probabilities.
        PolicyConfigError: Unknown measure.
    """
    committee = np.asarray(committee_probabilities)
    n_rows = committee.shape[1] if committee.ndim == 3 else -1
    return _disagreement(_check_committee(committee, n_rows), measure)


def _uncertain_candidates(
    probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, measure: str
) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled rows and their uncertainty, after checking the inputs."""
    mask = _check_mask(labelled_mask, batch_size)
    proba = _check_probabilities(probabilities, len(mask))
    candidates = np.flatnonzero(~mask)
    return candidates, _uncertainty(proba[candidates], measure)


def _disputed_candidates(
    committee_probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, measure: str
) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled rows and the committee's disagreement on them, after checking the inputs."""
    mask = _check_mask(labelled_mask, batch_size)
    committee = _check_committee(committee_probabilities, len(mask))
    candidates = np.flatnonzero(~mask)
    return candidates, _disagreement(committee[:, candidates], measure)


# --- policies ------------------------------------------------------------------------------------


def random_policy(*, labelled_mask: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """Uniformly random unlabelled sources: the baseline.

    Args:
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return (fewer when fewer are unlabelled).
        seed: Seed of the draw.

    Returns:
        int64 indices of unlabelled rows, in query order.
    """
    mask = _check_mask(labelled_mask, batch_size)
    candidates = np.flatnonzero(~mask)
    return _rank_by_score(np.zeros(len(candidates)), candidates, batch_size, seed)


def least_confident(*, probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """Unlabelled sources whose most probable class is least probable (1 - max p, highest first).

    Args:
        probabilities: (N, C) class probabilities of the pool.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Breaks ties between equal scores.

    Returns:
        int64 indices of unlabelled rows, most uncertain first.
    """
    candidates, scores = _uncertain_candidates(probabilities, labelled_mask, batch_size, "least_confident")
    return _rank_by_score(scores, candidates, batch_size, seed)


def margin(*, probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """Unlabelled sources with the smallest gap between the two most probable classes.

    Args:
        probabilities: (N, C) class probabilities of the pool.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Breaks ties between equal scores.

    Returns:
        int64 indices of unlabelled rows, most uncertain first.
    """
    candidates, scores = _uncertain_candidates(probabilities, labelled_mask, batch_size, "margin")
    return _rank_by_score(scores, candidates, batch_size, seed)


def entropy(*, probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """Unlabelled sources with the highest entropy of the class probabilities.

    Args:
        probabilities: (N, C) class probabilities of the pool.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Breaks ties between equal scores.

    Returns:
        int64 indices of unlabelled rows, most uncertain first.
    """
    candidates, scores = _uncertain_candidates(probabilities, labelled_mask, batch_size, "entropy")
    return _rank_by_score(scores, candidates, batch_size, seed)


def vote_entropy(
    *, committee_probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, seed: int
) -> np.ndarray:
    """Query-by-committee: entropy of the members' hard votes (modAL ``vote_entropy``).

    Args:
        committee_probabilities: (M, N, C) probabilities of each committee member.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Breaks ties (with M members there are few distinct vote entropies).

    Returns:
        int64 indices of unlabelled rows, most disputed first.
    """
    candidates, scores = _disputed_candidates(committee_probabilities, labelled_mask, batch_size, "vote_entropy")
    return _rank_by_score(scores, candidates, batch_size, seed)


def kl_disagreement(
    *, committee_probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, seed: int
) -> np.ndarray:
    """Query-by-committee: the largest KL divergence of a member from the consensus (modAL
    ``KL_max_disagreement``).

    Args:
        committee_probabilities: (M, N, C) probabilities of each committee member.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Breaks ties between equal scores.

    Returns:
        int64 indices of unlabelled rows, most disputed first.
    """
    candidates, scores = _disputed_candidates(committee_probabilities, labelled_mask, batch_size, "kl_disagreement")
    return _rank_by_score(scores, candidates, batch_size, seed)


def bald(*, committee_probabilities: np.ndarray, labelled_mask: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """BALD: entropy of the mean prediction minus the mean entropy of the members.

    The mutual information between a source's label and the committee member is high where
    members are individually confident but disagree, i.e. where a label would teach the
    model most; it ignores sources that every member finds ambiguous (noisy, and hard for
    volunteers too). Houlsby et al. (2011); Walmsley et al. (2020) for Galaxy Zoo.

    Args:
        committee_probabilities: (M, N, C) probabilities of each committee member.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Breaks ties between equal scores.

    Returns:
        int64 indices of unlabelled rows, most disputed first.
    """
    candidates, scores = _disputed_candidates(committee_probabilities, labelled_mask, batch_size, "bald")
    return _rank_by_score(scores, candidates, batch_size, seed)


def _working_dtype(matrix: np.ndarray) -> type[np.floating[Any]]:
    """float64 inputs stay exact (small pools, tests against modAL); all else is float32,
    which halves memory traffic on survey-sized pools at no cost to a ranking."""
    return np.float64 if matrix.dtype == np.float64 else np.float32


def _row_blocks(embeddings: np.ndarray, rows: np.ndarray, width: int = 1) -> Any:
    """Yield (slice into ``rows``, float block of those embedding rows), chunked.

    ``width`` is the number of columns of the per-row temporary the caller builds (e.g. one
    distance per reference row); blocks shrink so that temporary stays near 16M values.
    """
    step = max(256, min(_CHUNK_ROWS, _BLOCK_VALUES // max(width, 1)))
    for start in range(0, len(rows), step):
        part = slice(start, start + step)
        yield (
            part,
            np.asarray(embeddings[rows[part]], dtype=_working_dtype(embeddings)),
        )


def _products(matrix: np.ndarray, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix[rows] @ vector``, reading ``matrix`` in contiguous slices (no gathered copy)."""
    out = np.empty(len(matrix))
    for start in range(0, len(matrix), _CHUNK_ROWS):
        out[start : start + _CHUNK_ROWS] = matrix[start : start + _CHUNK_ROWS] @ vector
    return out[rows]


def _nearest_distances(embeddings: np.ndarray, rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each of ``embeddings[rows]`` to its nearest ``reference`` row."""
    reference = np.asarray(reference, dtype=_working_dtype(embeddings))
    reference_norms = np.einsum("ij,ij->i", reference, reference)
    out = np.empty(len(rows))
    for part, block in _row_blocks(embeddings, rows, width=len(reference)):
        # |a - b|^2 = |a|^2 - 2 a.b + |b|^2: one matrix product per block instead of an
        # (rows x reference x D) difference tensor.
        squared = np.einsum("ij,ij->i", block, block)[:, None] - 2 * block @ reference.T + reference_norms
        out[part] = np.sqrt(np.maximum(squared.min(axis=1), 0))
    return out


def ranked_batch(
    *,
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    labelled_mask: np.ndarray,
    batch_size: int,
    seed: int,
    candidates: int | None = None,
) -> np.ndarray:
    """Ranked batch-mode uncertainty with diversity (Cardoso et al. 2017; modAL semantics).

    Sources are picked one at a time by ``alpha * (1 - 1 / (1 + d)) + (1 - alpha) * u``, where
    ``u = 1 - max p`` is the uncertainty, ``d`` the Euclidean distance to the nearest labelled
    or already picked source and ``alpha = |unlabelled left| / |pool|``, exactly as modAL's
    ``uncertainty_batch_sampling``. modAL recomputes every distance to the growing labelled
    set for each pick; here the nearest distance is updated with the one new source, which
    gives the same ranking in O(batch x N x D) instead of O(batch x N x (labelled + batch) x D).

    With no labelled source, the first pick is the unlabelled source nearest the pool mean
    (the minimiser of the mean squared distance; modAL takes the minimum mean distance,
    which needs all N^2 distances).

    Args:
        probabilities: (N, C) class probabilities of the pool.
        embeddings: (N, D) features the diversity is measured in (a memory map is fine).
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Breaks ties in the candidate pre-selection; the greedy picks are deterministic.
        candidates: If given, only the ``candidates`` most uncertain unlabelled sources are
            considered (alpha still counts the whole pool). A speed-up for survey-scale pools
            with many labels, and an approximation: a distant but less uncertain source
            outside the candidates can no longer be picked.

    Returns:
        int64 indices of unlabelled rows, in pick order.
    """
    mask = _check_mask(labelled_mask, batch_size)
    proba = _check_probabilities(probabilities, len(mask))
    matrix = _check_pool_embeddings(embeddings, len(mask))
    if candidates is not None and (isinstance(candidates, bool) or candidates < 1):
        raise DataError(f"candidates must be a positive integer or None, got {candidates!r}")
    unlabelled = np.flatnonzero(~mask)
    labelled = np.flatnonzero(mask)
    uncertainty = _uncertainty(proba[unlabelled], "least_confident")
    pool = unlabelled
    if candidates is not None and candidates < len(unlabelled):
        # Keep index order within the candidates so argmax ties resolve as in modAL.
        keep = np.sort(_rank_by_score(uncertainty, np.arange(len(unlabelled)), candidates, seed))
        pool, uncertainty = unlabelled[keep], uncertainty[keep]
    n_picks = min(batch_size, len(pool))
    if n_picks == 0:
        return np.empty(0, dtype=np.int64)
    # Every pick needs one product of the candidates with the new pick. A few candidates are
    # copied out once; a large pool is read in place (a copy of 100k x 512 would double memory).
    if len(pool) <= len(matrix) // 4:
        source, source_rows = np.asarray(matrix[pool]), np.arange(len(pool))
    else:
        source, source_rows = matrix, pool
    picks: list[int] = []
    if len(labelled):
        nearest = _nearest_distances(matrix, pool, matrix[labelled])
    else:
        mean = np.zeros(matrix.shape[1])
        for _, block in _row_blocks(source, source_rows):
            mean += block.sum(axis=0)
        picks.append(int(np.argmin(_nearest_distances(source, source_rows, (mean / len(pool))[None, :]))))
        nearest = _nearest_distances(source, source_rows, source[source_rows[picks[0]]][None, :])
    pool_norms = np.empty(len(pool))
    for part, block in _row_blocks(source, source_rows):
        pool_norms[part] = np.einsum("ij,ij->i", block, block)
    taken = np.zeros(len(pool), dtype=bool)
    taken[picks] = True
    total = len(unlabelled) + len(labelled)
    while len(picks) < n_picks:
        alpha = (len(unlabelled) - len(picks)) / total
        scores = alpha * (1 - 1 / (1 + nearest)) + (1 - alpha) * uncertainty
        scores[taken] = -np.inf
        best = int(np.argmax(scores))
        picks.append(best)
        taken[best] = True
        chosen = np.asarray(source[source_rows[best]])
        squared = pool_norms - 2 * _products(source, source_rows, chosen) + float(chosen @ chosen)
        nearest = np.minimum(nearest, np.sqrt(np.maximum(squared, 0)))
    return pool[np.asarray(picks, dtype=np.int64)].astype(np.int64)


def _kmeans(
    matrix: np.ndarray,
    rows: np.ndarray,
    n_clusters: int,
    seed: int,
    max_fit_rows: int,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``matrix[rows]``; return (centres (K, D), label of every row in ``rows``).

    At most ``max_fit_rows`` rows (a seeded sample) are used to fit, the rest are only
    assigned: k-means on 100k x 512 would cost far more than a queue refresh may.
    """
    fit_rows = np.arange(len(rows))
    if len(rows) > max_fit_rows:
        fit_rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_fit_rows, replace=False))
    fit_matrix = np.asarray(matrix[rows[fit_rows]], dtype=np.float32)
    model = KMeans(n_clusters=min(n_clusters, len(fit_matrix)), n_init=1, random_state=seed)
    with warnings.catch_warnings():
        # Duplicated sources can leave fewer distinct clusters than asked for; an empty
        # cluster simply offers no source, so the warning carries no information here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(fit_matrix, sample_weight=None if weights is None else weights[fit_rows])
    labels = np.empty(len(rows), dtype=np.int64)
    for part, block in _row_blocks(matrix, rows):
        labels[part] = model.predict(block.astype(np.float32))
    return model.cluster_centers_, labels


def _distance_to_centre(matrix: np.ndarray, rows: np.ndarray, centres: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows))
    for part, block in _row_blocks(matrix, rows):
        out[part] = np.linalg.norm(block - centres[labels[part]], axis=1)
    return out


def typical_clusters(
    *,
    embeddings: np.ndarray,
    labelled_mask: np.ndarray,
    batch_size: int,
    seed: int,
    max_fit_rows: int = 20_000,
) -> np.ndarray:
    """Cold start without a classifier: cover the clusters of the pool with typical sources.

    The pool is split by k-means into (labelled + batch) clusters. Sources are then picked
    one at a time: from the largest cluster without any label while there is one, then from
    the cluster with the largest ``size / (1 + labels in it)``, taking the unlabelled source
    nearest its centre. With few labels, typical examples of the common morphologies teach a classifier
    more than outliers or ambiguous sources (Hacohen et al. 2022, "Active learning on a budget").

    Args:
        embeddings: (N, D) features.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Seed of k-means (and of the fitting sample on large pools).
        max_fit_rows: k-means is fitted on at most this many rows and assigns the rest.

    Returns:
        int64 indices of unlabelled rows, in pick order.

    The cost grows with the number of clusters, i.e. with the labels: this is a policy for
    the first batches (about 1.5 s for 100 picks from 100k x 512 with no labels), not for a
    queue that already holds thousands of labels.
    """
    mask = _check_mask(labelled_mask, batch_size)
    matrix = _check_pool_embeddings(embeddings, len(mask))
    unlabelled = np.flatnonzero(~mask)
    n_picks = min(batch_size, len(unlabelled))
    if n_picks == 0:
        return np.empty(0, dtype=np.int64)
    all_rows = np.arange(len(mask))
    centres, labels = _kmeans(matrix, all_rows, int(mask.sum()) + batch_size, seed, max_fit_rows)
    sizes = np.bincount(labels, minlength=len(centres)).astype(np.float64)
    served = np.bincount(labels[mask], minlength=len(centres)).astype(np.float64)
    distance = _distance_to_centre(matrix, unlabelled, centres, labels[unlabelled])
    # Per cluster, its unlabelled rows ordered by distance to the centre (most typical first).
    order = np.lexsort((distance, labels[unlabelled]))
    by_cluster = np.split(unlabelled[order], np.cumsum(np.bincount(labels[unlabelled], minlength=len(centres)))[:-1])
    next_in_cluster = np.zeros(len(centres), dtype=np.int64)
    available = np.array([len(rows) for rows in by_cluster])
    picks: list[int] = []
    while len(picks) < n_picks:
        # Clusters without any label first (largest first), then the most under-served.
        share = np.where(served == 0, sizes + len(mask), sizes / (1 + served))
        priority = np.where(next_in_cluster < available, share, -np.inf)
        cluster = int(np.argmax(priority))
        picks.append(int(by_cluster[cluster][next_in_cluster[cluster]]))
        next_in_cluster[cluster] += 1
        served[cluster] += 1
    return np.asarray(picks, dtype=np.int64)


def diverse_uncertainty(
    *,
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    labelled_mask: np.ndarray,
    batch_size: int,
    seed: int,
    prefilter: int = 10,
) -> np.ndarray:
    """Diverse mini-batch uncertainty (Zhdanov 2019): uncertain, and not all alike.

    The ``prefilter * batch_size`` unlabelled sources with the smallest margin are clustered
    by k-means into ``batch_size`` groups, each source weighted by its uncertainty
    (1 - margin); the source nearest each centre is returned, the most uncertain group first.
    Pure uncertainty sampling fills a batch with near-duplicates from one stretch of the
    decision boundary; this spreads the batch along it.

    Args:
        probabilities: (N, C) class probabilities of the pool.
        embeddings: (N, D) features the diversity is measured in.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Seed of k-means and of tie-breaking.
        prefilter: Candidates per returned source; 1 is plain margin sampling.

    Returns:
        int64 indices of unlabelled rows.
    """
    if isinstance(prefilter, bool) or prefilter < 1:
        raise DataError(f"prefilter must be a positive integer, got {prefilter!r}")
    candidates, uncertainty = _uncertain_candidates(probabilities, labelled_mask, batch_size, "margin")
    matrix = _check_pool_embeddings(embeddings, len(labelled_mask))
    n_picks = min(batch_size, len(candidates))
    if n_picks == 0:
        return np.empty(0, dtype=np.int64)
    shortlist = _rank_by_score(uncertainty, np.arange(len(candidates)), prefilter * batch_size, seed)
    # A small floor: k-means rejects an all-zero weight vector (every candidate certain).
    rows, weights = candidates[shortlist], uncertainty[shortlist] + 1e-6
    centres, labels = _kmeans(matrix, rows, n_picks, seed, max_fit_rows=len(rows), weights=weights)
    distance = _distance_to_centre(matrix, rows, centres, labels)
    picks = [int(np.flatnonzero(labels == c)[np.argmin(distance[labels == c])]) for c in np.unique(labels)]
    chosen = rows[picks]
    # k-means may merge duplicates into fewer clusters: top up with the next most uncertain.
    if len(chosen) < n_picks:
        rest = rows[~np.isin(rows, chosen)]
        chosen = np.concatenate([chosen, rest[: n_picks - len(chosen)]])
    chosen_uncertainty = uncertainty[np.searchsorted(candidates, chosen)]
    return chosen[np.argsort(-chosen_uncertainty, kind="stable")].astype(np.int64)


def _knn_density(matrix: np.ndarray, rows: np.ndarray, neighbours: int, reference_size: int, seed: int) -> np.ndarray:
    """1 / mean distance to the ``neighbours`` nearest of a seeded sample of the pool.

    A sample of ``reference_size`` rows stands in for the pool, so the cost is
    O(rows x reference x D) rather than quadratic in the pool; a row never counts itself.
    """
    n_rows = len(matrix)
    reference = np.arange(n_rows)
    if n_rows > reference_size:
        reference = np.sort(np.random.default_rng(seed).choice(n_rows, reference_size, replace=False))
    reference_matrix: np.ndarray = np.asarray(matrix[reference], dtype=_working_dtype(matrix))
    reference_norms = np.einsum("ij,ij->i", reference_matrix, reference_matrix)
    position_in_reference = np.full(n_rows, -1)
    position_in_reference[reference] = np.arange(len(reference))
    k = max(1, min(neighbours, len(reference) - 1))
    density = np.empty(len(rows))
    for part, block in _row_blocks(matrix, rows, width=len(reference)):
        squared = np.einsum("ij,ij->i", block, block)[:, None] - 2 * block @ reference_matrix.T + reference_norms
        own = position_in_reference[rows[part]]
        inside = np.flatnonzero(own >= 0)
        squared[inside, own[inside]] = np.inf
        nearest = np.partition(np.maximum(squared, 0), k - 1, axis=1)[:, :k]
        # A floor keeps exact duplicates (distance 0) from getting infinite density.
        density[part] = 1 / np.maximum(np.sqrt(nearest).mean(axis=1), 1e-12)
    return density


def density_weighted(
    *,
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    labelled_mask: np.ndarray,
    batch_size: int,
    seed: int,
    beta: float = 1.0,
    neighbours: int = 10,
    reference_size: int = 2000,
) -> np.ndarray:
    """Uncertainty weighted by density: uncertain sources that are typical of the pool.

    Score = (1 - max p) x density^beta (Settles & Craven 2008, "information density"), with
    density the inverse mean distance to the ``neighbours`` nearest pool sources. Plain
    uncertainty and committee disagreement are drawn to outliers (artefacts, unusual
    morphologies) whose labels say little about the rest of the pool; the density factor
    prefers uncertain sources that many others resemble.

    Args:
        probabilities: (N, C) class probabilities of the pool.
        embeddings: (N, D) features the density is measured in.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return.
        seed: Seed of the reference sample and of tie-breaking.
        beta: Weight of density against uncertainty; 0 is least-confident sampling.
        neighbours: Neighbours averaged for the density.
        reference_size: Pool rows sampled as neighbours (bounds the cost on large pools).

    Returns:
        int64 indices of unlabelled rows, best first.
    """
    if not np.isfinite(beta) or beta < 0:
        raise DataError(f"beta must be a finite number >= 0, got {beta!r}")
    if isinstance(neighbours, bool) or neighbours < 1 or isinstance(reference_size, bool) or reference_size < 2:
        raise DataError(f"need neighbours >= 1 and reference_size >= 2, got {neighbours!r}, {reference_size!r}")
    candidates, uncertainty = _uncertain_candidates(probabilities, labelled_mask, batch_size, "least_confident")
    matrix = _check_pool_embeddings(embeddings, len(labelled_mask))
    if len(candidates) == 0:
        return np.empty(0, dtype=np.int64)
    density = _knn_density(matrix, candidates, neighbours, reference_size, seed)
    # In logs: the product of a tiny uncertainty and a huge density stays finite and ordered.
    with np.errstate(divide="ignore"):
        scores = np.log(uncertainty) + beta * np.log(density)
    return _rank_by_score(scores, candidates, batch_size, seed)


PolicyFunction = Callable[..., np.ndarray]

#: Every policy by the name stored in the database.
POLICIES: dict[str, PolicyFunction] = {
    "random": random_policy,
    "least_confident": least_confident,
    "margin": margin,
    "entropy": entropy,
    "ranked_batch": ranked_batch,
    "vote_entropy": vote_entropy,
    "kl_disagreement": kl_disagreement,
    "bald": bald,
    "typical_clusters": typical_clusters,
    "diverse_uncertainty": diverse_uncertainty,
    "density_weighted": density_weighted,
}


def _signature(name: str) -> inspect.Signature:
    if name not in POLICIES:
        raise PolicyConfigError(f"unknown active-learning policy {name!r}; choose one of {sorted(POLICIES)}")
    return inspect.signature(POLICIES[name])


def policy_inputs(name: str) -> frozenset[str]:
    """The array inputs a policy needs, a subset of ``INPUTS``.

    The caller uses this to decide what to compute before a refresh (e.g. fit a committee
    only for ``vote_entropy``, ``kl_disagreement`` and ``bald``).

    Raises:
        PolicyConfigError: Unknown policy name.
    """
    return frozenset(p for p in _signature(name).parameters if p in INPUTS)


def policy_parameters(name: str) -> dict[str, Any]:
    """The tunable parameters of a policy and their defaults (e.g. ``{"prefilter": 10}``).

    Raises:
        PolicyConfigError: Unknown policy name.
    """
    fixed = {*INPUTS, "labelled_mask", "batch_size", "seed"}
    return {p.name: p.default for p in _signature(name).parameters.values() if p.name not in fixed}


def rank(
    policy_name: str,
    *,
    probabilities: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    labelled_mask: np.ndarray,
    batch_size: int,
    seed: int,
    committee_probabilities: np.ndarray | None = None,
    **params: Any,
) -> np.ndarray:
    """Run a policy by name: the one entry point for the labelling queue.

    Inputs the policy does not use are ignored, so a caller may pass everything it has.

    Args:
        policy_name: A key of ``POLICIES``.
        probabilities: (N, C) classifier probabilities of the pool, if available.
        embeddings: (N, D) pool embeddings, if available.
        labelled_mask: (N,) bool, True for sources that already have a label.
        batch_size: How many sources to return (fewer when fewer are unlabelled).
        seed: Makes the ranking reproducible.
        committee_probabilities: (M, N, C) committee members' probabilities, if available.
        **params: The policy's own parameters (see ``policy_parameters``), e.g. from a database row.

    Returns:
        int64 indices of unlabelled pool rows, best first, distinct.

    Raises:
        PolicyConfigError: Unknown policy, an input it needs is missing, or an unknown parameter.
        DataError: Unusable inputs: empty pool (``EmptyDataError``), NaN (``NonFiniteError``),
            disagreeing shapes (``ShapeMismatchError``), bad batch size. All are ValueErrors.
    """
    signature = _signature(policy_name)
    given = {
        "probabilities": probabilities,
        "embeddings": embeddings,
        "committee_probabilities": committee_probabilities,
    }
    needed = policy_inputs(policy_name)
    missing = sorted(name for name in needed if given[name] is None)
    if missing:
        raise PolicyConfigError(f"policy {policy_name!r} needs {', '.join(missing)}")
    known = policy_parameters(policy_name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise PolicyConfigError(
            f"policy {policy_name!r} has no parameter(s) {unknown}; it takes {sorted(known) or 'none'}"
        )
    arguments: dict[str, Any] = {name: given[name] for name in needed}
    arguments.update(labelled_mask=labelled_mask, batch_size=batch_size, seed=seed, **params)
    signature.bind(**arguments)  # a last guard: the registry and the signatures agree
    return POLICIES[policy_name](**arguments)
