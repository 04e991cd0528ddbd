"""A volunteer in a real browser: sign up, tutorial once, label with the keyboard, undo, gold feedback."""

from __future__ import annotations

import pytest

from rgzlabel.labelling.models import Classification, GoldLabel, Subject, VolunteerProfile

pytestmark = pytest.mark.django_db(transaction=True)


def current_source(page) -> str:
    return page.input_value("#source-id")


def press_and_wait_for_next(page, key: str) -> None:
    before = current_source(page)
    page.keyboard.press(key)
    page.wait_for_function("(before) => document.querySelector('#source-id').value !== before", arg=before)


def test_a_volunteer_signs_up_and_labels_with_the_keyboard(live_server, page, screenshot, make_source, workflow):
    from django.utils import timezone

    sources = [make_source() for _ in range(8)]
    gold = sources[0]
    GoldLabel.objects.create(
        workflow=workflow, source=gold, label="FRII", feedback="Note the hotspots at the lobe ends."
    )
    Subject.objects.filter(source=gold).update(retired_at=timezone.now(), retire_reason="gold")
    workflow.gold_rate_start = workflow.gold_rate_min = 1.0  # the first subject served is the gold one
    workflow.save()

    page.goto(f"{live_server.url}/accounts/signup/")
    page.fill("#id_username", "vera")
    page.fill("#id_password1", "radio lobes 1420")
    page.fill("#id_password2", "radio lobes 1420")
    page.click("button[type=submit]")
    page.wait_for_url("**/label/")

    # The tutorial opens on the first visit.
    assert page.is_visible("#tutorial")
    screenshot(page, "1-tutorial")
    for _ in range(3):
        page.click("#tutorial-next")
    assert not page.is_visible("#tutorial")

    # The gold source comes first: answering it shows the experts' feedback.
    assert current_source(page) == str(gold.pk)
    press_and_wait_for_next(page, "2")
    page.wait_for_selector("#feedback.gold-right")
    assert "Note the hotspots" in page.inner_text("#feedback")
    # The feedback is about the gold source, no longer on screen: its own image sits beside the words.
    assert current_source(page) != str(gold.pk)
    thumbnail = page.locator("#feedback-image")
    assert thumbnail.is_visible() and thumbnail.get_attribute("data-source") == str(gold.pk)
    assert thumbnail.get_attribute("src").endswith(f"/sources/{gold.pk}/thumbnail.png")
    page.wait_for_function("() => document.querySelector('#feedback-image').naturalWidth > 0")
    assert gold.name in thumbnail.get_attribute("alt")
    screenshot(page, "2-gold-feedback")

    for key in ["1", "2", "1", "3"]:
        press_and_wait_for_next(page, key)
    screenshot(page, "3-labelling")
    volunteer = VolunteerProfile.objects.get(user__username="vera").user
    assert Classification.objects.filter(volunteer=volunteer).count() == 5

    # Undo the last vote with the left arrow: its source comes back to answer again.
    last = Classification.objects.filter(volunteer=volunteer).latest("created_at")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("(id) => document.querySelector('#source-id').value === id", arg=str(last.source_id))
    assert "Vote undone" in page.inner_text("#feedback")
    assert Classification.objects.filter(volunteer=volunteer).count() == 4

    profile = VolunteerProfile.objects.get(user=volunteer)
    assert (profile.gold_answered, profile.gold_correct) == (1, 1)
    assert profile.tutorial_seen_at is not None

    # The tutorial is shown once only.
    page.reload()
    assert not page.is_visible("#tutorial")


def test_the_labelling_page_works_on_a_phone(live_server, browser, screenshot, make_source, volunteer, client):
    make_source()
    client.force_login(volunteer)
    session = client.cookies["sessionid"].value
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
    page = context.new_page()
    page.goto(f"{live_server.url}/label/")
    page.click("#tutorial-next")
    page.click("#tutorial-next")
    page.click("#tutorial-next")
    choice = page.locator(".choice").first.bounding_box()
    image = page.locator("#radio").bounding_box()
    assert image["width"] <= 390 and choice["x"] >= 0 and choice["x"] + choice["width"] <= 390
    page.locator(".choice").first.tap()
    page.wait_for_selector("#done:not([hidden])")  # the only source is answered
    screenshot(page, "phone")
    assert Classification.objects.filter(volunteer=volunteer).count() == 1
    context.close()


def wait_until(condition, timeout_s: float = 10.0) -> None:
    """Poll the database until ``condition()`` holds (the page's requests run in the live server)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the page's requests"
        time.sleep(0.05)


def test_the_page_prefetches_a_queue_and_gives_back_what_it_will_not_show(
    live_server, browser, make_source, volunteer, client, monkeypatch
):
    """One request per vote; undo and skip keep the queue at its size and release the rest; leaving
    the page releases everything it held, at once rather than at the holds' timeout."""
    from datetime import timedelta

    from django.utils import timezone

    from rgzlabel.labelling import services
    from rgzlabel.labelling.models import Assignment

    monkeypatch.setattr(services, "LEAVING_GRACE", timedelta(0))  # no reload races in this test
    for _ in range(10):
        make_source()
    services.profile_of(volunteer)
    VolunteerProfile.objects.filter(user=volunteer).update(tutorial_seen_at=timezone.now())
    client.force_login(volunteer)
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    held = Assignment.objects.filter(volunteer=volunteer)
    page.goto(f"{live_server.url}/label/")
    wait_until(lambda: held.count() == 4)  # the shown subject and a queue of three
    # ... and the page has them all (its last `next` may still be on its way when the server holds it).
    page.wait_for_function("() => (document.querySelector('#labeller').dataset.held || '').split(' ').length === 4")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url) if "/label/api/" in request.url else None)

    for key in ["1", "2", "1"]:
        press_and_wait_for_next(page, key)
    assert len(requests) == 3 and all(url.endswith("/label/api/vote/") for url in requests)
    assert Classification.objects.filter(volunteer=volunteer).count() == 3
    wait_until(lambda: held.count() == 4)

    last = Classification.objects.filter(volunteer=volunteer).latest("created_at")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("(id) => document.querySelector('#source-id').value === id", arg=str(last.source_id))
    wait_until(lambda: held.count() == 4)  # the undone subject in front, the queue trimmed back to three

    skipped = int(current_source(page))
    press_and_wait_for_next(page, "ArrowRight")
    wait_until(lambda: not held.filter(subject__source_id=skipped).exists() and held.count() == 4)
    # The page has taken the skip's answer into its queue: it holds what the server holds for it.
    page.wait_for_function("() => document.querySelector('#labeller').dataset.held.split(' ').length === 4")
    page_held = {int(i) for i in page.get_attribute("#labeller", "data-held").split()}
    assert page_held == set(held.values_list("subject__source_id", flat=True))

    page.goto(f"{live_server.url}/label/me/")  # leaving the page
    wait_until(lambda: held.count() == 0)
    assert Classification.objects.filter(volunteer=volunteer).count() == 2
    context.close()
