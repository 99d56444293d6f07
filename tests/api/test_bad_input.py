"""Hostile or broken input gets a 4xx in the API's error shape, never a 500: a body
larger than Django accepts, a NUL character in a filter (PostgreSQL refuses it in any
statement). The console's filters too."""

from __future__ import annotations

from django.test import Client

from accounts.models import Project
from tests.conftest import Tenant, client_for

from .conftest import API, as_role, assert_error


def test_a_body_over_the_limit_is_413(alpha: Tenant) -> None:
    client = as_role(alpha, "owner")
    answer = client.post(
        f"/orgs/{alpha.org.slug}/projects", b'{"name": "' + b"x" * (5 << 20) + b'"}'
    )
    assert_error(answer, 413, "request_too_large")
    assert not Project.objects.filter(name__startswith="xxx").exists()
    # The API's document says so, for clients to expect it (and 400 for a broken body).
    document = Client().get("/api/v1/openapi.json").json()
    responses = document["paths"]["/api/v1/orgs/{org}/projects"]["post"]["responses"]
    assert {"400", "413"} <= set(responses)


def test_a_nul_in_a_filter_is_a_validation_error_naming_it(alpha: Tenant) -> None:
    client = as_role(alpha, "owner")
    for path, params in (
        ("/audit-events", {"action": "\x00"}),
        ("/projects", {"q": "\x00"}),
        ("/clusters", {"project": "a\x00b"}),
    ):
        answer = client.get(f"/orgs/{alpha.org.slug}{path}", params)
        assert_error(answer, 422, "validation_error")
        assert list(answer.body["error"]["details"]) == list(params)


def test_a_nul_in_a_console_filter_is_400(alpha: Tenant) -> None:
    client = client_for(alpha.owner)
    for path in ("audit/?action=%00", "projects/?q=%00", "clusters/?q=%00"):
        assert client.get(f"/o/{alpha.org.slug}/{path}").status_code == 400, path
    assert API  # the API's prefix is the one the error shape covers
