"""Radio sources, where each came from, and their preprocessed images."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Source(models.Model):
    """One radio source on the sky, possibly seen in several datasets.

    Labels from catalogues live on :class:`Provenance`, never here and never as votes:
    the volunteers' consensus and the literature label must stay separable.
    """

    name = models.CharField(max_length=128, unique=True)
    ra_deg = models.FloatField(null=True, blank=True, help_text="J2000 right ascension, degrees")
    dec_deg = models.FloatField(null=True, blank=True, help_text="J2000 declination, degrees")
    survey = models.CharField(max_length=32, default="FIRST")
    angular_size_arcsec = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["ra_deg", "dec_deg"], name="source_position_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(ra_deg__isnull=True) | (Q(ra_deg__gte=0) & Q(ra_deg__lt=360)),
                name="source_ra_range",
            ),
            models.CheckConstraint(
                condition=Q(dec_deg__isnull=True) | (Q(dec_deg__gte=-90) & Q(dec_deg__lte=90)),
                name="source_dec_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Provenance(models.Model):
    """Where a source's image came from, with the catalogue's own label (if any)."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="provenances")
    dataset = models.CharField(max_length=32, help_text="e.g. mirabest, griese, frdeep, fits, png")
    external_id = models.CharField(max_length=255, help_text="the dataset's own key: file name, group or index")
    catalogue_label = models.CharField(max_length=32, blank=True, help_text="e.g. FRI, FRII, hybrid")
    label_code = models.CharField(max_length=16, blank=True, help_text="the dataset's original code")
    split = models.CharField(max_length=16, blank=True, help_text="train / valid / test in the dataset")
    path = models.CharField(max_length=1024, blank=True)
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 of the input, to detect changes")
    extra = models.JSONField(default=dict, blank=True)
    ingested_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "external_id"], name="provenance_unique_key"),
        ]
        indexes = [models.Index(fields=["catalogue_label"], name="provenance_label_idx")]

    def __str__(self) -> str:
        return f"{self.dataset}:{self.external_id}"


class Cutout(models.Model):
    """The preprocessed image of a source, stored once, and its browser thumbnail.

    ``pixels`` holds ``size * size`` uint8 bytes in row-major order (the ``ml.preprocess``
    convention: 150x150 at 1.8 arcsec/pixel, thresholded at 3 sigma, scaled to 0..255).
    Kept in the database so that a cutout and its source are written in one transaction.
    """

    source = models.OneToOneField(Source, on_delete=models.CASCADE, related_name="cutout")
    size = models.PositiveSmallIntegerField(default=150)
    pixel_scale_arcsec = models.FloatField(default=1.8)
    pixels = models.BinaryField()
    thumbnail_png = models.BinaryField()
    checksum = models.CharField(max_length=64, help_text="sha256 of pixels; also the thumbnail's ETag")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"cutout of {self.source_id}"

    def as_array(self):  # -> numpy.ndarray, imported lazily to keep model import light
        import numpy as np

        return np.frombuffer(bytes(self.pixels), dtype=np.uint8).reshape(self.size, self.size)
