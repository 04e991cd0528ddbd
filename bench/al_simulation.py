"""Simulated active-learning campaigns on MiraBest Confident: every policy against random.

Pool = the 729 MiraBest Confident training sources, test = the 104 test sources. Each
campaign starts with a cold-start batch of 10, then batches of 10 up to 291 labels; the
few-label classifier (``ml.classifier``) is refitted after every batch and scored on the
test set. Once with an oracle, once with simulated volunteers (3 votes per source from
volunteers with 10-25 % error rates; the policy and the classifier see only the majority).

Run (from the project root)::

    .venv/bin/python -m bench.al_simulation --features pca --seeds 10
    .venv/bin/python -m bench.al_simulation --features encoder --checkpoint PATH --seeds 10

Prints the tables, saves a plot (``docs/al_simulation.png``) and writes the section
"Active-learning simulation" of ``docs/benchmarks.md`` (``--features encoder`` and
``--calibrated`` runs get their own plot and section, e.g. "Active-learning simulation (encoder)").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from bench import markdown_table, write_section
from ml.config import ClassifierConfig
from ml.simulation import (
    PAPER_CHECKPOINTS,
    CurveSummary,
    SimulationConfig,
    VolunteerNoise,
    image_features,
    label_schedule,
    load_mirabest_confident,
    simulate,
    summarise,
)

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Active-learning simulation"
#: The paper's error with 145 labels (Slijepcevic et al. 2023, BYOL + linear probe).
PAPER_ERROR_AT_145 = 0.0779
#: The number of labels whose random-sampling error the policies must match.
REFERENCE_LABELS = 145


@dataclass(frozen=True)
class Arm:
    """One row of the comparison: a policy after a cold start."""

    label: str
    policy: str
    cold_start: str = "typical_clusters"


ARMS = (
    Arm("random", "random", cold_start="random"),
    Arm("random after typical cold start", "random"),
    Arm("least_confident", "least_confident"),
    Arm("margin", "margin"),
    Arm("entropy", "entropy"),
    Arm("ranked_batch", "ranked_batch"),
    Arm("vote_entropy (QBC)", "vote_entropy"),
    Arm("kl_disagreement (QBC)", "kl_disagreement"),
    Arm("bald", "bald"),
    Arm("typical_clusters (every round)", "typical_clusters"),
    Arm("diverse_uncertainty", "diverse_uncertainty"),
    Arm("density_weighted", "density_weighted"),
)
BASELINE = ARMS[0].label


def default_data() -> Path:
    """The MiraBest archive under RGZ_SHARED_DATA (default ../shared/data beside the project)."""
    shared = Path(os.environ.get("RGZ_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return shared / "mirabest" / "MiraBest_F_batches.tar.gz"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", choices=("pca", "encoder"), default="pca")
    parser.add_argument("--checkpoint", type=Path, help="encoder checkpoint (required with --features encoder)")
    parser.add_argument("--data", type=Path, default=None, help="MiraBest_F_batches.tar.gz")
    parser.add_argument(
        "--views",
        choices=("centre", "dihedral"),
        default="centre",
        help="encoder test views: the paper's centre view, or the mean of 8 rotations/flips (the server's default)",
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pca-dim", type=int, default=64)
    parser.add_argument("--policies", help="comma-separated row labels or policy names (default: all)")
    parser.add_argument("--settings", choices=("oracle", "volunteers", "both"), default="both")
    parser.add_argument(
        "--calibrated",
        action="store_true",
        help="use ml.classifier's default sigmoid calibration (default: the paper's plain linear probe)",
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (1 is fastest for these sizes)")
    parser.add_argument("--plot", type=Path, help="default docs/al_simulation[_encoder][_calibrated].png")
    parser.add_argument("--note", help="a sentence added to the section, e.g. how the checkpoint was made")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only; write neither plot nor markdown")
    parser.add_argument("--date", default="2026-11-27")
    parser.add_argument("--machine", default="2-core CPU, no GPU")
    args = parser.parse_args(argv)
    if args.features == "encoder" and args.checkpoint is None:
        parser.error("--features encoder needs --checkpoint PATH")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    return args


def select_arms(names: str | None) -> list[Arm]:
    """The arms named (by row label or policy name), random always first."""
    if not names:
        return list(ARMS)
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    chosen = [arm for arm in ARMS if arm.label in wanted or (arm.policy in wanted and arm.cold_start != "random")]
    unknown = wanted - {arm.label for arm in chosen} - {arm.policy for arm in chosen}
    if unknown:
        raise SystemExit(f"unknown policies {sorted(unknown)}; rows are {[arm.label for arm in ARMS]}")
    return [ARMS[0], *[arm for arm in chosen if arm is not ARMS[0]]]


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def reference_error(random: CurveSummary) -> float:
    """Random sampling's smoothed mean error at 145 labels: the error every policy must reach."""
    return float(random.smoothed_error()[np.flatnonzero(random.n_labels == REFERENCE_LABELS)[0]])


def flat_baseline_caveat(random: CurveSummary) -> str | None:
    """A warning when random sampling barely learns between 36 and 145 labels.

    "Labels to reach random's 145-label error" only measures a saving if random's curve
    falls over that range by more than its noise (two standard errors of the mean).
    """
    early, _ = random.error_at(PAPER_CHECKPOINTS[0])
    late, spread = random.error_at(REFERENCE_LABELS)
    noise = 2 * spread / np.sqrt(random.n_seeds)
    if early - late > noise:
        return None
    return (
        f"Caveat: random improves only {percent(early - late)} points from 36 to 145 labels, within "
        f"the noise ({percent(noise)}), so the labels-to-reach column is not a meaningful saving here."
    )


def results_table(summaries: dict[str, CurveSummary]) -> tuple[list[str], list[list[str]], str | None]:
    """Rows of error at the paper's label counts and labels needed for random's 145-label error.

    Returns:
        (header, rows, label of the best arm), best = fewest labels to reach the target,
        then lowest error at 145 labels.
    """
    target = reference_error(summaries[BASELINE])
    header = [
        "policy",
        *[f"error @ {n} (%)" for n in PAPER_CHECKPOINTS],
        f"labels to {percent(target)} % (random @ 145)",
    ]
    rows, ranking = [], []
    for label, summary in summaries.items():
        cells = [label]
        for n_labels in PAPER_CHECKPOINTS:
            mean, std = summary.error_at(n_labels)
            cells.append(f"{percent(mean)} ± {percent(std)}")
        needed = summary.labels_to_reach(target)
        cells.append(f"{needed} ({needed / REFERENCE_LABELS:.2f}x)" if needed else f"> {summary.n_labels[-1]}")
        rows.append(cells)
        if label != BASELINE:
            ranking.append((needed or 10**9, summary.error_at(REFERENCE_LABELS)[0], label))
    best = min(ranking)[2] if ranking else None
    return header, rows, best


def merge_identical(summaries: dict[str, CurveSummary]) -> dict[str, CurveSummary]:
    """One entry per distinct curve, labels joined with " = " (for two classes least-confident,
    margin and entropy rank identically, and three overlaid lines would hide each other)."""
    merged: dict[str, CurveSummary] = {}
    for label, summary in summaries.items():
        twin = next((k for k, v in merged.items() if np.array_equal(v.mean_error, summary.mean_error)), None)
        if twin is None or twin == BASELINE:
            merged[label] = summary
        else:
            merged[f"{twin} = {label}"] = merged.pop(twin)
    return merged


def plot_curves(path: Path, panels: dict[str, dict[str, CurveSummary]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.8), sharey=True, squeeze=False)
    colours = [plt.get_cmap("tab20")(i) for i in range(20)]
    for axis, (title, summaries) in zip(axes[0], panels.items(), strict=True):
        for index, (label, summary) in enumerate(merge_identical(summaries).items()):
            is_random = label == BASELINE
            axis.plot(
                summary.n_labels,
                100 * summary.mean_error,
                color="black" if is_random else colours[(2 * index) % 20 + (index >= 10)],
                linestyle="-" if is_random or index % 2 else "--",
                linewidth=2.5 if is_random else 1.3,
                label=label,
            )
            if is_random:
                axis.fill_between(
                    summary.n_labels,
                    100 * (summary.mean_error - summary.std_error),
                    100 * (summary.mean_error + summary.std_error),
                    color="grey",
                    alpha=0.2,
                    label="random ± 1 std over seeds",
                )
        axis.axhline(100 * PAPER_ERROR_AT_145, color="red", linestyle=":", label="paper, 145 labels (7.79 %)")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("labels")
        axis.set_xscale("log")
        ticks = (10, *PAPER_CHECKPOINTS)
        axis.set_xticks(ticks, [str(n) for n in ticks])
        axis.grid(alpha=0.3)
    highest = max(float((s.mean_error + s.std_error).max()) for panel in panels.values() for s in panel.values())
    axes[0][0].set_ylim(0, 100 * highest + 2)  # shared by every panel; 0 keeps the paper's line in view
    axes[0][0].set_ylabel("MiraBest Confident test error (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arms = select_arms(args.policies)
    started = time.monotonic()
    data = load_mirabest_confident(args.data or default_data())
    with threadpool_limits(args.threads):
        embeddings = image_features(
            data.images,
            args.features,
            checkpoint=args.checkpoint,
            pca_dim=args.pca_dim,
            fit_rows=np.flatnonzero(~data.is_test),  # the PCA never sees a test image
            views=args.views,
        )
        pool, pool_labels = embeddings[~data.is_test], data.labels[~data.is_test]
        test, test_labels = embeddings[data.is_test], data.labels[data.is_test]
        # The paper's linear probe is plain logistic regression; calibration is a choice of
        # the live system (better probabilities), measured separately with --calibrated.
        classifier = ClassifierConfig() if args.calibrated else ClassifierConfig(calibrate_min_per_class=len(pool) + 1)
        settings = {"oracle": None, "volunteers": VolunteerNoise()}
        if args.settings != "both":
            settings = {args.settings: settings[args.settings]}
        rounds = len(label_schedule(10, 10, 291))
        panels: dict[str, dict[str, CurveSummary]] = {}
        with tqdm(total=len(settings) * len(arms) * args.seeds * rounds, unit="round", file=sys.stderr) as bar:
            for setting, noise in settings.items():
                panels[setting] = {}
                for arm in arms:
                    bar.set_description(f"{setting}: {arm.label}")
                    config = SimulationConfig(arm.policy, cold_start=arm.cold_start, noise=noise, classifier=classifier)
                    curves = [
                        simulate(
                            pool, pool_labels, test, test_labels, config, seed=seed, on_round=lambda _: bar.update()
                        )
                        for seed in range(args.seeds)
                    ]
                    panels[setting][arm.label] = summarise(curves)
    elapsed = time.monotonic() - started

    titles = {
        "oracle": "Oracle labels",
        "volunteers": "Simulated volunteers (3 votes, 10-25 % error each, majority consensus)",
    }
    command = (
        f".venv/bin/python -m bench.al_simulation --features {args.features}"
        + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
        + (f" --views {args.views}" if args.features == "encoder" and args.views != "centre" else "")
        + f" --seeds {args.seeds}"
        + (f" --pca-dim {args.pca_dim}" if args.features == "pca" and args.pca_dim != 64 else "")
        + (" --calibrated" if args.calibrated else "")
        + (f" --settings {args.settings}" if args.settings != "both" else "")
        + (f" --policies '{args.policies}'" if args.policies else "")
    )
    features = (
        f"raw-pixel PCA ({pool.shape[1]} components of the 70x70 centre crop fitted on the pool images, ml.baseline)"
        if args.features == "pca"
        else f"encoder checkpoint `{args.checkpoint}` ({pool.shape[1]}-d, ml.embed, {args.views} views)"
    )
    calibration = (
        "sigmoid-calibrated once every class has 10 labels"
        if args.calibrated
        else "uncalibrated: the paper linear probe"
    )
    parts = [
        f"Command: `{command}`  ",
        f"Machine: {args.machine}; date {args.date}; {args.seeds} seeds; wall time {elapsed / 60:.1f} min.  ",
        f"Features: {features}. Classifier: ml.classifier standardised logistic regression "
        f"(C = {classifier.C}, {calibration}); "
        "committees are 5-member bootstrap ensembles (ml.classifier.fit_ensemble).  ",
        "Pool 729 / test 104 (MiraBest Confident). Cold start: 10 labels by `typical_clusters` "
        "(k-means) except the `random` row, which is random throughout; then batches of 10 "
        "(cut short at 36, 73, 145) up to 291. Cells: mean ± std test error over seeds (%). "
        "Last column: fewest labels at which the mean error is at or below random's mean error "
        "at 145 labels (x = fraction of 145), both read off the mean curves smoothed over 3 "
        "consecutive rounds so that a one-round dip does not count. With two classes "
        "least_confident, margin and entropy rank every pool identically, so their rows agree. "
        '"Best" is picked among '
        "the rows on the same test set, so it flatters the winner slightly.",
        "",
    ]
    if args.note:
        parts += [args.note, ""]
    for setting, summaries in panels.items():
        header, rows, best = results_table(summaries)
        table = markdown_table(header, rows)
        print(f"\n{titles[setting]}\n{table}")
        parts += [f"### {titles[setting]}", "", table, ""]
        if setting == "volunteers":
            wrong = np.mean([s.mean_label_error[-1] for s in summaries.values()])
            parts.append(f"Consensus labels wrong at 291 labels: {percent(float(wrong))} % on average over policies.")
            parts.append("")
        if best is not None:
            needed = summaries[best].labels_to_reach(reference_error(summaries[BASELINE]))
            at_145 = summaries[best].error_at(REFERENCE_LABELS)[0]
            verdict = (
                f"Best: **{best}**, {needed or '> 291'} labels for random's 145-label error "
                f"(target <= 72: {'met' if needed and needed <= REFERENCE_LABELS / 2 else 'not met'}); "
                f"error at 145 labels {percent(at_145)} % "
                f"(paper 7.79 %: {'met' if at_145 <= PAPER_ERROR_AT_145 else 'not met'})."
            )
            caveat = flat_baseline_caveat(summaries[BASELINE])
            if caveat:
                verdict += " " + caveat
            print(verdict)
            parts += [verdict, ""]
    # One section (and plot) per feature kind and classifier, so each variant keeps its own.
    dihedral = args.features == "encoder" and args.views == "dihedral"
    named = (("encoder", args.features == "encoder"), ("dihedral", dihedral), ("calibrated", args.calibrated))
    variants = [name for name, on in named if on]
    section = SECTION + "".join(f" ({name})" for name in variants)
    if args.plot is None:
        args.plot = ROOT / "docs" / ("_".join(["al_simulation", *variants]) + ".png")
    if not args.no_write:
        plot_curves(args.plot, {titles[s]: panel for s, panel in panels.items()})
        try:
            plot_name = args.plot.resolve().relative_to(args.markdown.resolve().parent)
        except ValueError:
            plot_name = args.plot
        parts.append(f"![active-learning curves]({plot_name})")
        write_section(args.markdown, section, "\n".join(parts), after=SECTION)
        # The science dashboard draws the simulated random-sampling curve beside the live one.
        curves = {
            setting: {
                label: {"labels": s.n_labels.tolist(), "error": (100 * s.mean_error).round(2).tolist()}
                for label, s in summaries.items()
            }
            for setting, summaries in panels.items()
        }
        args.plot.with_suffix(".json").write_text(json.dumps({"command": command, "curves": curves}, indent=1))
        print(f"\nwrote {args.plot} and section '{section}' of {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
