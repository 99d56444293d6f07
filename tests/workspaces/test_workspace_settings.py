"""A workspace's settings (name, compute config, image) change while it is stopped:
the service's rules, the Settings page and PATCH in the JSON API (the CLI and the SDK:
tests/cli/test_workspaces.py)."""

from __future__ import annotations

import html
import os
import threading
import time
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connections
from django.urls import reverse

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clusters.models import ComputeConfigVersion
from tests.api.conftest import as_role, assert_error, verified
from tests.conftest import Tenant, client_for, make_tenant
from tests.factories import CloudFactory, ComputeConfigVersionFactory
from workloads.workspaces import services
from workloads.workspaces.choices import WorkspaceState
from workloads.workspaces.models import Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def alpha(tenant_a: Tenant) -> Tenant:
    return verified(tenant_a)


def bigger_config(tenant: Tenant, name: str = "big") -> ComputeConfigVersion:
    return ComputeConfigVersionFactory(cloud=tenant.cloud, config__name=name)


def updates(workspace: Workspace) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(verb="workspace.update", target_id=str(workspace.pk))
    return list(events.order_by("created_at"))


def running(tenant: Tenant) -> Workspace:
    workspace = tenant.workspace
    services.workspace_start(workspace=workspace, actor=tenant.member)
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STARTING
    return workspace


# --- The service -----------------------------------------------------------------------------


def test_a_stopped_workspace_changes_and_its_next_start_uses_the_new_settings(alpha) -> None:
    workspace = alpha.workspace
    old_image = workspace.image.name
    config = bigger_config(alpha)
    services.workspace_update(
        workspace=workspace,
        actor=alpha.member,
        name=" lab ",
        compute_config=config,
        image=alpha.image,
    )
    [event] = updates(workspace)
    assert event.changes == {
        "name": ["alpha-workspace", "lab"],
        "compute_config": [f"{alpha.cluster.compute_config.config.name} v1", "big v1"],
        "image": [old_image, "alpha python"],
    }
    services.workspace_start(workspace=workspace, actor=alpha.member)
    workspace.refresh_from_db()
    cluster = workspace.cluster
    assert cluster.name == "workspace-lab"
    assert cluster.compute_config == config and cluster.image == alpha.image


def test_nothing_changed_writes_nothing(alpha) -> None:
    workspace = alpha.workspace
    before = Workspace.objects.get(pk=workspace.pk).updated_at
    services.workspace_update(
        workspace=workspace,
        actor=alpha.member,
        name=workspace.name,
        compute_config=workspace.compute_config,
        image=workspace.image,
    )
    services.workspace_update(workspace=workspace, actor=alpha.member)
    assert updates(workspace) == []
    assert Workspace.objects.get(pk=workspace.pk).updated_at == before


def test_a_running_workspace_is_refused_naming_the_field_and_nothing_is_written(alpha) -> None:
    workspace = running(alpha)
    with pytest.raises(services.WorkspaceBusy) as refused:
        services.workspace_update(
            workspace=workspace, actor=alpha.member, compute_config=bigger_config(alpha)
        )
    message = refused.value.message_dict["compute_config"][0]
    assert message == (
        "Stop the workspace alpha-workspace first: its compute config cannot change while "
        "it is starting."
    )
    assert set(refused.value.message_dict) == {"compute_config"}
    assert Workspace.objects.get(pk=workspace.pk).compute_config == workspace.compute_config
    assert updates(workspace) == []


def test_a_start_waiting_for_its_image_is_refused_too(alpha) -> None:
    workspace = alpha.workspace
    Workspace.objects.filter(pk=workspace.pk).update(start_when_built_by=alpha.member)
    with pytest.raises(services.WorkspaceBusy) as refused:
        services.workspace_update(workspace=workspace, actor=alpha.member, name="lab")
    assert refused.value.message_dict["name"][0].startswith(
        "Cancel the start of alpha-workspace first"
    )


def test_a_failed_workspace_may_change(alpha) -> None:
    workspace = alpha.workspace
    Workspace.objects.filter(pk=workspace.pk).update(state=WorkspaceState.FAILED)
    services.workspace_update(workspace=workspace, actor=alpha.member, name="again")
    assert Workspace.objects.get(pk=workspace.pk).name == "again"


def test_the_name_rules_are_the_creates(alpha) -> None:
    workspace = alpha.workspace
    services.workspace_create(
        project=alpha.project, actor=alpha.member, name="taken", cloud=alpha.cloud
    )
    # Not caught by a check before the write: the unique constraint refuses it (a race).
    with pytest.raises(ValidationError) as taken:
        services.workspace_update(workspace=workspace, actor=alpha.member, name="taken")
    assert taken.value.message_dict["name"] == [
        f"{alpha.project.name} already has a workspace named taken."
    ]
    with pytest.raises(ValidationError) as bad:
        services.workspace_update(workspace=workspace, actor=alpha.member, name="My Lab!")
    assert "lowercase letters" in bad.value.message_dict["name"][0]
    assert Workspace.objects.get(pk=workspace.pk).name == "alpha-workspace"
    assert updates(workspace) == []


def test_the_choice_rules_are_the_creates(alpha, tenant_b) -> None:
    workspace = alpha.workspace
    elsewhere = CloudFactory(organization=alpha.org, name="elsewhere")
    with pytest.raises(ValidationError) as other_cloud:
        services.workspace_update(
            workspace=workspace,
            actor=alpha.member,
            compute_config=ComputeConfigVersionFactory(cloud=elsewhere, config__name="far"),
        )
    assert "far runs on elsewhere" in other_cloud.value.message_dict["compute_config"][0]
    with pytest.raises(ValidationError) as other_org:
        services.workspace_update(
            workspace=workspace, actor=alpha.member, compute_config=bigger_config(tenant_b)
        )
    assert other_org.value.message_dict["compute_config"] == [
        "Choose a compute config of this organization."
    ]
    with pytest.raises(ValidationError) as foreign_image:
        services.workspace_update(workspace=workspace, actor=alpha.member, image=tenant_b.image)
    assert foreign_image.value.message_dict["image"] == ["Choose an image of this organization."]
    with pytest.raises(PermissionDenied):
        services.workspace_update(workspace=workspace, actor=alpha.viewer, name="mine")
    assert updates(workspace) == []


def test_an_image_left_blank_is_raydecks_workspace_image_as_on_create(alpha) -> None:
    """On the local cloud that is its built-in image (what a create gets)."""
    made = services.workspace_create(
        project=alpha.project, actor=alpha.member, name="lab", cloud=alpha.cloud
    )
    services.workspace_update(workspace=made, actor=alpha.member, image=alpha.image)
    services.workspace_update(workspace=made, actor=alpha.member, image=None)
    made.refresh_from_db()
    assert made.image is not None and made.image.organization is None
    assert made.image_build is None
    assert [e.changes["image"] for e in updates(made)][-1] == ["alpha python", made.image.name]


# --- The Settings page -----------------------------------------------------------------------


def test_the_settings_page_saves_and_shows_errors_on_their_fields(alpha) -> None:
    client = client_for(alpha.member)
    workspace = alpha.workspace
    url = reverse("workspace_settings", args=[alpha.org.slug, workspace.pk])
    detail = client.get(reverse("workspace_detail", args=[alpha.org.slug, workspace.pk]))
    assert f'href="{url}"'.encode() in detail.content
    form = client.get(url)
    assert form.status_code == 200 and b'value="alpha-workspace"' in form.content
    assert b"Save settings" in form.content
    config = bigger_config(alpha)
    data = {"name": "My Lab!", "compute_config": config.pk, "image": workspace.image_id}
    bad = client.post(url, data)
    assert bad.status_code == 200 and b"lowercase letters" in bad.content
    services.workspace_create(
        project=alpha.project, actor=alpha.member, name="taken", cloud=alpha.cloud
    )
    taken = client.post(url, {**data, "name": "taken"})
    assert b"already has a workspace named taken" in taken.content
    assert Workspace.objects.get(pk=workspace.pk).compute_config == workspace.compute_config
    saved = client.post(url, {**data, "name": "lab"}, follow=True)
    assert saved.redirect_chain[-1][0].endswith(f"/workspaces/{workspace.pk}/")
    assert b"Settings of lab saved; its next start uses them." in saved.content
    workspace.refresh_from_db()
    assert workspace.name == "lab" and workspace.compute_config == config


def test_a_viewer_may_not_open_the_settings(alpha) -> None:
    client = client_for(alpha.viewer)
    url = reverse("workspace_settings", args=[alpha.org.slug, alpha.workspace.pk])
    detail = client.get(reverse("workspace_detail", args=[alpha.org.slug, alpha.workspace.pk]))
    assert url.encode() not in detail.content
    assert client.get(url).status_code == 403
    assert client.post(url, {"name": "mine"}).status_code == 403
    assert Workspace.objects.get(pk=alpha.workspace.pk).name == "alpha-workspace"


def test_while_it_runs_the_pages_say_why_not(alpha) -> None:
    workspace = running(alpha)
    client = client_for(alpha.member)
    said = (
        "Stop the workspace alpha-workspace first: its settings cannot change while it is starting."
    )
    detail = client.get(reverse("workspace_detail", args=[alpha.org.slug, workspace.pk]))
    assert said in html.unescape(detail.content.decode())
    page = client.get(reverse("workspace_settings", args=[alpha.org.slug, workspace.pk]))
    assert said in html.unescape(page.content.decode()) and b"Save settings" not in page.content


# --- PATCH in the JSON API -------------------------------------------------------------------


def test_api_patch_changes_only_what_is_sent(alpha) -> None:
    api = as_role(alpha, OrgRole.MEMBER)
    url = f"/orgs/{alpha.org.slug}/workspaces/{alpha.workspace.uuid}"
    config = bigger_config(alpha)
    answer = api.patch(url, {"name": "lab", "compute_config": str(config.config_id)})
    assert answer.status == 200, answer.body
    assert answer.body["name"] == "lab"
    assert answer.body["compute_config"] == str(config.config_id)
    assert answer.body["image"] == str(alpha.workspace.image_id)  # not sent: unchanged
    unknown = api.patch(url, {"compute_config": "999999"})
    assert_error(unknown, 422, "validation_error")
    assert "compute_config" in unknown.body["error"]["details"]
    null = api.patch(url, {"name": None})
    assert_error(null, 422, "validation_error")
    assert "name" in null.body["error"]["details"]
    assert_error(api.patch(url, [None, None]), 422, "validation_error")  # not a change


def test_api_patch_while_it_runs_is_a_conflict(alpha) -> None:
    workspace = running(alpha)
    api = as_role(alpha, OrgRole.MEMBER)
    refused = api.patch(f"/orgs/{alpha.org.slug}/workspaces/{workspace.uuid}", {"name": "x"})
    assert_error(refused, 409, "conflict")
    assert "Stop the workspace alpha-workspace first" in refused.body["error"]["message"]
    assert "name" in refused.body["error"]["details"]


def test_api_patch_of_another_organizations_workspace_is_404_and_a_viewer_403(
    alpha, tenant_b
) -> None:
    api = as_role(alpha, OrgRole.OWNER)
    other = api.patch(f"/orgs/{alpha.org.slug}/workspaces/{tenant_b.workspace.uuid}", {"name": "x"})
    assert_error(other, 404, "not_found")
    assert Workspace.objects.get(pk=tenant_b.workspace.pk).name == "bravo-workspace"
    viewer = as_role(alpha, OrgRole.VIEWER).patch(
        f"/orgs/{alpha.org.slug}/workspaces/{alpha.workspace.uuid}", {"name": "x"}
    )
    assert_error(viewer, 403, "permission_denied")


# --- A start and a change at once ------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("DATABASE_URL"), reason="two connections need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_change_made_while_a_start_runs_waits_for_it_and_is_refused(monkeypatch) -> None:
    """Two connections: the start holds the workspace's row while it makes the cluster
    (slowed down here); the change asked meanwhile waits for it, then sees a starting
    workspace, so the cluster and the settings never disagree."""
    tenant = verified(make_tenant("racer"))
    workspace = tenant.workspace
    config = bigger_config(tenant)
    making = threading.Event()
    real_cluster_create = services.cluster_create

    def slow_cluster_create(**kwargs: Any) -> Any:
        making.set()
        time.sleep(1.0)
        return real_cluster_create(**kwargs)

    monkeypatch.setattr(services, "cluster_create", slow_cluster_create)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            services.workspace_start(workspace=workspace, actor=tenant.member)
        except BaseException as exc:
            errors.append(exc)
            making.set()
        finally:
            connections.close_all()

    starting = threading.Thread(target=start)
    starting.start()
    assert making.wait(30)
    try:
        with pytest.raises(services.WorkspaceBusy, match="while it is starting"):
            services.workspace_update(
                workspace=workspace, actor=tenant.member, compute_config=config
            )
    finally:
        starting.join(60)
    assert not errors, errors
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STARTING
    assert workspace.compute_config == workspace.cluster.compute_config != config
