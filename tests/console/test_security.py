"""Generic security properties, checked on every URL the project has:
tenant isolation (404 across organizations), CSRF on every unsafe request, and no
state change on GET."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from django.apps import apps
from django.test import Client
from django.urls import reverse

from accounts.choices import OrgRole
from clusters.certificates import forget_ca, issuing_ca
from tests.conftest import Tenant, client_for
from tests.urlwalk import Route, all_routes, our_routes

pytestmark = pytest.mark.django_db

# How to fill each URL keyword with one of a tenant's objects. A new keyword fails
# test_every_url_keyword_has_a_fixture until it is added here.
KWARG_FILLERS: dict[str, Any] = {
    "org_slug": lambda t: t.org.slug,
    "project_slug": lambda t: t.project.slug,
    "membership_id": lambda t: t.memberships[OrgRole.MEMBER].pk,
    "invitation_id": lambda t: t.invitation.pk,
    "member_id": lambda t: t.project_membership.pk,
    "cloud_id": lambda t: t.cloud.pk,
    "cluster_id": lambda t: t.cluster.pk,
    "node_id": lambda t: t.node.pk,
    "config_id": lambda t: t.cluster.compute_config.config_id,
    "image_id": lambda t: t.image.pk,
    "build_id": lambda t: t.build.pk,
    "token_id": lambda t: t.token.pk,
    "service_account_id": lambda t: t.service_account.pk,
    "claim_id": lambda t: t.domain_claim.pk,
    "mapping_id": lambda t: t.sso_mapping.pk,
    "service_id": lambda t: t.service.pk,
    "workspace_id": lambda t: t.workspace.pk,
    "key_id": lambda t: t.ssh_key.pk,
    "job_id": lambda t: t.job.pk,
    "number": lambda t: t.job.attempts.get().number,  # an attempt of that job
    "schedule_id": lambda t: t.job_schedule.pk,
    "kind": lambda t: "local",  # not an object: a choice in the URL
    "app": lambda t: "dashboard",  # not an object: an app behind a cluster's gateway
}
NOT_OBJECTS = {"org_slug", "kind", "app"}
# APIs authenticated only by a token in the Authorization header, never by cookies.
TOKEN_ONLY_PREFIXES = ("agent/v1/", "api/v1/")
API_PREFIX = "api/v1/"
# JSON endpoints for a client with no session (the CLI's sign-in hand-off): open to
# anyone, they read no cookie, so a browser's cookies must change nothing about the answer.
COOKIELESS_PREFIXES = ("cli/handoff",)
# Routes outside organizations whose keywords are not objects of a tenant.
PUBLIC_KWARGS = {"token", "filename", "cloud_uuid", "key"}


# The JSON API names its URL keywords after the contract (docs/api.md): `org`, `project`,
# and `id`, whose object depends on the collection it follows.
API_ID_FILLERS: dict[str, Any] = {
    "clouds": lambda t: t.cloud.pk,
    "clusters": lambda t: t.cluster.uuid,
    "compute-configs": lambda t: t.cluster.compute_config.config_id,
    "images": lambda t: t.image.pk,
    "image-builds": lambda t: t.build.pk,
    "tokens": lambda t: t.token.pk,
    "workspaces": lambda t: t.workspace.uuid,
    "jobs": lambda t: t.job.uuid,
    "job-schedules": lambda t: t.job_schedule.uuid,
    "services": lambda t: t.service.uuid,
}
API_KWARG_FILLERS: dict[str, Any] = {
    "org": lambda t: t.org.slug,
    "project": lambda t: t.project.slug,
}


# Valid bodies for the API's creates, naming A's objects.
API_BODIES: dict[str, Any] = {
    "projects": lambda t: {"name": "pwned"},
    "clouds": lambda t: {"kind": "local", "name": "pwned"},
    "default-cloud": lambda t: {"cloud": str(t.cloud.pk)},
    "compute-configs": lambda t: {"name": "pwned", "cloud": str(t.cloud.pk)},
    "clusters": lambda t: {"name": "pwned", "project": t.project.slug},
    "images": lambda t: {"name": "pwned", "image_uri": "pwned/ray:2"},
    "image-builds": lambda t: {"name": "pwned", "cloud": str(t.cloud.pk), "spec": {}},
    "tokens": lambda t: {"name": "pwned"},
    "working-dirs": lambda t: {"project": t.project.slug, "sha256": "a" * 64, "size": 1},
    "jobs": lambda t: {"project": t.project.slug, "entrypoint": "python pwned.py"},
    "job-schedules": lambda t: {
        "project": t.project.slug,
        "name": "pwned",
        "cron": "0 3 * * *",
        "entrypoint": "python pwned.py",
    },
    "workspaces": lambda t: {"name": "pwned", "project": t.project.slug},
    "services": lambda t: {
        "name": "pwned",
        "project": t.project.slug,
        "serve_config": {"import_path": "app:app"},
        "cloud": str(t.cloud.pk),
    },
    "traffic": lambda t: {"canary": 10},
}


def api_routes() -> list[Route]:
    return [r for r in all_routes() if r.pattern.startswith(API_PREFIX)]


def api_url_for(route: Route, owner: Tenant, url_org: Tenant | None = None) -> str:
    """An API route filled with `owner`'s objects, under `url_org`'s slug if given."""
    kwargs = {}
    for key in route.kwargs:
        if key == "id":
            collection = route.pattern.split("/<id>")[0].rsplit("/", 1)[-1]
            kwargs[key] = API_ID_FILLERS[collection](owner)
        else:
            kwargs[key] = API_KWARG_FILLERS[key](owner)
    if url_org is not None:
        kwargs["org"] = url_org.org.slug
    return reverse(route.name, kwargs=kwargs)


def url_for(route: Route, owner: Tenant, url_org: Tenant | None = None) -> str:
    """The route filled with `owner`'s objects, under `url_org`'s slug if given."""
    kwargs = {k: KWARG_FILLERS[k](owner) for k in route.kwargs}
    if url_org is not None:
        kwargs["org_slug"] = url_org.org.slug
    return reverse(route.name, kwargs=kwargs)


def org_routes() -> list[Route]:
    """The console's organization pages (the API has its own walk below)."""
    return [r for r in our_routes() if r.is_org_scoped and not r.pattern.startswith(API_PREFIX)]


def test_every_url_keyword_has_a_fixture() -> None:
    for route in our_routes():
        if route.pattern.startswith(API_PREFIX):
            continue
        unknown = set(route.kwargs) - set(KWARG_FILLERS) - PUBLIC_KWARGS
        assert not unknown, f"{route.pattern}: add {unknown} to KWARG_FILLERS"
    assert len(org_routes()) >= 15  # the walk found the organization pages
    for route in api_routes():
        unknown = set(route.kwargs) - set(API_KWARG_FILLERS) - {"id"}
        assert not unknown, f"{route.pattern}: add {unknown} to API_KWARG_FILLERS"
        if "id" in route.kwargs:
            collection = route.pattern.split("/<id>")[0].rsplit("/", 1)[-1]
            assert collection in API_ID_FILLERS, f"{route.pattern}: add {collection}"
    assert len([r for r in api_routes() if "org" in r.kwargs]) >= 15


@functools.cache
def _api_schema() -> dict:
    """The OpenAPI document, built once (it takes a good part of a second)."""
    from console.api.endpoints import api

    return api.get_openapi_schema(path_prefix="/api/v1/")


def _api_methods(route: Route) -> list[str]:
    """The methods the API route answers, from the OpenAPI document."""
    schema = _api_schema()
    path = "/" + route.pattern.replace("<", "{").replace(">", "}")
    operations = schema["paths"].get(path, {})
    return [m for m in ("get", "post", "put", "patch", "delete") if m in operations]


@pytest.mark.parametrize("role", [OrgRole.OWNER, OrgRole.MEMBER])
def test_another_organizations_api_objects_are_404(
    tenant_a: Tenant, tenant_b: Tenant, role: str
) -> None:
    """B's tokens probe every API endpoint with A's objects: under A's slug, and with A's
    object ids under B's own slug. Every method is a 404 with the API's error shape, and
    no answer names A's objects."""
    from accounts import services

    _, secret = services.token_create(
        organization=tenant_b.org,
        actor=tenant_b.users[role],
        name="probe",
        days=1,
        read_only=False,
    )
    client = Client(headers={"Authorization": f"Bearer {secret}"})
    leaks, not_found, probed = [], [], 0
    for route in api_routes():
        if "org" not in route.kwargs:
            continue
        urls = [api_url_for(route, tenant_a)]
        if set(route.kwargs) - {"org"}:
            urls.append(api_url_for(route, tenant_a, url_org=tenant_b))
        for url in urls:
            for method in _api_methods(route):
                if method == "get":
                    response = client.get(url)
                else:  # a valid body, so only the organization can be what is refused
                    body = API_BODIES.get(route.pattern.rsplit("/", 1)[-1], lambda t: {})
                    response = getattr(client, method)(
                        url, data=json.dumps(body(tenant_a)), content_type="application/json"
                    )
                probed += 1
                body = response.content.decode()
                if response.status_code != 404 or '"not_found"' not in body:
                    not_found.append((method, url, response.status_code))
                if tenant_a.org.slug in body.replace(url, "") or str(tenant_a.cluster.uuid) in body:
                    leaks.append((method, url))
    assert probed > 30
    assert not_found == []
    assert leaks == []


@pytest.mark.parametrize("method", ["get", "post"])
def test_another_organizations_pages_are_404(
    tenant_a: Tenant, tenant_b: Tenant, method: str
) -> None:
    """B's owner (the most powerful role) probes every page of A: under A's slug, and
    with A's object ids under B's own slug. Everything is a plain 404."""
    client = client_for(tenant_b.owner)
    not_found = []
    for route in org_routes():
        urls = [url_for(route, tenant_a)]
        if set(route.kwargs) - NOT_OBJECTS:
            urls.append(url_for(route, tenant_a, url_org=tenant_b))
        for url in urls:
            response = getattr(client, method)(url, {"role": "viewer", "name": "pwned"})
            if response.status_code != 404:
                not_found.append((url, response.status_code))
    assert not_found == []


def test_the_same_pages_work_for_their_own_owner(tenant_a: Tenant) -> None:
    """The control for the test above: the 404s are about access, not broken pages."""
    client = client_for(tenant_a.owner)
    for route in org_routes():
        response = client.get(url_for(route, tenant_a))
        assert response.status_code in (200, 302, 405), (route.pattern, response.status_code)


def test_a_member_not_in_a_project_gets_404_for_it(tenant_a: Tenant) -> None:
    outsider = tenant_a.users[OrgRole.MEMBER]
    tenant_a.project_membership.delete()
    response = client_for(outsider).get(
        reverse("project_detail", args=[tenant_a.org.slug, tenant_a.project.slug])
    )
    assert response.status_code == 404


def test_anonymous_visitors_are_sent_to_sign_in(tenant_a: Tenant) -> None:
    for route in org_routes():
        response = Client().get(url_for(route, tenant_a))
        assert response.status_code == 302, route.pattern
        assert response["Location"].startswith(reverse("account_login"))


# --- CSRF ------------------------------------------------------------------------------


def _fill_any(route: Route, tenant: Tenant) -> str | None:
    kwargs = {}
    for key in route.kwargs:
        if key in KWARG_FILLERS:
            kwargs[key] = KWARG_FILLERS[key](tenant)
        elif key in ("token", "key", "uidb36", "uidb64"):
            kwargs[key] = "x"
        else:
            return None
    return reverse(route.name, kwargs=kwargs)


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_every_unsafe_request_needs_a_csrf_token(tenant_a: Tenant, htmx: bool) -> None:
    client = client_for(tenant_a.owner, enforce_csrf_checks=True)
    anonymous = Client(enforce_csrf_checks=True)
    headers = {"HX-Request": "true"} if htmx else {}
    checked, accepted = 0, []
    for route in all_routes():
        if route.pattern.startswith("admin/"):
            continue
        url = _fill_any(route, tenant_a)
        if url is None:
            continue
        for method in ("post", "put", "patch", "delete"):
            response = getattr(client, method)(url, headers=headers)
            checked += 1
            if route.pattern.startswith(COOKIELESS_PREFIXES):
                # No CSRF token here either: the signed-in browser is answered like an
                # anonymous client (the same status), so its cookies carry no power.
                same = getattr(anonymous, method)(url, headers=headers)
                if response.status_code != same.status_code:
                    accepted.append((method, url, response.status_code))
            elif route.pattern.startswith(TOKEN_ONLY_PREFIXES):
                # No CSRF token here, by design: these ignore cookies entirely, so a
                # signed-in browser gets no further than anyone else (401 or 405).
                if response.status_code not in (401, 405):
                    accepted.append((method, url, response.status_code))
            elif response.status_code != 403:
                accepted.append((method, url, response.status_code))
    assert checked > 100
    assert accepted == []


def test_the_csrf_header_htmx_sends_is_accepted(tenant_a: Tenant) -> None:
    """The positive control for the test above: with the token, the write goes through."""
    client = client_for(tenant_a.owner, enforce_csrf_checks=True)
    page = client.get(reverse("member_list", args=[tenant_a.org.slug]))
    token = page.context["csrf_token"]
    membership = tenant_a.memberships[OrgRole.VIEWER]
    response = client.post(
        reverse("member_role", args=[tenant_a.org.slug, membership.pk]),
        {"role": "member"},
        headers={"HX-Request": "true", "X-CSRFToken": str(token)},
    )
    assert response.status_code == 200
    membership.refresh_from_db()
    assert membership.role == "member"


# --- No writes on GET ------------------------------------------------------------------


def database_snapshot() -> dict[str, list[tuple]]:
    snapshot = {}
    for model in apps.get_models():
        label = model._meta.label
        if label in ("sessions.Session",):
            continue  # reading a page may refresh the session's own bookkeeping
        snapshot[label] = sorted(tuple(str(v) for v in row) for row in model.objects.values_list())
    return snapshot


def test_no_page_changes_anything_on_get(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_a.owner)
    # The installation's CA is made on its first use, by a page showing how to trust the
    # gateways too on a fresh installation: setup, not a page's change. Made here, this
    # test does not depend on an earlier one having cached it in this process.
    forget_ca()
    issuing_ca()
    before = database_snapshot()
    for route in our_routes():
        url = _fill_any(route, tenant_a)
        if url is not None:
            client.get(url)
            client.get(url, headers={"HX-Request": "true"})
    assert database_snapshot() == before
