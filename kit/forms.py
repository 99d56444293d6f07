"""Showing a service's refusal (a ValidationError) on the form that asked for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django import forms
from django.core.exceptions import ValidationError


def add_service_error(form: forms.Form, error: ValidationError) -> None:
    """Show a service's ValidationError on the form: on its field when the form has
    that field, otherwise at the top."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error)


@contextmanager
def service_errors_on(form: forms.Form) -> Iterator[None]:
    """Around a service call a view makes for a submitted form: a ValidationError it
    raises is shown on the form (by the form's own `add_service_error` when it has one,
    e.g. for errors of its rows) instead of propagating, and the view goes on past the
    `with` to show the form again. Nothing after the call inside the block runs."""
    try:
        yield
    except ValidationError as exc:
        own = getattr(form, "add_service_error", None)
        if own is not None:
            own(exc)
        else:
            add_service_error(form, exc)
