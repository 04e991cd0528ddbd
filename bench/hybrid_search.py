"""The paper's similarity-search use: from MiraBest hybrids, find hybrid-like sources.

Every MiraBest hybrid (codes 300, 310) queries the other 1255 MiraBest sources by cosine
similarity of its embedding; we count how many of its top-k neighbours are hybrids too,
against the base rate (what random retrieval would give), for each feature kind side by side.

    .venv/bin/python -m bench.hybrid_search --checkpoint var/benchmarks/byol-cpu-quick.pt
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ml.datasets import read_mirabest
from ml.similarity import normalise, top_k
from ml.simulation import image_features


def hybrid_precision(features: np.ndarray, is_hybrid: np.ndarray, k: int) -> float:
    """Mean fraction of hybrids among each hybrid query's k nearest other sources."""
    unit = normalise(features)
    hits = []
    for query in np.flatnonzero(is_hybrid):
        rows, _ = top_k(unit, unit[query], k, exclude=np.array([query]))
        hits.append(is_hybrid[rows].mean())
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("RGZ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--mirabest", type=Path, default=default_data / "mirabest" / "MiraBest_F_batches.tar.gz")
    parser.add_argument("--checkpoint", type=Path, help="a BYOL encoder checkpoint (ml.checkpoint)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    records = list(read_mirabest(args.mirabest))
    images = np.stack([r.image for r in records])
    is_hybrid = np.array([r.label == "hybrid" for r in records])
    rows = [("raw-pixel PCA (64)", image_features(images, "pca"))]
    if args.checkpoint:
        rows.append((f"encoder {args.checkpoint.name}", image_features(images, "encoder", checkpoint=args.checkpoint)))
    base_rate = (is_hybrid.sum() - 1) / (len(records) - 1)
    print(f"{is_hybrid.sum()} hybrid queries among {len(records)} MiraBest sources; top-{args.k} neighbours")
    print("| features | hybrids among neighbours | x base rate |")
    print("| --- | --- | --- |")
    print(f"| random retrieval (base rate) | {100 * base_rate:.1f} % | 1.0 |")
    for name, features in rows:
        precision = hybrid_precision(features, is_hybrid, args.k)
        print(f"| {name} | {100 * precision:.1f} % | {precision / base_rate:.1f} |")


if __name__ == "__main__":
    main()
