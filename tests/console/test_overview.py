"""The organization's overview, where `/` leads: a new organization's first steps
marked as they are done, the clusters running now, recent failures; never another
organization's."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from accounts.choices import OrgRole
from clusters.choices import ClusterState
from tests.conftest import Tenant, activate, client_for
from tests.factories import ClusterFactory, MembershipFactory, OrganizationFactory, UserFactory


def test_home_leads_to_the_overview_with_first_steps_marked(db: None) -> None:
    org = OrganizationFactory(slug="fresh", name="Fresh")
    owner = UserFactory(email="owner@fresh.example.com")
    MembershipFactory(organization=org, user=owner, role=OrgRole.OWNER)
    client = client_for(owner)
    assert client.get("/")["Location"] == "/o/fresh/"
    page = client.get("/o/fresh/").content.decode()
    assert "Get started" in page
    assert page.count('aria-label="To do"') == 3
    assert 'href="/o/fresh/clouds/add/"' in page or "/o/fresh/clouds/" in page
    assert "Nothing runs now." in page


def test_done_steps_are_marked_and_the_list_goes_when_all_are(
    db: None, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    client = client_for(tenant_a.owner)
    page = client.get(f"/o/{tenant_a.org.slug}/").content.decode()
    # A project and a cluster exist; the cloud is not verified yet.
    assert page.count('aria-label="Done"') == 2
    assert "Connect a cloud" in page
    activate(tenant_a.cloud)
    page = client.get(f"/o/{tenant_a.org.slug}/").content.decode()
    assert "Get started" not in page


def test_running_clusters_and_recent_failures_of_this_organization_only(
    db: None, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    ClusterFactory(
        project=tenant_a.project, cloud=tenant_a.cloud, name="busy-one", state=ClusterState.RUNNING
    )
    ClusterFactory(
        project=tenant_a.project,
        cloud=tenant_a.cloud,
        name="broke-today",
        state=ClusterState.FAILED,
        state_reason="The head node did not register.",
    )
    ClusterFactory(
        project=tenant_a.project,
        cloud=tenant_a.cloud,
        name="broke-long-ago",
        state=ClusterState.FAILED,
        state_changed_at=timezone.now() - timedelta(days=30),
    )
    ClusterFactory(
        project=tenant_b.project,
        cloud=tenant_b.cloud,
        name="bravo-busy",
        state=ClusterState.RUNNING,
    )
    page = client_for(tenant_a.member).get(f"/o/{tenant_a.org.slug}/").content.decode()
    assert "busy-one" in page
    assert "broke-today" in page and "The head node did not register." in page
    assert "broke-long-ago" not in page
    assert "bravo-busy" not in page
    assert "alpha-cluster" not in page.split("Failed in the last")[0]  # terminated: not running
    assert client_for(tenant_b.owner).get(f"/o/{tenant_a.org.slug}/").status_code == 404
