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


def test_an_uploaded_fits_finds_its_own_source_first(client, admin_user, encoder_embedding, fits_file) -> None:
    client.force_login(admin_user)
    upload = SimpleUploadedFile(fits_file.name, fits_file.read_bytes())
    page = client.post(reverse("science:search"), {"fits": upload}).content.decode()
    assert 'id="results"' in page
    first = page.index('href="/science/sources/')
    assert page[first:].startswith(f'href="{reverse("science:source", args=[encoder_embedding.pk])}"')
    assert "(cosine 1.000)" in page


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
