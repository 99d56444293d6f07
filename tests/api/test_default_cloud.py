"""The preferred default cloud of an organization and of a project: used when a cluster,
job, workspace or working directory names no cloud (the project's preference overrides
the organization's; a compute config's own cloud overrides both), set through the API
with the role checks, audited, and refused for another organization's cloud."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clouds.choices import LaunchAccess
from clouds.models import Cloud, DefaultCloud
from tests.conftest import Tenant, activate
from tests.factories import CloudFactory, ComputeConfigVersionFactory, ProjectFactory
from workloads.jobs.models import Job

from .conftest import ApiClient, as_role, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def second(alpha: Tenant) -> Cloud:
    """A second verified cloud, so "the only cloud" no longer decides."""
    return activate(CloudFactory(organization=alpha.org, name="alpha second"))


def org_default(tenant: Tenant) -> str:
    return f"/orgs/{tenant.org.slug}/default-cloud"


def project_default(tenant: Tenant) -> str:
    assert tenant.project is not None
    return f"/orgs/{tenant.org.slug}/projects/{tenant.project.slug}/default-cloud"


def create_cluster(client: ApiClient, tenant: Tenant, name: str, **extra: Any) -> Any:
    assert tenant.project is not None
    body = {"name": name, "project": tenant.project.slug, **extra}
    return client.post(f"/orgs/{tenant.org.slug}/clusters", body)


def test_without_a_preference_two_clouds_make_the_request_name_one(
    alpha: Tenant, second: Cloud
) -> None:
    answer = create_cluster(as_role(alpha, OrgRole.MEMBER), alpha, "no-cloud")
    assert_error(answer, 422, "validation_error")
    assert "preferred default cloud" in answer.body["error"]["details"]["cloud"][0]


def test_the_organization_s_preference_is_used_and_the_project_s_overrides_it(
    alpha: Tenant, second: Cloud
) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    member = as_role(alpha, OrgRole.MEMBER)
    assert admin.put(org_default(alpha), {"cloud": str(second.pk)}).status == 200
    assert admin.get(org_default(alpha)).body == {
        "cloud": str(second.pk),
        "cloud_name": second.name,
    }
    created = create_cluster(member, alpha, "org-default")
    assert created.status == 201, created.body
    assert created.body["cloud"] == str(second.pk)

    # The member writes in the project: it may set the project's own preference.
    assert member.put(project_default(alpha), {"cloud": str(alpha.cloud.pk)}).status == 200
    created = create_cluster(member, alpha, "project-default")
    assert created.body["cloud"] == str(alpha.cloud.pk)
    # Another project of the organization still gets the organization's.
    other = ProjectFactory(organization=alpha.org, slug="other")
    created = as_role(alpha, OrgRole.ADMIN).post(
        f"/orgs/{alpha.org.slug}/clusters", {"name": "elsewhere", "project": other.slug}
    )
    assert created.body["cloud"] == str(second.pk)


def test_a_compute_config_s_own_cloud_wins_over_every_preference(
    alpha: Tenant, second: Cloud
) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    admin.put(org_default(alpha), {"cloud": str(second.pk)})
    admin.put(project_default(alpha), {"cloud": str(second.pk)})
    config = ComputeConfigVersionFactory(cloud=alpha.cloud)
    created = create_cluster(admin, alpha, "config-cloud", compute_config=str(config.config_id))
    assert created.status == 201, created.body
    assert created.body["cloud"] == str(alpha.cloud.pk)
    # A cloud named in the request is taken as it is (and must fit the config).
    refused = create_cluster(
        admin, alpha, "mismatch", compute_config=str(config.config_id), cloud=str(second.pk)
    )
    assert_error(refused, 422, "validation_error")
    assert "compute_config" in refused.body["error"]["details"]


def test_jobs_workspaces_and_working_dirs_follow_the_same_rule(
    alpha: Tenant, second: Cloud
) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    admin.put(project_default(alpha), {"cloud": str(second.pk)})
    org = f"/orgs/{alpha.org.slug}"
    job = admin.post(f"{org}/jobs", {"project": alpha.project.slug, "entrypoint": "python -V"})
    assert job.status == 201, job.body
    assert Job.objects.get(uuid=job.body["id"]).cloud_id == second.pk  # its clusters go there
    workspace = admin.post(
        f"{org}/workspaces", {"name": "ws-default", "project": alpha.project.slug}
    )
    assert workspace.status == 201, workspace.body
    assert workspace.body["cloud"] == str(second.pk)


def test_an_unverified_preferred_cloud_is_refused_with_its_reason_not_replaced(
    alpha: Tenant,
) -> None:
    unverified = CloudFactory(organization=alpha.org, name="not yet")
    admin = as_role(alpha, OrgRole.ADMIN)
    admin.put(org_default(alpha), {"cloud": str(unverified.pk)})
    answer = create_cluster(admin, alpha, "unverified")
    assert_error(answer, 422, "validation_error")
    assert "not verified" in answer.body["error"]["details"]["cloud"][0]


def test_an_organization_preference_the_project_may_not_use_is_skipped(
    alpha: Tenant, second: Cloud
) -> None:
    other = ProjectFactory(organization=alpha.org, slug="other")
    second.launch_access = LaunchAccess.PROJECTS
    second.save(update_fields=["launch_access"])
    second.projects.set([other])
    admin = as_role(alpha, OrgRole.ADMIN)
    admin.put(org_default(alpha), {"cloud": str(second.pk)})
    created = create_cluster(admin, alpha, "skipped")  # alpha's project: its only cloud
    assert created.body["cloud"] == str(alpha.cloud.pk)
    # And a project may not prefer a cloud it cannot launch on.
    answer = admin.put(project_default(alpha), {"cloud": str(second.pk)})
    assert_error(answer, 422, "validation_error")
    assert "may not launch" in answer.body["error"]["details"]["cloud"][0]


def test_who_may_set_which_preference(alpha: Tenant, second: Cloud) -> None:
    body = {"cloud": str(second.pk)}
    viewer, member = as_role(alpha, OrgRole.VIEWER), as_role(alpha, OrgRole.MEMBER)
    assert viewer.get(org_default(alpha)).status == 200
    assert viewer.get(project_default(alpha)).status == 200
    assert_error(viewer.put(org_default(alpha), body), 403, "permission_denied")
    assert_error(viewer.put(project_default(alpha), body), 403, "permission_denied")
    assert_error(member.put(org_default(alpha), body), 403, "permission_denied")
    assert not DefaultCloud.objects.exists()
    assert as_role(alpha, OrgRole.ADMIN).put(org_default(alpha), body).status == 200


def test_setting_and_clearing_are_audited_and_deleting_the_cloud_clears_it(
    alpha: Tenant, second: Cloud
) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    admin.put(org_default(alpha), {"cloud": str(second.pk)})
    admin.put(org_default(alpha), {"cloud": None})
    assert admin.get(org_default(alpha)).body["cloud"] is None
    changes = list(
        AuditEvent.objects.filter(verb="organization.default_cloud").values_list(
            "changes", flat=True
        )
    )
    assert {"default_cloud": [None, second.name]} in changes
    assert {"default_cloud": [second.name, None]} in changes

    admin.put(project_default(alpha), {"cloud": str(second.pk)})
    assert AuditEvent.objects.filter(verb="project.default_cloud").count() == 1
    assert admin.delete(f"/orgs/{alpha.org.slug}/clouds/{second.pk}").status == 204
    assert admin.get(project_default(alpha)).body["cloud"] is None


def test_another_organization_s_cloud_is_refused_as_not_found(alpha: Tenant, bravo: Tenant) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    for path in (org_default(alpha), project_default(alpha)):
        answer = admin.put(path, {"cloud": str(bravo.cloud.pk)})
        assert_error(answer, 422, "validation_error")
        assert "No cloud with id" in answer.body["error"]["details"]["cloud"][0]
    assert not DefaultCloud.objects.exists()
    # And another organization's project is a 404.
    path = f"/orgs/{alpha.org.slug}/projects/{bravo.project.slug}/default-cloud"
    assert_error(admin.put(path, {"cloud": str(alpha.cloud.pk)}), 404, "not_found")
