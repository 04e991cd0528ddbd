"""How long a labelling-queue refresh takes at survey scale, policy by policy.

A synthetic pool of 100k x 512 float32 embeddings (a Gaussian mixture, the size of RGZ DR1
with a ResNet-18 encoder) with 1,000 labelled sources. Each refresh is timed end to end
as the queue would run it: the classifier's (or committee's) probabilities for the whole
pool, then the policy. Uncertainty and committee policies rank a queue of 1,000; diversity
policies pick a batch of 100. modAL's own ``uncertainty_batch_sampling`` is timed on the
same pool for a few picks and extrapolated, since a full batch of 100 takes minutes.

Run (from the project root)::

    .venv/bin/python -m bench.al_speed

Prints the table and writes the section "Active-learning speed" of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from bench import markdown_table, write_section
from ml.classifier import ClassifierEnsemble, FewLabelClassifier, fit_classifier, fit_ensemble
from ml.policies import policy_inputs, rank

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Active-learning speed"


@dataclass(frozen=True)
class Case:
    """One timed refresh: a policy, its batch and parameters."""

    label: str
    policy: str
    batch_size: int
    params: tuple[tuple[str, Any], ...] = ()


CASES = (
    Case("random", "random", 1000),
    Case("least_confident", "least_confident", 1000),
    Case("margin", "margin", 1000),
    Case("entropy", "entropy", 1000),
    Case("vote_entropy (5 members)", "vote_entropy", 1000),
    Case("kl_disagreement (5 members)", "kl_disagreement", 1000),
    Case("bald (5 members)", "bald", 1000),
    Case("ranked_batch (exact)", "ranked_batch", 100),
    Case("ranked_batch (candidates=5000)", "ranked_batch", 100, (("candidates", 5000),)),
    Case("diverse_uncertainty", "diverse_uncertainty", 100),
    Case("density_weighted", "density_weighted", 100),
    Case("typical_clusters (cold start, 0 labels)", "typical_clusters", 100),
)


def synthetic_pool(n_rows: int, dim: int, n_labelled: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings float32 (n, dim), binary labels, labelled mask): a 20-component mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (20, dim)).astype(np.float32)
    component = rng.integers(0, 20, n_rows)
    embeddings = rng.standard_normal((n_rows, dim), dtype=np.float32)
    embeddings += centres[component]
    direction = rng.normal(size=dim).astype(np.float32)
    labels = (embeddings @ direction + rng.normal(0, 5, n_rows) > 0).astype(np.int64)
    labelled = np.zeros(n_rows, dtype=bool)
    labelled[rng.choice(n_rows, n_labelled, replace=False)] = True
    return embeddings, labels, labelled


def policy_inputs_for(
    case: Case, embeddings: np.ndarray, classifier: FewLabelClassifier, committee: ClassifierEnsemble
) -> dict[str, Any]:
    """What the queue computes before calling the policy: the pool's (committee) probabilities."""
    inputs: dict[str, Any] = {"embeddings": embeddings}
    needs = policy_inputs(case.policy)
    if "probabilities" in needs:
        inputs["probabilities"] = classifier.predict_proba(embeddings)
    if "committee_probabilities" in needs:
        inputs["committee_probabilities"] = committee.member_proba(embeddings)
    return inputs


def run_policy(case: Case, labelled: np.ndarray, inputs: dict[str, Any]) -> np.ndarray:
    """The policy alone, on precomputed inputs."""
    # The cold start is timed as it is used: before the first label.
    mask = np.zeros_like(labelled) if case.policy == "typical_clusters" else labelled
    return rank(case.policy, labelled_mask=mask, batch_size=case.batch_size, seed=0, **inputs, **dict(case.params))


def refresh(
    case: Case,
    embeddings: np.ndarray,
    labelled: np.ndarray,
    classifier: FewLabelClassifier,
    committee: ClassifierEnsemble,
) -> np.ndarray:
    """One queue refresh as the live system does it: predictions for the pool, then the policy."""
    return run_policy(case, labelled, policy_inputs_for(case, embeddings, classifier, committee))


def measure(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall seconds over ``repeats`` runs, peak traced MB of one more run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    # Traced separately: tracemalloc slows allocation-heavy code a little. numpy reports its
    # buffers to tracemalloc, so the peak covers every array a refresh creates.
    tracemalloc.start()
    tracemalloc.reset_peak()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return float(np.median(times)), peak / 2**20


class _LearnerShim:
    """What modAL's ranked batch needs of a learner: probabilities and the labelled rows."""

    on_transformed = False

    def __init__(self, classifier: FewLabelClassifier, labelled_rows: np.ndarray) -> None:
        self.classifier = classifier
        self.X_training = labelled_rows

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(rows)


def modal_ranked_batch(
    embeddings: np.ndarray, labelled: np.ndarray, classifier: FewLabelClassifier, picks: int
) -> np.ndarray:
    from modAL.batch import uncertainty_batch_sampling

    learner = _LearnerShim(classifier, embeddings[labelled])
    indices, _ = uncertainty_batch_sampling(learner, embeddings[~labelled], n_instances=picks)
    return np.asarray(indices)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labelled", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modal-picks", type=int, default=3, help="picks timed for modAL's ranked batch (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--date", default="2026-11-27")
    parser.add_argument("--machine", default="2-core CPU, no GPU")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    embeddings, labels, labelled = synthetic_pool(args.rows, args.dim, args.labelled, seed=0)
    rows: list[list[str]] = []
    with threadpool_limits(args.threads):
        start = time.perf_counter()
        classifier = fit_classifier(embeddings[labelled], labels[labelled], seed=0)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        committee = fit_ensemble(embeddings[labelled], labels[labelled], n_members=5, seed=0)
        ensemble_s = time.perf_counter() - start
        for case in tqdm(CASES, desc="policies", file=sys.stderr):
            seconds, peak = measure(partial(refresh, case, embeddings, labelled, classifier, committee), args.repeats)
            inputs = policy_inputs_for(case, embeddings, classifier, committee)
            policy_s, policy_peak = measure(partial(run_policy, case, labelled, inputs), args.repeats)
            del inputs
            cells = [f"{seconds:.2f}", f"{policy_s:.2f}", f"{peak:.0f}", f"{policy_peak:.0f}"]
            rows.append([case.label, str(case.batch_size), *cells])
        if args.modal_picks > 0:
            seconds, peak = measure(partial(modal_ranked_batch, embeddings, labelled, classifier, args.modal_picks), 1)
            per_pick = seconds / args.modal_picks
            rows.append(
                [
                    f"modAL uncertainty_batch_sampling ({args.modal_picks} picks timed)",
                    str(args.modal_picks),
                    f"{seconds:.2f} (~{per_pick * 100:.0f} for 100, extrapolated)",
                    "",
                    f"{peak:.0f}",
                    "",
                ]
            )
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = ["policy", "batch / queue", "refresh (s)", "policy only (s)", "refresh peak MB", "policy peak MB"]
    table = markdown_table(header, rows)
    print(table)
    print(
        f"classifier fit {fit_s:.2f} s, 5-member ensemble fit {ensemble_s:.2f} s, process max RSS {max_rss_mb:.0f} MB"
    )
    command = (
        ".venv/bin/python -m bench.al_speed"
        + (f" --rows {args.rows}" if args.rows != 100_000 else "")
        + (f" --labelled {args.labelled}" if args.labelled != 1000 else "")
    )
    body = "\n".join(
        [
            f"Command: `{command}`  ",
            f"Machine: {args.machine} ({args.threads} BLAS threads); date {args.date}.  ",
            f"Pool: {args.rows:,} x {args.dim} float32 synthetic embeddings (a 20-component Gaussian "
            f"mixture, {embeddings.nbytes / 2**20:.0f} MB), {args.labelled:,} labelled. A refresh = "
            "predict_proba of the whole pool (classifier, or the 5 members of the committee) + "
            f"`ml.policies.rank`; median of {args.repeats} runs, measured side by side in one process. "
            '"Policy only": `rank` on precomputed probabilities. Peak MB: tracemalloc peak of one '
            "call (numpy buffers included; the pool itself exists before and is not counted). The "
            "~200 MB of a refresh is `predict_proba` standardising the whole pool at once "
            "(ml.classifier). The modAL row is a refresh too: modAL calls `predict_proba` itself.",
            "",
            table,
            "",
            f"Classifier fit on the labelled rows: {fit_s:.2f} s; 5-member bootstrap ensemble: {ensemble_s:.2f} s "
            f"(not part of a refresh). Process max RSS: {max_rss_mb:.0f} MB.",
        ]
    )
    if not args.no_write:
        write_section(args.markdown, SECTION, body)
        print(f"wrote section '{SECTION}' of {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
