"""More like this, from an uploaded FITS cutout."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from rgzlabel.learning.models import EmbeddingSet, EncoderVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def fits_file(generated_data):
    return sorted((generated_data / "mirabest" / "fits").glob("*.fits"))[0]


@pytest.fixture(params=["centre", "dihedral"])
def encoder_embedding(request, make_source, fits_file, tmp_path):
    """A tiny encoder's embeddings of 8 sources, one of which is the FITS file's source."""
    from ml.checkpoint import save_checkpoint
    from ml.config import get_config
    from ml.embed import embed_to_folder
    from ml.encoder import build_encoder
    from ml.fits_io import read_fits
    from ml.preprocess import preprocess
    from ml.thumbnail import render_thumbnail
    from rgzlabel.catalog.models import Cutout
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder

    sources = [make_source() for _ in range(7)]
    image = read_fits(fits_file)
    pixels = preprocess(image.data, image.pixel_scale_arcsec)
    twin = make_source(name="the FITS twin")
    Cutout.objects.filter(source=twin).update(pixels=pixels.tobytes(), thumbnail_png=render_thumbnail(pixels))
    sources.append(twin)
    encoder = build_encoder(get_config("tiny").encoder, seed=0)
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", encoder)
    version = EncoderVersion.objects.create(name="tiny", architecture="resnet18", checkpoint_path=str(checkpoint))
    images = np.stack([Cutout.objects.get(source=s).as_array() for s in sources])  # fresh from the database
    folder = embeddings_folder()
    views = request.param
    embed_to_folder(encoder, images, [s.pk for s in sources], folder, device="cpu", views=views)
    activate_embedding_set(
        EmbeddingSet.objects.create(
            encoder=version, method="encoder", views=views, path=str(folder), n_sources=8, dim=512
        )
    )
    return twin


def test_an_uploaded_fits_finds_its_own_source_first(
    client, admin_user, encoder_embedding, fits_file, celery_worker
) -> None:
    """The upload is embedded by the worker on the query queue; the web process never loads the encoder."""
    from rgzlabel.science import query

    client.force_login(admin_user)
    upload = SimpleUploadedFile(fits_file.name, fits_file.read_bytes())
    page = client.post(reverse("science:search"), {"fits": upload}).content.decode()
    assert 'id="results"' in page
    first = page.index('href="/science/sources/')
    assert page[first:].startswith(f'href="{reverse("science:source", args=[encoder_embedding.pk])}"')
    assert "(cosine 1.000)" in page
    assert query._encoder.cache_info().currsize == 0  # loaded in the worker, not in this (the web) process


def test_an_encoder_the_query_worker_cannot_load_is_named(
    client, admin_user, encoder_embedding, fits_file, celery_worker
) -> None:
    """A checkpoint that is there but unreadable fails in the worker; the page says so, with the reason."""
    checkpoint = EmbeddingSet.objects.get(is_active=True).encoder.checkpoint_path
    with open(checkpoint, "wb") as handle:
        handle.write(b"not a checkpoint")
    client.force_login(admin_user)
    upload = SimpleUploadedFile(fits_file.name, fits_file.read_bytes())
    page = client.post(reverse("science:search"), {"fits": upload}).content.decode()
    assert 'id="search-error"' in page and "the query worker failed" in page
    assert 'id="results"' not in page


def test_a_broken_upload_is_named_with_its_reason(client, admin_user, encoder_embedding) -> None:
    client.force_login(admin_user)
    upload = SimpleUploadedFile("notes.fits", b"this is not FITS")
    page = client.post(reverse("science:search"), {"fits": upload}).content.decode()
    assert 'id="search-error"' in page and "notes.fits:" in page


def test_a_pixel_pca_embedding_cannot_be_searched_by_image(client, admin_user, make_source, fits_file) -> None:
    from ml.embed import write_embeddings
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder

    sources = [make_source() for _ in range(3)]
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], np.eye(3, dtype=np.float32))
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=3, dim=3))
    client.force_login(admin_user)
    upload = SimpleUploadedFile(fits_file.name, fits_file.read_bytes())
    page = client.post(reverse("science:search"), {"fits": upload}).content.decode()
    assert "needs a pretrained encoder" in page


def test_volunteers_cannot_search(client, volunteer) -> None:
    client.force_login(volunteer)
    assert client.get(reverse("science:search")).status_code == 403


def test_while_pretraining_runs_search_and_map_say_when_the_encoder_comes(
    client, admin_user, make_source, fits_file
) -> None:
    from ml.embed import write_embeddings
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
    from rgzlabel.learning.models import Job

    sources = [make_source() for _ in range(3)]
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], np.eye(3, dtype=np.float32))
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=3, dim=3))
    job = Job.objects.create(
        kind=Job.Kind.PRETRAIN,
        state=Job.State.RUNNING,
        metrics={"step": 100, "total_steps": 400, "eta_s": 1500.0},
        log="12:00:00 epoch 1, step 50/400, loss 3.1000, 2.0 img/s\n"
        "12:01:00 epoch 2, step 100/400, loss 2.5000, 2.0 img/s",
    )
    client.force_login(admin_user)

    when = f"in about 25 min (pretraining job #{job.pk} at step 100/400, then its embedding)"
    assert when in client.get(reverse("science:search")).content.decode()
    upload = SimpleUploadedFile(fits_file.name, fits_file.read_bytes())
    page = client.post(reverse("science:search"), {"fits": upload}).content.decode()
    assert "needs a pretrained encoder" in page and when in page
    data = client.get(reverse("science:map-data")).json()
    assert data["count"] == 3 and "cold-start embedding (pixel PCA)" in data["note"] and when in data["note"]
    assert when in client.get(reverse("science:map")).content.decode()


def test_the_loss_plot_draws_a_running_pretrainings_curve_so_far(client, admin_user) -> None:
    from rgzlabel.learning.models import Job
    from rgzlabel.science.services import logged_losses, loss_plot

    log = "\n".join(f"12:00:{i:02d} epoch 1, step {10 * i}/400, loss {3 - i / 10:.4f}, 2.0 img/s" for i in range(1, 8))
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, state=Job.State.RUNNING, metrics={"total_steps": 400}, log=log)
    assert logged_losses(job.log) == ([10, 20, 30, 40, 50, 60, 70], [2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3])

    client.force_login(admin_user)
    response = client.get(reverse("science:plot", args=["loss"]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    # Not the empty frame: the plot with the curve so far differs from the one without a job.
    assert response.content == loss_plot(None, job) != loss_plot(None, None)


def test_a_query_worker_loads_the_active_encoder_when_it_starts(encoder_embedding) -> None:
    """What a worker on the query queue runs at its start (workers.celery's celeryd_init hook)."""
    from rgzlabel.science import query

    query._encoder.cache_clear()
    try:
        checkpoint = query.warm_up()
        assert checkpoint == EmbeddingSet.objects.get(is_active=True).encoder.checkpoint_path
        assert query._encoder.cache_info().currsize == 1
    finally:
        query._encoder.cache_clear()
