"""Latency of "more like this" at survey scale: cosine top-k over a synthetic 100k x 512 pool.

.venv/bin/python -m bench.similarity_latency --rows 100000 --dim 512 --queries 200
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from ml.similarity import normalise, top_k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=12)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    started = time.perf_counter()
    unit = normalise(matrix)
    setup_ms = 1000 * (time.perf_counter() - started)
    latencies = []
    for q in rng.integers(0, args.rows, args.queries):
        started = time.perf_counter()
        top_k(unit, unit[q], args.k, exclude=np.array([q]))
        latencies.append(1000 * (time.perf_counter() - started))
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("| pool | k | queries | normalise once (ms) | p50 ms | p95 ms | p99 ms | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.rows} x {args.dim} | {args.k} | {args.queries} | {setup_ms:.0f} | {p50:.1f} | {p95:.1f} "
        f"| {p99:.1f} | {peak_mb:.0f} |"
    )


if __name__ == "__main__":
    main()
