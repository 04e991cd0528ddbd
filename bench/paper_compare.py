"""Paired comparison of two rows of ``bench.paper_benchmark`` results, over pretraining and label seeds.

Each side is ``METHOD=FILE[,FILE...]``: a method and the results files of its pretraining seeds
(one ``paper_benchmark*.json`` per encoder, e.g. one per ``--pretrain-seed``). The two sides are
paired by pretraining seed (the i-th file of each side) and by (budget, label seed), which fix the
same labelled subset and the same scored sources, so the difference of two errors on one pair is
free of the subset's luck. Per budget the table gives each side's mean error ± std over every
(pretraining seed, label seed), the mean paired difference A - B with a 95 % interval that
resamples pretraining seeds and label seeds (a two-level bootstrap: the encoder's own variance is
in it), and on how many pairs A was better.

    .venv/bin/python -m bench.paper_compare \\
        linear=var/p4m-s0/paper_benchmark_validation.json,var/p4m-s1/paper_benchmark_validation.json \\
        linear-dihedral=var/r-s0/paper_benchmark_validation.json,var/r-s1/paper_benchmark_validation.json

Both sides must be on the same split (``test`` or ``validation`` with the same folds); a pairing
across splits, or of files whose budgets and seeds do not meet, is refused with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CompareError(ValueError):
    """Results that cannot be paired: another split, a missing method, budgets that do not meet."""


@dataclass(frozen=True)
class Side:
    """One row of a comparison: a method's errors per pretraining seed, keyed by (budget, label seed)."""

    label: str
    errors: list[dict[tuple[int, int], float]]
    split: tuple[str | None, int | None]


def read_side(text: str) -> Side:
    """Parse ``METHOD=FILE[,FILE...]`` and read the method's errors from each file."""
    method, sep, files = text.partition("=")
    if not sep or not method or not files:
        raise CompareError(f"{text!r}: expected METHOD=FILE[,FILE...]")
    errors, splits = [], set()
    for name in files.split(","):
        path = Path(name)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CompareError(f"{path}: not a readable results file ({exc})") from exc
        identity = record.get("identity", {})
        splits.add((identity.get("split", "test"), identity.get("folds")))
        rows = {
            (int(r["budget"]), int(r["seed"])): float(r["error"])
            for r in record.get("results", [])
            if r["method"] == method
        }
        if not rows:
            raise CompareError(f"{path}: no {method!r} results")
        errors.append(rows)
    if len(splits) != 1:
        raise CompareError(f"{text!r}: its files are on different splits {sorted(map(str, splits))}")
    return Side(method, errors, splits.pop())


def paired_table(a: Side, b: Side, *, resamples: int = 4000, seed: int = 0) -> list[dict[str, float | int]]:
    """Per budget met by both sides: means, stds, the paired difference and its bootstrap interval.

    Raises:
        CompareError: Different splits, different numbers of pretraining seeds, or no common budget.
    """
    if a.split != b.split:
        raise CompareError(f"{a.label} is on {a.split}, {b.label} on {b.split}: not the same scored sources")
    if len(a.errors) != len(b.errors):
        raise CompareError(f"{len(a.errors)} files for {a.label} but {len(b.errors)} for {b.label}: pair them by seed")
    common = [sorted(x.keys() & y.keys()) for x, y in zip(a.errors, b.errors, strict=True)]
    budgets = sorted(set.intersection(*({budget for budget, _ in keys} for keys in common)))
    if not budgets:
        raise CompareError(f"{a.label} and {b.label} share no budget with the same label seeds")
    rng = np.random.default_rng(seed)
    table = []
    for budget in budgets:
        # (pretraining seed) -> arrays over the label seeds both sides ran at this budget
        pairs = [
            np.array([[x[key], y[key]] for key in keys if key[0] == budget])
            for x, y, keys in zip(a.errors, b.errors, common, strict=True)
        ]
        pairs = [p for p in pairs if len(p)]
        diffs = [p[:, 0] - p[:, 1] for p in pairs]
        everything = np.concatenate(pairs)
        boot = np.empty(resamples)
        for i in range(resamples):  # resample encoders, then label seeds within each
            chosen = rng.integers(len(diffs), size=len(diffs))
            boot[i] = np.mean([rng.choice(diffs[c], size=len(diffs[c])).mean() for c in chosen])
        all_diffs = np.concatenate(diffs)
        low, high = np.quantile(boot, [0.025, 0.975])
        table.append(
            {
                "budget": budget,
                "encoders": len(pairs),
                "pairs": len(all_diffs),
                "a_mean": float(everything[:, 0].mean()),
                "a_std": float(everything[:, 0].std(ddof=1)) if len(everything) > 1 else 0.0,
                "b_mean": float(everything[:, 1].mean()),
                "b_std": float(everything[:, 1].std(ddof=1)) if len(everything) > 1 else 0.0,
                "diff": float(np.mean([d.mean() for d in diffs])),
                "low": float(low),
                "high": float(high),
                "a_better": int((all_diffs < 0).sum()),
            }
        )
    return table


def markdown(a: Side, b: Side, table: list[dict[str, float | int]]) -> str:
    """The comparison as a markdown table, errors in percent."""
    split, folds = a.split
    where = f"validation, {folds}-fold inside the training set" if split == "validation" else "test"
    lines = [
        f"{a.label} (A) against {b.label} (B), error (%) on {where}; A - B paired by encoder seed, budget and "
        "label seed, 95 % interval resampling encoders and label seeds:",
        "",
        "| labels | subsets (encoders) | A | B | A - B [95 %] | A better |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in table:
        a_cell = f"{100 * row['a_mean']:.1f} ± {100 * row['a_std']:.1f}"
        b_cell = f"{100 * row['b_mean']:.1f} ± {100 * row['b_std']:.1f}"
        diff = f"{100 * row['diff']:+.1f} [{100 * row['low']:+.1f}, {100 * row['high']:+.1f}]"
        cells = [row["budget"], f"{row['pairs']} ({row['encoders']})", a_cell, b_cell, diff]
        lines.append("| " + " | ".join(map(str, cells)) + f" | {row['a_better']}/{row['pairs']} |")
    return "\n".join(lines)


def plot(path: Path, a: Side, b: Side, table: list[dict[str, float | int]]) -> None:
    """Both sides' error (mean ± std) against labels, the paired difference's interval below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [int(row["budget"]) for row in table]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, height_ratios=[2, 1])
    for side, key, colour in ((a, "a", "tab:blue"), (b, "b", "tab:orange")):
        mean = np.array([100 * float(row[f"{key}_mean"]) for row in table])
        std = np.array([100 * float(row[f"{key}_std"]) for row in table])
        top.plot(budgets, mean, "o-", color=colour, label=f"{side.label} ({len(side.errors)} encoders)")
        top.fill_between(budgets, mean - std, mean + std, color=colour, alpha=0.15)
    top.set_ylabel("error (%), mean ± std")
    top.legend(fontsize=8)
    diff = np.array([100 * float(row["diff"]) for row in table])
    low = np.array([100 * float(row["low"]) for row in table])
    high = np.array([100 * float(row["high"]) for row in table])
    bottom.errorbar(budgets, diff, yerr=[diff - low, high - diff], fmt="o", color="black", capsize=3)
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_ylabel("A − B (points, 95 %)")
    bottom.set_xlabel("labels")
    bottom.set_xscale("log")
    bottom.minorticks_off()
    bottom.set_xticks(budgets, [str(x) for x in budgets])
    top.set_title(f"{a.label} (A) against {b.label} (B), {a.split[0]} split", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="METHOD=FILE[,FILE...] (one file per pretraining seed)")
    parser.add_argument("b", help="METHOD=FILE[,FILE...], paired with A file by file")
    parser.add_argument("--resamples", type=int, default=4000)
    parser.add_argument("--label-a", help="name of A in the table and plot [its method]")
    parser.add_argument("--label-b", help="name of B in the table and plot [its method]")
    parser.add_argument("--plot", type=Path, help="also draw both rows and the paired difference into this PNG")
    args = parser.parse_args(argv)
    try:
        a, b = read_side(args.a), read_side(args.b)
        a = dataclasses.replace(a, label=args.label_a or a.label)
        b = dataclasses.replace(b, label=args.label_b or b.label)
        table = paired_table(a, b, resamples=args.resamples)
        print(markdown(a, b, table))
        if args.plot:
            plot(args.plot, a, b, table)
            print(f"plot: {args.plot}", file=sys.stderr)
    except CompareError as exc:
        print(f"paper_compare: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
