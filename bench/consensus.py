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
  ``Workflow.consensus_prior_strength``;
- ``lead:RULE``: a subject that the retirement rule retired early (by margin or agreement) takes
  the class its votes led or agreed with, every other subject RULE's label
  (:func:`ml.retirement.decided_class`); the product's consensus since 2026-12-06 is
  ``lead:ds-prior:0.25``.

Each rule sees the same votes; the differences are paired by crowd seed. Scored: every
non-gold subject. Balanced accuracy is the mean of the per-class recalls, the figure that does
not let a rare class vanish.

``--retire`` compares retirement rules too (:class:`ml.retirement.RetirementRule`, the rule a
vote applies in the product): each rule runs its own campaign with the same crowd, and the
table gives its votes (gold answers included), the saving against the reference rule (paired
by crowd: the geometric mean of the ratios with a 95 % t-interval on their logs) and every
consensus rule's scores on its votes. ``fixed:5`` is the default; ``fixed:20`` is Radio Galaxy
Zoo's count for extended sources; ``margin:K/N`` and ``agree:K/N`` stop early.

Run::

    .venv/bin/python -m bench.consensus --pool mirabest --seeds 0-19
    .venv/bin/python -m bench.consensus --pool griese --seeds 0-19
    .venv/bin/python -m bench.consensus --labels my_survey.csv --seeds 0-19   # label[,ambiguous] columns
    .venv/bin/python -m bench.consensus --pool mirabest --rules majority,ds-prior:0.25 \
        --retire fixed:5,fixed:20,margin:3/9,agree:3/5

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
from bench.campaign import POOLS, saving_interval
from bench.paper_benchmark import parse_seeds, shared_data
from ml.consensus import Votes, dawid_skene, majority, temper_prior
from ml.crowd import CampaignVotes, CrowdConfig, GoldSchedule, make_crowd, simulate_campaign
from ml.datasets import DatasetError, open_catalogue
from ml.guard import mean_interval
from ml.retirement import RetirementRule

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


Rule = Callable[[CampaignVotes, np.ndarray, int, int, RetirementRule], np.ndarray]


def _ds(strength: float, uniform: bool, in_fit: bool = False) -> Rule:
    def rule(votes: CampaignVotes, known: np.ndarray, n: int, c: int, retire: RetirementRule) -> np.ndarray:
        fitted = Votes(votes.subjects, votes.volunteers, votes.labels, n, int(votes.volunteers.max()) + 1, c)
        prior = np.full(c, 1.0 / c) if uniform else None
        if in_fit:
            post, _, _ = dawid_skene(fitted, known=known, prior_strength=strength)
            return np.argmax(post, axis=1)
        post, _, class_prior = dawid_skene(fitted, known=known, class_prior=prior)
        return np.argmax(temper_prior(post, class_prior, strength), axis=1)

    return rule


def _lead(fallback: Rule) -> Rule:
    """The leading class of every subject the retirement rule retired early (by margin or agreement:
    the class the rule itself decided on, :meth:`ml.retirement.RetirementRule.decided`), ``fallback`` elsewhere."""

    def rule(votes: CampaignVotes, known: np.ndarray, n: int, c: int, retire: RetirementRule) -> np.ndarray:
        guess = fallback(votes, known, n, c, retire)
        answers: list[list[int]] = [[] for _ in range(n)]
        for subject, label in zip(votes.subjects.tolist(), votes.labels.tolist(), strict=True):
            answers[subject].append(int(label))  # gold subjects never retire: no class decided there
        for subject, these in enumerate(answers):
            decided = retire.decided(these)
            if decided is not None:
                guess[subject] = decided
        return guess

    return rule


RULES: dict[str, Rule] = {
    "majority": lambda votes, known, n, c, retire: majority_labels(votes, n),
    "ds": _ds(1.0, uniform=False),
    "ds-balanced": _ds(0.0, uniform=False),
    "ds-uniform": _ds(1.0, uniform=True),
}


def rule_named(name: str) -> Rule:
    """A rule of :data:`RULES`, ``ds-prior:S`` (Dawid-Skene with the fitted class prior at strength S,
    :func:`ml.consensus.temper_prior`; 1 is ``ds``, 0 is ``ds-balanced``), or ``lead:RULE`` (the class
    of an early retirement, RULE's label elsewhere)."""
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
    if kind == "lead" and value:
        return _lead(rule_named(value))
    raise ValueError(
        f"unknown rule {name!r}: one of {', '.join(RULES)}, ds-prior:S with S in [0, 1], or lead:RULE of those"
    )


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


def gold_sources(pool: LabelledPool, seed: int, per_class: int) -> np.ndarray:
    """The crowd's gold subjects: ``per_class`` of each class, drawn from the seed."""
    rng = np.random.default_rng([seed, 3])
    return np.concatenate(
        [
            rng.choice(
                np.flatnonzero(pool.truth == k), size=min(per_class, int(np.sum(pool.truth == k))), replace=False
            )
            for k in range(len(pool.classes))
        ]
    )


def one_crowd(
    pool: LabelledPool,
    seed: int,
    args: argparse.Namespace,
    rules: Sequence[str],
    retirements: Sequence[RetirementRule],
) -> dict[str, object]:
    """Every retirement rule's campaign with one crowd (the same volunteers, answers drawn per campaign),
    each scored by every consensus rule over all non-gold subjects."""
    c = len(pool.classes)
    gold_ids = gold_sources(pool, seed, args.gold_per_class)
    config = CrowdConfig(
        n_volunteers=args.crowd, class_difficulty=tuple(DIFFICULTY.get(name, 1.0) for name in pool.classes)
    )
    crowd = make_crowd(config, c, seed)
    known = np.full(len(pool.truth), -1)
    known[gold_ids] = pool.truth[gold_ids]
    scored = np.setdiff1d(np.arange(len(pool.truth)), gold_ids)
    result: dict[str, object] = {"seed": seed, "scored": len(scored)}
    for retire in retirements:
        votes = simulate_campaign(crowd, pool.truth, pool.ambiguous, gold_ids, retire_after=retire,
                                  gold=GoldSchedule(), seed=seed)  # fmt: skip
        campaign: dict[str, object] = {
            "votes": len(votes.subjects),
            "subject_votes": int((~votes.gold).sum()),
            "retired": int(votes.retired.sum()),
        }
        for name in rules:
            guess = rule_named(name)(votes, known, len(pool.truth), c, retire)
            campaign[name] = score(guess[scored], pool.truth[scored], c)
        result[retire.name] = campaign
    return result


def summarise(
    pool: LabelledPool,
    results: list[dict],
    retirements: Sequence[str],
    rules: Sequence[str],
    reference: tuple[str, str],
) -> str:
    """One row per (retirement rule, consensus rule), paired by crowd against ``reference``."""
    ref_retire, ref_rule = reference
    header = ["retirement", "rule", "votes", "votes per subject", "retired", "accuracy", "balanced accuracy",
              "macro F1", *[f"recall {c}" for c in pool.classes], "votes saved",
              f"accuracy - {ref_retire} {ref_rule}", "balanced - ref.", "macro F1 - ref."]  # fmt: skip
    rows = []
    for retire in retirements:
        campaigns = [r[retire] for r in results]
        votes = np.array([c["votes"] for c in campaigns], dtype=float)
        per_subject = [c["subject_votes"] / r["scored"] for c, r in zip(campaigns, results, strict=True)]
        retired = [100 * c["retired"] / r["scored"] for c, r in zip(campaigns, results, strict=True)]
        ref_votes = np.array([r[ref_retire]["votes"] for r in results], dtype=float)
        saved = "-" if retire == ref_retire else "{:.2f}x [{:.2f}, {:.2f}]".format(*saving_interval(ref_votes / votes))
        for name in rules:
            acc = [c[name]["accuracy"] * 100 for c in campaigns]
            bal = [c[name]["balanced"] * 100 for c in campaigns]
            f1 = [c[name]["macro_f1"] * 100 for c in campaigns]
            recalls = np.array([c[name]["recall"] for c in campaigns]) * 100
            row = [retire, name, f"{votes.mean():.0f}", f"{np.mean(per_subject):.2f}", f"{np.mean(retired):.1f} %"]
            row += [f"{np.mean(x):.1f} +- {np.std(x):.1f} %" for x in (acc, bal, f1)]
            row += [f"{recalls[:, k].mean():.1f} +- {recalls[:, k].std():.1f}" for k in range(len(pool.classes))]
            row.append(saved)
            for metric in ("accuracy", "balanced", "macro_f1"):
                if (retire, name) == reference:
                    row.append("-")
                    continue
                diff = [(r[retire][name][metric] - r[ref_retire][ref_rule][metric]) * 100 for r in results]
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
    parser.add_argument(
        "--rules", default=",".join(RULES), help=f"of {', '.join(RULES)}, ds-prior:S (S in [0, 1]), lead:RULE"
    )
    parser.add_argument(
        "--reference", help="the rule the others are paired against (default: ds if compared, else the first)"
    )
    parser.add_argument("--retire-after", type=int, default=5, help="the retirement rule when --retire is not given")
    parser.add_argument(
        "--retire",
        help="comma-separated retirement rules to compare, each a campaign of its own: fixed:N, agree:K/N "
        "(the first K votes agree, else N votes), margin:K/N (a class leads every other by K votes, else N)",
    )
    parser.add_argument(
        "--reference-retire", help="the retirement rule the others are paired against (default: the first)"
    )
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
    if args.reference is None and args.rule_list:
        args.reference = "ds" if "ds" in args.rule_list else args.rule_list[0]
    if args.reference not in args.rule_list:
        parser.error(f"--rules must include the --reference rule {args.reference!r}")
    try:
        texts = args.retire.split(",") if args.retire else [f"fixed:{args.retire_after}"]
        args.retire_list = [RetirementRule.parse(text) for text in texts if text.strip()]
    except ValueError as exc:
        parser.error(f"--retire: {exc}")
    names = [rule.name for rule in args.retire_list]
    args.reference_retire = RetirementRule.parse(args.reference_retire).name if args.reference_retire else names[0]
    if args.reference_retire not in names:
        parser.error(f"--retire must include the --reference-retire rule {args.reference_retire!r}")
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
          f"{int(pool.ambiguous.sum())} ambiguous", flush=True)  # fmt: skip
    results = [
        one_crowd(pool, seed, args, args.rule_list, args.retire_list) for seed in tqdm(args.seed_list, desc="crowds")
    ]
    names = [rule.name for rule in args.retire_list]
    print(f"{len(results)} crowds; votes counted with gold answers; scored: every non-gold subject")
    print(summarise(pool, results, names, args.rule_list, (args.reference_retire, args.reference)))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"pool": pool.name, "classes": pool.classes, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
