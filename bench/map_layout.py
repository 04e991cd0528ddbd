"""The embedding map at survey scale: ``ml.layout.build_map`` and the map's page at 10k and 100k rows.

1. ``build_map`` on synthetic 512-d embeddings (50 clusters of different sizes and spreads, as
   unit rows), each size in a fresh process: the numba compilation a fresh worker pays on first
   use (on a 500-row warm-up set, both neighbour paths), then the build's time per step, the
   process's peak RSS (VmHWM), and how well the map keeps each point's cluster (the share of
   the 10 nearest map neighbours of 5,000 sampled points that share it; chance is about 2 %).
   ``--parallel`` adds an unseeded run (umap-learn on every core) beside the seeded one.
2. The map's data (``/science/map.json``) for a database of that many sources (SQLite in a
   scratch folder, production settings, FIRST-like names, 10 % with a consensus label): time
   of the first and the next requests, JSON size raw and gzipped.
3. With ``--browser``: the map page in headless Chromium (software rendering) against
   ``manage.py runserver``: time from navigation to the drawn map, the canvas draw itself
   (the page's ``performance`` entry "map-draw"), and one hover (1,000 pointer moves
   dispatched in the page: hit test through the grid and the preview update).

    .venv/bin/python -m bench.map_layout --rows 10000,100000 --parallel --browser

Scratch data go to ``--out`` (default a temporary folder), removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def synthetic_rows(n_rows: int, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(float32 N x dim rows, cluster of each row): 50 clusters of uneven size and spread."""
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.full(50, 2.0))
    clusters = rng.choice(50, size=n_rows, p=sizes)
    centres = rng.normal(size=(50, dim)).astype(np.float32)
    spread = rng.uniform(0.5, 1.2, size=50).astype(np.float32)
    rows = np.empty((n_rows, dim), dtype=np.float32)
    for start in range(0, n_rows, 8192):
        block = clusters[start : start + 8192]
        noise = rng.normal(size=(len(block), dim)).astype(np.float32)
        rows[start : start + 8192] = centres[block] + spread[block, None] * noise
    return rows, clusters


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def layout_child(folder: str, seed: int | None) -> None:
    """In a fresh process: warm up numba, build the map, print one JSON line."""
    from sklearn.neighbors import NearestNeighbors

    from ml.embedding_store import write_embeddings
    from ml.layout import build_map, read_map

    warm = Path(folder).parent / f"warm-{os.getpid()}"
    rows, _ = synthetic_rows(500, 64, seed=1)
    write_embeddings(warm, np.arange(500), rows)
    started = time.perf_counter()
    build_map(warm, seed=seed, n_epochs=10, exact_neighbours_max_rows=0)  # the pynndescent path
    build_map(warm, seed=seed, n_epochs=10)  # the exact path
    compile_s = time.perf_counter() - started
    shutil.rmtree(warm)
    info = build_map(folder, seed=seed)
    coords = read_map(folder)
    clusters = np.load(Path(folder) / "clusters.npy")
    sample = np.random.default_rng(0).choice(len(coords), min(5000, len(coords)), replace=False)
    _, near = NearestNeighbors(n_neighbors=11).fit(coords).kneighbors(coords[sample])
    kept = float((clusters[near[:, 1:]] == clusters[sample, None]).mean())
    print(json.dumps({"compile_s": compile_s, "info": info, "peak_rss_mb": peak_rss_mb(), "cluster_kept": kept}))


def run_layout(folder: Path, seed: int | None) -> dict:
    code = f"from bench.map_layout import layout_child; layout_child({str(folder)!r}, {seed!r})"
    env = dict(os.environ, TQDM_DISABLE="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_like_name(source_id: int, rng: np.random.Generator) -> str:
    """A FIRST-style name (Jhhmmss.s+ddmmss), unique per id: right ascensions 0.8 s apart."""
    ra_s, dec_s = 0.8 * source_id, rng.uniform(0, 60 * 3600)
    hours, minutes, seconds = int(ra_s // 3600), int(ra_s // 60 % 60), ra_s % 60
    degrees, arcmin, arcsec = int(dec_s // 3600), int(dec_s // 60 % 60), int(dec_s % 60)
    return f"J{hours:02d}{minutes:02d}{seconds:04.1f}+{degrees:02d}{arcmin:02d}{arcsec:02d}"


def endpoint_child(folder: str, data_dir: str, browser: bool) -> None:
    """In a fresh process with a scratch database: time the map's data and, optionally, its page."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # served by WhiteNoise, as in production
    from django.contrib.auth import get_user_model
    from django.test import Client

    from rgzlabel.catalog.models import Source
    from rgzlabel.labelling.models import Subject
    from rgzlabel.labelling.services import default_workflow
    from rgzlabel.learning.embedding import activate_embedding_set
    from rgzlabel.learning.models import EmbeddingSet

    ids = np.load(Path(folder) / "source_ids.npy")
    rng = np.random.default_rng(0)
    Source.objects.bulk_create((Source(pk=int(i), name=first_like_name(int(i), rng)) for i in ids), batch_size=5000)
    workflow = default_workflow()
    labels = ["FRI", "FRII", "hybrid", "unsure"]
    Subject.objects.bulk_create(
        (
            Subject(source_id=int(i), workflow=workflow, consensus_label=labels[k % 4] if k % 10 == 0 else "")
            for k, i in enumerate(ids)
        ),
        batch_size=5000,
    )
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path=folder, n_sources=len(ids), dim=512))
    user = get_user_model().objects.create_superuser("bench", password="bench-password-0")
    client = Client()
    client.force_login(user)
    times, raw, packed = [], b"", b""
    for _ in range(5):
        started = time.perf_counter()
        response = client.get("/science/map.json", HTTP_ACCEPT_ENCODING="gzip")
        if response.status_code != 200 or response.get("Content-Encoding") != "gzip":
            raise SystemExit(f"map.json answered {response.status_code} {response.headers}: {response.content[:300]!r}")
        packed = response.content
        times.append(time.perf_counter() - started)
    raw = gzip.decompress(packed)
    data = json.loads(raw)
    result = {
        "count": data["count"],
        "method": data["method"],
        "first_s": times[0],
        "next_s": statistics.median(times[1:]),
        "raw_mb": len(raw) / 1e6,
        "gzip_mb": len(packed) / 1e6,
        "points_list_mb": len(
            json.dumps(
                [
                    {"id": i, "name": n, "x": x, "y": y, "v": v}
                    for i, n, x, y, v in zip(
                        data["ids"], data["names"], data["x"], data["y"], data["values"], strict=True
                    )
                ]
            )
        )
        / 1e6,
    }
    if browser:
        result.update(page_timing(client, data_dir))
    print(json.dumps(result))


def page_timing(client, data_dir: str) -> dict:
    import shutil as which

    from playwright.sync_api import sync_playwright

    port = 8765
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                import urllib.request

                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        executable = which.which("chromium") or which.which("chromium-browser")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1200, "height": 1000})
            url = f"http://127.0.0.1:{port}"
            context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": url}])
            page = context.new_page()
            page.set_default_timeout(60_000)
            loads, draws = [], []
            for _ in range(3):
                started = time.perf_counter()
                page.goto(f"{url}/science/map/")
                try:
                    page.wait_for_function("() => performance.getEntriesByName('map-draw').length > 0")
                except Exception as exc:
                    raise SystemExit(f"no map drawn at {page.url}: {page.inner_text('body')[:500]}") from exc
                loads.append(time.perf_counter() - started)
                draws.append(page.evaluate("() => performance.getEntriesByName('map-draw')[0].duration"))
            # Hover: 1,000 pointer moves across the canvas dispatched in the page, each one the
            # grid's hit test and the preview update (without Playwright's round trips).
            sweep = page.evaluate(
                """() => { const c = document.getElementById('map'), box = c.getBoundingClientRect();
                  const started = performance.now();
                  for (let k = 0; k < 1000; k++) c.dispatchEvent(new MouseEvent('mousemove', {
                    clientX: box.left + box.width * (k + 0.5) / 1000,
                    clientY: box.top + box.height * ((k * 7) % 100) / 100}));
                  return (performance.now() - started) / 1000; }"""
            )
            browser.close()
        return {"page_s": statistics.median(loads), "draw_ms": statistics.median(draws), "hover_ms": sweep}
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_endpoint(folder: Path, scratch: Path, browser: bool) -> dict:
    data_dir = scratch / f"data-{folder.name}"
    data_dir.mkdir()
    env = dict(
        os.environ,
        RGZ_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="rgzlabel.settings",
        DJANGO_DEBUG="False",
        DJANGO_SECRET_KEY="bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        # Loopback HTTP, as behind a TLS-terminating proxy: no redirect to https, cookies over http.
        DJANGO_SECURE_SSL_REDIRECT="False",
        DJANGO_SESSION_COOKIE_SECURE="False",
        DJANGO_CSRF_COOKIE_SECURE="False",
        DJANGO_SECURE_HSTS_SECONDS="0",
        DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="False",
        DJANGO_SECURE_HSTS_PRELOAD="False",
    )
    env.pop("DATABASE_URL", None)
    code = f"from bench.map_layout import endpoint_child; endpoint_child({str(folder)!r}, {str(data_dir)!r}, {browser})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000", help="comma-separated sizes")
    parser.add_argument("--parallel", action="store_true", help="also an unseeded, all-cores build at each size")
    parser.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    from ml.embedding_store import write_embeddings

    scratch = Path(tempfile.mkdtemp(prefix="map-bench-", dir=args.out))
    try:
        layouts, endpoints = [], []
        for n_rows in [int(r) for r in args.rows.split(",")]:
            folder = scratch / f"set-{n_rows}"
            rows, clusters = synthetic_rows(n_rows)
            write_embeddings(folder, np.arange(1, n_rows + 1), rows)
            np.save(folder / "clusters.npy", clusters)
            del rows
            for seed in [0, None] if args.parallel else [0]:
                result = run_layout(folder, seed)
                layouts.append((n_rows, seed, result))
                print(n_rows, seed, json.dumps(result), flush=True)
            endpoints.append((n_rows, run_endpoint(folder, scratch, args.browser)))
            print(n_rows, json.dumps(endpoints[-1][1]), flush=True)
        print_tables(layouts, endpoints)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def print_tables(layouts: list, endpoints: list) -> None:
    print("| rows | seed (cores) | compile on first use (s) | PCA (s) | neighbours (s) | layout (s) | build_map (s) "
          "| peak RSS (MB) | 10-NN cluster kept |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n_rows, seed, r in layouts:
        info, t = r["info"], r["info"]["timings"]
        cores = "0 (1 core)" if seed is not None else "none (all cores)"
        print(
            f"| {n_rows:,} | {cores} | {r['compile_s']:.0f} | {t['pca']:.1f} | {t['neighbours']:.1f} "
            f"({info['neighbours'].split(' ')[0]}) | {t['layout']:.1f} ({info['n_epochs']} epochs) "
            f"| {info['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {100 * r['cluster_kept']:.1f} % |"
        )
    print()
    print("| rows | map.json first / next request (s) | JSON (MB) | gzipped (MB) | as a list of objects (MB) "
          "| page to drawn map (s) | canvas draw (ms) | one hover (ms) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n_rows, r in endpoints:
        browser = f"{r['page_s']:.1f} | {r['draw_ms']:.0f} | {r['hover_ms']:.2f}" if "page_s" in r else "- | - | -"
        print(
            f"| {n_rows:,} | {r['first_s']:.2f} / {r['next_s']:.2f} | {r['raw_mb']:.1f} | {r['gzip_mb']:.2f} "
            f"| {r['points_list_mb']:.1f} | {browser} |"
        )


if __name__ == "__main__":
    main()
