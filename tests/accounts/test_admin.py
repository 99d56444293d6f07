"""The support admin: staff search across organizations, read-only, secrets hidden."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from tests.conftest import Tenant, client_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    return client_for(UserFactory(is_staff=True, email="support@raydeck.example"))


@pytest.mark.parametrize(
    ("model", "query"),
    [
        ("organization", "Org"),
        ("user", "@"),
        ("membership", "example.com"),
        ("project", "project"),
    ],
)
def test_staff_search_spans_every_organization(
    staff_client: Client, tenant_a: Tenant, tenant_b: Tenant, model: str, query: str
) -> None:
    response = staff_client.get(reverse(f"admin:accounts_{model}_changelist"), {"q": query})
    assert response.status_code == 200
    body = response.content.decode()
    assert "alpha" in body and "bravo" in body


def test_audit_events_searchable_across_organizations(
    staff_client: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    from accounts.audit import audit

    audit(actor=tenant_a.owner, verb="project.update", target=tenant_a.project)
    audit(actor=tenant_b.owner, verb="project.update", target=tenant_b.project)
    response = staff_client.get(
        reverse("admin:accounts_auditevent_changelist"), {"q": "project.update"}
    )
    body = response.content.decode()
    assert tenant_a.owner.email in body and tenant_b.owner.email in body


def test_non_staff_get_no_access(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.owner)
    for url in (reverse("admin:index"), reverse("admin:accounts_organization_changelist")):
        response = client.get(url)
        assert response.status_code == 302
        assert reverse("admin:login") in response["Location"]


def test_admin_is_read_only_and_shows_no_password_hash(
    staff_client: Client, tenant_a: Tenant
) -> None:
    user = tenant_a.member
    response = staff_client.get(reverse("admin:accounts_user_change", args=[user.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert user.email in body
    assert user.password not in body and "pbkdf2" not in body and "md5$" not in body
    assert 'name="_save"' not in body  # nothing to save: read-only
    edit = staff_client.post(
        reverse("admin:accounts_user_change", args=[user.pk]), {"email": "hijack@example.com"}
    )
    assert edit.status_code == 403
    user.refresh_from_db()
    assert user.email == "member@alpha.example.com"
    assert staff_client.get(reverse("admin:accounts_organization_add")).status_code == 403


def test_invitation_nonce_is_not_shown(staff_client: Client, tenant_a: Tenant) -> None:
    response = staff_client.get(
        reverse("admin:accounts_invitation_change", args=[tenant_a.invitation.pk])
    )
    assert response.status_code == 200
    assert tenant_a.invitation.nonce not in response.content.decode()


def test_deactivate_action_goes_through_the_service(staff_client: Client, tenant_a: Tenant) -> None:
    response = staff_client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "deactivate_users", "_selected_action": [tenant_a.member.pk]},
    )
    assert response.status_code == 302
    tenant_a.member.refresh_from_db()
    assert not tenant_a.member.is_active
    event = AuditEvent.objects.get(verb="user.deactivate")
    assert event.actor.email == "support@raydeck.example"


def test_sso_is_visible_to_support_and_allauths_social_app_admin_is_off(
    staff_client: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    response = staff_client.get(reverse("admin:accounts_ssoconnection_changelist"))
    assert response.status_code == 200
    assert "Org ALPHA" in response.content.decode() and "Org BRAVO" in response.content.decode()
    detail = staff_client.get(
        reverse("admin:accounts_ssoconnection_change", args=[tenant_a.sso_connection.pk])
    )
    assert detail.status_code == 200
    assert "https://idp.example.test/" in detail.content.decode()
    from allauth.socialaccount.models import SocialApp
    from django.contrib import admin
    from django.urls import NoReverseMatch

    assert not admin.site.is_registered(SocialApp)
    with pytest.raises(NoReverseMatch):
        reverse("admin:socialaccount_socialapp_changelist")
