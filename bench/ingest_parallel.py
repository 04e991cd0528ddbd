"""Ingest with FITS files read in several processes: ``manage.py ingest --processes N``, side by side.

    .venv/bin/python -m bench.ingest_parallel --files 2000 --processes 1 2 --repeats 2

Real FIRST files (``shared/data/mirabest/fits``, or ``--source``) are copied ``--files`` times
over, each copy moved in RA so every file is a new source (``bench.ingest_throughput``). Each
run is ``manage.py ingest`` in a fresh process with a fresh SQLite database; the runs of a row
alternate between the process counts, so the machine's noise falls on both. Reported: wall
time, files per second, the speed-up over one process measured in the same repeat, and
whether the catalogue each run wrote (names, positions, pixel checksums) is identical to the
one-process run's: it must be, since the writes stay in one process, in the files' order.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest_throughput import DEFAULT_SOURCE, write_copies

ROOT = Path(__file__).resolve().parent.parent


def run_ingest(folder: Path, processes: int, work: Path) -> tuple[float, list[tuple]]:
    """Wall seconds of one ``manage.py ingest``, and the catalogue it wrote."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"p{processes}-", dir=work))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update(RGZ_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="rgzlabel.settings", DJANGO_DEBUG="true")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
    started = time.perf_counter()
    subprocess.run(
        [*manage, "ingest", str(folder), "--processes", str(processes), "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - started
    with sqlite3.connect(data_dir / "rgzlabel.sqlite3") as db:
        rows = db.execute(
            "SELECT s.name, round(s.ra_deg, 9), round(s.dec_deg, 9), c.checksum FROM catalog_source s "
            "JOIN catalog_cutout c ON c.source_id = s.id ORDER BY s.name"
        ).fetchall()
    return wall, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of FITS files to copy")
    args = parser.parse_args(argv)
    if 1 not in args.processes:
        parser.error("--processes must include 1: the speed-up and the identical catalogue are against it")
    originals = sorted(args.source.glob("*.fits"))
    if not originals:
        raise SystemExit(f"no FITS files in {args.source}")
    with tempfile.TemporaryDirectory(prefix="rgz-bench-parallel-") as work:
        folder = Path(work) / "fits"
        write_copies(originals, folder, args.files)
        walls: dict[int, list[float]] = {n: [] for n in args.processes}
        catalogues: dict[int, list[list[tuple]]] = {n: [] for n in args.processes}
        for repeat in range(args.repeats):
            for n in args.processes if repeat % 2 == 0 else list(reversed(args.processes)):
                wall, rows = run_ingest(folder, n, Path(work))
                print(f"repeat {repeat + 1}, {n} process(es): {wall:.1f} s, {len(rows)} sources", file=sys.stderr)
                walls[n].append(wall)
                catalogues[n].append(rows)
        reference = catalogues[1][0]
        cores = os.cpu_count()
        print(f"\n{args.files} files, {args.repeats} repeats, {cores} cores\n")
        print("| processes | wall s (best) | files/s (best) | speed-up over 1, same repeat | catalogue as with 1 |")
        print("| --- | --- | --- | --- | --- |")
        for n in args.processes:
            best = min(walls[n])
            ratios = [one / wall for one, wall in zip(walls[1], walls[n], strict=True)]
            speedup = " / ".join(f"{ratio:.2f}x" for ratio in ratios)
            same = all(rows == reference for rows in catalogues[n])
            print(
                f"| {n} | {best:.1f} | {args.files / best:.0f} | {speedup} | "
                f"{'identical' if same else 'DIFFERENT'} ({len(reference)} sources) |"
            )


if __name__ == "__main__":
    main()
