"""API tokens, service accounts and the CLI sign-in hand-off: secrets are only ever
hashed, a token acts only inside its organization and within its role, read-only
tokens never write, and expired, revoked or disabled ones do nothing at all."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.choices import OrgRole
from accounts.models import ApiToken, AuditEvent, CliHandoff
from accounts.permissions import ALL_PERMISSIONS, READ_PERMISSIONS, token_may, token_require
from accounts.tokens import CLI_HANDOFF_STARTS_PER_MINUTE, TokenIdentity
from tests.conftest import Tenant, client_for
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

WRITES = ("project.update", "cluster.create", "cluster.update")


def make_token(tenant: Tenant, user: Any = None, **kwargs: Any) -> tuple[ApiToken, str]:
    options = {"name": "script", "days": 30, "read_only": False, **kwargs}
    return services.token_create(organization=tenant.org, actor=user or tenant.member, **options)


def identity_for(secret: str) -> TokenIdentity:
    identity = services.authenticate_token(secret, ip="192.0.2.10")
    assert identity is not None
    return identity


def all_rows_as_text() -> str:
    """Every row of every table, sessions and audit log included, as one string."""
    dump = []
    for model in apps.get_models():
        for row in model.objects.values_list():
            dump.append(repr(row))
    with connection.cursor() as cursor:  # and anything outside the models, to be sure
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            dump.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(dump)


_ips = itertools.count(1)


def cli_client() -> Client:
    """An anonymous client from an address of its own, so rate limits of one test never
    touch another."""
    n = next(_ips)
    return Client(REMOTE_ADDR=f"198.51.{n // 250}.{n % 250 + 1}")


def start_handoff(client: Client | None = None) -> dict[str, Any]:
    response = (client or cli_client()).post(reverse("cli_handoff_start"))
    assert response.status_code == 201, response.content
    return response.json()


def poll(poll_token: str, client: Client | None = None) -> Any:
    return (client or cli_client()).post(
        reverse("cli_handoff_poll"),
        json.dumps({"poll_token": poll_token}),
        content_type="application/json",
    )


# --- Only the hash is stored -----------------------------------------------------------


def test_only_the_hash_of_any_secret_is_stored(tenant_a: Tenant) -> None:
    """Tokens made every way there is (the page, the service, a service account, the
    CLI hand-off): no secret appears anywhere in the database afterwards."""
    client = client_for(tenant_a.member)
    page = client.post(
        reverse("token_create", args=[tenant_a.org.slug]), {"name": "laptop", "days": 7}
    )
    secrets_seen = [page.context["secret"]]
    secrets_seen.append(make_token(tenant_a)[1])
    secrets_seen.append(
        services.token_create(
            organization=tenant_a.org,
            actor=tenant_a.admin,
            name="ci",
            days=5,
            read_only=False,
            service_account=tenant_a.service_account,
        )[1]
    )
    handoff = start_handoff()
    client.post(reverse("cli_verify"), {"code": handoff["code"], "organization": tenant_a.org.pk})
    secrets_seen.append(poll(handoff["poll_token"]).json()["token"])

    dump = all_rows_as_text()
    for secret in [*secrets_seen, handoff["poll_token"]]:
        assert secret.startswith("rdk_") or secret == handoff["poll_token"]
        assert secret not in dump
        assert secret[10:30] not in dump  # not even a slice of it
    assert ApiToken.objects.filter(organization=tenant_a.org).count() == 5  # + the fixture's
    for secret in secrets_seen:  # and yet each one works
        assert identity_for(secret).organization == tenant_a.org


def test_the_secret_page_is_shown_once_and_never_cached(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.member)
    response = client.post(
        reverse("token_create", args=[tenant_a.org.slug]), {"name": "laptop", "days": 7}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.content.decode()
    secret = response.context["secret"]
    assert body.count(secret) == 1
    assert 'hx-history="false"' in body
    assert 'data-copy="#token-secret"' in body
    listing = client.get(reverse("token_list", args=[tenant_a.org.slug])).content.decode()
    assert "laptop" in listing and secret not in listing
    assert secret[:10] in listing  # the display prefix, to tell tokens apart


# --- What a token may do ---------------------------------------------------------------


def test_a_token_holds_its_persons_permissions_in_its_organization(tenant_a: Tenant) -> None:
    _, secret = make_token(tenant_a)  # the member, a writer in the project
    identity = identity_for(secret)
    for perm in WRITES:
        assert token_may(identity, perm, tenant_a.project)
        assert token_may(identity, perm, tenant_a.cluster)
    assert token_may(identity, "project.create", tenant_a.org)
    assert not token_may(identity, "member.invite", tenant_a.org)  # not a member's right


@pytest.mark.parametrize("perm", WRITES)
def test_a_read_only_token_cannot_write(tenant_a: Tenant, perm: str) -> None:
    _, secret = make_token(tenant_a, user=tenant_a.owner, read_only=True)
    identity = identity_for(secret)
    assert not token_may(identity, perm, tenant_a.project)
    assert not token_may(identity, "project.create", tenant_a.org)
    assert token_may(identity, "project.view", tenant_a.project)
    with pytest.raises(PermissionDenied):
        token_require(identity, perm, tenant_a.project)


def test_a_read_only_owner_token_holds_exactly_the_reads(tenant_a: Tenant) -> None:
    _, secret = make_token(tenant_a, user=tenant_a.owner, read_only=True)
    identity = identity_for(secret)
    held = {p for p in ALL_PERMISSIONS if token_may(identity, p, tenant_a.project)}
    assert held == set(READ_PERMISSIONS)


def test_an_expired_token_does_nothing(tenant_a: Tenant, time_machine: Any) -> None:
    _, secret = make_token(tenant_a, days=1)
    assert identity_for(secret)
    time_machine.move_to(timezone.now() + timedelta(days=1, seconds=1))
    assert services.authenticate_token(secret, ip=None) is None


def test_a_revoked_token_does_nothing(tenant_a: Tenant) -> None:
    token, secret = make_token(tenant_a)
    services.token_revoke(token=token, actor=tenant_a.member)
    assert services.authenticate_token(secret, ip=None) is None
    event = AuditEvent.objects.get(verb="token.revoke")
    assert event.organization == tenant_a.org and event.actor == tenant_a.member
    with pytest.raises(ValidationError, match="already revoked"):
        services.token_revoke(token=token, actor=tenant_a.member)


def test_a_token_stops_with_its_person(tenant_a: Tenant) -> None:
    _, secret = make_token(tenant_a)
    tenant_a.member.is_active = False
    tenant_a.member.save(update_fields=["is_active"])
    assert services.authenticate_token(secret, ip=None) is None


def test_leaving_the_organization_revokes_the_persons_tokens(tenant_a: Tenant) -> None:
    token, secret = make_token(tenant_a)
    services.membership_remove(
        membership=tenant_a.memberships[OrgRole.MEMBER], actor=tenant_a.admin
    )
    assert services.authenticate_token(secret, ip=None) is None
    token.refresh_from_db()
    assert token.revoked_at is not None
    event = AuditEvent.objects.get(verb="member.remove")
    assert event.changes["unrevoked_api_tokens"] == [2, 0]  # this one and the fixture's
    # Invited back later, the old token stays dead.
    MembershipFactory(organization=tenant_a.org, user=tenant_a.member, role=OrgRole.MEMBER)
    tenant_a.member.forget_roles()
    assert services.authenticate_token(secret, ip=None) is None


def test_a_token_follows_its_persons_role(tenant_a: Tenant) -> None:
    _, secret = make_token(tenant_a, user=tenant_a.admin)
    assert token_may(identity_for(secret), "member.invite", tenant_a.org)
    services.membership_change_role(
        membership=tenant_a.memberships[OrgRole.ADMIN], role=OrgRole.VIEWER, actor=tenant_a.owner
    )
    assert not token_may(identity_for(secret), "member.invite", tenant_a.org)


def test_no_token_makes_tokens_or_service_accounts(tenant_a: Tenant) -> None:
    """A leaked token cannot mint successors that outlive its revocation."""
    _, secret = make_token(tenant_a, user=tenant_a.owner)
    identity = identity_for(secret)
    for perm in ("token.manage_own", "token.manage_all", "service_account.manage"):
        assert not token_may(identity, perm, tenant_a.org)


def test_unknown_and_malformed_secrets_are_refused(tenant_a: Tenant) -> None:
    _, secret = make_token(tenant_a)
    for junk in (
        "",
        "rdk_",
        secret + "x",
        secret[:-1],
        "Bearer " + secret,
        "x" * 5000,
        "rdk_" + "a" * 500,
        tenant_a.token.token_hash,
    ):
        assert services.authenticate_token(junk, ip=None) is None


def test_last_use_is_recorded_at_most_once_a_minute(tenant_a: Tenant, time_machine: Any) -> None:
    token, secret = make_token(tenant_a)
    time_machine.move_to(timezone.now(), tick=False)
    assert token.last_used_at is None
    identity_for(secret)
    token.refresh_from_db()
    assert token.last_used_at == timezone.now() and token.last_used_ip == "192.0.2.10"
    time_machine.shift(timedelta(seconds=30))
    with CaptureQueriesContext(connection) as queries:
        services.authenticate_token(secret, ip="192.0.2.99")
    assert not any(q["sql"].startswith("UPDATE") for q in queries.captured_queries)
    time_machine.shift(timedelta(seconds=31))
    services.authenticate_token(secret, ip="192.0.2.99")
    token.refresh_from_db()
    assert token.last_used_at == timezone.now() and token.last_used_ip == "192.0.2.99"


# --- Tenant isolation ------------------------------------------------------------------


def test_a_token_of_org_a_gets_nothing_in_org_b(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """Even when its person is an owner of B too: the token acts only inside A. (The
    JSON API answers these refusals with 404, like the pages.)"""
    MembershipFactory(organization=tenant_b.org, user=tenant_a.owner, role=OrgRole.OWNER)
    tenant_a.owner.forget_roles()
    _, secret = make_token(tenant_a, user=tenant_a.owner)
    identity = identity_for(secret)
    assert identity.organization == tenant_a.org
    for perm in sorted(ALL_PERMISSIONS):
        for obj in (tenant_b.org, tenant_b.project, tenant_b.cluster, tenant_b.cloud):
            assert not token_may(identity, perm, obj), (perm, obj)
    assert token_may(identity, "cluster.create", tenant_a.project)  # the control


def test_a_token_is_no_key_to_the_console(tenant_a: Tenant) -> None:
    _, secret = make_token(tenant_a, user=tenant_a.owner)
    response = Client().get(
        reverse("project_list", args=[tenant_a.org.slug]), HTTP_AUTHORIZATION=f"Bearer {secret}"
    )
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_another_organizations_tokens_are_404(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_b.owner)
    for url in (
        reverse("token_revoke", args=[tenant_b.org.slug, tenant_a.token.pk]),
        reverse("service_account_detail", args=[tenant_b.org.slug, tenant_a.service_account.pk]),
    ):
        assert client.get(url).status_code == 404
        assert client.post(url).status_code == 404
    tenant_a.token.refresh_from_db()
    assert tenant_a.token.revoked_at is None


# --- Service accounts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "may_write"), [(OrgRole.ADMIN, True), (OrgRole.MEMBER, False), (OrgRole.VIEWER, False)]
)
def test_a_service_account_token_acts_with_its_role(
    tenant_a: Tenant, role: str, may_write: bool
) -> None:
    account = services.service_account_create(
        organization=tenant_a.org, name=f"bot-{role}", role=role, actor=tenant_a.admin
    )
    token, secret = services.token_create(
        organization=tenant_a.org,
        actor=tenant_a.admin,
        name="ci",
        days=30,
        read_only=False,
        service_account=account,
    )
    assert token.user is None and token.service_account == account
    assert token.read_only is (role == OrgRole.VIEWER)
    identity = identity_for(secret)
    assert identity.principal == account and identity.is_service_account
    assert token_may(identity, "cluster.create", tenant_a.project) is may_write
    assert token_may(identity, "project.list", tenant_a.org)
    assert token_may(identity, "member.invite", tenant_a.org) is (role == OrgRole.ADMIN)
    assert not token_may(identity, "organization.delete", tenant_a.org)  # owners only


def test_service_accounts_are_never_owners(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError):
        services.service_account_create(
            organization=tenant_a.org, name="root", role=OrgRole.OWNER, actor=tenant_a.owner
        )


def test_only_owners_and_admins_run_service_accounts(tenant_a: Tenant) -> None:
    with pytest.raises(PermissionDenied):
        services.service_account_create(
            organization=tenant_a.org, name="mine", role=OrgRole.MEMBER, actor=tenant_a.member
        )
    with pytest.raises(PermissionDenied):
        services.token_create(
            organization=tenant_a.org,
            actor=tenant_a.member,
            name="x",
            days=1,
            read_only=False,
            service_account=tenant_a.service_account,
        )
    client = client_for(tenant_a.member)
    assert client.get(reverse("service_account_list", args=[tenant_a.org.slug])).status_code == 403


def test_disabling_a_service_account_revokes_its_tokens(tenant_a: Tenant) -> None:
    account = tenant_a.service_account
    _, secret = services.token_create(
        organization=tenant_a.org,
        actor=tenant_a.admin,
        name="ci",
        days=30,
        read_only=False,
        service_account=account,
    )
    client = client_for(tenant_a.admin)
    url = reverse("service_account_disable", args=[tenant_a.org.slug, account.pk])
    assert "1 active token is revoked" in client.get(url).content.decode()
    assert client.post(url).status_code == 302
    assert services.authenticate_token(secret, ip=None) is None
    account.refresh_from_db()
    assert account.disabled_at is not None
    assert account.tokens.filter(revoked_at=None).count() == 0
    event = AuditEvent.objects.get(verb="service_account.disable")
    assert event.changes["unrevoked_api_tokens"] == [1, 0]
    new_token = reverse("service_account_token_create", args=[tenant_a.org.slug, account.pk])
    assert client.get(new_token).status_code == 404
    with pytest.raises(ValidationError, match="disabled"):
        services.token_create(
            organization=tenant_a.org,
            actor=tenant_a.admin,
            name="again",
            days=1,
            read_only=False,
            service_account=account,
        )


def test_service_account_pages_end_to_end(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.admin)
    slug = tenant_a.org.slug
    created = client.post(
        reverse("service_account_create", args=[slug]), {"name": "airflow", "role": "member"}
    )
    assert created.status_code == 302
    account = tenant_a.org.service_accounts.get(name="airflow")
    assert created["Location"] == reverse("service_account_detail", args=[slug, account.pk])
    duplicate = client.post(
        reverse("service_account_create", args=[slug]), {"name": "airflow", "role": "member"}
    )
    assert "already exists" in duplicate.content.decode()
    page = client.post(
        reverse("service_account_token_create", args=[slug, account.pk]),
        {"name": "prod", "days": 10},
    )
    assert "no-store" in page["Cache-Control"]
    assert identity_for(page.context["secret"]).principal == account
    detail = client.get(reverse("service_account_detail", args=[slug, account.pk]))
    assert "prod" in detail.content.decode()
    listing = client.get(reverse("service_account_list", args=[slug])).content.decode()
    assert "airflow" in listing and "alpha-ci" in listing
    verbs = set(AuditEvent.objects.filter(organization=tenant_a.org).values_list("verb", flat=True))
    assert {"service_account.create", "token.create"} <= verbs


# --- Expiry and the organization's maximum ---------------------------------------------


def test_expiry_defaults_to_30_days_within_the_org_maximum(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.member)
    form = client.get(reverse("token_create", args=[tenant_a.org.slug])).context["form"]
    assert form["days"].initial == 30
    body = client.get(reverse("token_create", args=[tenant_a.org.slug])).content.decode()
    assert "at most 90 days" in body and 'max="90"' in body
    tenant_a.org.max_token_days = 14
    tenant_a.org.save()
    form = client.get(reverse("token_create", args=[tenant_a.org.slug])).context["form"]
    assert form["days"].initial == 14


def test_the_org_maximum_is_enforced(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError, match="at most 90 days"):
        make_token(tenant_a, days=91)
    with pytest.raises(ValidationError):
        make_token(tenant_a, days=0)
    token, _ = make_token(tenant_a, days=90)
    assert token.expires_at - timezone.now() > timedelta(days=89, hours=23)
    response = client_for(tenant_a.member).post(
        reverse("token_create", args=[tenant_a.org.slug]), {"name": "long", "days": 91}
    )
    assert response.status_code == 200
    assert "secret" not in response.context
    assert "At most 90 days" in response.content.decode()
    assert not ApiToken.objects.filter(name="long").exists()


def test_owners_and_admins_set_the_maximum_on_the_settings_page(tenant_a: Tenant) -> None:
    url = reverse("organization_settings", args=[tenant_a.org.slug])
    response = client_for(tenant_a.admin).post(url, {"name": "Org ALPHA", "max_token_days": 7})
    assert response.status_code == 302
    tenant_a.org.refresh_from_db()
    assert tenant_a.org.max_token_days == 7
    event = AuditEvent.objects.get(verb="organization.update")
    assert event.changes == {"max_token_days": [90, 7]}
    with pytest.raises(ValidationError, match="at most 7 days"):
        make_token(tenant_a, days=8)
    too_long = client_for(tenant_a.owner).post(url, {"name": "Org ALPHA", "max_token_days": 366})
    assert too_long.status_code == 200 and "365" in too_long.content.decode()
    assert (
        client_for(tenant_a.member).post(url, {"name": "x", "max_token_days": 365}).status_code
        == 403
    )


# --- Pages: who sees and revokes what --------------------------------------------------


def test_a_viewer_may_keep_tokens_but_only_read_only_ones(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.viewer)
    page = client.get(reverse("token_create", args=[tenant_a.org.slug])).content.decode()
    assert "always read-only" in page
    response = client.post(
        reverse("token_create", args=[tenant_a.org.slug]),
        {"name": "dashboards", "days": 5, "read_only": ""},  # a crafted "not read-only"
    )
    token = ApiToken.objects.get(name="dashboards")
    assert token.read_only and token.user == tenant_a.viewer
    identity = identity_for(response.context["secret"])
    assert token_may(identity, "project.view", tenant_a.project)  # a reader there
    assert not token_may(identity, "cluster.create", tenant_a.project)


def test_members_see_and_revoke_only_their_own_tokens(tenant_a: Tenant) -> None:
    slug = tenant_a.org.slug
    admin_token, _ = make_token(tenant_a, user=tenant_a.admin, name="admin laptop")
    client = client_for(tenant_a.member)
    listing = client.get(reverse("token_list", args=[slug]))
    body = listing.content.decode()
    assert "alpha laptop" in body and "admin laptop" not in body
    all_tokens = client.get(reverse("token_list", args=[slug]), {"scope": "all"})
    assert "admin laptop" not in all_tokens.content.decode()  # the scope is ignored
    revoke_admins = reverse("token_revoke", args=[slug, admin_token.pk])
    assert client.get(revoke_admins).status_code == 404
    assert client.post(revoke_admins).status_code == 404
    own = reverse("token_revoke", args=[slug, tenant_a.token.pk])
    assert "Revoke the token" in client.get(own).content.decode()
    assert client.post(own).status_code == 302
    tenant_a.token.refresh_from_db()
    assert tenant_a.token.revoked_at is not None


def test_admins_see_filter_and_revoke_every_token(tenant_a: Tenant) -> None:
    slug = tenant_a.org.slug
    services.token_create(
        organization=tenant_a.org,
        actor=tenant_a.admin,
        name="nightly",
        days=30,
        read_only=True,
        service_account=tenant_a.service_account,
    )
    client = client_for(tenant_a.admin)
    url = reverse("token_list", args=[slug])
    mine = client.get(url).content.decode()
    assert "alpha laptop" not in mine and "All tokens in" in mine
    everyone = client.get(url, {"scope": "all"}).content.decode()
    assert "alpha laptop" in everyone and "nightly" in everyone
    only_bots = client.get(
        url, {"scope": "all", "kind": "service"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "nightly" in only_bots and "alpha laptop" not in only_bots
    assert "<html" not in only_bots  # the table partial
    by_person = client.get(url, {"scope": "all", "q": "member@alpha"}).content.decode()
    assert "alpha laptop" in by_person and "nightly" not in by_person
    response = client.post(reverse("token_revoke", args=[slug, tenant_a.token.pk]))
    assert response.status_code == 302 and response["Location"] == f"{url}?scope=all"
    revoked = client.get(url, {"scope": "all", "status": "revoked"}).content.decode()
    assert "alpha laptop" in revoked and "nightly" not in revoked
    event = AuditEvent.objects.get(verb="token.revoke")
    assert event.actor == tenant_a.admin and "alpha laptop" in event.target_repr


def test_the_token_list_needs_a_fixed_number_of_queries(
    tenant_a: Tenant, django_assert_max_num_queries: Any
) -> None:
    for n in range(30):
        make_token(tenant_a, user=tenant_a.admin, name=f"t{n}")
    client = client_for(tenant_a.admin)
    url = reverse("token_list", args=[tenant_a.org.slug])
    client.get(url)
    with django_assert_max_num_queries(12):
        response = client.get(url, {"scope": "all"})
    assert response.status_code == 200


def test_every_token_action_is_audited(tenant_a: Tenant) -> None:
    token, _ = make_token(tenant_a, read_only=True)
    services.token_revoke(token=token, actor=tenant_a.member)
    created = AuditEvent.objects.get(verb="token.create")
    assert created.actor == tenant_a.member and created.organization == tenant_a.org
    assert created.changes["read_only"] == [None, True]
    assert AuditEvent.objects.filter(verb="token.revoke", target_id=str(token.pk)).exists()


# --- `raydeck login`: the browser hand-off ----------------------------------------------


def test_cli_handoff_end_to_end(tenant_a: Tenant, tenant_b: Tenant) -> None:
    MembershipFactory(organization=tenant_b.org, user=tenant_a.member, role=OrgRole.MEMBER)
    cli = cli_client()
    started = start_handoff(cli)
    assert len(started["code"]) == 8 and started["expires_in"] == 600
    assert started["verify_url"] == f"/cli/verify?code={started['code']}"
    assert poll(started["poll_token"], cli).status_code == 202
    assert poll(started["poll_token"], cli).json() == {"status": "pending"}

    # Not signed in: the verify page sends the person to sign in first, then back.
    anonymous = Client().get(started["verify_url"])
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]

    browser = client_for(tenant_a.member)
    page = browser.get(started["verify_url"])
    assert page.status_code == 200
    body = page.content.decode()
    assert f"{started['code'][:4]}-{started['code'][4:]}" in body
    assert "Org ALPHA" in body and "Org BRAVO" in body  # both of the person's orgs
    assert poll(started["poll_token"], cli).status_code == 202  # looking confirms nothing

    confirmed = browser.post(
        reverse("cli_verify"), {"code": started["code"], "organization": tenant_b.org.pk}
    )
    assert confirmed.status_code == 302
    assert confirmed["Location"] == reverse("token_list", args=[tenant_b.org.slug])

    collected = poll(started["poll_token"], cli)
    assert collected.status_code == 200
    assert "no-store" in collected["Cache-Control"]
    answer = collected.json()
    assert answer["organization"] == tenant_b.org.slug
    identity = identity_for(answer["token"])
    assert identity.principal == tenant_a.member and identity.organization == tenant_b.org
    assert identity.token.name.startswith("raydeck CLI (") and not identity.read_only
    assert identity.token.expires_at - timezone.now() > timedelta(days=29)

    again = poll(started["poll_token"], cli)
    assert again.status_code == 410 and again.json()["error"]["code"] == "collected"
    assert "token" not in again.json()
    # The code is spent too.
    assert browser.get(started["verify_url"]).status_code == 410
    resubmit = browser.post(
        reverse("cli_verify"), {"code": started["code"], "organization": tenant_b.org.pk}
    )
    assert resubmit.status_code == 410
    assert (
        ApiToken.objects.filter(user=tenant_a.member, name__startswith="raydeck CLI").count() == 1
    )
    verbs = list(
        AuditEvent.objects.filter(organization=tenant_b.org).values_list("verb", flat=True)
    )
    assert "cli_handoff.confirm" in verbs and "token.create" in verbs


def test_cli_handoff_can_only_pick_the_persons_organizations(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    started = start_handoff()
    response = client_for(tenant_a.member).post(
        reverse("cli_verify"), {"code": started["code"], "organization": tenant_b.org.pk}
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert poll(started["poll_token"]).status_code == 202
    with pytest.raises(PermissionDenied):
        services.cli_handoff_confirm(
            handoff=CliHandoff.objects.get(code=started["code"]),
            organization=tenant_b.org,
            actor=tenant_a.member,
        )


def test_cli_handoff_read_only_and_viewer(tenant_a: Tenant) -> None:
    started = start_handoff()
    client_for(tenant_a.viewer).post(
        reverse("cli_verify"), {"code": started["code"].lower(), "organization": tenant_a.org.pk}
    )
    assert identity_for(poll(started["poll_token"]).json()["token"]).read_only


def test_cli_handoff_expires(tenant_a: Tenant, time_machine: Any) -> None:
    time_machine.move_to(timezone.now(), tick=False)
    started = start_handoff()
    time_machine.shift(timedelta(minutes=10, seconds=1))
    expired = poll(started["poll_token"])
    assert expired.status_code == 410 and expired.json()["error"]["code"] == "expired"
    browser = client_for(tenant_a.member)
    page = browser.get(started["verify_url"])
    assert page.status_code == 410 and "expired" in page.content.decode()
    browser.post(reverse("cli_verify"), {"code": started["code"], "organization": tenant_a.org.pk})
    assert not ApiToken.objects.filter(name__startswith="raydeck CLI").exists()


def test_a_confirmed_handoff_nobody_collects_has_its_token_revoked(
    tenant_a: Tenant, time_machine: Any
) -> None:
    time_machine.move_to(timezone.now(), tick=False)
    started = start_handoff()
    client_for(tenant_a.member).post(
        reverse("cli_verify"), {"code": started["code"], "organization": tenant_a.org.pk}
    )
    time_machine.shift(timedelta(minutes=11))
    assert poll(started["poll_token"]).status_code == 410
    token = ApiToken.objects.get(name__startswith="raydeck CLI")
    assert token.revoked_at is not None


def test_cli_handoff_can_be_denied(tenant_a: Tenant) -> None:
    started = start_handoff()
    response = client_for(tenant_a.member).post(
        reverse("cli_verify"), {"code": started["code"], "action": "deny"}
    )
    assert response.status_code == 302
    denied = poll(started["poll_token"])
    assert denied.status_code == 410 and denied.json()["error"]["code"] == "denied"
    assert not ApiToken.objects.filter(name__startswith="raydeck CLI").exists()
    assert AuditEvent.objects.filter(verb="cli_handoff.deny", actor=tenant_a.member).exists()


def test_cli_handoff_start_is_rate_limited_per_address(db: None) -> None:
    cli = cli_client()
    for _ in range(CLI_HANDOFF_STARTS_PER_MINUTE):
        assert cli.post(reverse("cli_handoff_start")).status_code == 201
    refused = cli.post(reverse("cli_handoff_start"))
    assert refused.status_code == 429 and refused["Retry-After"] == "60"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert cli_client().post(reverse("cli_handoff_start")).status_code == 201  # another address


def test_cli_poll_answers_bad_input_in_one_json_shape(db: None) -> None:
    url = reverse("cli_handoff_poll")
    cli = cli_client()
    cases = [
        (cli.post(url, "not json", content_type="application/json"), 400),
        (cli.post(url, json.dumps([1]), content_type="application/json"), 400),
        (cli.post(url, json.dumps({"poll_token": 5}), content_type="application/json"), 400),
        (poll("no-such-poll-token", cli), 404),
        (cli.get(url), 405),
    ]
    for response, status in cases:
        assert response.status_code == status
        if status != 405:
            assert set(response.json()["error"]) == {"code", "message"}


def test_cli_endpoints_ignore_the_browser_session(tenant_a: Tenant) -> None:
    """Signed in or not, with or without CSRF token: the same answer, and no session."""
    browser = client_for(tenant_a.owner, enforce_csrf_checks=True, REMOTE_ADDR="203.0.113.9")
    response = browser.post(reverse("cli_handoff_start"))
    assert response.status_code == 201
    handoff = CliHandoff.objects.get(code=response.json()["code"])
    assert handoff.user is None and handoff.organization is None
    assert poll(response.json()["poll_token"], browser).status_code == 202


# --- Support admin ---------------------------------------------------------------------


def test_support_admin_lists_tokens_without_their_hash(tenant_a: Tenant, tenant_b: Tenant) -> None:
    staff = client_for(UserFactory(is_staff=True, email="support@raydeck.example"))
    listing = staff.get(reverse("admin:accounts_apitoken_changelist"), {"q": "laptop"})
    body = listing.content.decode()
    assert "alpha laptop" in body and "bravo laptop" in body
    assert tenant_a.token.token_hash not in body
    detail = staff.get(reverse("admin:accounts_apitoken_change", args=[tenant_a.token.pk]))
    assert detail.status_code == 200
    assert tenant_a.token.token_hash not in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    account = staff.get(
        reverse("admin:accounts_serviceaccount_change", args=[tenant_a.service_account.pk])
    )
    assert account.status_code == 200


def test_support_revokes_through_the_service(tenant_a: Tenant) -> None:
    staff_user = UserFactory(is_staff=True, email="support@raydeck.example")
    response = client_for(staff_user).post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [tenant_a.token.pk]},
    )
    assert response.status_code == 302
    tenant_a.token.refresh_from_db()
    assert tenant_a.token.revoked_at is not None
    event = AuditEvent.objects.get(verb="token.revoke")
    assert event.actor == staff_user and event.organization == tenant_a.org
    with pytest.raises(PermissionDenied):
        services.token_revoke(token=tenant_a.token, actor=tenant_a.owner, by_support=True)
