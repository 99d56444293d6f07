"""What a new organization's people meet before their first cluster: the pages say
what is missing (a project) instead of refusing them, and a refusal names its reason."""

from __future__ import annotations

from accounts.choices import OrgRole
from tests.conftest import Tenant, client_for
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


def new_organization(role: str = OrgRole.OWNER) -> tuple[str, object]:
    org = OrganizationFactory(slug="fresh", name="Fresh")
    user = UserFactory(email=f"{role}@fresh.example.com")
    MembershipFactory(organization=org, user=user, role=role)
    return org.slug, user


def test_a_new_owner_is_asked_for_a_project_not_told_they_lack_permission(db: None) -> None:
    slug, owner = new_organization()
    client = client_for(owner)
    listing = client.get(f"/o/{slug}/clusters/").content.decode()
    assert "Create a project first" in listing
    assert f'href="/o/{slug}/projects/new/"' in listing
    assert "look, not create" not in listing

    create = client.get(f"/o/{slug}/clusters/new/")
    assert create.status_code == 200
    assert "Create a project first" in create.content.decode()


def test_a_viewer_is_refused_with_the_reason(db: None, tenant_a: Tenant) -> None:
    response = client_for(tenant_a.viewer).get(f"/o/{tenant_a.org.slug}/clusters/new/")
    assert response.status_code == 403
    assert "lets you look at clusters here, not create them" in response.content.decode()
