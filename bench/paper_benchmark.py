"""The paper's MiraBest Confident benchmark (Slijepcevic et al. 2023) in one command.

Test error on the 104 MiraBest Confident test sources after training on stratified
subsets of the 729 training sources, per label budget and seed, for four methods:

* ``linear``: frozen BYOL features + standardised logistic regression (the linear probe);
* ``linear-dihedral``: the same probe on features averaged over the 8 rotations/flips of
  the test view (``ml.embed.embed(views="dihedral")``, what the labelling server embeds with);
* ``linear-views``: the probe fitted on all 8 rotations/flips of each labelled source as
  rows of their own, a scored source getting the mean of its 8 poses' probabilities
  (``ml.probes.view_augmented_probe``);
* ``selftrain``: the 8-view probe refitted on its surest predictions for the training
  part's unlabelled rows, in the labels' class proportions (``ml.probes.self_training_probe``;
  ``--selftrain-share``, ``--selftrain-rounds``);
* ``finetune``: the BYOL encoder fine-tuned with a linear head (``ml.finetune``);
* ``semisup``: the same fine-tuning plus FixMatch consistency on the training part's other
  images, unlabelled (``FinetuneConfig.unlabelled_weight``, ``--unlabelled-weight``);
* ``supervised``: the same ResNet-18 from scratch on the same labels and augmentations;
* ``pca``: raw-pixel PCA (fitted on the 729 training images) + logistic regression.

The full protocol on a GPU (BYOL pretraining on the pool of ``ml.pools`` first; on an H200
about 1.5 minutes of pretraining and 8 of fits; ``bench/gpu_run.sh`` wraps it):

    .venv/bin/python -m bench.paper_benchmark --pretrain-preset paper --seeds 0-9

With little GPU time, ``--pretrain-minutes M`` sizes the epochs to fit (from a measured step
rate, never more than the preset's) and ``--stop-after M`` ends the run between fits; running
the same command again goes on where it stopped.

A reduced protocol on a CPU, in steps that add to the same results file:

    .venv/bin/python -m bench.paper_benchmark --pretrain-preset cpu-quick --methods linear,pca
    .venv/bin/python -m bench.paper_benchmark --checkpoint var/benchmarks/byol-cpu-quick-e25-s0.pt \\
        --methods supervised,finetune --budgets 36,145 --seeds 0-2 --finetune-preset cpu-quick

Results accumulate in ``OUT/paper_benchmark.json`` (one entry per method, budget and seed;
entries already there are not recomputed); the table covers everything in that file, and
the plot goes to ``OUT/paper_benchmark.png`` and ``docs/paper_benchmark.png``.

Choices (architecture, pretraining and fine-tuning presets, probe settings) are made with
``--split validation``, never on the test sources; the test set (``--split test``, the
default) gives the final rows only, once the choices are fixed:

    .venv/bin/python -m bench.paper_benchmark --split validation --folds 5 --methods pca --seeds 0-9

With ``--split validation`` the 729 training sources are divided into ``--folds K`` stratified
folds (``ml.evaluation.validation_split``, fixed shuffle): label seed ``s`` is scored on fold
``s % K`` (seeds 0-4 score each of 5 folds once, seeds 5-9 again with other subsets), its
labelled subset drawn by ``stratified_subset`` from the other folds, and every method (PCA
included) is fitted on those folds only. Budgets larger than a fold's training part (729
always is) are skipped with a line on stderr. Results go to
``OUT/paper_benchmark_validation.json`` and ``OUT/paper_benchmark_validation.png``, whose
identity records ``split`` and ``folds`` so validation and test results never mix; no docs
plot is written unless ``--docs-plot`` names one. The encoder of the BYOL methods is
pretrained without labels on a pool that excludes the test sources but holds the validation
folds' images, so validation errors of those methods can be slightly optimistic.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("linear", "linear-dihedral", "linear-views", "selftrain", "finetune", "semisup", "supervised", "pca")
METHOD_LABELS = {
    "linear": "frozen encoder features + logistic regression",
    "linear-dihedral": "frozen features, mean of 8 rotations/flips, + logistic regression",
    "linear-views": "frozen features, 8 rotations/flips as training rows, + logistic regression",
    "selftrain": "frozen features, 8-view mean, + self-trained logistic regression",
    "finetune": "encoder fine-tuned",
    "semisup": "encoder fine-tuned + FixMatch on the unlabelled rest",
    "supervised": "supervised ResNet-18 from scratch",
    "pca": "raw-pixel PCA + logistic regression",
}
#: Methods that need the BYOL encoder, and those whose result depends on fine-tuning settings.
ENCODER_METHODS = frozenset({"linear", "linear-dihedral", "linear-views", "selftrain", "finetune", "semisup"})
#: Methods that fit a logistic regression on features (``--probe-c`` applies to them).
PROBE_METHODS = frozenset({"linear", "linear-dihedral", "linear-views", "selftrain", "pca"})
FINETUNE_METHODS = frozenset({"finetune", "semisup", "supervised"})
#: How progress bars name a pretraining method (``PretrainConfig.method``).
METHOD_NAMES = {"byol": "BYOL", "vicreg": "VICReg"}
#: The paper's headline: 7.79 % test error with 145 labels (mean of 10 seeds).
PAPER_POINT = (145, 0.0779)
RESULTS_FILE = "paper_benchmark.json"
PLOT_FILE = "paper_benchmark.png"
#: Where ``--split validation`` keeps its results and plot, apart from the test's.
VALIDATION_RESULTS_FILE = "paper_benchmark_validation.json"
VALIDATION_PLOT_FILE = "paper_benchmark_validation.png"
#: Seed of the shuffle that assigns the training sources to validation folds.
FOLD_SEED = 0


def shared_data() -> Path:
    """The shared data folder: RGZ_SHARED_DATA, default ../shared/data beside the project."""
    return Path(os.environ.get("RGZ_SHARED_DATA", ROOT.parent / "shared" / "data"))


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` -> 0..9; ``"0,3,5-6"`` -> [0, 3, 5, 6]."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return sorted(set(seeds))


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The options of the methods' settings and where they run (read by :func:`method_runner`)."""
    from ml.config import FINETUNE_PRESETS

    parser.add_argument(
        "--finetune-preset",
        choices=sorted(FINETUNE_PRESETS),
        help="fine-tuning / supervised settings (default: the encoder's pretraining preset, else paper)",
    )
    parser.add_argument("--finetune-epochs", type=int, help="override the fine-tuning preset's epochs")
    parser.add_argument(
        "--unlabelled-weight",
        type=float,
        default=1.0,
        help="semisup: weight of the consistency loss when the preset has none [1.0]",
    )
    parser.add_argument("--pca-dim", type=int, default=64)
    parser.add_argument(
        "--probe-c", type=float, default=1.0, help="inverse L2 strength of the probes' logistic regression [1.0]"
    )
    parser.add_argument(
        "--selftrain-share",
        type=float,
        default=0.5,
        help="selftrain: fraction of the unlabelled rows pseudo-labelled by the last round [0.5]",
    )
    parser.add_argument("--selftrain-rounds", type=int, default=3, help="selftrain: refits on pseudo-labels [3]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def check_method_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse method settings out of range (through ``parser.error``, naming the option)."""
    if args.probe_c <= 0:
        parser.error("--probe-c must be positive")
    if not 0 < args.selftrain_share <= 1:
        parser.error("--selftrain-share must lie in (0, 1]")
    if args.selftrain_rounds < 0:
        parser.error("--selftrain-rounds must be 0 or more")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from ml.config import PRETRAIN_PRESETS

    data = shared_data()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    encoder = parser.add_mutually_exclusive_group()
    encoder.add_argument("--checkpoint", type=Path, help="an existing BYOL encoder checkpoint")
    encoder.add_argument(
        "--pretrain-preset",
        choices=sorted(PRETRAIN_PRESETS),
        help="pretrain BYOL on the pool first (reusing OUT/byol-PRESET-eEPOCHS-sSEED.pt if present)",
    )
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default: the preset's)")
    parser.add_argument(
        "--pretrain-minutes",
        type=float,
        help="fit pretraining into about this many minutes: epochs from a measured step rate, at most the preset's",
    )
    parser.add_argument(
        "--stop-after",
        type=float,
        metavar="MINUTES",
        help="start no new fit after this many minutes; the table covers what finished (rerun to go on)",
    )
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated from {', '.join(METHODS)}")
    parser.add_argument("--budgets", default="36,73,145,291,729")
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,1,2")
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="score on the 104 test sources (final rows only) or on stratified folds of the 729 training "
        "sources (for every choice); default test",
    )
    parser.add_argument(
        "--folds", type=int, default=5, help="validation folds K: label seed s is scored on fold s %% K (default 5)"
    )
    add_method_options(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "benchmarks")
    parser.add_argument(
        "--docs-plot",
        help=f"copy of the plot ('' for none; default docs/{PLOT_FILE} for the test split, none for validation)",
    )
    parser.add_argument("--fresh", action="store_true", help="discard results already in OUT")
    parser.add_argument("--mirabest", type=Path, default=data / "mirabest" / "MiraBest_F_batches.tar.gz")
    parser.add_argument("--griese", type=Path, default=data / "firstgalaxydata" / "galaxy_data_h5.zip")
    parser.add_argument("--frdeep", type=Path, default=data / "frdeep" / "FIRST_PNG_dataset.tar.gz")
    args = parser.parse_args(argv)
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if ENCODER_METHODS & set(args.methods) and not (args.checkpoint or args.pretrain_preset):
        parser.error(f"{', '.join(sorted(ENCODER_METHODS))} need --checkpoint or --pretrain-preset")
    if args.pretrain_minutes is not None and (args.epochs is not None or not args.pretrain_preset):
        parser.error("--pretrain-minutes needs --pretrain-preset and chooses the epochs itself (no --epochs)")
    for name in ("pretrain_minutes", "stop_after"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    check_method_options(parser, args)
    if args.docs_plot is None:
        args.docs_plot = str(ROOT / "docs" / PLOT_FILE) if args.split == "test" else ""
    args.budgets = [int(budget) for budget in args.budgets.split(",")]
    args.seeds = parse_seeds(args.seeds)
    return args


def executable() -> str:
    """The interpreter as a command would name it: ``.venv/bin/python`` inside the project."""
    path = Path(sys.executable)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, so a run killed mid-write leaves the previous results intact."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(partial, path)


def sized_epochs(config: Any, n_images: int, minutes: float, device: str | None) -> tuple[int, float]:
    """Epochs of ``config`` that fit ``minutes`` at the step rate measured on this device.

    Returns:
        ``(epochs, images per second)``; epochs at most the preset's, at least one.
    """
    from bench.encoder_throughput import byol_images_per_s

    batch = min(config.batch_size, n_images)
    rate = byol_images_per_s(config.name, batch, warmup_steps=2, steps=5, device=device)
    fitting = int(minutes * 60 * rate // n_images)
    return max(1, min(config.epochs, fitting)), rate


def pretrain_checkpoint(args: argparse.Namespace, device: str | None) -> tuple[Path, dict[str, Any]]:
    """Pretrain BYOL on the test-free pool, or reuse the checkpoint a previous run left in OUT."""
    from ml.checkpoint import save_checkpoint
    from ml.config import get_config
    from ml.pools import build_pretraining_pool
    from ml.train import TrainingProgress, pretrain

    config = get_config(args.pretrain_preset, **({} if args.epochs is None else {"epochs": args.epochs}))
    stem = f"{config.method}-{config.name}"
    if args.pretrain_minutes is not None:
        # The epochs depend on this device's speed: any checkpoint of the preset and seed is reused.
        earlier = sorted(args.out.glob(f"{stem}-e*-s{args.pretrain_seed}.pt"), key=lambda p: p.stat().st_mtime)
        if earlier:
            print(f"reusing {earlier[-1]} (delete it to pretrain again)", file=sys.stderr)
            return earlier[-1], {"preset": config.name}
    else:
        path = args.out / f"{stem}-e{config.epochs}-s{args.pretrain_seed}.pt"
        if path.exists():
            print(f"reusing {path} (delete it to pretrain again)", file=sys.stderr)
            return path, {"preset": config.name, "epochs": config.epochs}
    images, provenance, report = build_pretraining_pool(args.mirabest, args.griese, args.frdeep)
    print(f"pretraining pool: {report}", file=sys.stderr)
    info: dict[str, Any] = {"preset": config.name}
    if args.pretrain_minutes is not None:
        epochs, rate = sized_epochs(config, len(images), args.pretrain_minutes, device)
        warmup = min(config.warmup_epochs, max(1, epochs // 10))
        config = dataclasses.replace(config, epochs=epochs, warmup_epochs=warmup)
        info.update(sized_for_minutes=args.pretrain_minutes, measured_images_per_s=round(rate))
        print(
            f"{rate:.0f} images/s: {epochs} epochs (warm-up {warmup}) fit {args.pretrain_minutes} min", file=sys.stderr
        )
    info["epochs"] = config.epochs
    path = args.out / f"{stem}-e{config.epochs}-s{args.pretrain_seed}.pt"
    with tqdm(desc=f"{METHOD_NAMES[config.method]} {config.name}", unit="step", file=sys.stderr, mininterval=5) as bar:

        def progress(state: TrainingProgress) -> None:
            bar.total = state.total_steps
            bar.update(state.step - bar.n)
            bar.set_postfix(
                epoch=state.epoch, loss=f"{state.loss:.3f}", img_s=f"{state.images_per_s:.0f}", refresh=False
            )

        result = pretrain(images, config, progress=progress, device=device, seed=args.pretrain_seed)
    save_checkpoint(path, result, extra={"pool_size": len(images), "benchmark": "paper_benchmark"})
    info.update(
        pool=report,
        pool_datasets={name: sum(s.dataset == name for s in provenance) for name in ("mirabest", "griese", "frdeep")},
        steps=result.steps,
        seconds=round(result.seconds, 1),
        device=result.device,
        final_epoch_loss=result.curves.epoch_loss[-1] if result.curves.epoch_loss else None,
    )
    print(f"saved {path} after {result.seconds / 60:.1f} min", file=sys.stderr)
    return path, info


class PoseCache:
    """The 8 poses' features (``ml.embed.embed_poses``) of each image array a run scores, computed once.

    The probe methods of one run share it, so an encoder embeds an array once, not once per
    method; a validation fold registered as rows of the whole training set is cut from the
    whole's poses instead of being embedded again.
    """

    def __init__(self) -> None:
        self._features: list[tuple[Any, np.ndarray, np.ndarray]] = []  # (encoder, images, poses)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (part, whole, rows)

    def register_part(self, part: np.ndarray, whole: np.ndarray, rows: np.ndarray) -> None:
        """Note that ``part`` holds ``whole[rows]``: its poses are then cut from those of ``whole``."""
        self._parts.append((part, whole, rows))

    def __call__(self, encoder: Any, images: np.ndarray, device: str | None) -> np.ndarray:
        from ml.embed import embed_poses

        for part, whole, rows in self._parts:
            if part is images:
                return self(encoder, whole, device)[:, rows]
        for known_encoder, known_images, features in self._features:
            if known_encoder is encoder and known_images is images:
                return features
        features = embed_poses(encoder, images, device=device)
        self._features.append((encoder, images, features))
        return features


def method_runner(
    method: str,
    split: Any,
    encoder: Any,
    finetune_config: Any,
    args: argparse.Namespace,
    device: str | None,
    poses: PoseCache | None = None,
) -> Callable[[np.ndarray, int], np.ndarray]:
    """The ``fit_predict`` of one method (features are computed once, not per subset; the probes
    take them from ``poses``, shared by the methods of a run)."""
    from ml.evaluation import LINEAR_PROBE, linear_probe

    probe = dataclasses.replace(LINEAR_PROBE, C=args.probe_c)
    if method == "pca":
        from ml.baseline import pixel_pca_embeddings

        n_train = len(split.train_images)
        features = pixel_pca_embeddings(
            np.concatenate([split.train_images, split.test_images]), dim=args.pca_dim, fit_rows=np.arange(n_train)
        )
        return linear_probe(features[:n_train], split.train_labels, features[n_train:], probe)
    if method in ("linear", "linear-dihedral", "linear-views", "selftrain"):
        from ml.probes import self_training_probe, view_augmented_probe

        # Pose 0 is the centre view, and the mean of the 8 poses is ``embed(views="dihedral")``.
        poses = poses or PoseCache()
        train_poses, test_poses = poses(encoder, split.train_images, device), poses(encoder, split.test_images, device)
        if method == "linear":
            return linear_probe(train_poses[0], split.train_labels, test_poses[0], probe)
        if method == "linear-dihedral":
            return linear_probe(train_poses.mean(axis=0), split.train_labels, test_poses.mean(axis=0), probe)
        if method == "linear-views":
            return view_augmented_probe(train_poses, split.train_labels, test_poses, probe)
        return self_training_probe(
            train_poses.mean(axis=0),
            split.train_labels,
            test_poses.mean(axis=0),
            probe,
            share=args.selftrain_share,
            rounds=args.selftrain_rounds,
        )

    from ml.finetune import finetune, predict_proba, train_supervised_baseline

    def fit_predict(indices: np.ndarray, seed: int) -> np.ndarray:
        images, labels = split.train_images[indices], split.train_labels[indices]
        if method in ("finetune", "semisup"):
            config, unlabelled = finetune_config, None
            if method == "semisup":  # the whole training part, its labels unused; never the scored sources
                weight = finetune_config.unlabelled_weight or args.unlabelled_weight
                config, unlabelled = dataclasses.replace(finetune_config, unlabelled_weight=weight), split.train_images
            result = finetune(
                encoder,
                images,
                labels,
                config,
                n_classes=split.n_classes,
                device=device,
                seed=seed,
                unlabelled=unlabelled,
            )
        else:
            result = train_supervised_baseline(
                images, labels, finetune_config, encoder.config, n_classes=split.n_classes, device=device, seed=seed
            )
        return predict_proba(result.model, split.test_images, device=device).argmax(axis=1)

    return fit_predict


def finetune_setup(args: argparse.Namespace, checkpoint: Any) -> tuple[Any, Any]:
    """The encoder and fine-tuning settings the methods of ``args.methods`` need.

    Returns:
        ``(encoder, finetune_config)``: the checkpoint's encoder (for ``supervised`` without
        one, a fresh encoder of the paper's architecture; else ``None``), and the settings of
        ``args.finetune_preset`` (default: the checkpoint's pretraining preset, else
        ``paper``) with ``args.finetune_epochs``, or ``None`` when no method fine-tunes.
    """
    from ml.config import FINETUNE_PRESETS, get_finetune_config

    encoder = checkpoint.encoder if checkpoint else None
    finetune_config = None
    if FINETUNE_METHODS & set(args.methods):
        default = checkpoint.pretrain_config.name if checkpoint and checkpoint.pretrain_config else "paper"
        preset = args.finetune_preset or (default if default in FINETUNE_PRESETS else "paper")
        overrides = {} if args.finetune_epochs is None else {"epochs": args.finetune_epochs}
        finetune_config = get_finetune_config(preset, **overrides)
    if "supervised" in args.methods and encoder is None:
        # Without a checkpoint the baseline still needs an architecture: the paper's.
        from ml.config import EncoderConfig
        from ml.encoder import build_encoder

        encoder = build_encoder(EncoderConfig())
    return encoder, finetune_config


def checkpoint_summary(path: Path, checkpoint: Any) -> dict[str, Any]:
    """What a results file records about the encoder checkpoint it evaluated."""
    from ml.config import config_to_dict

    return {
        "checkpoint": str(path),
        "pretrain_config": config_to_dict(checkpoint.pretrain_config) if checkpoint.pretrain_config else None,
        "steps": checkpoint.steps,
        "pretraining_images": checkpoint.data.n_images if checkpoint.data else None,
        "created_at": checkpoint.created_at,
        "code_version": checkpoint.code_version,
    }


def run_summary(module: str, started_at: str, device: str | None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line (``argv``, default this process's), start time, machine and torch device of this run."""
    import torch

    arguments = sys.argv[1:] if argv is None else list(argv)
    return {
        "command": " ".join([executable(), "-m", module, *arguments]),
        "started_at": started_at,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "device": str(torch.device(device) if device else ("cuda" if torch.cuda.is_available() else "cpu")),
    }


def plan_fits(
    methods: Sequence[str], budgets: Sequence[int], seeds: Sequence[int], done: set[tuple[str, int, int]]
) -> list[tuple[int, int, str]]:
    """The ``(seed, budget, method)`` fits still to run, seeds outermost.

    A run stopped early (``--stop-after``, a time limit) then leaves every method with results
    for the same seeds, so the methods stay comparable seed for seed.
    """
    return [
        (seed, budget, method)
        for seed in seeds
        for budget in budgets
        for method in methods
        if (method, budget, seed) not in done
    ]


def load_results(path: Path, identity: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """Previous results made with the same encoder and fine-tuning settings, else a new record.

    Raises:
        SystemExit: The file holds results of another encoder or other settings (mixing them
            would make the table meaningless); ``--fresh`` or another ``--out`` resolves it.
    """
    # Compare as stored: JSON turns the configs' tuples into lists.
    identity = json.loads(json.dumps(identity))
    if fresh or not path.exists():
        return {"identity": identity, "runs": [], "pretraining": None, "results": []}
    stored = json.loads(path.read_text())
    clashes = [
        key
        for key, value in identity.items()
        if value is not None and stored["identity"].get(key) is not None and stored["identity"][key] != value
    ]
    if clashes:
        raise SystemExit(f"{path} holds results with other {', '.join(clashes)}; pass --fresh or another --out")
    for key, value in identity.items():
        if value is not None:
            stored["identity"][key] = value
    return stored


def seed_counts(counts: Sequence[int]) -> str:
    """``"10 seeds"``, or ``"2-10 seeds"`` when budgets were run with different numbers of seeds."""
    low, high = min(counts), max(counts)
    return f"{high} seeds" if low == high else f"{low}-{high} seeds"


def majority_error(labels: np.ndarray) -> float:
    """Error of always predicting the most frequent class among ``labels`` (the labels scored).

    Raises:
        ValueError: No labels.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    if not counts.sum():
        raise ValueError("no labels to score")
    return float(1 - counts.max() / counts.sum())


def split_heading(split_name: str, split: Any, folds: int) -> str:
    """The first line of the table: which sources its errors were scored on."""
    if split_name == "validation":
        return (
            f"validation: {folds}-fold inside the {len(split.train_labels)} training sources "
            f"(label seed s scored on fold s % {folds}; no test source used)"
        )
    return f"test: the {len(split.test_labels)} test sources"


def plot(
    path: Path,
    summary: dict[tuple[str, int], Any],
    methods: Sequence[str],
    majority_error: float,
    *,
    error_name: str = "test error",
    scored: str = "104 test sources",
) -> None:
    """Error against labels (log x), one line per method with seed spread as error bars.

    Args:
        error_name: What the errors are (``"test error"``, ``"validation error"``).
        scored: Which sources were scored, for the y axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        points = sorted((budget, cell) for (name, budget), cell in summary.items() if name == method)
        if not points:
            continue
        budgets = [budget for budget, _ in points]
        axes.errorbar(
            budgets,
            [100 * cell.mean for _, cell in points],
            yerr=[100 * cell.std for _, cell in points],
            marker="o",
            capsize=3,
            color=f"C{METHODS.index(method)}",  # the same colour for a method whatever else is plotted
            label=f"{METHOD_LABELS[method]} ({seed_counts([cell.n_seeds for _, cell in points])})",
        )
    axes.plot(PAPER_POINT[0], 100 * PAPER_POINT[1], "k*", markersize=12, label="paper: 7.79 % test error at 145 labels")
    axes.axhline(100 * majority_error, color="grey", linestyle=":", label="majority class")
    axes.set_xscale("log")
    all_budgets = sorted({budget for _, budget in summary})
    axes.set_xticks(all_budgets, [str(budget) for budget in all_budgets])
    axes.minorticks_off()
    axes.set_xlabel("training labels (MiraBest Confident, stratified)")
    axes.set_ylabel(f"{error_name} (%), {scored}")
    highest = max([cell.mean + cell.std for cell in summary.values()], default=0.0)
    axes.set_ylim(0, 100 * max(0.5, majority_error + 0.03, highest + 0.02))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    axes.set_title(f"MiraBest Confident: {error_name} vs labels (mean ± std over seeds)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from ml.checkpoint import load_checkpoint
    from ml.config import config_to_dict
    from ml.evaluation import (
        BenchmarkSplit,
        SubsetResult,
        evaluate_subsets,
        load_mirabest_confident_split,
        markdown_table,
        summarise,
        validation_indices,
        validation_split,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    device = None if args.device == "auto" else args.device
    validation = args.split == "validation"
    torch.backends.cudnn.benchmark = True  # fixed shapes per loop: let cuDNN pick the fastest kernels
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    pretraining = None
    checkpoint_path = args.checkpoint
    if args.pretrain_preset:
        checkpoint_path, pretraining = pretrain_checkpoint(args, device)
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path else None
    encoder, finetune_config = finetune_setup(args, checkpoint)

    identity = {
        "encoder_sha256": file_sha256(checkpoint_path) if checkpoint_path else None,
        "encoder_config": config_to_dict(encoder.config) if encoder is not None else None,
        "finetune_config": config_to_dict(finetune_config) if finetune_config else None,
        "pca_dim": args.pca_dim if "pca" in args.methods else None,
        "probe_c": args.probe_c if PROBE_METHODS & set(args.methods) else None,
        "selftrain": [args.selftrain_share, args.selftrain_rounds] if "selftrain" in args.methods else None,
        "unlabelled_weight": args.unlabelled_weight if "semisup" in args.methods else None,
        # Validation and test results live in different files, and each file says which it holds.
        "split": args.split,
        "folds": args.folds if validation else None,
        "fold_seed": FOLD_SEED if validation else None,
    }
    results_path = args.out / (VALIDATION_RESULTS_FILE if validation else RESULTS_FILE)
    record = load_results(results_path, identity, args.fresh)
    if checkpoint is not None:
        record["encoder"] = checkpoint_summary(checkpoint_path, checkpoint)
    if pretraining and "pool" in pretraining:
        record["pretraining"] = pretraining
    record["runs"].append(run_summary("bench.paper_benchmark", started_at, device))
    done = {(r["method"], r["budget"], r["seed"]) for r in record["results"]}

    split = load_mirabest_confident_split(args.mirabest)
    # With --split validation, seed s is scored on fold s % K of the training set and every
    # method is fitted on the other folds; the test sources are not used at all.
    parts: dict[int, BenchmarkSplit] = {}
    poses = PoseCache()

    def fold_of(seed: int) -> int | None:
        return seed % args.folds if validation else None

    def part(fold: int | None) -> BenchmarkSplit:
        """The split a fit of ``fold`` is trained and scored on: the benchmark's own for None."""
        if fold is None:
            return split
        if fold not in parts:
            try:
                parts[fold] = validation_split(split, fold, args.folds, seed=FOLD_SEED)
            except ValueError as error:
                raise SystemExit(f"--folds {args.folds}: {error}") from error
            train_rows, held_out = validation_indices(split.train_labels, fold, args.folds, seed=FOLD_SEED)
            poses.register_part(parts[fold].train_images, split.train_images, train_rows)
            poses.register_part(parts[fold].test_images, split.train_images, held_out)
        return parts[fold]

    # Results already in the file are kept, not recomputed: the CPU protocol is run in steps.
    # Seeds outermost, so a run stopped early leaves every method with the same seeds.
    todo = []
    too_large: dict[int, set[int | None]] = {}
    for seed, budget, method in plan_fits(args.methods, args.budgets, args.seeds, done):
        if budget > len(part(fold_of(seed)).train_labels):
            too_large.setdefault(budget, set()).add(fold_of(seed))
        else:
            todo.append((seed, budget, method))
    for budget, folds in sorted(too_large.items()):
        # One line per budget, however many seeds and methods it would have had.
        sizes = sorted({len(part(fold).train_labels) for fold in folds})
        available = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        named = sorted(fold for fold in folds if fold is not None)
        folds_text = f" of validation fold(s) {', '.join(map(str, named))}" if named else ""
        print(
            f"skipping budget {budget}: more labels than the {available} training sources{folds_text}", file=sys.stderr
        )
    runners: dict[tuple[str, int | None], Callable[[np.ndarray, int], np.ndarray]] = {}
    left = 0
    with tqdm(total=len(todo), desc="subsets", unit="fit", file=sys.stderr, mininterval=2) as bar:

        def keep(where: dict[str, Any], result: SubsetResult) -> None:
            # Saved as each result arrives, so an interrupted run loses at most one fit.
            record["results"].append({**dataclasses.asdict(result), **where})
            write_json(results_path, record)
            bar.update()
            bar.set_postfix(method=result.method, budget=result.budget, err=f"{100 * result.error:.1f}%", refresh=False)

        for done_fits, (seed, budget, method) in enumerate(todo):
            if args.stop_after is not None and time.perf_counter() - started > 60 * args.stop_after:
                left = len(todo) - done_fits
                break
            fold = fold_of(seed)
            scored = part(fold)
            if (method, fold) not in runners:
                runners[method, fold] = method_runner(method, scored, encoder, finetune_config, args, device, poses)
            where: dict[str, Any] = {"scored": len(scored.test_labels)}
            if fold is not None:
                where["fold"] = fold
            evaluate_subsets(
                method,
                runners[method, fold],
                scored.train_labels,
                scored.test_labels,
                [budget],
                [seed],
                on_result=functools.partial(keep, where),
            )
    if left:
        print(
            f"stopped after {args.stop_after} min with {left} fits left: run the same command to go on", file=sys.stderr
        )
    record["runs"][-1]["seconds"] = round(time.perf_counter() - started, 1)
    record["runs"][-1]["fits_left"] = left
    write_json(results_path, record)

    fields = [field.name for field in dataclasses.fields(SubsetResult)]
    summary = summarise(SubsetResult(**{name: r[name] for name in fields}) for r in record["results"])
    if not summary:
        print(f"no results yet in {results_path}", file=sys.stderr)
        return 0
    present = [m for m in METHODS if any(name == m for name, _ in summary)]
    budgets = sorted({budget for _, budget in summary})
    print(split_heading(args.split, split, args.folds))
    print(markdown_table(summary, present, budgets, labels=METHOD_LABELS))
    if validation:
        # The folds the results were scored on (those of earlier runs too).
        scored_folds = sorted({int(r["fold"]) for r in record["results"]})
        scored_labels = np.concatenate([part(fold).test_labels for fold in scored_folds])
        scored_text = f"{len(scored_labels)} training sources in folds {', '.join(map(str, scored_folds))}"
    else:
        scored_labels = split.test_labels
        scored_text = f"{len(scored_labels)} test sources"
    plot_path = args.out / (VALIDATION_PLOT_FILE if validation else PLOT_FILE)
    plot(
        plot_path,
        summary,
        present,
        majority_error(scored_labels),
        error_name=f"{args.split} error",
        scored=scored_text,
    )
    if args.docs_plot:
        Path(args.docs_plot).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot_path, args.docs_plot)
    print(f"results: {results_path}; plot: {plot_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
