"""The cluster list's lean path (console/api/fast.py) against the full stack: every answer
it gives is the one Django's ninja endpoint gives, byte for byte, and everything else
(no or a bad token, another organization, bad parameters, the rate limit) is Django's
own answer. Real PostgreSQL and Redis in CI; no stand-ins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.test import Client

from accounts import services
from accounts.choices import OrgRole, ProjectRole
from accounts.models import Membership
from clusters.choices import ClusterState
from clusters.models import Cluster
from tests.conftest import Tenant
from tests.factories import ClusterFactory, ProjectFactory, ProjectMembershipFactory
from tests.wsgi import call_wsgi

from .conftest import Answer, assert_error, token_secret

pytestmark = pytest.mark.django_db


def lean(secret: str | None, org: str, **params: Any) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return call_wsgi(
        "GET", f"/api/v1/orgs/{org}/clusters", headers=headers, query=urlencode(params)
    )


def full(secret: str | None, org: str, **params: Any) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    response = Client().get(f"/api/v1/orgs/{org}/clusters", params, headers=headers)
    return response.status_code, response.content, dict(response.items())


@pytest.fixture
def lean_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records, per request that reaches the lean app, who answered it."""
    import console.wsgi

    app = console.wsgi.api_read_application()
    answered: list[str] = []
    real_answer, real_fallback = app._answer, type(app).fallback

    def answer(environ: dict[str, Any]) -> Any:
        result = real_answer(environ)
        if result is not None:
            answered.append("lean")
        return result

    def fallback(self: Any) -> Any:  # kept when a test changes settings (LeanApp._load)
        django = real_fallback(self)

        def recorded(environ: dict[str, Any], start: Any) -> Any:
            answered.append("django")
            return django(environ, start)

        return recorded

    monkeypatch.setattr(app, "_answer", answer)
    monkeypatch.setattr(type(app), "fallback", fallback)
    app._load()
    yield answered
    monkeypatch.undo()
    app._load()


@pytest.fixture
def world(tenant_a: Tenant) -> Tenant:
    """Clusters in the member's project, in a project only admins see, in every state,
    on two pages of three."""
    other = ProjectFactory(organization=tenant_a.org, slug="hidden")
    states = [ClusterState.RUNNING, ClusterState.PENDING, ClusterState.FAILED]
    for i in range(4):
        ClusterFactory(
            project=tenant_a.project, cloud=tenant_a.cloud, name=f"mine-{i}", state=states[i % 3]
        )
        ClusterFactory(project=other, cloud=tenant_a.cloud, name=f"hidden-{i}", state=states[i % 3])
    return tenant_a


@pytest.mark.parametrize("role", [OrgRole.OWNER, OrgRole.ADMIN, OrgRole.MEMBER, OrgRole.VIEWER])
def test_the_lean_answer_is_the_full_stacks_byte_for_byte(
    world: Tenant, role: str, lean_answers: list[str]
) -> None:
    secret, org = token_secret(world, role), world.org.slug
    queries = [
        {},
        {"limit": 3},
        {"state": "running"},
        {"project": "hidden"},
        {"cloud": str(world.cloud.pk), "limit": 2},
        {"limit": 200},
    ]
    for params in queries:
        fast, django = lean(secret, org, **params), full(secret, org, **params)
        assert fast[0] == django[0] == 200, (params, fast[1][:200])
        assert fast[1] == django[1], params
        own = ("Vary", "Content-Length", "X-Request-ID")  # the id is new for each request
        headers = {k: v for k, v in django[2].items() if k not in own}
        assert headers.items() <= fast[2].items()
        assert fast[2]["X-Request-ID"] != django[2]["X-Request-ID"]
        assert "Set-Cookie" not in fast[2]
    assert lean_answers == ["lean"] * len(queries)


def test_pages_follow_the_cursor_to_the_end(world: Tenant, lean_answers: list[str]) -> None:
    secret, org = token_secret(world, OrgRole.ADMIN), world.org.slug
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        status, body, _ = lean(secret, org, **params)
        assert status == 200 and body == full(secret, org, **params)[1]
        page = json.loads(body)
        seen += [c["name"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = Cluster.objects.filter(organization=world.org).order_by("-created_at", "-pk")
    assert seen == [c.name for c in expected]
    assert set(lean_answers) == {"lean"}


def test_a_member_sees_only_their_projects_and_a_change_of_role_at_once(world: Tenant) -> None:
    secret, org = token_secret(world, OrgRole.MEMBER), world.org.slug
    names = {c["name"] for c in json.loads(lean(secret, org)[1])["items"]}
    assert "hidden-0" not in names and "mine-0" in names
    Membership.objects.filter(user=world.member, organization=world.org).update(role=OrgRole.ADMIN)
    names = {c["name"] for c in json.loads(lean(secret, org, limit=200)[1])["items"]}
    assert {"hidden-0", "mine-0"} <= names
    Membership.objects.filter(user=world.member, organization=world.org).update(role=OrgRole.MEMBER)
    ProjectMembershipFactory(
        project=Cluster.objects.get(name="hidden-1").project,
        user=world.member,
        role=ProjectRole.READER,
    )
    names = {c["name"] for c in json.loads(lean(secret, org, limit=200)[1])["items"]}
    assert "hidden-1" in names


def test_everything_but_a_200_is_djangos_answer(
    world: Tenant, tenant_b: Tenant, lean_answers: list[str]
) -> None:
    secret, org = token_secret(world, OrgRole.MEMBER), world.org.slug
    cases = [
        (None, org, {}, 401),
        ("rdk_" + "x" * 43, org, {}, 401),
        (secret, tenant_b.org.slug, {}, 404),  # another organization: as if none
        (secret, "no-such-org", {}, 404),
        (secret, org, {"limit": 0}, 422),
        (secret, org, {"limit": "many"}, 422),
        (secret, org, {"state": "sleeping"}, 422),
        (secret, org, {"cloud": "abc"}, 422),
        (secret, org, {"cursor": "not-a-cursor"}, 422),
    ]
    for token, slug, params, status in cases:
        fast, django = lean(token, slug, **params), full(token, slug, **params)
        assert fast[0] == django[0] == status, (token, slug, params, fast)
        assert fast[1] == django[1]
        assert set(json.loads(fast[1])) == {"error"}
    status, body, headers = lean(None, org)
    assert_error(Answer(status, json.loads(body), headers), 401, "unauthenticated")
    assert lean_answers == ["django"] * (len(cases) + 1)


def test_a_revoked_token_stops_at_once(world: Tenant) -> None:
    token, secret = services.token_create(
        organization=world.org, actor=world.member, name="soon gone", days=1, read_only=True
    )
    assert lean(secret, world.org.slug)[0] == 200
    services.token_revoke(token=token, actor=world.member)
    assert lean(secret, world.org.slug)[0] == 401


def test_a_service_accounts_token_lists_like_its_role(world: Tenant) -> None:
    account = world.service_account
    assert account is not None
    _, secret = services.token_create(
        organization=world.org,
        actor=world.owner,
        name="ci",
        days=1,
        read_only=True,
        service_account=account,
    )
    fast, django = lean(secret, world.org.slug), full(secret, world.org.slug)
    assert fast[0] == django[0] == 200 and fast[1] == django[1]


def test_the_rate_limit_counts_each_request_once(
    world: Tenant, settings: Any, lean_answers: list[str]
) -> None:
    cache.clear()
    settings.RAYDECK_API_RATE_LIMIT = 4
    settings.RAYDECK_API_RATE_WINDOW = 3600
    secret, org = token_secret(world, OrgRole.MEMBER), world.org.slug
    assert lean(secret, "no-such-org")[0] == 404  # counted once, by Django
    assert [lean(secret, org)[0] for _ in range(3)] == [200] * 3
    status, body, headers = lean(secret, org)
    assert status == 429 and 0 < int(headers["Retry-After"]) <= 3600
    assert json.loads(body)["error"]["code"] == "rate_limited"
    assert lean_answers == ["django", "lean", "lean", "lean", "django"]


def test_the_host_check_and_https_redirect_stay(world: Tenant, settings: Any) -> None:
    secret = token_secret(world, OrgRole.MEMBER)
    path = f"/api/v1/orgs/{world.org.slug}/clusters"
    headers = {"Authorization": f"Bearer {secret}", "Host": "evil.example.com"}
    assert call_wsgi("GET", path, headers=headers)[0] == 400
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 60
    headers = {"Authorization": f"Bearer {secret}"}
    assert call_wsgi("GET", path, headers=headers)[0] == 301
    status, _, answer = call_wsgi("GET", path, headers={**headers, "X-Forwarded-Proto": "https"})
    assert status == 200 and answer["Strict-Transport-Security"] == "max-age=60"


def test_other_methods_and_paths_are_djangos(world: Tenant, lean_answers: list[str]) -> None:
    secret = token_secret(world, OrgRole.MEMBER)
    headers = {"Authorization": f"Bearer {secret}"}
    path = f"/api/v1/orgs/{world.org.slug}/clusters"
    assert call_wsgi("HEAD", path, headers=headers)[0] == 405  # ninja routes GET alone
    assert call_wsgi("GET", path + "/", headers=headers)[0] == 404
    assert_error_shape = json.loads(call_wsgi("DELETE", path, headers=headers)[1])
    assert set(assert_error_shape) == {"error"}
    assert lean_answers == ["django", "django"]  # the trailing slash never reaches it
