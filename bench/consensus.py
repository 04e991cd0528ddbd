"""How to turn a subject's votes into its label: consensus rules compared on simulated campaigns.

The campaign replay (``bench/campaign.py``) found that the shipped Dawid-Skene consensus all but
erases rare classes (MiraBest hybrids: 1-4 % recall against 42 % for a 5-vote majority) and,
on the Griese set with accurate volunteers, loses to the plain majority. This command measures
the candidate rules offline, on the replay's own crowd model (``ml.crowd``: a confusion matrix
per volunteer, more errors on ambiguous sources, heavy-tailed activity, skips, the product's
gold schedule), many crowds per pool in seconds:

- ``majority``: the most common answer (ties to the earlier vote), Radio Galaxy Zoo's rule;
- ``ds``: Dawid-Skene, the class of highest posterior with the fitted class prior (shipped
  until 2026-12-05);
- ``ds-balanced``: the same fit, the class the votes favour with every class equally likely
  beforehand (the posterior divided by the fitted prior);
- ``ds-uniform``: Dawid-Skene with the class prior held uniform while fitting too;
- ``ds-prior:S``: the fit of ``ds`` with its class prior at strength S (1: ``ds``, 0:
  ``ds-balanced``; :func:`ml.consensus.temper_prior`), the product's
  ``Workflow.consensus_prior_strength``.

Each rule sees the same votes; the differences are paired by crowd seed. Scored: every
retired non-gold subject. Balanced accuracy is the mean of the per-class recalls, the figure
that does not let a rare class vanish.

Run::

    .venv/bin/python -m bench.consensus --pool mirabest --seeds 0-19
    .venv/bin/python -m bench.consensus --pool griese --seeds 0-19
    .venv/bin/python -m bench.consensus --labels my_survey.csv --seeds 0-19   # label[,ambiguous] columns

Only the classes and ambiguity flags of the pool enter (no image is read by the rules).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, recall_score
from tqdm import tqdm

from bench import markdown_table
from bench.campaign import POOLS
from bench.paper_benchmark import parse_seeds, shared_data
from ml.consensus import Votes, dawid_skene, majority, temper_prior
from ml.crowd import CampaignVotes, CrowdConfig, GoldSchedule, make_crowd, simulate_campaign
from ml.datasets import DatasetError, open_catalogue
from ml.guard import mean_interval

#: Error multipliers of the replay's volunteers per class (bench/campaign.py's pools); 1 for others.
DIFFICULTY = {c: d for pool in POOLS.values() for c, d in zip(pool.classes, pool.difficulty, strict=True)}
TRUE_WORDS = {"1", "true", "yes", "y", "t"}
FALSE_WORDS = {"0", "false", "no", "n", "f", ""}


@dataclass(frozen=True)
class LabelledPool:
    name: str
    classes: tuple[str, ...]
    truth: np.ndarray  # int (n,)
    ambiguous: np.ndarray  # bool (n,)


def read_labels_csv(path: Path) -> LabelledPool:
    """A pool from a CSV with a ``label`` column and an optional ``ambiguous`` column (true/false)."""
    labels, flags = [], []
    try:
        with open_catalogue(path) as (reader, columns):
            if "label" not in columns:
                raise SystemExit(f"{path}: needs a 'label' column, found {reader.fieldnames}")
            for row in reader:
                label = (row.get(columns["label"]) or "").strip()
                if not label:
                    raise SystemExit(f"{path}, line {reader.line_num}: empty label")
                flag = (row.get(columns["ambiguous"]) or "").strip().lower() if "ambiguous" in columns else ""
                if flag not in TRUE_WORDS | FALSE_WORDS:
                    raise SystemExit(f"{path}, line {reader.line_num}: ambiguous must be true or false, got {flag!r}")
                labels.append(label)
                flags.append(flag in TRUE_WORDS)
    except DatasetError as exc:
        raise SystemExit(str(exc)) from None
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise SystemExit(f"{path}: needs at least two classes, found {classes}")
    truth = np.array([classes.index(label) for label in labels])
    return LabelledPool(path.name, classes, truth, np.array(flags, dtype=bool))


def read_pool(args: argparse.Namespace) -> LabelledPool:
    from ml.datasets import read_griese, read_mirabest

    if args.labels is not None:
        return read_labels_csv(args.labels)
    classes = POOLS[args.pool].classes
    if args.pool == "mirabest":
        path = args.data or args.shared / POOLS["mirabest"].default_path
        records = list(read_mirabest(path))
        # As the replay: MiraBest's "uncertain" flag (2nd code digit 1) and every hybrid are ambiguous.
        flags = [(r.label_code or "")[1:2] == "1" or r.label == "hybrid" for r in records]
    else:
        records = list(read_griese(args.data))
        flags = [False] * len(records)
    keep = [i for i, r in enumerate(records) if r.label in classes]
    truth = np.array([classes.index(str(records[i].label)) for i in keep])
    return LabelledPool(args.pool, classes, truth, np.array([flags[i] for i in keep], dtype=bool))


def majority_labels(votes: CampaignVotes, n: int) -> np.ndarray:
    """Each subject's majority (:func:`ml.consensus.majority`: ties to the class voted first); 0 if unvoted."""
    answers: list[list[str]] = [[] for _ in range(n)]
    for subject, label in zip(votes.subjects.tolist(), votes.labels.tolist(), strict=True):
        answers[subject].append(str(label))
    return np.array([int(majority(these)[0]) if these else 0 for these in answers])


Rule = Callable[[CampaignVotes, np.ndarray, int, int], np.ndarray]


def _ds(strength: float, uniform: bool, in_fit: bool = False) -> Rule:
    def rule(votes: CampaignVotes, known: np.ndarray, n: int, c: int) -> np.ndarray:
        fitted = Votes(votes.subjects, votes.volunteers, votes.labels, n, int(votes.volunteers.max()) + 1, c)
        prior = np.full(c, 1.0 / c) if uniform else None
        if in_fit:
            post, _, _ = dawid_skene(fitted, known=known, prior_strength=strength)
            return np.argmax(post, axis=1)
        post, _, class_prior = dawid_skene(fitted, known=known, class_prior=prior)
        return np.argmax(temper_prior(post, class_prior, strength), axis=1)

    return rule


RULES: dict[str, Rule] = {
    "majority": lambda votes, known, n, c: majority_labels(votes, n),
    "ds": _ds(1.0, uniform=False),
    "ds-balanced": _ds(0.0, uniform=False),
    "ds-uniform": _ds(1.0, uniform=True),
}


def rule_named(name: str) -> Rule:
    """A rule of :data:`RULES`, or ``ds-prior:S``: Dawid-Skene with the fitted class prior at strength S
    (:func:`ml.consensus.temper_prior`; 1 is ``ds``, 0 is ``ds-balanced``)."""
    if name in RULES:
        return RULES[name]
    kind, _, value = name.partition(":")
    if kind in ("ds-prior", "ds-fit-prior"):
        try:
            strength = float(value)
        except ValueError:
            strength = -1.0
        if 0.0 <= strength <= 1.0:
            return _ds(strength, uniform=False, in_fit=kind == "ds-fit-prior")
    raise ValueError(f"unknown rule {name!r}: one of {', '.join(RULES)} or ds-prior:S with S in [0, 1]")


def score(guess: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[str, object]:
    labels = list(range(n_classes))
    recall = recall_score(truth, guess, labels=labels, average=None, zero_division=0).tolist()
    f1 = f1_score(truth, guess, labels=labels, average=None, zero_division=0).tolist()
    return {
        "accuracy": float(np.mean(guess == truth)),
        "balanced": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "recall": recall,
        "f1": f1,
    }


def one_crowd(pool: LabelledPool, seed: int, args: argparse.Namespace, rules: Sequence[str]) -> dict[str, object]:
    c = len(pool.classes)
    rng = np.random.default_rng([seed, 3])
    gold_ids = np.concatenate(
        [
            rng.choice(
                np.flatnonzero(pool.truth == k),
                size=min(args.gold_per_class, int(np.sum(pool.truth == k))),
                replace=False,
            )
            for k in range(c)
        ]  # fmt: skip
    )
    config = CrowdConfig(
        n_volunteers=args.crowd, class_difficulty=tuple(DIFFICULTY.get(name, 1.0) for name in pool.classes)
    )
    crowd = make_crowd(config, c, seed)
    votes = simulate_campaign(crowd, pool.truth, pool.ambiguous, gold_ids, retire_after=args.retire_after,
                              gold=GoldSchedule(), seed=seed)  # fmt: skip
    known = np.full(len(pool.truth), -1)
    known[gold_ids] = pool.truth[gold_ids]
    scored = np.flatnonzero(votes.retired)
    result: dict[str, object] = {"seed": seed, "votes": len(votes.subjects), "scored": len(scored)}
    for name in rules:
        guess = rule_named(name)(votes, known, len(pool.truth), c)
        result[name] = score(guess[scored], pool.truth[scored], c)
    return result


def summarise(pool: LabelledPool, results: list[dict], rules: Sequence[str], reference: str) -> str:
    header = ["rule", "accuracy", "balanced accuracy", "macro F1", *[f"recall {c}" for c in pool.classes],
              f"accuracy - {reference}", f"balanced - {reference}", f"macro F1 - {reference}"]  # fmt: skip
    rows = []
    for name in rules:
        acc = [r[name]["accuracy"] * 100 for r in results]
        bal = [r[name]["balanced"] * 100 for r in results]
        f1 = [r[name]["macro_f1"] * 100 for r in results]
        recalls = np.array([r[name]["recall"] for r in results]) * 100
        row = [name] + [f"{np.mean(x):.1f} +- {np.std(x):.1f} %" for x in (acc, bal, f1)]
        row += [f"{recalls[:, k].mean():.1f} +- {recalls[:, k].std():.1f}" for k in range(len(pool.classes))]
        for metric in ("accuracy", "balanced", "macro_f1"):
            if name == reference:
                row.append("-")
                continue
            diff = [(r[name][metric] - r[reference][metric]) * 100 for r in results]
            mean, low, high = mean_interval(np.asarray(diff))
            row.append(f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]")
        rows.append(row)
    return markdown_table(header, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=("mirabest", "griese"), default="mirabest")
    parser.add_argument("--data", type=Path, help="the pool's file (default: under --shared; griese: the package's)")
    parser.add_argument("--labels", type=Path, help="instead of --pool: a CSV with label[,ambiguous] columns")
    parser.add_argument("--shared", type=Path, default=shared_data(), help="the shared data folder [RGZ_SHARED_DATA]")
    parser.add_argument("--seeds", default="0-19", help="crowd seeds, e.g. 0-19 or 0,3,5")
    parser.add_argument("--rules", default=",".join(RULES), help=f"of {', '.join(RULES)}, ds-prior:S (S in [0, 1])")
    parser.add_argument("--reference", default="ds", help="the rule the others are paired against")
    parser.add_argument("--retire-after", type=int, default=5)
    parser.add_argument("--gold-per-class", type=int, default=10)
    parser.add_argument("--crowd", type=int, default=1500, help="volunteers who may arrive")
    parser.add_argument("--out", type=Path, help="write every crowd's scores to this JSON file")
    args = parser.parse_args(argv)
    args.rule_list = [r.strip() for r in args.rules.split(",") if r.strip()]
    for name in args.rule_list:
        try:
            rule_named(name)
        except ValueError as exc:
            parser.error(f"--rules: {exc}")
    if args.reference not in args.rule_list:
        parser.error(f"--rules must include the --reference rule {args.reference!r}")
    try:
        args.seed_list = parse_seeds(args.seeds)
    except ValueError:
        parser.error(f"--seeds: expected e.g. 0-19 or 0,3,5, got {args.seeds!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pool = read_pool(args)
    print(f"{pool.name}: {len(pool.truth)} sources, classes {', '.join(pool.classes)} "
          f"({', '.join(str(int(np.sum(pool.truth == k))) for k in range(len(pool.classes)))}), "
          f"{int(pool.ambiguous.sum())} ambiguous; retire after {args.retire_after}", flush=True)  # fmt: skip
    results = [one_crowd(pool, seed, args, args.rule_list) for seed in tqdm(args.seed_list, desc="crowds")]
    votes = [r["votes"] for r in results]
    print(f"{len(results)} crowds, {np.mean(votes):.0f} votes each on average")
    print(summarise(pool, results, args.rule_list, args.reference))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"pool": pool.name, "classes": pool.classes, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
