"""Similarity search past one million rows: exact cosine top-k against approximate indexes.

.venv/bin/python -m bench.ann_search --rows 100000,1000000 --dim 512

Synthetic embeddings: a mixture of 2000 Gaussian clusters of uneven size, each with its own
32-dimensional spread plus isotropic noise, scaled to unit length (real encoder embeddings
are clustered and of low intrinsic dimension; isotropic noise alone would make every
neighbour list random, one tight blob per cluster would make every index look perfect).
Smaller sizes are prefixes of the largest (rows are drawn in random cluster order).

1. Exact search (``ml.similarity.top_k``, k=10, own row excluded) at each ``--exact-rows``
   size: p50/p95 per query, and the size where p95 reaches ``--target-ms``.
2. For each ``--rows`` size and each candidate library that imports here: build time (in this
   process; the HNSW builds add in batches and stop when the projected time passes
   ``--build-budget-s``), index file size, then in a fresh process that opens the file the
   way a web process would (memory-mapped / viewed where the library can): private memory
   added (RssAnon) and file pages resident (RssFile, shared between processes), recall@10
   against exact search and p50/p95 of single queries, for each search setting.
3. ``ml.ann`` end to end at the largest ``--rows`` size: an embedding-set folder,
   ``build_index`` (its own recall) and ``open_search(...).search`` in a fresh process.

Libraries that are not installed are listed as such; install the candidates beside the
project (``pip install --target DIR faiss-cpu usearch hnswlib`` and ``PYTHONPATH=DIR``) to
compare them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ml.similarity import top_k

K = 10
LIBRARIES = ("faiss-ivf-flat", "faiss-ivf-sq8", "usearch-hnsw", "hnswlib-hnsw")


# --- data -----------------------------------------------------------------------------------------
def clustered_unit_rows(
    rows: int, dim: int, *, clusters: int = 2000, latent: int = 32, noise: float = 0.7, seed: int = 0
) -> np.ndarray:
    """(rows, dim) float32 unit rows from a mixture of low-rank Gaussians (see the module doc)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, clusters)
    # A unit centre per cluster, a random latent-dimensional spread of norm 0.4-0.9 and isotropic
    # noise of norm ``noise``: a row's nearest neighbour has cosine ~0.65 and its 10th ~0.6, and
    # neighbours are mostly but not only in its own cluster (tuned so that IVF recall@10 moves
    # with the lists probed instead of being 1.0 at any setting).
    spread = rng.uniform(0.4, 0.9, clusters).astype(np.float32) / math.sqrt(latent)
    labels = rng.choice(clusters, size=rows, p=weights / weights.sum())
    bases = rng.standard_normal((clusters, latent, dim), dtype=np.float32) / np.float32(math.sqrt(dim))
    out = np.empty((rows, dim), dtype=np.float32)
    chunk = 65_536
    for start in range(0, rows, chunk):
        out[start : start + chunk] = centres[labels[start : start + chunk]]
    # One product per cluster over all its rows (not per chunk): few, larger BLAS calls.
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
    for cluster in range(clusters):
        members = order[bounds[cluster] : bounds[cluster + 1]]
        if len(members):
            z = rng.standard_normal((len(members), latent), dtype=np.float32) * spread[cluster]
            out[members] += z @ bases[cluster]
    for start in range(0, rows, chunk):
        block = out[start : start + chunk]
        block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(noise / math.sqrt(dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_neighbours(unit: np.ndarray, query_rows: np.ndarray, k: int, *, chunk_rows: int = 65_536) -> np.ndarray:
    """(Q, k) true neighbours of rows ``query_rows`` (each excluding itself), best first."""
    from ml.ann import exact_neighbours as neighbours

    return neighbours(unit, query_rows, k, chunk_rows=chunk_rows)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true k neighbours among the k found (-1 = nothing found)."""
    return float(
        np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def rss_mb() -> dict[str, float]:
    """This process's private (RssAnon) and file-backed (RssFile, shareable) resident memory."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("RssAnon:", "RssFile:")):
                name, amount = line.split(":")
                values[name] = int(amount.split()[0]) / 1024
    return values


def percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(latencies_ms, [50, 95])
    return float(p50), float(p95)


# --- candidates: build in this process, open and query in a probe process --------------------------
def ivf_lists(rows: int) -> int:
    from ml.ann import index_lists

    return index_lists(rows)


def build_faiss(unit: np.ndarray, kind: str, budget_s: float, seed: int) -> tuple[Any, dict[str, Any]]:
    import faiss

    rows, dim = unit.shape
    lists = ivf_lists(rows)
    quantizer = faiss.IndexFlatIP(dim)
    index: Any
    if kind == "faiss-ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    sample = np.sort(np.random.default_rng(seed).choice(rows, min(rows, 50 * lists), replace=False))
    index.train(np.ascontiguousarray(unit[sample]))
    for start in range(0, rows, 65_536):
        index.add(np.ascontiguousarray(unit[start : start + 65_536]))
    return index, {"params": f"{lists} lists, trained on {len(sample)}"}


def build_hnsw(unit: np.ndarray, kind: str, budget_s: float, seed: int) -> tuple[Any, dict[str, Any]]:
    rows, dim = unit.shape
    started = time.perf_counter()
    if kind == "usearch-hnsw":
        from usearch.index import Index

        index = Index(ndim=dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128)

        def add(lo: int, hi: int) -> None:
            index.add(np.arange(lo, hi), unit[lo:hi])

        params = "M=16, ef_construction=128, f16"
    else:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=rows, M=16, ef_construction=128, random_seed=seed)

        def add(lo: int, hi: int) -> None:
            index.add_items(unit[lo:hi], np.arange(lo, hi))

        params = "M=16, ef_construction=128, f32"
    batch = 20_000
    for start in range(0, rows, batch):
        add(start, min(rows, start + batch))
        elapsed = time.perf_counter() - started
        done = min(rows, start + batch)
        if done < rows and elapsed * rows / done > budget_s:
            return None, {
                "params": params,
                "stopped": f"stopped at {done} rows after {elapsed:.0f} s; projected >= {elapsed * rows / done:.0f} s",
            }
    return index, {"params": params}


def save(index: Any, kind: str, path: Path) -> None:
    if kind.startswith("faiss"):
        import faiss

        faiss.write_index(index, str(path))
    elif kind == "usearch-hnsw":
        index.save(str(path))
    else:
        index.save_index(str(path))


SEARCH_SETTINGS = {
    "faiss-ivf-flat": ("nprobe", (8, 16, 32, 64)),
    "faiss-ivf-sq8": ("nprobe", (8, 16, 32, 64)),
    "usearch-hnsw": ("ef", (32, 64, 128)),
    "hnswlib-hnsw": ("ef", (32, 64, 128)),
}


def probe(kind: str, path: str, queries_path: str, out_path: str, rows: int, dim: int) -> None:
    """In a fresh process: open ``path`` as a web process would, query one at a time, print JSON."""
    queries = np.load(queries_path)
    vectors, own = queries["vectors"], queries["rows"]
    index: Any
    import_rss = rss_mb()
    if kind.startswith("faiss"):
        import faiss

        import_rss = rss_mb()
        index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)

        def configure(value: int) -> None:
            index.nprobe = value

        def one(vector: np.ndarray) -> np.ndarray:
            return index.search(vector[None], K + 1)[1][0]
    elif kind == "usearch-hnsw":
        from usearch.index import Index

        import_rss = rss_mb()
        index = Index.restore(path, view=True)

        def configure(value: int) -> None:
            index.expansion_search = value

        def one(vector: np.ndarray) -> np.ndarray:
            return np.asarray(index.search(vector, K + 1).keys, dtype=np.int64)
    else:
        import hnswlib

        import_rss = rss_mb()
        index = hnswlib.Index(space="ip", dim=dim)
        index.load_index(path, max_elements=rows)

        def configure(value: int) -> None:
            index.set_ef(value)

        def one(vector: np.ndarray) -> np.ndarray:
            return index.knn_query(vector[None], K + 1)[0][0].astype(np.int64)

    opened_rss = rss_mb()
    setting, values = SEARCH_SETTINGS[kind]
    results: dict[str, Any] = {"settings": []}
    found_all = {}
    for value in values:
        configure(value)
        for vector in vectors[:5]:
            one(vector)  # page in what the first queries touch
        latencies, found = [], []
        for vector, row in zip(vectors, own, strict=True):
            started = time.perf_counter()
            ids = one(vector)
            latencies.append(1000 * (time.perf_counter() - started))
            found.append(np.pad(ids[ids != row][:K], (0, max(0, K - len(ids[ids != row][:K]))), constant_values=-1))
        found_all[f"{setting}={value}"] = np.stack(found)
        p50, p95 = percentiles(latencies)
        results["settings"].append({"setting": f"{setting}={value}", "p50_ms": p50, "p95_ms": p95})
    after = rss_mb()
    results["anon_mb"] = after["RssAnon"] - import_rss["RssAnon"]
    results["anon_open_mb"] = opened_rss["RssAnon"] - import_rss["RssAnon"]
    results["file_mb"] = after["RssFile"] - import_rss["RssFile"]
    np.savez(out_path, **found_all)  # type: ignore[arg-type]
    print(json.dumps(results))


def run_probe(
    kind: str, path: Path, queries_path: Path, rows: int, dim: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out_path = path.with_suffix(".found.npz")
    command = [sys.executable, "-m", "bench.ann_search", "--probe", kind, str(path), str(queries_path), str(out_path)]
    command += ["--rows", str(rows), "--dim", str(dim)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe of {kind} failed: {done.stderr[-2000:]}")
    found = np.load(out_path)
    return json.loads(done.stdout.strip().splitlines()[-1]), {name: found[name] for name in found.files}


def available(kind: str) -> bool:
    module = {"faiss": "faiss", "usearch": "usearch.index", "hnswlib": "hnswlib"}[kind.split("-")[0]]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --- the three parts --------------------------------------------------------------------------------
def exact_sweep(unit: np.ndarray, sizes: list[int], queries: int, target_ms: float, seed: int) -> Iterator[str]:
    yield "| rows | queries | p50 ms | p95 ms |"
    yield "| --- | --- | --- | --- |"
    rng = np.random.default_rng(seed)
    p95_at = {}
    for rows in sizes:
        pool = unit[:rows]
        latencies = []
        for row in rng.integers(0, rows, queries + 3):
            started = time.perf_counter()
            top_k(pool, pool[row], K, exclude=np.array([row]))
            latencies.append(1000 * (time.perf_counter() - started))
        p50, p95 = percentiles(latencies[3:])
        p95_at[rows] = p95
        yield f"| {rows} | {queries} | {p50:.1f} | {p95:.1f} |"
    within = [rows for rows, p95 in p95_at.items() if p95 <= target_ms]
    yield ""
    yield f"Largest measured size with exact p95 <= {target_ms:.0f} ms: {max(within) if within else 'none'}"


def compare(unit: np.ndarray, rows: int, args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    pool = unit[:rows]
    dim = pool.shape[1]
    rng = np.random.default_rng(args.seed + rows)
    own = np.sort(rng.choice(rows, args.queries, replace=False))
    truth = exact_neighbours(pool, own, K)
    queries_path = workdir / "queries.npz"
    np.savez(queries_path, vectors=np.ascontiguousarray(pool[own]), rows=own)
    for kind in args.libraries:
        if not available(kind):
            yield f"| {rows} | {kind} | not installed | | | | | | |"
            continue
        gc.collect()
        started = time.perf_counter()
        builder: Callable[..., tuple[Any, dict[str, Any]]] = build_faiss if kind.startswith("faiss") else build_hnsw
        index, info = builder(pool, kind, args.build_budget_s, args.seed)
        build_s = time.perf_counter() - started
        if index is None:
            yield f"| {rows} | {kind} ({info['params']}) | {info['stopped']} | | | | | | |"
            continue
        path = workdir / f"{kind}-{rows}.index"
        save(index, kind, path)
        del index
        gc.collect()
        size_mb = path.stat().st_size / 2**20
        measured, found = run_probe(kind, path, queries_path, rows, dim)
        for setting in measured["settings"]:
            name = setting["setting"]
            yield (
                f"| {rows} | {kind} ({info['params']}) | {build_s:.0f} | {size_mb:.0f} | {measured['anon_mb']:.0f} "
                f"| {measured['file_mb']:.0f} | {name} | {recall(found[name], truth):.3f} "
                f"| {setting['p50_ms']:.2f} / {setting['p95_ms']:.2f} |"
            )
        path.unlink()
        path.with_suffix(".found.npz").unlink()
        sys.stdout.flush()


def production(unit: np.ndarray, rows: int, args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    from ml.ann import build_index
    from ml.embedding_store import write_embeddings

    folder = write_embeddings(workdir / "set", np.arange(rows), unit[:rows])
    gc.collect()
    built = build_index(folder, exact_max_rows=args.exact_max_rows, seed=args.seed)
    command = [sys.executable, "-m", "bench.ann_search", "--serve", str(folder), "--queries", str(args.queries)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"serving probe failed: {done.stderr[-2000:]}")
    served = json.loads(done.stdout.strip().splitlines()[-1])
    yield (
        "| rows | method | build s | recall@10 (build's own sample) | query p50 / p95 ms (k=12) "
        "| RssAnon MB added | RssFile MB |"
    )
    yield "| --- | --- | --- | --- | --- | --- | --- |"
    yield (
        f"| {rows} | {built['method']} | {built['build_s']:.0f} | {built.get('recall_at_10', 1.0):.3f} "
        f"| {served['p50_ms']:.2f} / {served['p95_ms']:.2f} | {served['anon_mb']:.0f} | {served['file_mb']:.0f} |"
    )
    shutil.rmtree(folder)


def serve(folder: str, queries: int) -> None:
    """In a fresh process: ``ml.ann.open_search`` and "more like this" queries (k=12, own row excluded)."""
    before = rss_mb()
    from ml.ann import open_search

    search = open_search(folder)
    rows = search.rows
    latencies = []
    for row in np.random.default_rng(1).integers(0, rows, queries + 3):
        started = time.perf_counter()
        query = np.asarray(search.unit[row])
        search.search(query, 12, exclude=np.array([row]))
        latencies.append(1000 * (time.perf_counter() - started))
    p50, p95 = percentiles(latencies[3:])
    after = rss_mb()
    result = {
        "p50_ms": p50,
        "p95_ms": p95,
        "anon_mb": after["RssAnon"] - before["RssAnon"],
        "file_mb": after["RssFile"],
    }
    print(json.dumps(result))


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=sizes, default=[100_000, 1_000_000], help="sizes to compare libraries at")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--exact-rows", type=sizes, default=[100_000, 150_000, 200_000, 300_000, 500_000, 1_000_000])
    parser.add_argument("--exact-queries", type=int, default=40)
    parser.add_argument("--queries", type=int, default=200, help="recall and latency queries per size")
    parser.add_argument("--target-ms", type=float, default=50.0)
    parser.add_argument("--libraries", type=lambda text: text.split(","), default=list(LIBRARIES))
    parser.add_argument("--build-budget-s", type=float, default=240.0, help="give up an HNSW build projected past this")
    parser.add_argument("--exact-max-rows", type=int, default=150_000, help="ml.ann's threshold in the end-to-end part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", nargs=4, metavar=("KIND", "INDEX", "QUERIES", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        kind, index_path, queries_path, out_path = args.probe
        probe(kind, index_path, queries_path, out_path, rows=args.rows[0], dim=args.dim)
        return
    if args.serve:
        serve(args.serve, args.queries)
        return
    started = time.perf_counter()
    print(f"load average at start: {' / '.join(f'{load:.1f}' for load in os.getloadavg())} (1 / 5 / 15 min)")
    largest = max([*args.rows, *args.exact_rows])
    unit = clustered_unit_rows(largest, args.dim, seed=args.seed)
    print(f"{largest} x {args.dim} synthetic unit rows in {time.perf_counter() - started:.0f} s\n", flush=True)
    print("Exact search (ml.similarity.top_k, k=10):\n")
    for line in exact_sweep(unit, args.exact_rows, args.exact_queries, args.target_ms, args.seed):
        print(line, flush=True)
    if not args.rows:
        print(f"\nwhole run {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores")
        return
    print("\nCandidates (build here; open, recall@10 and single queries in a fresh process):\n")
    print(
        "| rows | index (build parameters) | build s | file MB | RssAnon MB added | RssFile MB | search "
        "| recall@10 | p50 / p95 ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="ann-bench-") as temporary:
        workdir = Path(temporary)
        for rows in args.rows:
            for line in compare(unit, rows, args, workdir):
                print(line, flush=True)
        print(f"\nml.ann end to end at {max(args.rows)} rows (exact_max_rows={args.exact_max_rows}):\n")
        for line in production(unit, max(args.rows), args, workdir):
            print(line, flush=True)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores")
    print(f"load average at the end: {' / '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
