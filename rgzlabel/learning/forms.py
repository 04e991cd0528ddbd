from __future__ import annotations

import json

from django import forms

from rgzlabel.learning.models import Job


class TriggerForm(forms.Form):
    """An admin's request to run a job, with its parameters as JSON."""

    kind = forms.ChoiceField(choices=Job.Kind.choices)
    params = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"preset": "cpu-quick", "overrides": {"epochs": 5}}'}),
        help_text=(
            "JSON object; e.g. pretrain: preset, overrides, seed; finetune: encoder, preset, seed; "
            "embed: method, encoder, views; evaluate: classifier"
        ),
    )

    def clean_params(self) -> dict:
        text = self.cleaned_data["params"].strip() or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('parameters must be a JSON object, e.g. {"preset": "tiny"}')
        return value

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        if cleaned.get("kind") == Job.Kind.INGEST and isinstance(cleaned.get("params"), dict):
            # The same folder rules as the ingest page: this form must not be a way around them.
            from rgzlabel.catalog.inputs import InputError
            from rgzlabel.catalog.services import check_ingest_params

            try:
                check_ingest_params(cleaned["params"])
            except InputError as exc:
                self.add_error("params", str(exc))
        return cleaned
