"""Why the live classifier collapsed: before/after table on the real FIRST images (pixel-PCA cold start).

Usage: python -m bench.live_classifier
30 label subsets x 3 seeds per row; a balanced 20 FRI / 20 FRII gold set per subset, as bin/start takes.
"""

from __future__ import annotations

import warnings

import numpy as np

from ml.baseline import pixel_pca_embeddings
from ml.classifier import fit_classifier
from ml.config import ClassifierConfig
from ml.datasets import read_griese
from ml.preprocess import from_preprocessed

BEFORE = ClassifierConfig(calibrate_min_per_class=10, class_weight=None)
AFTER = ClassifierConfig()
ROWS = [("10 random", None, 10), ("50 random", None, 50), ("150 random", None, 150), ("25 / 25", 25, 25)]
ROWS += [("10 / 41 (the live run's mix)", 10, 41), ("15 / 60", 15, 60)]


def main() -> None:
    warnings.filterwarnings("ignore")
    records = list(read_griese())
    images = np.stack([from_preprocessed(r.image, allow_blank=True) for r in records])
    labels = np.array([r.label for r in records])
    features = pixel_pca_embeddings(images, dim=64, seed=0)
    by_class = {c: np.flatnonzero(labels == c) for c in ("FRI", "FRII")}
    truth = (labels == "FRII").astype(int)
    print(
        "| labels (FRI/FRII) | before: mean ± 95 % CI | min | runs < 45 % | after: mean ± 95 % CI | min | runs < 45 % |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, n_fri, n_frii in ROWS:
        scores: dict[str, list[float]] = {"before": [], "after": []}
        for subset in range(30):
            rng = np.random.default_rng(subset)
            gold = np.concatenate([rng.choice(by_class[c], 20, replace=False) for c in ("FRI", "FRII")])
            if n_fri is None:
                pool = np.setdiff1d(np.concatenate(list(by_class.values())), gold)
                train = rng.choice(pool, n_frii, replace=False)
            else:
                train = np.concatenate(
                    [
                        rng.choice(np.setdiff1d(by_class["FRI"], gold), n_fri, replace=False),
                        rng.choice(np.setdiff1d(by_class["FRII"], gold), n_frii, replace=False),
                    ]
                )
            for key, config in (("before", BEFORE), ("after", AFTER)):
                for seed in range(3):
                    model = fit_classifier(features[train], truth[train], config, seed=seed)
                    scores[key].append(float((model.predict(features[gold]) == truth[gold]).mean()))
        cells = []
        for key in ("before", "after"):
            acc = 100 * np.array(scores[key])
            half = 1.96 * acc.std(ddof=1) / np.sqrt(30)
            cells.append(f"{acc.mean():.1f} ± {half:.1f} | {acc.min():.1f} | {100 * (acc < 45).mean():.0f} %")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
