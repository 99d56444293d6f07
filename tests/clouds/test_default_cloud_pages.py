"""The preferred default cloud in the console: a card on the organization settings and
project settings pages (loaded from the clouds app, also a page of its own without
JavaScript), who may change it, and the create forms that start on it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from clouds.models import Cloud, DefaultCloud
from tests.conftest import Tenant, activate, client_for
from tests.factories import CloudFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def second(tenant_a: Tenant) -> Cloud:
    activate(tenant_a.cloud)
    return activate(CloudFactory(organization=tenant_a.org, name="alpha second"))


def test_the_organization_settings_page_loads_the_card_and_an_admin_saves_it(
    tenant_a: Tenant, tenant_b: Tenant, second: Cloud
) -> None:
    client = client_for(tenant_a.admin)
    org = tenant_a.org.slug
    settings_page = client.get(reverse("organization_settings", args=[org])).content.decode()
    card_url = reverse("org_default_cloud", args=[org])
    assert f'hx-get="{card_url}"' in settings_page and f'href="{card_url}"' in settings_page

    card = client.get(card_url, headers={"HX-Request": "true"}).content.decode()
    assert 'id="default-cloud"' in card and "<html" not in card
    assert second.name in card and tenant_a.cloud.name in card
    assert tenant_b.cloud.name not in card  # only this organization's clouds are offered

    response = client.post(card_url, {"cloud": second.pk})
    assert response.status_code == 302
    assert response["Location"] == reverse("organization_settings", args=[org])
    assert DefaultCloud.objects.get(organization=tenant_a.org, project=None).cloud == second
    assert AuditEvent.objects.filter(verb="organization.default_cloud").exists()
    page = client.get(card_url).content.decode()
    assert "<html" in page and f'value="{second.pk}" selected' in page


def test_another_organization_s_cloud_in_a_crafted_post_saves_nothing(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    client = client_for(tenant_a.owner)
    response = client.post(
        reverse("org_default_cloud", args=[tenant_a.org.slug]), {"cloud": tenant_b.cloud.pk}
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not DefaultCloud.objects.exists()


def test_a_writer_sets_the_project_s_preference_a_member_only_reads_the_organization_s(
    tenant_a: Tenant, second: Cloud
) -> None:
    org, project = tenant_a.org.slug, tenant_a.project.slug
    member = client_for(tenant_a.member)  # a writer of the project
    edit_page = member.get(reverse("project_edit", args=[org, project])).content.decode()
    url = reverse("project_default_cloud", args=[org, project])
    assert f'hx-get="{url}"' in edit_page
    assert member.post(url, {"cloud": second.pk}).status_code == 302
    assert DefaultCloud.objects.get(project=tenant_a.project).cloud == second
    assert AuditEvent.objects.filter(verb="project.default_cloud").exists()

    org_card = member.get(reverse("org_default_cloud", args=[org])).content.decode()
    assert "<select" not in org_card and "No preference" in org_card
    assert (
        member.post(reverse("org_default_cloud", args=[org]), {"cloud": second.pk}).status_code
        == 403
    )
    viewer = client_for(tenant_a.viewer)
    assert viewer.post(url, {"cloud": ""}).status_code == 403
    assert DefaultCloud.objects.count() == 1


def test_the_cluster_job_and_workspace_forms_start_on_the_preferred_cloud(
    tenant_a: Tenant, second: Cloud
) -> None:
    client = client_for(tenant_a.admin)
    org, project = tenant_a.org.slug, tenant_a.project.slug
    client.post(reverse("project_default_cloud", args=[org, project]), {"cloud": second.pk})
    for name in ("cluster_create", "job_create", "workspace_create"):
        page = client.get(reverse(name, args=[org]), {"project": project}).content.decode()
        assert f'<option value="{second.pk}" selected>' in page, name
