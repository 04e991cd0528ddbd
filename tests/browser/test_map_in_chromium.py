"""The embedding map with thousands of sources in a real Chromium: drawn, hovered, clicked, paged."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

N_SOURCES = 2600
FRI, FRII, NONE = (92, 200, 255), (255, 159, 92), (58, 69, 96)  # the map's colours (static/science/map.js)


@pytest.fixture
def scientist_page(live_server, browser, admin_user, client):
    client.force_login(admin_user)
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture
def survey_map(workflow):
    """2600 sources in three clusters of the embedding (FRI, FRII, unlabelled), mapped by UMAP."""
    from ml.embed import write_embeddings
    from ml.layout import build_map
    from ml.thumbnail import render_thumbnail
    from rgzlabel.catalog.models import Cutout, Source
    from rgzlabel.labelling.models import Subject
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
    from rgzlabel.learning.models import EmbeddingSet
    from tests.conftest import blob_image

    rng = np.random.default_rng(5)
    sources = Source.objects.bulk_create(
        Source(name=f"MAP J{n:06d}", ra_deg=float(rng.uniform(0, 360)), dec_deg=0.0) for n in range(N_SOURCES)
    )
    pixels = blob_image(rng)
    thumbnail = render_thumbnail(pixels)
    Cutout.objects.bulk_create(
        Cutout(source=s, pixels=pixels.tobytes(), thumbnail_png=thumbnail, checksum=f"{s.pk:064d}") for s in sources
    )
    cluster = np.arange(N_SOURCES) % 3
    labels = {0: "FRI", 1: "FRII", 2: ""}
    Subject.objects.bulk_create(
        Subject(source=s, workflow=workflow, consensus_label=labels[int(c)])
        for s, c in zip(sources, cluster, strict=True)
    )
    centres = rng.normal(size=(3, 64)).astype(np.float32)
    matrix = centres[cluster] + 0.4 * rng.normal(size=(N_SOURCES, 64)).astype(np.float32)
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], matrix)
    build_map(folder, n_epochs=100)  # what the index job does
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=N_SOURCES, dim=64))
    return {s.pk: labels[int(c)] for s, c in zip(sources, cluster, strict=True)}


COUNT_COLOURS = """(colours) => {
  const c = document.getElementById('map'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const counts = {painted: 0}; for (const name in colours) counts[name] = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (!d[i + 3]) continue;
    counts.painted++;
    for (const [name, [r, g, b]] of Object.entries(colours))
      if (d[i] === r && d[i + 1] === g && d[i + 2] === b) counts[name]++;
  }
  return {...counts, width: c.width, height: c.height, draws: performance.getEntriesByName('map-draw').length};
}"""

# The middle pixel of a 3x3 run of one colour, in page coordinates: inside one point's square.
FIND_POINT = """([r, g, b]) => {
  const c = document.getElementById('map'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const is = (x, y) => { const i = 4 * (y * c.width + x); return d[i] === r && d[i + 1] === g && d[i + 2] === b; };
  const box = c.getBoundingClientRect();
  for (let y = 1; y < c.height - 1; y++) for (let x = 1; x < c.width - 1; x++) {
    if ([-1, 0, 1].every((dy) => [-1, 0, 1].every((dx) => is(x + dx, y + dy))))
      return [box.left + (x + 0.5) * box.width / c.width, box.top + (y + 0.5) * box.height / c.height];
  }
  return null;
}"""


def test_thousands_of_sources_are_drawn_hovered_clicked_and_listed(live_server, scientist_page, screenshot, survey_map):
    page = scientist_page
    page.goto(f"{live_server.url}/science/map/")
    page.wait_for_function(f"() => document.querySelector('#map-info').textContent.includes('{N_SOURCES} sources')")
    assert "projected by UMAP" in page.inner_text("#map-info")

    counts = page.evaluate(COUNT_COLOURS, {"fri": FRI, "frii": FRII, "none": NONE})
    # 2600 squares of 6x6 pixels, overlapping where UMAP packs a cluster tight, in all three colours.
    assert counts["painted"] > N_SOURCES * 6, counts
    assert min(counts["fri"], counts["frii"], counts["none"]) > N_SOURCES, counts
    assert counts["draws"] >= 1
    screenshot(page, "1-map")

    # Hovering an FRII point shows that source's thumbnail and name; clicking opens its page.
    x, y = page.evaluate(FIND_POINT, list(FRII))
    page.mouse.move(x, y)
    page.wait_for_function(
        "() => { const h = document.getElementById('hover'), i = h.querySelector('img');"
        " return !h.hidden && i.complete && i.naturalWidth > 0; }"
    )
    text = page.inner_text("#hover")
    source_id = int(re.search(r"\(#(\d+)\)", text)[1])
    assert survey_map[source_id] == "FRII" and "FRII" in text and "MAP J" in text
    assert page.get_attribute("#hover img", "src") == f"/sources/{source_id}/thumbnail.png"
    screenshot(page, "2-hover")
    page.mouse.click(x, y)
    page.wait_for_url(f"**/science/sources/{source_id}/")

    # The keyboard walk works at this size too.
    page.go_back()
    page.wait_for_function(f"() => document.querySelector('#map-info').textContent.includes('{N_SOURCES} sources')")
    page.focus("#map")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    walked = int(re.search(r"\(#(\d+)\)", page.inner_text("#map-selected"))[1])
    assert walked in survey_map

    # The table shows one page of 500 rows at a time, never all 2600.
    page.click("#map-table-section summary")
    assert page.locator("#map-table tbody tr").count() == 500
    assert page.inner_text("#map-table-range") == f"Sources 1 to 500 of {N_SOURCES} (page 1 of 6)."
    assert page.is_disabled("#map-table-previous")
    for _ in range(5):
        page.click("#map-table-next")
    assert page.locator("#map-table tbody tr").count() == 100
    assert page.inner_text("#map-table-range") == f"Sources 2501 to {N_SOURCES} of {N_SOURCES} (page 6 of 6)."
    assert page.is_disabled("#map-table-next")
    last = page.locator("#map-table tbody tr a").last
    assert last.inner_text().startswith("MAP J002599")  # the set's last row
    screenshot(page, "3-table-last-page")
