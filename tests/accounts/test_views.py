"""The console pages as a user meets them: forms, HTMX partials, filters, pagination,
export, invitations, and switching organizations."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import services
from accounts.audit import audit
from accounts.choices import OrgRole
from accounts.models import AuditEvent, Membership, Organization, Project
from tests.conftest import Tenant, client_for
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


# --- Organizations -------------------------------------------------------------------


def test_create_organization_with_a_plain_form_post() -> None:
    user = UserFactory()
    response = client_for(user).post(reverse("organization_create"), {"name": "Acme Labs"})
    org = Organization.objects.get(slug="acme-labs")
    assert response.status_code == 302
    assert response["Location"] == reverse("project_list", args=["acme-labs"])
    assert org.memberships.get().user == user


def test_live_validation_tells_whether_the_url_name_is_free(tenant_a: Tenant) -> None:
    client = client_for(UserFactory())
    taken = client.post(
        reverse("organization_create"),
        {"name": "x", "slug": tenant_a.org.slug, "_validate": "1"},
        headers={"HX-Request": "true"},
    )
    assert "is taken" in taken.content.decode()
    free = client.post(
        reverse("organization_create"),
        {"name": "Fresh Org", "_validate": "1"},
        headers={"HX-Request": "true"},
    )
    assert "/o/fresh-org/" in free.content.decode()
    assert not Organization.objects.filter(slug="fresh-org").exists()  # nothing saved


def test_duplicate_url_name_is_an_inline_error_and_keeps_the_input(tenant_a: Tenant) -> None:
    response = client_for(UserFactory()).post(
        reverse("organization_create"), {"name": "My Name", "slug": tenant_a.org.slug}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "is taken" in body and 'value="My Name"' in body


def test_viewer_sees_settings_but_cannot_save(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.viewer)
    url = reverse("organization_settings", args=[tenant_a.org.slug])
    assert "Only owners and admins" in client.get(url).content.decode()
    assert client.post(url, {"name": "Hacked"}).status_code == 403
    tenant_a.org.refresh_from_db()
    assert tenant_a.org.name == "Org ALPHA"


# --- Members -----------------------------------------------------------------------------


def test_inline_role_change_returns_the_updated_row(tenant_a: Tenant) -> None:
    membership = tenant_a.memberships[OrgRole.VIEWER]
    response = client_for(tenant_a.admin).post(
        reverse("member_role", args=[tenant_a.org.slug, membership.pk]),
        {"role": "member"},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.strip().startswith(f'<tr id="member-{membership.pk}"')
    assert "Saved" in body and '<option value="member" selected>' in body


def test_demoting_the_last_owner_shows_the_reason_in_the_row(tenant_a: Tenant) -> None:
    owner = tenant_a.memberships[OrgRole.OWNER]
    response = client_for(tenant_a.owner).post(
        reverse("member_role", args=[tenant_a.org.slug, owner.pk]),
        {"role": "admin"},
        headers={"HX-Request": "true"},
    )
    assert "at least one owner" in response.content.decode()
    owner.refresh_from_db()
    assert owner.role == OrgRole.OWNER


def test_plain_post_role_change_redirects_with_a_message(tenant_a: Tenant) -> None:
    membership = tenant_a.memberships[OrgRole.MEMBER]
    client = client_for(tenant_a.admin)
    response = client.post(
        reverse("member_role", args=[tenant_a.org.slug, membership.pk]),
        {"role": "viewer"},
        follow=True,
    )
    assert "is now Viewer" in response.content.decode()


def test_removing_a_member_needs_a_confirmation_page(tenant_a: Tenant) -> None:
    membership = tenant_a.memberships[OrgRole.MEMBER]
    url = reverse("member_remove", args=[tenant_a.org.slug, membership.pk])
    client = client_for(tenant_a.admin)
    page = client.get(url)
    assert "will lose access" in page.content.decode()
    assert Membership.objects.filter(pk=membership.pk).exists()
    client.post(url)
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_members_page_query_count_does_not_grow_with_members(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.owner)
    url = reverse("member_list", args=[tenant_a.org.slug])
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for _ in range(15):
        MembershipFactory(organization=tenant_a.org)
        services.invitation_create(
            organization=tenant_a.org,
            email=f"{_}@x.example.com",
            role="member",
            actor=tenant_a.owner,
            project=tenant_a.project,
        )
    with CaptureQueriesContext(connection) as many:
        client.get(url)
    assert len(many) == len(few)


# --- Projects ------------------------------------------------------------------------


def test_project_list_filter_returns_just_the_table_for_htmx(tenant_a: Tenant) -> None:
    ProjectFactory(organization=tenant_a.org, name="Rocket science", slug="rocket")
    client = client_for(tenant_a.owner)
    url = reverse("project_list", args=[tenant_a.org.slug])
    partial = client.get(url, {"q": "rocket"}, headers={"HX-Request": "true"})
    body = partial.content.decode()
    assert body.strip().startswith('<div id="project-table">')
    assert "Rocket science" in body and tenant_a.project.name not in body
    assert "<html" not in body
    assert partial["Vary"] and "HX-Request" in partial["Vary"]
    full = client.get(url, {"q": "rocket"}).content.decode()
    assert "<html" in full and "Rocket science" in full


def test_project_list_paginates_and_keeps_a_constant_query_count(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.member)
    url = reverse("project_list", args=[tenant_a.org.slug])
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for i in range(60):
        p = ProjectFactory(organization=tenant_a.org, name=f"Bulk {i:02}", slug=f"bulk-{i}")
        services.project_member_add(
            project=p, user=tenant_a.member, role="reader", actor=tenant_a.owner
        )
    with CaptureQueriesContext(connection) as many:
        first = client.get(url)
    assert len(many) == len(few)
    assert "Page 1 of 2" in first.content.decode()
    second = client.get(url, {"page": 2}).content.decode()
    assert "Bulk 59" in second and "Bulk 00" not in second


def test_member_sees_only_their_projects_and_an_empty_state(tenant_a: Tenant) -> None:
    hidden = ProjectFactory(organization=tenant_a.org, name="Secret plans")
    body = (
        client_for(tenant_a.member)
        .get(reverse("project_list", args=[tenant_a.org.slug]))
        .content.decode()
    )
    assert tenant_a.project.name in body and hidden.name not in body
    newcomer = MembershipFactory(organization=tenant_a.org, role=OrgRole.VIEWER).user
    empty = (
        client_for(newcomer).get(reverse("project_list", args=[tenant_a.org.slug])).content.decode()
    )
    assert "You have not been added to any project" in empty


def test_project_create_edit_delete_round_trip(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.member)
    org = tenant_a.org.slug
    response = client.post(
        reverse("project_create", args=[org]), {"name": "Vision", "description": "Image models"}
    )
    assert response["Location"] == reverse("project_detail", args=[org, "vision"])
    client.post(
        reverse("project_edit", args=[org, "vision"]), {"name": "Vision 2", "description": ""}
    )
    assert Project.objects.get(slug="vision").name == "Vision 2"
    assert (
        "This cannot be undone"
        in client.get(reverse("project_delete", args=[org, "vision"])).content.decode()
    )
    client.post(reverse("project_delete", args=[org, "vision"]))
    assert not Project.objects.filter(slug="vision").exists()
    assert list(
        AuditEvent.objects.filter(target_type="project")
        .values_list("verb", flat=True)
        .order_by("created_at")
    ) == ["project.create", "project.update", "project.delete"]


def test_project_member_dropdown_lists_only_this_organizations_people(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    body = (
        client_for(tenant_a.owner)
        .get(reverse("project_detail", args=[tenant_a.org.slug, tenant_a.project.slug]))
        .content.decode()
    )
    assert tenant_a.admin.display_name in body
    assert tenant_b.admin.display_name not in body
    # A crafted POST naming B's user fails validation and adds nobody.
    client_for(tenant_a.owner).post(
        reverse("project_detail", args=[tenant_a.org.slug, tenant_a.project.slug]),
        {"user": tenant_b.admin.pk, "role": "writer"},
    )
    assert not tenant_a.project.memberships.filter(user=tenant_b.admin).exists()


# --- Audit log -----------------------------------------------------------------------


def test_audit_log_filters_paginates_and_exports(tenant_a: Tenant, tenant_b: Tenant) -> None:
    for i in range(55):
        audit(
            actor=tenant_a.admin,
            verb="project.update",
            target=tenant_a.project,
            changes={"name": [f"n{i}", f"n{i + 1}"]},
        )
    audit(actor=tenant_a.owner, verb="member.role_change", target=tenant_a.memberships["member"])
    audit(actor=tenant_b.owner, verb="member.role_change", target=tenant_b.memberships["member"])
    client = client_for(tenant_a.owner)
    url = reverse("audit_log", args=[tenant_a.org.slug])
    page = client.get(url, {"verb": "member."}).content.decode()
    assert tenant_a.owner.email in page and tenant_b.owner.email not in page
    assert tenant_a.admin.email not in page
    by_actor = client.get(url, {"actor": "admin@alpha"}).content.decode()
    assert "Page 1 of 2" in by_actor and "actor=admin%40alpha" in by_actor
    export = client.get(reverse("audit_export", args=[tenant_a.org.slug]), {"verb": "project."})
    lines = [json.loads(line) for line in b"".join(export.streaming_content).splitlines()]
    assert len(lines) == 55
    assert {e["organization"] for e in lines} == {tenant_a.org.slug}
    assert lines[0]["actor"] == tenant_a.admin.email and lines[0]["changes"]


def test_bad_date_range_is_explained(tenant_a: Tenant) -> None:
    body = (
        client_for(tenant_a.owner)
        .get(
            reverse("audit_log", args=[tenant_a.org.slug]),
            {"since": "2026-02-01", "until": "2026-01-01"},
        )
        .content.decode()
    )
    assert "start date must be on or before" in body


def test_members_and_viewers_cannot_read_the_audit_log(tenant_a: Tenant) -> None:
    for user in (tenant_a.member, tenant_a.viewer):
        assert (
            client_for(user).get(reverse("audit_log", args=[tenant_a.org.slug])).status_code == 403
        )


# --- Invitations, from the invitee's side --------------------------------------------


def test_invitation_link_for_an_anonymous_visitor_offers_sign_up(tenant_a: Tenant) -> None:
    token = services.invitation_token(tenant_a.invitation)
    body = Client().get(reverse("invitation_accept", args=[token])).content.decode()
    assert "Create account" in body and tenant_a.invitation.email in body


def test_wrong_account_sees_why_it_cannot_accept(tenant_a: Tenant) -> None:
    token = services.invitation_token(tenant_a.invitation)
    response = client_for(UserFactory()).post(reverse("invitation_accept", args=[token]))
    assert response.status_code == 400
    assert f"This invitation is for {tenant_a.invitation.email}" in response.content.decode()


def test_accepting_lands_in_the_organization(tenant_a: Tenant) -> None:
    invitee = UserFactory(email=tenant_a.invitation.email)
    token = services.invitation_token(tenant_a.invitation)
    response = client_for(invitee).post(reverse("invitation_accept", args=[token]))
    assert response["Location"] == reverse("project_list", args=[tenant_a.org.slug])


def test_garbage_link_is_a_clean_404() -> None:
    response = Client().get(reverse("invitation_accept", args=["not-a-token"]))
    assert response.status_code == 404
    assert "invalid or has expired" in response.content.decode()


def test_home_lists_pending_invitations(tenant_a: Tenant) -> None:
    invitee = UserFactory(email=tenant_a.invitation.email)
    body = client_for(invitee).get("/").content.decode()
    assert "Invitations for you" in body and tenant_a.org.name in body


# --- Switching organizations ---------------------------------------------------------


def test_switcher_lists_my_organizations_and_home_remembers_the_last(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    user = tenant_a.member
    services.invitation_accept(
        invitation=services.invitation_create(
            organization=tenant_b.org, email=user.email, role="viewer", actor=tenant_b.owner
        ),
        user=user,
    )
    client = client_for(user)
    page = client.get(reverse("project_list", args=[tenant_b.org.slug])).content.decode()
    assert tenant_a.org.name in page and tenant_b.org.name in page  # both in the switcher
    assert client.get("/")["Location"] == reverse("org_overview", args=[tenant_b.org.slug])
    client.get(reverse("member_list", args=[tenant_a.org.slug]))
    assert client.get("/")["Location"] == reverse("org_overview", args=[tenant_a.org.slug])


def test_new_user_without_organizations_gets_onboarding() -> None:
    body = client_for(UserFactory()).get("/").content.decode()
    assert "Create an organization" in body
