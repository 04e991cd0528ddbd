"""What the guarded queue's policy tournament costs as a campaign grows.

The queue refresh of a guarded workflow runs :func:`ml.guard.choose_policy` (the product's
candidates, 5 folds x 2 repeats). Each replay refits the uncalibrated linear probe a few times
on a share of the labelled sources, so uncapped the tournament's cost follows the number of labels
(at 10k sources it ran past 45 minutes in bench.survey_scale). This bench times,
side by side in one run, the whole tournament at growing label counts with the replay pool
capped (``ml.guard.REPLAY_POOL_MAX``, the product's default) and, up to ``--uncapped-max``
labels, uncapped, with the policy each run chose.

Synthetic data shaped like an encoder's embeddings: 512-d rows of low effective rank (a
tanh of 24 latent factors, plus a little noise; the hard case for L-BFGS), three classes
(FRI, FRII, hybrid) partly set by one factor, 20 % of the labels unbiased (exploration +
gold), the pool 1.4x the labels. Run::

    .venv/bin/python -m bench.guard_cost

Prints the tables and writes the section "Guarded refresh cost" of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from bench import markdown_table, write_section
from ml.guard import REPLAY_POOL_MAX, choose_policy

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Guarded refresh cost"
#: The guarded queue's default candidates (rgzlabel.learning.models.GUARDED_CANDIDATES; not
#: imported: bench code that needs no Django stays free of it).
CANDIDATES = ("margin", "density_weighted", "diverse_uncertainty")
CLASSES = np.array(["FRI", "FRII", "hybrid"])


def mixture(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of low effective rank (like an encoder's) and three classes partly set by one factor."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 24))
    mixing = rng.normal(size=(24, dim))
    x = (np.tanh(factors @ mixing / 5) + rng.normal(0, 0.01, (n, dim))).astype(np.float32)
    label = rng.choice(3, n, p=[0.4, 0.45, 0.15])
    label[factors[:, 0] > 0.8] = 0
    label[factors[:, 0] < -0.8] = 1
    return x, CLASSES[label]


def time_tournament(labels: int, dim: int, seed: int, pool_max: int) -> tuple[float, str]:
    x, y = mixture(int(labels * 1.4), dim, seed)
    rng = np.random.default_rng(seed)
    labelled = np.sort(rng.choice(len(x), labels, replace=False))
    audit = rng.random(labels) < 0.2
    started = time.perf_counter()
    choice = choose_policy(x, labelled, y[labelled], audit, list(CANDIDATES), seed=seed, pool_max=pool_max)
    return time.perf_counter() - started, choice.policy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", default="1000,7000,70000", help="campaign label counts of the tournaments")
    parser.add_argument("--uncapped-max", type=int, default=2000, help="largest label count also run uncapped")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    label_counts = [int(v) for v in args.labels.split(",")]
    tournament_table = []
    with threadpool_limits(args.threads):
        for labels in tqdm(label_counts, desc="tournaments", unit="size"):
            capped_s, capped_policy = time_tournament(labels, args.dim, args.seed, REPLAY_POOL_MAX)
            row = [f"{labels:,}", f"{capped_s:.1f}", capped_policy]
            if labels <= args.uncapped_max:
                uncapped_s, uncapped_policy = time_tournament(labels, args.dim, args.seed, labels)
                row += [f"{uncapped_s:.1f}", uncapped_policy, f"{uncapped_s / capped_s:.1f}x"]
            else:
                row += ["not run (over --uncapped-max)", "", ""]
            tournament_table.append(row)

    tournament_md = markdown_table(
        ["labels", f"capped at {REPLAY_POOL_MAX} (s)", "chose", "uncapped (s)", "chose", "uncapped / capped"],
        tournament_table,
    )
    given = sys.argv[1:] if argv is None else argv
    command = "`" + " ".join([".venv/bin/python -m bench.guard_cost", *given]) + "`"
    body = "\n".join(
        [
            f"Command: {command}",
            f"Machine: {platform.machine()}, {args.threads} threads, Python {platform.python_version()}. "
            f"Date: {datetime.date.today().isoformat()}. Ratios are side by side in one run.",
            "",
            f"The whole tournament (candidates {', '.join(CANDIDATES)}; 5 folds x 2 repeats; 20 % of the labels "
            "unbiased), with the replay pool capped and uncapped:",
            "",
            tournament_md,
        ]
    )
    print(body)
    if not args.no_write:
        write_section(args.markdown, SECTION, body)


if __name__ == "__main__":
    main()
