"""Two gunicorn web processes read one memory-mapped embedding file: no per-process copy."""

from __future__ import annotations

import http.client
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
from rgzlabel.learning.models import EmbeddingSet
from tests.conftest import _database_url

pytestmark = pytest.mark.django_db(transaction=True)

ROWS, DIM = 20_000, 512  # 40 MB of unit rows: a copy per process would be plain to see


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _mapping(pid: int, file: Path) -> dict[str, int] | None:
    """The kB figures of the (first) mapping of ``file`` in ``pid``'s smaps, with its inode."""
    found: dict[str, int] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and "-" in fields[0] and fields[-1] == str(file):
            if found is not None:
                break
            found = {"inode": int(fields[4])}
        elif found is not None and line.endswith(" kB") and len(fields) == 3:
            found[fields[0].rstrip(":")] = int(fields[1])
        elif found is not None and "-" in fields[0] and len(fields) >= 5:
            break  # the next mapping began
    return found


def test_two_web_processes_share_one_mapping_of_the_unit_rows(make_source, scientist, tmp_path) -> None:
    from bench.load_labelling import loopback_production_env, start_server
    from ml.embed import write_embeddings
    from ml.embedding_store import UNIT_FILE

    sources = [make_source() for _ in range(20)]
    ids = np.concatenate([[s.pk for s in sources], 10**9 + np.arange(ROWS - len(sources))]).astype(np.int64)
    matrix = np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32)
    folder = write_embeddings(embeddings_folder(), ids, matrix)
    del matrix
    embedding_set = EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=ROWS, dim=DIM)
    activate_embedding_set(embedding_set)
    client = Client()
    client.force_login(scientist)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    pages = [reverse("science:source", args=[s.pk]) for s in sources]

    url = _database_url(connection.settings_dict)
    env = loopback_production_env(url, DJANGO_SECRET_KEY=settings.SECRET_KEY, RGZ_DATA_DIR=str(settings.DATA_DIR))
    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = start_server(url, port, workers=2, threads=1, env=env, log=log)
    try:

        def get(i: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", pages[i % len(pages)], headers={"Cookie": cookie})
            response = conn.getresponse()
            response.read()
            return response.status

        unit = folder / UNIT_FILE
        mappings: dict[int, dict[str, int] | None] = {}
        # Until both processes have served a source page: the kernel picks who, and a worker still
        # loading the pages' modules (rgzlabel/wsgi.py) on a busy machine leaves them all to the other.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with ThreadPoolExecutor(6) as pool:
                assert set(pool.map(get, range(12))) == {200}, (tmp_path / "gunicorn.log").read_text()[-2000:]
            mappings = {pid: _mapping(pid, unit) for pid in _workers(server.pid)}
            if len(mappings) == 2 and all(mappings.values()):
                break
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    assert len(mappings) == 2 and all(mappings.values()), f"the unit rows were not mapped by both: {mappings}"
    first, second = mappings.values()
    assert first is not None and second is not None
    assert first["inode"] == second["inode"] == unit.stat().st_ino  # one file, mapped by both
    size_kb = unit.stat().st_size // 1024
    for figures in (first, second):
        # A search reads every row: the whole file is resident in each process, and those pages
        # are shared (page cache) rather than private copies.
        assert figures["Rss"] >= 0.9 * size_kb
        assert figures["Shared_Clean"] >= 0.9 * figures["Rss"], figures
        assert figures.get("Private_Dirty", 0) == 0 and figures.get("Anonymous", 0) == 0
