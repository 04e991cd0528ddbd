"""Every page in a real browser: link contrast computed from the page's own styles, the field
guide's examples, flagging while labelling, and a screenshot of each page."""

from __future__ import annotations

import pytest

from rgzlabel.catalog.models import Provenance
from rgzlabel.labelling.models import Flag, GoldLabel
from rgzlabel.labelling.services import choose_field_guide_examples

pytestmark = pytest.mark.django_db(transaction=True)

#: For each visible link with text: its colour and the colour behind it, composited through
#: every translucent ancestor background down to the canvas, then the WCAG 2.x contrast ratio.
LINK_CONTRAST_JS = """
() => {
  const parse = (text) => {
    const parts = text.match(/rgba?\\(([^)]*)\\)/)[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
  const behind = (element) => {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const colour = parse(getComputedStyle(e).backgroundColor);
      if (colour[3] > 0) layers.push(colour);
      if (colour[3] >= 1) break;
    }
    return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255, 1]);
  };
  const luminance = (c) => {
    const linear = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * linear(c[0]) + 0.7152 * linear(c[1]) + 0.0722 * linear(c[2]);
  };
  const ratio = (a, b) => {
    const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  return [...document.querySelectorAll("a")]
    .filter((a) => a.getClientRects().length && a.innerText.trim())
    .map((a) => {
      const background = behind(a);
      const colour = over(parse(getComputedStyle(a).color), background);
      const theme = getComputedStyle(document.documentElement);
      const [link, visited] = ["--link", "--link-visited"].map((name) => theme.getPropertyValue(name).trim());
      const text = a.innerText.trim().slice(0, 40);
      return { text, ratio: ratio(colour, background), colour, background, link, visited };
    });
}
"""


def hex_rgb(text: str) -> tuple[int, int, int]:
    text = text.lstrip("#")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def wcag_ratio(a, b) -> float:
    def luminance(c) -> float:
        def linear(v: float) -> float:
            v /= 255
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

        return 0.2126 * linear(c[0]) + 0.7152 * linear(c[1]) + 0.0722 * linear(c[2])

    high, low = sorted([luminance(a), luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


def logged_in_page(browser, live_server, client, user):
    client.force_login(user)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(15_000)
    return context, page


def labelled(make_source, label: str, size: float):
    """A source with a literature label and a clear double-lobed image (about ``size`` arcsec across)."""
    import numpy as np

    from ml.thumbnail import render_thumbnail
    from rgzlabel.catalog.models import Cutout

    source = make_source(angular_size_arcsec=size)
    gap = int(size / 1.8) - 10
    image = np.zeros((150, 150), dtype=np.uint8)
    image[70:80, 75 - gap // 2 - 10 : 75 - gap // 2], image[70:80, 75 + gap // 2 : 75 + gap // 2 + 10] = 220, 160
    Cutout.objects.filter(source=source).update(pixels=image.tobytes(), thumbnail_png=render_thumbnail(image))
    Provenance.objects.create(
        source=source, dataset="mirabest", external_id=f"{label}-{source.pk}", catalogue_label=label
    )
    return source


@pytest.fixture
def campaign(make_source, workflow, volunteer):
    """Sources to label, literature labels of every class (field guide), one gold source, one flag."""
    for label, size in [("FRI", 90), ("FRI", 60), ("FRII", 150), ("FRII", 120), ("hybrid", 100), ("compact", 20)]:
        labelled(make_source, label, size)
    queue = [make_source() for _ in range(6)]
    GoldLabel.objects.create(workflow=workflow, source=make_source(), label="FRII", feedback="Hotspots.")
    choose_field_guide_examples(workflow)
    Flag.objects.create(volunteer=volunteer, source=queue[0], note="a lovely bent one")
    return queue


def test_the_field_guide_has_a_visible_example_for_every_class(
    live_server, browser, client, volunteer, campaign, workflow, screenshot
):
    context, page = logged_in_page(browser, live_server, client, volunteer)
    page.goto(f"{live_server.url}/label/")
    page.click("#tutorial-next")
    page.click("#tutorial-next")
    page.click("#tutorial-next")
    page.click("#field-guide summary")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.guide-class img')].every((img) => img.complete && img.naturalWidth > 0)"
    )
    per_class = page.eval_on_selector_all(
        ".guide-class",
        "(classes) => classes.map((c) => ({name: c.querySelector('h3').innerText,"
        " examples: [...c.querySelectorAll('img')]"
        ".map((img) => ({id: img.dataset.source, w: img.getBoundingClientRect().width}))}))",
    )
    assert [c["name"] for c in per_class] == [c["label"] for c in workflow.classes]
    for entry in per_class:
        assert entry["examples"], f"no example for {entry['name']}"
        assert all(e["w"] >= 100 for e in entry["examples"]), entry  # shown large enough to see, not as dots
    examples = {e["id"] for c in per_class for e in c["examples"]}
    assert page.input_value("#source-id") not in examples  # the queue never serves an example
    page.locator("#field-guide").scroll_into_view_if_needed()
    screenshot(page, "field-guide")
    context.close()


def test_a_volunteer_flags_a_source_while_labelling(
    live_server, browser, client, other_volunteer, campaign, screenshot
):
    context, page = logged_in_page(browser, live_server, client, other_volunteer)
    page.goto(f"{live_server.url}/label/")
    for _ in range(3):
        page.click("#tutorial-next")
    source_id = int(page.input_value("#source-id"))
    page.click("#flag-box summary")
    page.fill("#flag-note", "x" * 300)  # the field stops at 280 characters
    assert len(page.input_value("#flag-note")) == 280
    page.fill("#flag-note", "two jets bent <i>like a C</i>")
    page.click("#flag-form button[type=submit]")
    page.wait_for_selector("#flag-status:has-text('Flagged')")
    screenshot(page, "flagged")
    assert list(Flag.objects.filter(volunteer=other_volunteer).values_list("source_id", "note")) == [
        (source_id, "two jets bent <i>like a C</i>")
    ]
    page.keyboard.press("1")  # voting still works after flagging: the note field gave the keys back
    page.wait_for_function("(before) => document.querySelector('#source-id').value !== before", arg=str(source_id))
    context.close()


def test_links_meet_wcag_aa_contrast_on_every_page(
    live_server, browser, client, volunteer, admin_user, campaign, screenshot
):
    pages = {
        None: ["/", "/accounts/login/", "/accounts/signup/"],
        volunteer: ["/label/", "/label/me/", "/science/"],
        admin_user: [
            "/science/",
            "/science/flags/",
            f"/science/sources/{campaign[0].pk}/",
            "/science/map/",
            "/science/search/",
            "/jobs/",
            "/jobs/ingest/",
        ],
    }
    checked: list[tuple[str, dict]] = []
    for user, urls in pages.items():
        if user is None:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            page = context.new_page()
        else:
            context, page = logged_in_page(browser, live_server, client, user)
        for url in urls:
            page.goto(f"{live_server.url}{url}")
            if page.is_visible("#tutorial"):
                for _ in range(3):
                    page.click("#tutorial-next")
            links = page.evaluate(LINK_CONTRAST_JS)
            checked += [(url, link) for link in links]
            name = (url.strip("/").replace("/", "-") or "home") + ("" if user is None else f"-as-{user.username}")
            screenshot(page, name)
        context.close()
    # A guest, and the warning before they log out.
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/label/")
    page.click("#start-guest")
    for _ in range(3):
        page.click("#tutorial-next")
    checked += [("/label/ (guest)", link) for link in page.evaluate(LINK_CONTRAST_JS)]
    screenshot(page, "label-as-guest")
    page.click("#guest-logout")
    page.wait_for_selector("#guest-logout-warning")
    checked += [("guest log-out", link) for link in page.evaluate(LINK_CONTRAST_JS)]
    screenshot(page, "guest-logout-warning")
    context.close()

    texts = {link["text"] for _, link in checked}
    assert {"Sign up", "a lovely bent one"} - texts == {"a lovely bent one"}  # notes are text, not links
    assert any(url == "/science/flags/" and link["text"] == campaign[0].name for url, link in checked)
    failing = [(url, link["text"], round(link["ratio"], 2)) for url, link in checked if link["ratio"] < 4.5]
    assert not failing, f"links below WCAG AA 4.5:1: {failing}"
    # Chromium reports :visited links with their unvisited colour (privacy), so the visited
    # colour is checked from the theme's variable against every background a link sat on.
    # Only links drawn in the theme's link colour turn to the visited one (buttons keep theirs).
    plain = [link for _, link in checked if tuple(round(v) for v in link["colour"][:3]) == hex_rgb(link["link"])]
    assert plain, "no link in the theme's link colour was checked"
    visited = hex_rgb(plain[0]["visited"])
    for background in {tuple(link["background"][:3]) for link in plain}:
        assert wcag_ratio(visited, background) >= 4.5, (visited, background)
