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
import pickle
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
    Curve,
    CurveSummary,
    PairedComparison,
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


#: The calibrated arms: sigmoid calibration once every class has 10 labels (the live
#: classifier's first default; ml.classifier no longer calibrates unless asked, so the arm
#: must ask, or it silently equals the plain probe).
CALIBRATED = ClassifierConfig(calibrate_min_per_class=10)


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
    parser.add_argument(
        "--protocol",
        choices=("paired", "legacy"),
        default="paired",
        help="paired: seed-paired differences with intervals on validation data (issue 13); "
        "legacy: the superseded 'labels to reach random's 145-label error' table",
    )
    parser.add_argument("--evaluate", choices=("validation", "test"), default="validation")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--budget", type=int, default=291)
    parser.add_argument("--guard-every", type=int, default=50, help="labels between two runs of the policy chooser")
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


def plot_curves(
    path: Path, panels: dict[str, dict[str, CurveSummary]], ylabel: str = "MiraBest Confident test error (%)"
) -> None:
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
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4 if len(panels) > 1 else 2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.12 if len(panels) > 1 else 0.2, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.protocol == "paired":
        return run_paired(args)
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
        classifier = CALIBRATED if args.calibrated else ClassifierConfig(calibrate_min_per_class=len(pool) + 1)
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


# --- the paired protocol (issue 13): validation data, realistic volunteers, guarded queue ---------

PAIRED_SECTION = "Active-learning simulation, paired statistic"
#: Budgets whose paired differences the tables show (every round is checked for the verdict).
TABLE_BUDGETS = (36, 73, 145, 291)


@dataclass(frozen=True)
class PairedArm:
    """One row of the paired comparison."""

    label: str
    policy: str
    cold_start: str = "typical_clusters"
    stream: int = 0
    exploration: float = 0.0
    calibrated: bool = False


NULL_ARM = PairedArm("random (independent stream: null)", "random", cold_start="random", stream=1)
PAIRED_ARMS = (
    PairedArm("random", "random", cold_start="random"),
    NULL_ARM,
    PairedArm("random (calibrated classifier)", "random", cold_start="random", calibrated=True),
    PairedArm("least_confident", "least_confident"),
    PairedArm("margin", "margin"),
    PairedArm("density_weighted", "density_weighted"),
    PairedArm("guarded (10 % exploration)", "guarded", cold_start="random", exploration=0.1),
    PairedArm("guarded (20 % exploration)", "guarded", cold_start="random", exploration=0.2),
    PairedArm("guarded (30 % exploration)", "guarded", cold_start="random", exploration=0.3),
)


def select_paired_arms(names: str | None) -> list[PairedArm]:
    """The arms named (row label, policy name or ``guarded``); random and the null row always first."""
    if not names:
        return list(PAIRED_ARMS)
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    chosen = [arm for arm in PAIRED_ARMS[2:] if arm.label in wanted or arm.policy in wanted]
    unknown = wanted - {arm.label for arm in chosen} - {arm.policy for arm in chosen} - {NULL_ARM.label}
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}; rows are {[arm.label for arm in PAIRED_ARMS]}")
    return [PAIRED_ARMS[0], NULL_ARM, *chosen]


def signed(value: float) -> str:
    return f"{value:+.1f}"


def ratio_text(ratio: tuple[float, float, float]) -> str:
    def one(value: float) -> str:
        return f"{value:.2f}x" if np.isfinite(value) else "never"

    return f"{one(ratio[0])} ({one(ratio[1])} to {one(ratio[2])})"


def paired_table(comparisons: dict[str, PairedComparison]) -> tuple[list[str], list[list[str]]]:
    """Rows: error difference against random at fixed budgets, area, labels ratio, verdict."""
    budgets = [b for b in TABLE_BUDGETS if any(b == n for n in next(iter(comparisons.values())).n_labels)]
    header = [
        "arm (minus random)",
        *[f"Δ error @ {b} (points, 95 % CI)" for b in budgets],
        "Δ area (mean error, points)",
        f"labels for random's {next(iter(comparisons.values())).reference}-label error (ratio, 95 % CI)",
        "worse than random at budgets (pointwise 95 %)",
        "worse (simultaneous 95 % over all budgets)",
    ]
    rows = []
    for label, comparison in comparisons.items():
        cells = [label]
        for budget in budgets:
            mean, low, high = comparison.at(budget)
            cells.append(f"{signed(mean)} ({signed(low)} to {signed(high)})")
        mean, low, high = comparison.area
        cells.append(f"{signed(mean)} ({signed(low)} to {signed(high)})")
        cells.append(ratio_text(comparison.ratio))
        for simultaneous in (False, True):
            worse = comparison.worse_at(simultaneous)
            more = f" and {len(worse) - 5} more" if len(worse) > 5 else ""
            cells.append(f"{', '.join(str(n) for n in worse[:5])}{more}" if len(worse) else "none")
        rows.append(cells)
    return header, rows


def run_paired(args: argparse.Namespace) -> int:
    from ml.simulation import (
        VolunteerModel,
        compare_paired,
        load_mirabest_campaign,
        validation_split,
    )

    arms = select_paired_arms(args.policies)
    started = time.monotonic()
    data = load_mirabest_campaign(args.data or default_data())
    training = np.flatnonzero(data.part == "pool")
    confident = training[~data.ambiguous[training]]
    validation = validation_split(data.labels, confident, args.validation_fraction, seed=0)
    if args.evaluate == "validation":
        pool_rows, judge_rows = np.setdiff1d(training, validation), validation
    else:
        pool_rows, judge_rows = np.setdiff1d(training, validation), np.flatnonzero(data.part == "test")
    with threadpool_limits(args.threads):
        embeddings = image_features(
            data.images,
            args.features,
            checkpoint=args.checkpoint,
            pca_dim=args.pca_dim,
            fit_rows=training,  # never a test image
            views=args.views,
        )
        pool, pool_labels, ambiguous = embeddings[pool_rows], data.labels[pool_rows], data.ambiguous[pool_rows]
        judge, judge_labels = embeddings[judge_rows], data.labels[judge_rows]
        settings: dict[str, VolunteerModel | None] = {"oracle": None, "volunteers": VolunteerModel()}
        if args.settings != "both":
            settings = {args.settings: settings[args.settings]}
        schedule = label_schedule(10, 10, args.budget)
        curves: dict[str, dict[str, list[Curve]]] = {}
        with tqdm(total=len(settings) * len(arms) * args.seeds * len(schedule), unit="round", file=sys.stderr) as bar:
            for setting, noise in settings.items():
                curves[setting] = {}
                for arm in arms:
                    bar.set_description(f"{setting}: {arm.label}")
                    plain = ClassifierConfig(calibrate_min_per_class=10**9)
                    config = SimulationConfig(
                        arm.policy,
                        cold_start=arm.cold_start,
                        noise=noise,
                        budget=args.budget,
                        classifier=CALIBRATED if arm.calibrated else plain,
                        stream=arm.stream,
                        exploration=arm.exploration,
                        guard_every=args.guard_every,
                    )
                    curves[setting][arm.label] = [
                        simulate(
                            pool,
                            pool_labels,
                            judge,
                            judge_labels,
                            config,
                            seed=seed,
                            ambiguous=ambiguous,
                            on_round=lambda _: bar.update(),
                        )
                        for seed in range(args.seeds)
                    ]
    elapsed = time.monotonic() - started
    if not args.no_write:
        # Beside the plot (var/ is not tracked), so that tables and plots can be redrawn.
        if args.plot is None:
            args.plot = ROOT / "docs" / f"al_paired_{args.features}_{args.evaluate}_{args.settings}.png"
        saved = args.plot.with_suffix(".pickle")
        if saved.resolve().is_relative_to(ROOT / "docs"):
            saved = ROOT / "var" / saved.name
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_bytes(pickle.dumps(curves))
        print(f"curves saved to {saved}", file=sys.stderr)
    command = (
        f".venv/bin/python -m bench.al_simulation --features {args.features}"
        + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
        + f" --seeds {args.seeds} --evaluate {args.evaluate}"
        + (f" --budget {args.budget}" if args.budget != 291 else "")
        + (f" --settings {args.settings}" if args.settings != "both" else "")
        + (f" --policies '{args.policies}'" if args.policies else "")
    )
    judged = "validation" if args.evaluate == "validation" else "test"
    parts = [
        f"Command: `{command}`  ",
        f"Machine: {args.machine}; date {args.date}; {args.seeds} seeds; wall time {elapsed / 60:.1f} min.  ",
        f"Pool: {len(pool_rows)} MiraBest training sources ({int(ambiguous.sum())} of them 'uncertain', i.e. "
        f"ambiguous); scored on {len(judge_rows)} {judged} sources "
        + (
            f"(a stratified {args.validation_fraction:.0%} of the Confident training sources, held out of the pool; "
            "the 104 test sources are not used)"
            if judged == "validation"
            else "(the MiraBest Confident test set)"
        )
        + f". Features: {args.features} ({pool.shape[1]}-d). Classifier: the plain linear probe "
        "(ml.fastprobe, the optimum of ml.classifier's uncalibrated model) unless the row says calibrated "
        "(ml.classifier's default: sigmoid calibration once every class has 10 labels).  ",
        "Volunteers: ml.simulation.VolunteerModel, 3 votes per source from a crowd of 30; each volunteer's "
        "accuracy on clear sources 70-97 % with FRI errors 1.3x and FRII errors 0.7x the average; on "
        "ambiguous sources 50-70 %; majority consensus.  ",
        "Every cell is arm minus random, paired by seed (same crowd, same answers), in error points: "
        "negative is better; 95 % Student-t interval over seeds. Area: the mean error over the whole "
        "campaign (area under the learning curve / label range). Labels ratio: labels the arm needs to "
        "reach random's error at 145 labels, both mean curves made monotone by isotonic regression, "
        "interpolated in log-labels; 95 % bootstrap interval over seeds. The null row is a second random "
        "queue with its own random stream: it must come out at 1.0x and 0 points within its interval. "
        "Guarded rows: a share of every batch at random, the rest by the policy "
        f"ml.guard.choose_policy picks every {args.guard_every} labels among least_confident and "
        "density_weighted (random until 20 random labels can judge, and whenever no candidate is "
        "measurably better).",
        "",
    ]
    if args.note:
        parts += [args.note, ""]
    reference = REFERENCE_LABELS if REFERENCE_LABELS in schedule else schedule[len(schedule) // 2]
    titles = {"oracle": "Oracle labels", "volunteers": "Simulated volunteers (confusion by class and ambiguity)"}
    for setting, by_arm in curves.items():
        comparisons = {
            label: compare_paired(arm_curves, by_arm[BASELINE], reference=reference, seed=1)
            for label, arm_curves in by_arm.items()
            if label != BASELINE
        }
        header, rows = paired_table(comparisons)
        random_error = np.stack([c.test_error for c in by_arm[BASELINE]]).mean(axis=0)
        where = {n: i for i, n in enumerate(schedule)}
        baseline_line = "Random's own mean error: " + ", ".join(
            f"{percent(float(random_error[where[b]]))} % @ {b}" for b in TABLE_BUDGETS if b in where
        )
        chosen = [c.policies[-1] for label, cs in by_arm.items() if label.startswith("guarded") for c in cs]
        table = markdown_table(header, rows)
        print(f"\n{titles[setting]}\n{baseline_line}\n{table}")
        parts += [f"### {titles[setting]}", "", baseline_line + ".", "", table, ""]
        if chosen:
            counts = {name: chosen.count(name) for name in sorted(set(chosen))}
            line = "Policy the guarded queues ran at the end: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            print(line)
            parts += [line + ".", ""]
        if setting == "volunteers":
            wrong = np.mean([c.label_error[-1] for cs in by_arm.values() for c in cs])
            parts += [f"Consensus labels wrong at the last budget: {percent(float(wrong))} % on average.", ""]
    setting_name = "" if args.settings == "both" else f", {args.settings}"
    section = PAIRED_SECTION + f" ({args.features}, {judged}{setting_name})"
    if not args.no_write:
        panels = {
            titles[setting]: {label: summarise(arm_curves) for label, arm_curves in by_arm.items()}
            for setting, by_arm in curves.items()
        }
        plot_curves(args.plot, panels, ylabel=f"MiraBest {judged} error (%)")
        try:
            plot_name = args.plot.resolve().relative_to(args.markdown.resolve().parent)
        except ValueError:
            plot_name = args.plot
        parts.append(f"![paired active-learning curves]({plot_name})")
        write_section(args.markdown, section, "\n".join(parts), after=SECTION)
        print(f"\nwrote {args.plot} and section '{section}' of {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
