"""Accessibility in a real Chromium: names, the tutorial dialog, shortcuts, progress, the map, Contrast.

Accessible names and roles are read from Chromium's own accessibility tree (the DevTools
protocol), not recomputed by the test.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from rgzlabel.labelling.models import Classification, VolunteerProfile

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in_page(browser, live_server, client, user):
    client.force_login(user)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


@pytest.fixture
def volunteer_page(live_server, browser, client, volunteer):
    page = logged_in_page(browser, live_server, client, volunteer)
    yield page
    page.context.close()


@pytest.fixture
def staff_page(live_server, browser, client, admin_user):
    page = logged_in_page(browser, live_server, client, admin_user)
    yield page
    page.context.close()


def ax_nodes(page, selector: str) -> list[dict]:
    """Chromium's accessibility nodes for the element matching ``selector``: role, name, value, properties."""
    cdp = page.context.new_cdp_session(page)
    try:
        document = cdp.send("DOM.getDocument", {"depth": 0})
        node = cdp.send("DOM.querySelector", {"nodeId": document["root"]["nodeId"], "selector": selector})
        assert node["nodeId"], f"no element matches {selector}"
        tree = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node["nodeId"], "fetchRelatives": False})
    finally:
        cdp.detach()
    return [
        {
            "role": n.get("role", {}).get("value"),
            "name": n.get("name", {}).get("value", ""),
            "value": n.get("value", {}).get("value"),
            **{p["name"]: p["value"].get("value") for p in n.get("properties", [])},
        }
        for n in tree["nodes"]
        if not n.get("ignored")
    ]


def ax(page, selector: str) -> dict:
    nodes = ax_nodes(page, selector)
    assert nodes, f"{selector} is not in the accessibility tree"
    return nodes[0]


def focused(page) -> str:
    return page.evaluate(
        "() => document.activeElement.id || document.activeElement.className || document.activeElement.tagName"
    )


def wait_for_focus(page, expected: str, timeout_ms: float = 5000) -> str:
    """The focused element's name once it is ``expected``, or whatever has focus after the timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    script = "(want) => { const e = document.activeElement; return (e.id || e.className || e.tagName) === want; }"
    with contextlib.suppress(PlaywrightTimeout):  # then the caller's assertion names what has focus
        page.wait_for_function(script, arg=expected, timeout=timeout_ms)
    return focused(page)


def seen_tutorial(user) -> None:
    from django.utils import timezone

    VolunteerProfile.objects.update_or_create(user=user, defaults={"tutorial_seen_at": timezone.now()})


# --- labels -------------------------------------------------------------------------------------
def test_the_map_select_and_the_fits_input_have_accessible_names(live_server, staff_page, screenshot) -> None:
    page = staff_page
    page.goto(f"{live_server.url}/science/map/")
    select = ax(page, "#colour")
    assert select["role"] == "combobox" and select["name"] == "Colour by"
    page.get_by_label("Colour by").select_option("uncertainty")  # the label is also the control's click target

    page.goto(f"{live_server.url}/science/search/")
    upload = ax(page, "input[type=file]")
    assert upload["role"] == "button" and upload["name"] == "FITS cutout"
    screenshot(page, "search-labelled")


# --- the tutorial dialog --------------------------------------------------------------------------
def test_the_tutorial_is_a_modal_dialog_with_focus_and_escape(live_server, volunteer_page, screenshot, volunteer,
                                                               make_source) -> None:  # fmt: skip
    make_source()
    page = volunteer_page
    page.goto(f"{live_server.url}/label/")
    dialog = ax(page, "#tutorial")
    assert dialog["role"] == "dialog" and dialog["name"] == "How to classify" and dialog.get("modal") is True
    assert page.evaluate("() => document.getElementById('tutorial').matches(':modal')")
    # Focus is inside the dialog, on its main button; the page behind it is inert.
    assert page.evaluate("() => document.getElementById('tutorial').contains(document.activeElement)")
    assert focused(page) == "tutorial-next"
    assert not page.locator(".choice").first.evaluate("(b) => { b.focus(); return document.activeElement === b; }")
    page.keyboard.press("1")  # shortcuts do not act behind the dialog
    screenshot(page, "1-tutorial-dialog")
    for key in ["Tab", "Tab", "Shift+Tab", "Shift+Tab"]:  # focus cycles inside the dialog
        page.keyboard.press(key)
        assert page.evaluate("() => document.getElementById('tutorial').contains(document.activeElement)"), key
    assert focused(page) == "tutorial-next"

    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('tutorial').open")
    assert not page.is_visible("#tutorial")
    # First visit: focus goes to the image to classify. The dialog's "close" event, whose
    # handler moves the focus, is dispatched as a task after `open` turns false: wait for it.
    assert wait_for_focus(page, "card viewer") == "card viewer"
    assert Classification.objects.count() == 0
    # Closing with Escape counts as seen, so the tutorial does not come back on every visit.
    page.wait_for_function(
        "async () => { const r = await fetch('/label/'); return !(await r.text()).includes('data-first-visit=\"1\"'); }"
    )
    assert VolunteerProfile.objects.get(user=volunteer).tutorial_seen_at is not None

    # Opened again from its button: focus goes in, and back to the button on Escape.
    page.focus("#tutorial-open")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('tutorial').open")
    assert focused(page) == "tutorial-next"
    assert page.inner_text("#tutorial-count") == "Step 1 of 3"
    page.keyboard.press("Enter")
    assert page.inner_text("#tutorial-count") == "Step 2 of 3"
    assert page.get_attribute("#tutorial", "aria-describedby") == "tutorial-step-2"
    screenshot(page, "2-tutorial-step-2")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('tutorial').open")
    assert wait_for_focus(page, "tutorial-open") == "tutorial-open"
    page.reload()
    assert not page.is_visible("#tutorial")


# --- single-key shortcuts ----------------------------------------------------------------------
def test_single_key_shortcuts_can_be_turned_off_and_stay_off(live_server, volunteer_page, screenshot, volunteer,
                                                              make_source) -> None:  # fmt: skip
    sources = [make_source() for _ in range(3)]
    seen_tutorial(volunteer)
    page = volunteer_page
    page.goto(f"{live_server.url}/label/")
    toggle = ax(page, "#shortcuts")
    assert toggle["role"] == "checkbox" and toggle["name"] == "Single-key shortcuts" and toggle["checked"] == "true"
    first = page.input_value("#source-id")

    page.get_by_label("Single-key shortcuts").uncheck()
    page.evaluate("() => document.activeElement.blur()")
    for key in ["1", "ArrowRight", "z"]:
        page.keyboard.press(key)
    page.wait_for_timeout(800)  # a vote would have been posted and the next image shown by now
    assert Classification.objects.count() == 0
    assert page.input_value("#source-id") == first
    assert page.inner_text("#zoom") == "Zoom 1×"
    screenshot(page, "shortcuts-off")

    # Remembered across page loads.
    page.reload()
    assert not page.is_checked("#shortcuts")
    first = page.input_value("#source-id")  # a reload serves again (before any ranking, in a random order)
    page.keyboard.press("1")
    page.wait_for_timeout(800)
    assert Classification.objects.count() == 0

    # Back on, "1" votes: the same key press the switch was holding back.
    page.check("#shortcuts")
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("1")
    page.wait_for_function("(before) => document.querySelector('#source-id').value !== before", arg=first)
    assert Classification.objects.get().source_id == int(first)

    # Never while typing: a text field on the page (e.g. a note) takes the keys as text.
    page.evaluate("() => { const f = document.createElement('input'); f.id = 'note'; document.body.append(f); }")
    page.fill("#note", "")
    page.type("#note", "12 z")
    page.wait_for_timeout(800)
    assert Classification.objects.count() == 1
    assert page.input_value("#note") == "12 z"
    assert {s.pk for s in sources} >= {c.source_id for c in Classification.objects.all()}


# --- progress bars --------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["home", "jobs", "job", "ingest"])
def test_progress_bars_are_progressbars_with_values_and_text(live_server, staff_page, screenshot, where) -> None:
    from django.utils import timezone

    from rgzlabel.learning.models import Job

    kind = Job.Kind.INGEST if where == "ingest" else Job.Kind.PRETRAIN
    job = Job.objects.create(kind=kind, state=Job.State.RUNNING, progress=0.4, message="epoch 2 of 5",
                             started_at=timezone.now(), heartbeat_at=timezone.now())  # fmt: skip
    url = {"home": "/", "jobs": "/jobs/", "job": f"/jobs/{job.pk}/", "ingest": "/jobs/ingest/"}[where]
    page = staff_page
    page.goto(f"{live_server.url}{url}")
    bar = ax(page, "[role=progressbar]")
    assert bar["role"] == "progressbar"
    assert (bar["valuemin"], bar["value"], bar["valuemax"]) == (0, 40, 100)
    assert page.get_attribute("[role=progressbar]", "aria-valuetext") == "40%"
    assert f"#{job.pk}" in bar["name"]
    assert "40%" in page.inner_text("body")  # the figure is also shown as text

    # Polled: the value moves with the job, for assistive technology as well as the eye.
    Job.objects.filter(pk=job.pk).update(progress=0.75, heartbeat_at=timezone.now())
    page.wait_for_function("() => document.querySelector('[role=progressbar]').getAttribute('aria-valuenow') === '75'")
    assert ax(page, "[role=progressbar]")["value"] == 75
    assert page.get_attribute("[role=progressbar]", "aria-valuetext") == "75%"
    assert "75%" in page.inner_text("body")
    screenshot(page, f"progress-{where}")


# --- the map's keyboard and text alternative ---------------------------------------------------------
@pytest.fixture
def embedded_map(make_source, workflow):
    from ml.embed import write_embeddings
    from rgzlabel.labelling.models import Subject
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
    from rgzlabel.learning.models import EmbeddingSet

    sources = [make_source() for _ in range(30)]
    matrix = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], matrix)
    embedding_set = EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=30, dim=8)
    activate_embedding_set(embedding_set)
    for s in sources[:10]:
        Subject.objects.filter(source=s).update(consensus_label="FRII")
    return sources


def test_the_map_can_be_used_with_the_keyboard_and_as_a_table(live_server, staff_page, screenshot,
                                                               embedded_map) -> None:  # fmt: skip
    by_id = {s.pk: s for s in embedded_map}
    page = staff_page
    page.goto(f"{live_server.url}/science/map/")
    page.wait_for_function("() => document.querySelector('#map-info').textContent.includes('30 sources')")

    # Tab from the select reaches the map itself.
    page.focus("#colour")
    page.keyboard.press("Tab")
    assert focused(page) == "map"
    canvas = ax(page, "#map")
    assert canvas["role"] == "application" and "Embedding map" in canvas["name"]
    assert "arrow keys" in canvas.get("description", page.inner_text("#map-keys"))

    # Arrow keys walk over the points; each is announced with its name and colour value.
    visited = []
    for key in ["ArrowRight", "ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp"]:
        page.keyboard.press(key)
        text = page.inner_text("#map-selected")
        source_id = int(text.split("(#")[1].split(")")[0])
        assert by_id[source_id].name in text
        assert ("FRII" in text) == (source_id in {s.pk for s in embedded_map[:10]}) or "none yet" in text
        visited.append(source_id)
    assert len(set(visited)) >= 3
    assert page.is_visible("#hover")  # the chosen point's image is shown as with the mouse
    screenshot(page, "1-map-keyboard")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/science/sources/{visited[-1]}/")

    # The table: reached by keyboard, one row per plotted source, with link and colour value.
    page.goto(f"{live_server.url}/science/map/")
    page.wait_for_function("() => document.querySelector('#map-info').textContent.includes('30 sources')")
    page.focus("#map")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.tagName") == "SUMMARY"
    page.keyboard.press("Enter")
    assert page.is_visible("#map-table")
    rows = page.locator("#map-table tbody tr")
    assert rows.count() == 30
    table_text = page.inner_text("#map-table")
    assert table_text.count("FRII") == 10 and table_text.count("none yet") == 20
    page.keyboard.press("Tab")
    link = page.evaluate("() => document.activeElement.getAttribute('href')")
    assert link.startswith("/science/sources/")
    assert ax(page, "#map-table")["role"] == "table"
    screenshot(page, "2-map-table")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{link}")


# --- Contrast: the server's astropy stretches ------------------------------------------------------------
def test_contrast_asks_the_server_for_astropy_stretches(live_server, volunteer_page, screenshot, volunteer,
                                                         make_source) -> None:  # fmt: skip
    from django.core.cache import cache

    cache.clear()  # the factory's checksums repeat between tests
    make_source(), make_source()
    seen_tutorial(volunteer)
    page = volunteer_page
    page.goto(f"{live_server.url}/label/")
    page.wait_for_function("() => document.getElementById('radio').complete")
    source = page.input_value("#source-id")
    default = page.request.get(f"{live_server.url}/sources/{source}/thumbnail.png").body()

    bodies = {"asinh": default}
    for i, name in enumerate(["sqrt", "log", "linear"]):
        with page.expect_response(lambda r, name=name: f"stretch={name}" in r.url and str(source) in r.url) as answer:
            if i == 1:
                page.evaluate("() => document.activeElement.blur()")
                page.keyboard.press("s")  # the S key does the same
            else:
                page.click("#stretch")
        response = answer.value
        assert response.status == 200 and response.headers["content-type"] == "image/png"
        bodies[name] = response.body()
        page.wait_for_function("() => document.getElementById('radio').complete")
        assert page.inner_text("#stretch") == f"Contrast: {name}"
        assert page.eval_on_selector("#radio", "(i) => getComputedStyle(i).filter") == "none"
        assert page.eval_on_selector("#radio", "(i) => i.naturalWidth") == 300
        screenshot(page, f"contrast-{name}")
    pixels = {k: np.asarray(Image.open(io.BytesIO(v))) for k, v in bodies.items()}
    for a in pixels:
        for b in pixels:
            assert a == b or not np.array_equal(pixels[a], pixels[b]), f"{a} and {b} look the same"

    # The chosen stretch carries on to the next source.
    page.click(".choice >> nth=0")
    page.wait_for_function("(before) => document.querySelector('#source-id').value !== before", arg=source)
    following = page.input_value("#source-id")
    assert page.get_attribute("#radio", "src") == f"/sources/{following}/thumbnail.png?stretch=linear"
    page.wait_for_function("() => document.getElementById('radio').naturalWidth === 300")
    # Round the cycle: back to the stored default thumbnail.
    page.click("#stretch")
    assert page.inner_text("#stretch") == "Contrast: asinh"
    assert "stretch=" not in page.get_attribute("#radio", "src")


# --- the same class of defect elsewhere: every control on every page has a name ---------------------------
NAMED_ROLES = {"button", "checkbox", "combobox", "image", "link", "listbox", "progressbar", "radio", "searchbox",
               "slider", "spinbutton", "textbox", "dialog", "application"}  # fmt: skip


def unnamed_controls(page) -> list[str]:
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    return [
        f"{n['role']['value']} (DOM node {n.get('backendDOMNodeId')})"
        for n in nodes
        if not n.get("ignored")
        and n.get("role", {}).get("value") in NAMED_ROLES
        and not n.get("name", {}).get("value", "").strip()
    ]


def test_every_control_on_every_page_has_an_accessible_name(live_server, staff_page, embedded_map) -> None:
    from rgzlabel.learning.models import Job

    job = Job.objects.create(kind=Job.Kind.PRETRAIN, state=Job.State.SUCCEEDED, progress=1.0)
    source = embedded_map[0]
    page = staff_page
    pages = ["/", "/label/", "/label/me/", "/science/", "/science/map/", "/science/search/",
             f"/science/sources/{source.pk}/", "/jobs/ingest/", "/jobs/", f"/jobs/{job.pk}/"]  # fmt: skip
    missing = {}
    for url in pages:
        page.goto(f"{live_server.url}{url}")
        if url == "/science/map/":
            page.wait_for_function("() => document.querySelector('#map-info').textContent.includes('30 sources')")
        if url == "/label/" and page.is_visible("#tutorial"):
            missing["/label/ tutorial"] = unnamed_controls(page)
            page.keyboard.press("Escape")
        missing[url] = unnamed_controls(page)
    page.context.clear_cookies()
    for url in ["/accounts/login/", "/accounts/signup/"]:
        page.goto(f"{live_server.url}{url}")
        missing[url] = unnamed_controls(page)
    assert {url: m for url, m in missing.items() if m} == {}
