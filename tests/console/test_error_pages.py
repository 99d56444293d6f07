"""Error pages keep the signed-in layout: the navigation of the user's own organization
and the switcher; another organization's slug in the URL shows nothing of it."""

from __future__ import annotations

from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory

from console.views import server_error
from tests.conftest import Tenant, client_for


def test_a_404_under_another_organization_shows_only_the_users_own(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    response = client_for(tenant_a.owner).get(f"/o/{tenant_b.org.slug}/clusters/")
    assert response.status_code == 404
    page = response.content.decode()
    assert f'href="/o/{tenant_a.org.slug}/clusters/"' in page
    assert tenant_b.org.name not in page and f"/o/{tenant_b.org.slug}/" not in page


def test_the_500_page_keeps_the_navigation_of_a_signed_in_user(tenant_a: Tenant) -> None:
    request = RequestFactory().get("/o/alpha/clusters/1/")
    request.user = tenant_a.member
    request.session = SessionStore()
    try:
        raise RuntimeError("a bug")  # the handler runs while an exception is handled
    except RuntimeError:
        response = server_error(request)
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page
    assert f'href="/o/{tenant_a.org.slug}/clusters/"' in page
    assert f"<summary>{tenant_a.org.name}</summary>" in page


def test_the_500_page_without_a_signed_in_user_is_bare() -> None:
    request = RequestFactory().get("/")
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        response = server_error(request)
    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()
