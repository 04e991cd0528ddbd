"""What volunteers see around the image: gold feedback about its own source, the field guide,
the guest's log-out warning, their effect on the model, wording."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from rgzlabel.catalog.models import Cutout, Provenance, Source
from rgzlabel.labelling.models import Classification, GoldLabel, Subject
from rgzlabel.labelling.services import (
    FIELD_GUIDE_MAX_EXTENT_ARCSEC,
    FIELD_GUIDE_REASON,
    choose_field_guide_examples,
    field_guide,
    field_guide_extent,
    next_subject,
    record_classification,
    seed_gold_from_catalogue,
)
from tests.voting import serve, served_vote

pytestmark = pytest.mark.django_db


def test_gold_feedback_names_the_source_it_is_about(client, volunteer, make_source, workflow) -> None:
    gold = make_source()
    GoldLabel.objects.create(workflow=workflow, source=gold, label="FRII", feedback="Hotspots at the ends.")
    client.force_login(volunteer)
    serve(volunteer, gold.pk, workflow)
    body = client.post(reverse("labelling:api-vote"), {"source": gold.pk, "label": "FRI"}).json()
    assert body["gold_message"].startswith("Experts said FRII.")
    assert body["gold_source"] == {
        "id": gold.pk,
        "name": gold.name,
        "thumbnail": reverse("catalog:thumbnail", args=[gold.pk]),
    }
    plain = make_source()
    serve(volunteer, plain.pk, workflow)
    assert (
        client.post(reverse("labelling:api-vote"), {"source": plain.pk, "label": "FRI"}).json()["gold_source"] is None
    )


def labelled(make_source, label: str, sizes: list[float], dataset: str = "mirabest") -> list[Source]:
    sources = []
    for size in sizes:
        source = make_source(angular_size_arcsec=size)
        Provenance.objects.create(
            source=source, dataset=dataset, external_id=f"{label}-{source.pk}", catalogue_label=label
        )
        sources.append(source)
    return sources


def test_the_field_guide_shows_the_best_resolved_examples_of_every_class_and_never_serves_them(
    make_source, workflow, volunteer
) -> None:
    fri = labelled(make_source, "FRI", [30.0, 120.0, 90.0, 60.0, 250.0])
    frii = labelled(make_source, "FRII", [15.0, 150.0, 140.0, 10.0])
    hybrid = labelled(make_source, "hybrid", [80.0])
    compact = labelled(make_source, "compact", [12.0, 8.0])
    # Lobes at both edges of the cutout: wider than an example may be, however large its stored size.
    wide = np.zeros((150, 150), dtype=np.uint8)
    wide[70:80, 2:22] = wide[70:80, 128:148] = 200
    Cutout.objects.filter(source=fri[4]).update(pixels=wide.tobytes())
    two_lobes = np.zeros((150, 150), dtype=np.uint8)  # about 90" across
    two_lobes[70:80, 50:60], two_lobes[70:80, 90:100] = 200, 150
    Cutout.objects.filter(source=hybrid[0]).update(pixels=two_lobes.tobytes())
    voted = labelled(make_source, "FRII", [199.0])[0]
    served_vote(volunteer, voted.pk, "FRII", workflow)  # already in someone's answers: not an example

    assert choose_field_guide_examples(workflow, per_class=3) == 3 + 3 + 1 + 2
    guide = {c["key"]: [e["id"] for e in c["examples"]] for c in field_guide(workflow)}

    def best(sources: list[Source], n: int) -> set[int]:
        """The largest by the criterion measured on the image, all within the limit."""
        measured = sorted((-field_guide_extent(s.pk), s.pk) for s in sources)
        assert all(0 < -extent <= FIELD_GUIDE_MAX_EXTENT_ARCSEC for extent, _ in measured)
        return {pk for _, pk in measured[:n]}

    assert {k: set(v) for k, v in guide.items()} == {
        "FRI": best(fri[:4], 3),
        "FRII": best(frii, 3),  # never the voted one
        "hybrid": {hybrid[0].pk},
        "unsure": {compact[0].pk, compact[1].pk},
    }
    assert field_guide_extent(fri[4].pk) > FIELD_GUIDE_MAX_EXTENT_ARCSEC
    examples = {i for ids in guide.values() for i in ids}
    assert Subject.objects.filter(source_id__in=examples, retire_reason=FIELD_GUIDE_REASON).count() == len(examples)

    # No volunteer is ever served an example, and the gold set does not take them either.
    served = set()
    while (subject := next_subject(volunteer, workflow)) is not None:
        served.add(subject.subject.source_id)
        record_classification(volunteer, subject.subject.source_id, "FRI", workflow)
    assert served and not served & examples
    seed_gold_from_catalogue(workflow, dataset="mirabest", per_class=50)
    assert not GoldLabel.objects.filter(source_id__in=examples).exists()
    # Running it again keeps the chosen ones.
    assert choose_field_guide_examples(workflow, per_class=3) == 0


def test_the_label_page_shows_the_examples(client, volunteer, make_source, workflow) -> None:
    hybrid = labelled(make_source, "hybrid", [80.0])[0]
    make_source()
    choose_field_guide_examples(workflow)
    client.force_login(volunteer)
    page = client.get(reverse("labelling:label")).content.decode()
    assert f'data-source="{hybrid.pk}"' in page and "Hybrid example" in page


def test_a_guest_is_warned_before_logging_out(client, make_source, workflow) -> None:
    source = make_source()
    client.post(reverse("labelling:guest"))
    assert client.get(reverse("labelling:api-next")).json()["source"]["id"] == source.pk  # served, then voted
    client.post(reverse("labelling:api-vote"), {"source": source.pk, "label": "FRI"})
    page = client.get(reverse("labelling:label")).content.decode()
    assert f'href="{reverse("labelling:guest-logout")}"' in page
    warning = client.get(reverse("labelling:guest-logout")).content.decode()
    assert "Your 1 vote stays with this guest account" in warning
    assert reverse("signup") in warning and "Log out anyway" in warning
    client.post(reverse("logout"))
    assert Classification.objects.count() == 1  # the votes stay


def test_a_registered_volunteer_logs_out_directly(client, volunteer) -> None:
    client.force_login(volunteer)
    page = client.get(reverse("labelling:me")).content.decode()
    assert f'action="{reverse("logout")}"' in page and reverse("labelling:guest-logout") not in page
    assert client.get(reverse("labelling:guest-logout")).status_code == 302


def test_wording_uses_the_singular_for_one(client, volunteer, make_source, workflow) -> None:
    workflow.retire_after = 1
    workflow.save()
    source = make_source()
    served_vote(volunteer, source.pk, "FRI", workflow)
    client.force_login(volunteer)
    page = client.get(reverse("labelling:me")).content.decode()
    assert "source finished with your help" in page and "sources finished" not in page
    assert "source classified" in page


def test_your_effect_on_the_model_shows_real_figures_after_retrains(
    client, volunteer, other_volunteer, make_source, workflow, django_capture_on_commit_callbacks
) -> None:
    """Two real retrain jobs after the volunteer's first votes: the page shows their figures."""
    from ml.embed import write_embeddings
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
    from rgzlabel.learning.jobs import create_job, run_job
    from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, Job

    client.force_login(volunteer)
    assert "once your votes are part of a retrained model" in client.get(reverse("labelling:me")).content.decode()

    rng = np.random.default_rng(0)
    sources = [make_source() for _ in range(60)]
    centres = np.zeros((60, 8))
    centres[:30, 0], centres[30:, 0] = -3.0, 3.0
    matrix = (centres + rng.normal(0, 0.5, (60, 8))).astype("f4")
    folder = write_embeddings(embeddings_folder(), [s.pk for s in sources], matrix)
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=60, dim=8))
    workflow.retire_after = 2
    workflow.save()
    for i, source in enumerate(sources[:10] + sources[30:40]):  # the volunteer votes with a friend
        truth = "FRI" if i < 10 else "FRII"
        served_vote(volunteer, source.pk, truth, workflow)
        served_vote(other_volunteer, source.pk, truth, workflow)
    for source in sources[20:30] + sources[50:60]:
        GoldLabel.objects.create(workflow=workflow, source=source, label="FRI" if source in sources[:30] else "FRII")

    def retrain() -> None:
        with django_capture_on_commit_callbacks():
            job = create_job(Job.Kind.RETRAIN, {})
            run_job(job.pk)
        assert Job.objects.get(pk=job.pk).state == Job.State.SUCCEEDED

    retrain()
    Subject.objects.filter(source__in=sources[10:15] + sources[40:45]).update(
        retired_at=timezone.now(), retire_reason="vote count"
    )
    for source in sources[10:15] + sources[40:45]:
        label = "FRI" if source in sources[:30] else "FRII"
        Subject.objects.filter(source=source).update(consensus_label=label, weighted_label=label)
    retrain()

    latest = ClassifierVersion.objects.get(is_active=True)
    first = ClassifierVersion.objects.exclude(pk=latest.pk).get()
    page = client.get(reverse("labelling:me")).content.decode()
    assert '<b id="effect-retrains">2</b>' in page
    assert f'<b id="effect-labels">{latest.n_labels}</b>' in page and latest.n_labels == 30
    assert '<b id="effect-yours">20</b>' in page  # 20 of the 30 labels carry this volunteer's vote
    now, before = round(100 * latest.metrics["accuracy"]), round(100 * first.metrics["accuracy"])
    assert f"{now} %</b>accuracy now (was {before} %)" in page
