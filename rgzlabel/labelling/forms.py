from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from rgzlabel.labelling import throttle


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional; needed only to reset a forgotten password.")

    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]
        fields = ("username", "email")


class ThrottledLoginMixin:
    """A log-in form whose password check is refused after too many failures (``throttle.login_attempt``)."""

    request: Any
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        try:
            with throttle.login_attempt(self.request, self.cleaned_data.get("username") or ""):
                return super().clean()  # type: ignore[misc]
        except throttle.Throttled as exc:
            raise forms.ValidationError(str(exc), code="throttled") from exc


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    """The site's log-in form."""


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin's log-in form: the same limits, so /admin/login/ is no way around them."""
