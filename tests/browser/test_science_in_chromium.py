"""A scientist's pages in a real browser: the dashboard and the embedding map, with screenshots."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def scientist_page(live_server, browser, admin_user, client):
    client.force_login(admin_user)
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_the_dashboard_and_the_map_render(live_server, scientist_page, screenshot, make_source, workflow):
    from ml.embed import write_embeddings
    from rgzlabel.labelling.models import Subject
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
    from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet

    sources = [make_source() for _ in range(60)]
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(60, 8)).astype(np.float32)
    matrix[:30, 0] += 4
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], matrix)
    embedding_set = EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=60, dim=8)
    activate_embedding_set(embedding_set)
    for s in sources[:20]:
        Subject.objects.filter(source=s).update(consensus_label="FRI" if s.pk % 2 else "FRII")
    for n, accuracy in [(20, 0.71), (40, 0.78), (80, 0.84)]:
        ClassifierVersion.objects.create(
            embedding_set=embedding_set,
            n_labels=n,
            classes=["FRI", "FRII", "hybrid"],
            metrics={"accuracy": accuracy, "macro_f1": accuracy - 0.03, "evaluated": True, "evaluated_on": "gold",
                     "confusion": [[9, 2, 0], [1, 8, 0], [0, 0, 0]], "n_eval": 20},
            is_active=n == 80,
        )  # fmt: skip

    page = scientist_page
    page.goto(f"{live_server.url}/science/")
    assert page.inner_text("h1") == "Science dashboard"
    page.wait_for_function("() => [...document.images].every((i) => i.complete && i.naturalWidth > 0)")
    assert "84.0 %" in page.inner_text("body")
    screenshot(page, "dashboard")

    page.goto(f"{live_server.url}/science/map/")
    page.wait_for_function("() => document.querySelector('#map-info').textContent.includes('60 sources')")
    painted = page.evaluate(
        "() => { const c = document.getElementById('map');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"
    )
    assert painted >= 60 * 4  # every point drew its 3x3 square (a few may overlap)
    screenshot(page, "embedding-map")
