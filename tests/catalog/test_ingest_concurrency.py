"""Two ingests at once (two jobs, two commands) never create the same source twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.db import connection

from rgzlabel.catalog.inputs import read_fits_records
from rgzlabel.catalog.models import Provenance, Source
from rgzlabel.catalog.services import ingest_records

N_FILES = 6


def _ingest_in_thread(files: list[Path], barrier: threading.Barrier, reports: list, errors: list) -> None:
    def records():
        # Both ingests have read the catalogue's positions before either writes anything:
        # the interleaving that made duplicates, every time.
        barrier.wait(timeout=60)
        yield from read_fits_records(files)

    try:
        reports.append(ingest_records(records()))
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)
    finally:
        connection.close()


def _run_concurrently(*file_lists: list[Path]) -> list:
    barrier = threading.Barrier(len(file_lists))
    reports: list = []
    errors: list = []
    threads = [
        threading.Thread(target=_ingest_in_thread, args=(files, barrier, reports, errors)) for files in file_lists
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    return reports


@pytest.mark.django_db(transaction=True)
def test_two_ingests_of_the_same_sky_at_once_make_each_source_once(tmp_path, write_fits) -> None:
    # Two datasets of the same positions (different file names): each position must end
    # as one source with two provenances, whichever ingest got there first.
    first = [write_fits(tmp_path / "a" / f"a{n}.fits", ra_deg=10.0 + n, seed=n) for n in range(N_FILES)]
    second = [write_fits(tmp_path / "b" / f"b{n}.fits", ra_deg=10.0 + n, seed=n + 50) for n in range(N_FILES)]

    reports = _run_concurrently(first, second)

    assert Source.objects.count() == N_FILES
    assert sorted(r.ingested + r.merged for r in reports) == [N_FILES, N_FILES]
    assert sum(r.ingested for r in reports) == N_FILES
    assert all(source.provenances.count() == 2 for source in Source.objects.all())


@pytest.mark.django_db(transaction=True)
def test_the_same_files_ingested_twice_at_once_go_in_once(tmp_path, write_fits) -> None:
    files = [write_fits(tmp_path / f"s{n}.fits", ra_deg=40.0 + n, seed=n) for n in range(N_FILES)]

    reports = _run_concurrently(files, list(files))

    assert Source.objects.count() == Provenance.objects.count() == N_FILES
    assert sorted((r.ingested, r.skipped, r.failed) for r in reports)[0][2] == 0
    assert sum(r.ingested for r in reports) == N_FILES and sum(r.skipped for r in reports) == N_FILES
