"""Fill in the angular size of sources ingested before sizes were computed at ingest."""

from django.db import migrations


def backfill_angular_sizes(apps, schema_editor):
    import numpy as np

    from ml.preprocess import angular_extent_arcsec

    Cutout = apps.get_model("catalog", "Cutout")
    Source = apps.get_model("catalog", "Source")
    missing = Cutout.objects.filter(source__angular_size_arcsec__isnull=True).values_list(
        "source_id", "size", "pixel_scale_arcsec", "pixels"
    )
    for source_id, size, scale, pixels in missing.iterator(chunk_size=500):
        cutout = np.frombuffer(bytes(pixels), dtype=np.uint8).reshape(size, size)
        extent = angular_extent_arcsec(cutout, scale)
        if extent > 0:
            Source.objects.filter(pk=source_id).update(angular_size_arcsec=round(extent, 1))


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunPython(backfill_angular_sizes, migrations.RunPython.noop)]
