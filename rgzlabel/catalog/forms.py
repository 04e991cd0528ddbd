"""The staff ingest form: server paths and/or uploaded FITS files, and ingest options."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile

from rgzlabel.catalog.inputs import FITS_SUFFIXES, InputError, InputKind


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (Django's documented pattern for ``multiple``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ",".join(FITS_SUFFIXES)}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(file, initial) for file in files]


class IngestForm(forms.Form):
    paths = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "/data/first/cutouts\n/data/MiraBest_F_batches.tar.gz"}),
        help_text=(
            "Absolute paths on the worker's machine, one per line: FITS files or folders (searched "
            "recursively), MiraBest or FR-DEEP tar.gz, the Griese HDF5 zip, a PNG folder with a catalogue CSV."
        ),
    )
    files = MultipleFileField(required=False, help_text=f"FITS files ({', '.join(FITS_SUFFIXES)})")
    dataset = forms.ChoiceField(
        required=False,
        choices=[("", "recognise each input")] + [(kind.value, kind.value) for kind in InputKind],
        help_text="Force the kind of every path (uploads are always FITS).",
    )
    survey = forms.CharField(required=False, max_length=32, help_text="Survey of new sources (default FIRST).")
    radius_arcsec = forms.FloatField(
        required=False, min_value=0.0, label="Cross-match radius (arcsec)", help_text="Default: the site setting."
    )
    allow_no_position = forms.BooleanField(
        required=False, help_text="Ingest FITS files without a celestial WCS instead of failing them."
    )

    def clean_paths(self) -> list[str]:
        from rgzlabel.catalog.services import check_ingest_params

        paths = [line.strip() for line in self.cleaned_data["paths"].splitlines() if line.strip()]
        # The worker may run on another machine, so existence is checked there (the job
        # reports a missing path); a web form must not read arbitrary server files, so
        # only folders an operator allowed, with symlinks resolved (the job checks again).
        try:
            check_ingest_params({"paths": paths})
        except InputError as exc:
            raise forms.ValidationError(f"{str(exc)[:1].upper()}{str(exc)[1:]}") from None
        return paths

    def clean_files(self) -> list[UploadedFile]:
        files = self.cleaned_data["files"]
        not_fits = [file.name for file in files if not (file.name or "").lower().endswith(FITS_SUFFIXES)]
        if not_fits:
            raise forms.ValidationError(f"Only FITS files can be uploaded: {', '.join(not_fits)}")
        return files

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors and not cleaned.get("paths") and not cleaned.get("files"):
            raise forms.ValidationError("Give a server path or upload FITS files.")
        return cleaned
