"""The live classifier's cost and accuracy on a wide encoder embedding: choosing ``ClassifierConfig.max_dim``.

Usage::

    python -m bench.live_fit --checkpoint byol-cpu-quick-e25-s0.pt [--dims none,16,32,64,128]
        [--budgets 36,73,145,291] [--seeds 0-4] [--views dihedral]

Validation only: the MiraBest *training* sources (``--classes three``: all of them, FRI /
FRII / hybrid, as the campaign's retrain fits; ``confident``: the paper's two), split by stratified 5-fold
cross-validation; each label subset is drawn from four folds and judged on the fifth. The
test sources are never read. Per ``max_dim`` and budget: validation accuracy (mean +- std
over folds x subsets), the seconds of one classifier fit and of the 5-member committee the
committee policies use, side by side in one run (ratios are what to quote on a shared
machine). Without ``--checkpoint`` the features are pixel PCA at ``--pca-dim``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.paper_benchmark import parse_seeds, shared_data


def parse_dims(text: str) -> list[int | None]:
    return [None if part.strip().lower() == "none" else int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a BYOL encoder checkpoint (default: pixel PCA features)")
    parser.add_argument("--views", choices=("centre", "dihedral"), default="dihedral", help="what the server embeds")
    parser.add_argument("--pca-dim", type=int, default=64)
    parser.add_argument("--dims", default="none,16,32,64,128", help="max_dim values; 'none' never projects")
    parser.add_argument("--budgets", default="36,73,145,291")
    parser.add_argument("--seeds", default="0-4", help="label subsets per fold and budget")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--classes",
        choices=("confident", "three"),
        default="three",
        help="confident: MiraBest Confident's FRI / FRII training sources (the paper's task); three: every "
        "training source, Uncertain ones included, FRI / FRII / hybrid (what the campaign's retrain fits)",
    )
    parser.add_argument("--committee", type=int, default=5, help="committee members timed (0: none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the embedding")
    parser.add_argument("--mirabest", type=Path, default=shared_data() / "mirabest" / "MiraBest_F_batches.tar.gz")
    return parser.parse_args(argv)


def training_features(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Features and labels of the training sources only (the test split is dropped unread)."""
    from ml.datasets import read_mirabest
    from ml.evaluation import load_mirabest_confident_split

    if args.classes == "confident":
        split = load_mirabest_confident_split(args.mirabest)
        images, labels = split.train_images, split.train_labels
    else:
        records = [r for r in read_mirabest(args.mirabest) if r.split == "train"]
        names = sorted({str(r.label) for r in records})
        images = np.stack([r.image for r in records])
        labels = np.array([names.index(str(r.label)) for r in records])
    if args.checkpoint is None:
        from ml.baseline import pixel_pca_embeddings

        features = pixel_pca_embeddings(images, dim=args.pca_dim)
        return features, labels, f"pixel PCA {args.pca_dim}"
    import torch

    from ml.checkpoint import load_checkpoint
    from ml.embed import embed

    torch.set_num_threads(args.threads)
    encoder = load_checkpoint(args.checkpoint).encoder
    features = embed(encoder, images, device="cpu", views=args.views)
    return features, labels, f"{args.checkpoint.name} ({args.views})"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from ml.classifier import fit_classifier, fit_ensemble
    from ml.config import ClassifierConfig
    from ml.evaluation import stratified_subset

    features, labels, name = training_features(args)
    dims, budgets, seeds = parse_dims(args.dims), [int(b) for b in args.budgets.split(",")], parse_seeds(args.seeds)
    print(
        f"live fit on {name}: {features.shape[0]} training sources ({args.classes}) x {features.shape[1]} dimensions, "
        f"{args.folds}-fold validation, {len(seeds)} subsets per fold and budget; one BLAS thread"
    )
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(features, labels))
    # (dim, budget) -> accuracies, classifier seconds, committee seconds
    results: dict[tuple[int | None, int], tuple[list[float], list[float], list[float]]] = {}
    with threadpool_limits(1):  # the worker's fits share two cores with everything else
        for budget in budgets:
            for fold, (train, held_out) in enumerate(folds):
                for seed in seeds:
                    chosen = train[stratified_subset(labels[train], budget, seed=seed * 100 + fold)]
                    for dim in dims:
                        config = ClassifierConfig(max_dim=dim)
                        started = time.perf_counter()
                        model = fit_classifier(features[chosen], labels[chosen], config, seed=seed)
                        fit_s = time.perf_counter() - started
                        committee_s = float("nan")
                        if args.committee:
                            started = time.perf_counter()
                            fit_ensemble(features[chosen], labels[chosen], config, n_members=args.committee, seed=seed)
                            committee_s = time.perf_counter() - started
                        accuracy = float((model.predict(features[held_out]) == labels[held_out]).mean())
                        cell = results.setdefault((dim, budget), ([], [], []))
                        cell[0].append(accuracy)
                        cell[1].append(fit_s)
                        cell[2].append(committee_s)
            print(f"  budget {budget} done", flush=True)
    print()
    print(
        "| max_dim | labels | validation accuracy | classifier fit | committee fit | fit time vs none "
        "| accuracy - none (paired) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for budget in budgets:
        base = results.get((None, budget))
        for dim in dims:
            accuracy, fit_s, committee_s = (np.asarray(v) for v in results[(dim, budget)])
            if base is not None:
                ratio = f"{np.median(fit_s) / np.median(base[1]):.2f}x"
                delta = 100 * (accuracy - np.asarray(base[0]))
                half = 1.96 * delta.std(ddof=1) / np.sqrt(len(delta))
                paired = f"{delta.mean():+.1f} [{delta.mean() - half:+.1f}, {delta.mean() + half:+.1f}]"
            else:
                ratio = paired = "-"
            print(
                f"| {dim or 'none'} | {budget} | {100 * accuracy.mean():.1f} +- {100 * accuracy.std(ddof=1):.1f} % "
                f"| {1000 * np.median(fit_s):.0f} ms | {1000 * np.nanmedian(committee_s):.0f} ms | {ratio} | {paired} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
