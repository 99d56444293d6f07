"""Workspaces without Ray: the services' rules, the head's orders and reports through the
heartbeat participant (clusters/head_orders.py), the follow-the-cluster sync, idle stops,
pages and the JSON API. Cluster states are set the way the reconciler sets them; the
real-Ray path is tests/workspaces/test_workspace_ray.py."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clouds.choices import CloudState
from clusters import head_orders
from clusters.choices import ClusterState, DesiredState, NodeState
from clusters.models import Cluster, Node
from clusters.services import idle
from tests.api.conftest import as_role, assert_error, verified
from tests.conftest import Tenant, client_for, fail_for_one
from tests.factories import NodeFactory
from workloads.workspaces import live, services
from workloads.workspaces.choices import WorkspaceState
from workloads.workspaces.models import SshKey, Workspace
from workloads.workspaces.tasks import sweep_workspaces

pytestmark = pytest.mark.django_db


@pytest.fixture
def alpha(tenant_a: Tenant) -> Tenant:
    return verified(tenant_a)


def make(tenant: Tenant, name: str = "notebooks") -> Workspace:
    return services.workspace_create(
        project=tenant.project, actor=tenant.member, name=name, cloud=tenant.cloud
    )


def started(tenant: Tenant, django_capture_on_commit_callbacks) -> Workspace:
    workspace = make(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        services.workspace_start(workspace=workspace, actor=tenant.member)
    workspace.refresh_from_db()
    return workspace


def cluster_becomes(workspace: Workspace, state: str) -> None:
    Cluster.objects.filter(pk=workspace.cluster_id).update(state=state)


def report(workspace: Workspace, body: dict) -> None:
    """What the head's next heartbeat body carries under "reports"."""
    head_orders.deliver_reports(workspace.cluster_id, {"workspace": body})


def test_create_refuses_a_duplicate_name_and_a_bad_one_and_changes_nothing(alpha) -> None:
    make(alpha)
    with pytest.raises(ValidationError) as duplicate:
        make(alpha)
    assert "already has a workspace named notebooks" in duplicate.value.message_dict["name"][0]
    with pytest.raises(ValidationError) as bad:
        make(alpha, name="My Notebooks!")
    assert "lowercase letters" in bad.value.message_dict["name"][0]
    assert Workspace.objects.filter(project=alpha.project).count() == 2  # the fixture's + one


def test_a_viewer_may_not_create_and_the_files_location_is_the_clouds(alpha) -> None:
    with pytest.raises(PermissionDenied):
        services.workspace_create(
            project=alpha.project, actor=alpha.viewer, name="x", cloud=alpha.cloud
        )
    workspace = make(alpha)
    assert workspace.state == WorkspaceState.STOPPED and workspace.cluster is None
    assert workspace.files_location.endswith(f"/files/{workspace.uuid}")
    assert AuditEvent.objects.filter(verb="workspace.create", target_id=str(workspace.pk)).exists()


def test_an_unverified_cloud_is_refused_on_the_cloud_field(alpha) -> None:
    alpha.cloud.state = CloudState.UNVERIFIED
    alpha.cloud.save(update_fields=["state"])
    with pytest.raises(ValidationError) as refused:
        make(alpha)
    assert "not verified" in refused.value.message_dict["cloud"][0]


def test_start_restore_run_stop_save_terminate_stopped(
    alpha, django_capture_on_commit_callbacks
) -> None:
    workspace = started(alpha, django_capture_on_commit_callbacks)
    assert workspace.state == WorkspaceState.STARTING
    cluster = workspace.cluster
    assert cluster is not None and cluster.desired_state == DesiredState.RUNNING
    orders = head_orders.collect_orders(cluster.pk)["workspace"]
    assert orders["files"] == workspace.files_location and orders["save_for"] is None

    # Running cluster, files not back yet: still starting (JupyterLab is not offered).
    cluster_becomes(workspace, ClusterState.RUNNING)
    assert services.workspace_sync(workspace_id=workspace.pk) == WorkspaceState.STARTING
    now = timezone.now().timestamp()
    report(workspace, {"restored_at": now})
    assert services.workspace_sync(workspace_id=workspace.pk) == WorkspaceState.RUNNING

    # A periodic save is shown; then stop asks the head to save now.
    report(
        workspace,
        {
            "restored_at": now,
            "saved": {
                "at": now + 1,
                "for": None,
                "files": 3,
                "bytes": 120,
                "skipped": [["big.bin", "larger than the size limit for one file"]],
            },
        },
    )
    workspace.refresh_from_db()
    assert workspace.files_count == 3 and workspace.files_skipped[0][0] == "big.bin"
    with django_capture_on_commit_callbacks(execute=True):
        services.workspace_stop(workspace=workspace, actor=alpha.member)
    workspace.refresh_from_db()
    token = head_orders.collect_orders(cluster.pk)["workspace"]["save_for"]
    assert token == live.save_token(workspace.stop_requested_at)
    # Not saved for the stop yet: the cluster stays.
    assert services.workspace_sync(workspace_id=workspace.pk) == WorkspaceState.STOPPING
    assert Cluster.objects.get(pk=cluster.pk).desired_state == DesiredState.RUNNING
    # An old save (not for this stop) does not count either.
    report(
        workspace,
        {"restored_at": now, "saved": {"at": now + 2, "for": None, "files": 3, "bytes": 120}},
    )
    services.workspace_sync(workspace_id=workspace.pk)
    assert Cluster.objects.get(pk=cluster.pk).desired_state == DesiredState.RUNNING
    report(
        workspace,
        {"restored_at": now, "saved": {"at": now + 3, "for": token, "files": 4, "bytes": 130}},
    )
    services.workspace_sync(workspace_id=workspace.pk)
    assert Cluster.objects.get(pk=cluster.pk).desired_state == DesiredState.TERMINATED
    cluster_becomes(workspace, ClusterState.TERMINATED)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.workspace_sync(workspace_id=workspace.pk) == WorkspaceState.STOPPED
    workspace.refresh_from_db()
    assert workspace.cluster is None and workspace.files_count == 4
    assert workspace.files_saved_at >= workspace.stop_requested_at
    assert head_orders.collect_orders(cluster.pk) == {}  # nothing more for that head
    verbs = set(
        AuditEvent.objects.filter(target_id=str(workspace.pk)).values_list("verb", flat=True)
    )
    assert {"workspace.create", "workspace.start", "workspace.stop", "workspace.stopped"} <= verbs


def test_a_head_that_cannot_save_is_terminated_after_the_timeout(
    alpha, django_capture_on_commit_callbacks
) -> None:
    workspace = started(alpha, django_capture_on_commit_callbacks)
    cluster_becomes(workspace, ClusterState.RUNNING)
    report(workspace, {"restored_at": timezone.now().timestamp()})
    services.workspace_sync(workspace_id=workspace.pk)
    services.workspace_stop(workspace=workspace, actor=alpha.member)
    later = timezone.now() + services.STOP_SAVE_TIMEOUT + timedelta(seconds=1)
    services.workspace_sync(workspace_id=workspace.pk, now=later)
    assert Cluster.objects.get(pk=workspace.cluster_id).desired_state == DesiredState.TERMINATED
    workspace.refresh_from_db()
    assert "did not save the files within 5 min" in workspace.state_reason


def test_a_cluster_that_fails_to_start_fails_the_workspace_which_can_start_again(
    alpha, django_capture_on_commit_callbacks
) -> None:
    workspace = started(alpha, django_capture_on_commit_callbacks)
    Cluster.objects.filter(pk=workspace.cluster_id).update(
        state=ClusterState.FAILED, state_reason="no capacity"
    )
    assert services.workspace_sync(workspace_id=workspace.pk) == WorkspaceState.FAILED
    workspace.refresh_from_db()
    assert "no capacity" in workspace.state_reason and workspace.cluster is None
    services.workspace_start(workspace=workspace, actor=alpha.member)
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STARTING


def test_the_sweep_follows_every_workspace_when_one_of_them_fails(
    alpha, django_capture_on_commit_callbacks, monkeypatch, caplog
) -> None:
    """Fault injected in-process: following one workspace raises."""
    broken = started(alpha, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        healthy = services.workspace_create(
            project=alpha.project, actor=alpha.member, name="healthy", cloud=alpha.cloud
        )
        services.workspace_start(workspace=healthy, actor=alpha.member)
    healthy.refresh_from_db()
    Cluster.objects.filter(pk=healthy.cluster_id).update(
        state=ClusterState.FAILED, state_reason="no capacity"
    )
    fail_for_one(monkeypatch, services, "workspace_sync", key="workspace_id", pk=broken.pk)
    sweep_workspaces()
    healthy.refresh_from_db()
    assert healthy.state == WorkspaceState.FAILED and "no capacity" in healthy.state_reason
    assert f"Following workspace {broken.pk} failed" in caplog.text


def test_idle_stops_the_workspace_saving_first_instead_of_terminating_its_cluster(
    alpha, django_capture_on_commit_callbacks
) -> None:
    workspace = started(alpha, django_capture_on_commit_callbacks)
    cluster_becomes(workspace, ClusterState.RUNNING)
    cluster = Cluster.objects.get(pk=workspace.cluster_id)
    assert idle.any_idle_stopper_took(cluster, "Terminated by Raydeck: idle for 60 min.")
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STOPPING
    assert "idle for 60 min" in workspace.state_reason
    assert Cluster.objects.get(pk=cluster.pk).desired_state == DesiredState.RUNNING  # saves first
    other = Cluster.objects.get(pk=alpha.cluster.pk)
    assert not idle.any_idle_stopper_took(other, "idle")  # not a workspace's


def test_a_running_workspace_cannot_be_deleted_a_stopped_one_can(
    alpha, django_capture_on_commit_callbacks
) -> None:
    workspace = started(alpha, django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError, match="Stop the workspace"):
        services.workspace_delete(workspace=workspace, actor=alpha.member)
    services.workspace_delete(workspace=alpha.workspace, actor=alpha.member)
    assert not Workspace.objects.filter(pk=alpha.workspace.pk).exists()
    assert AuditEvent.objects.filter(verb="workspace.delete").exists()


def test_untrusted_reports_are_ignored(alpha, django_capture_on_commit_callbacks) -> None:
    workspace = started(alpha, django_capture_on_commit_callbacks)
    for junk in ["x", [], {"restored_at": "yesterday"}, {"saved": {"at": -5}}, {"saved": []}]:
        report(workspace, junk)
    workspace.refresh_from_db()
    assert workspace.restored_at is None and workspace.files_saved_at is None


# --- Pages -------------------------------------------------------------------------------


def test_pages_list_create_detail_stop_confirmation(alpha, tenant_b) -> None:
    client = client_for(alpha.member)
    slug = alpha.org.slug
    page = client.get(reverse("workspace_list", args=[slug]))
    assert b"alpha-workspace" in page.content and b"bravo-workspace" not in page.content
    form = client.get(reverse("workspace_create", args=[slug]))
    assert b"Create workspace" in form.content
    answer = client.post(
        reverse("workspace_create", args=[slug]),
        {"project": alpha.project.pk, "name": "alpha-workspace", "cloud": alpha.cloud.pk},
    )
    assert answer.status_code == 200 and b"already has a workspace named" in answer.content
    answer = client.post(
        reverse("workspace_create", args=[slug]),
        {"project": alpha.project.pk, "name": "research", "cloud": alpha.cloud.pk},
    )
    workspace = Workspace.objects.get(name="research")
    assert answer.status_code == 302 and answer["Location"].endswith(f"/workspaces/{workspace.pk}/")
    detail = client.get(answer["Location"]).content.decode()
    assert "Start" in detail and "Last saved" in detail and "never" in detail
    assert "100.0\xa0MB" in detail and ".ipynb_checkpoints" in detail
    client.post(reverse("workspace_start", args=[slug, workspace.pk]))
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STARTING
    live_part = client.get(
        reverse("workspace_detail", args=[slug, workspace.pk]),
        headers={"HX-Request": "true", "HX-Target": "workspace-live"},
    )
    assert b'hx-trigger="every 2s"' in live_part.content and b"<html" not in live_part.content
    confirm = client.get(reverse("workspace_stop", args=[slug, workspace.pk]))
    assert b"saves its files" in confirm.content
    client.post(reverse("workspace_stop", args=[slug, workspace.pk]))
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STOPPING


def test_an_empty_list_says_what_to_do(alpha) -> None:
    Workspace.objects.all().delete()
    page = client_for(alpha.member).get(reverse("workspace_list", args=[alpha.org.slug]))
    assert b"No workspaces yet" in page.content and b"New workspace" in page.content


def test_a_viewer_sees_but_cannot_start(alpha) -> None:
    client = client_for(alpha.viewer)
    slug = alpha.org.slug
    detail = client.get(reverse("workspace_detail", args=[slug, alpha.workspace.pk]))
    assert detail.status_code == 200 and b">Start<" not in detail.content
    answer = client.post(reverse("workspace_start", args=[slug, alpha.workspace.pk]))
    assert answer.status_code == 403


# --- JSON API ------------------------------------------------------------------------------


def test_api_create_get_start_stop_delete(alpha) -> None:
    api = as_role(alpha, OrgRole.MEMBER)
    base = f"/orgs/{alpha.org.slug}/workspaces"
    made = api.post(base, {"name": "lab", "project": alpha.project.slug})
    assert made.status == 201, made.body
    ident = made.body["id"]
    assert made.body["state"] == "stopped" and made.body["files"]["saved_at"] is None
    assert_error(
        api.post(base, {"name": "lab", "project": alpha.project.slug}), 422, "validation_error"
    )
    unknown = api.post(
        base, {"name": "lab2", "project": alpha.project.slug, "compute_config": "999999"}
    )
    assert_error(unknown, 422, "validation_error")
    assert "compute_config" in unknown.body["error"]["details"]
    listed = api.get(base)
    assert {w["name"] for w in listed.body["items"]} == {"lab", "alpha-workspace"}
    started = api.post(f"{base}/{ident}/start")
    assert started.status == 202 and started.body["state"] == "starting" and started.body["cluster"]
    assert_error(api.post(f"{base}/{ident}/start"), 409, "conflict")
    assert_error(api.post(f"{base}/{ident}/jupyter"), 409, "conflict")
    assert_error(api.delete(f"{base}/{ident}"), 409, "conflict")
    stopped = api.post(f"{base}/{ident}/stop")
    assert stopped.status == 202 and stopped.body["state"] == "stopping"
    assert api.get(f"{base}/{ident}").body["state"] == "stopping"


def test_api_viewer_reads_only(alpha) -> None:
    api = as_role(alpha, OrgRole.VIEWER)
    base = f"/orgs/{alpha.org.slug}/workspaces"
    assert api.get(f"{base}/{alpha.workspace.uuid}").status == 200
    assert_error(api.post(f"{base}/{alpha.workspace.uuid}/start"), 403, "permission_denied")


# --- SSH (the real path: tests/workspaces/test_workspace_ssh.py) ----------------------------


def a_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def ssh_orders(workspace: Workspace) -> list[str]:
    return head_orders.collect_orders(workspace.cluster_id)["workspace"]["ssh"]["keys"]


def make_head(workspace: Workspace) -> Node:
    """The head as a registered agent leaves it: ready, with a gateway port."""
    return NodeFactory(
        cluster=workspace.cluster,
        state=NodeState.READY,
        private_address="10.1.2.3",
        ray_ports={"gcs": 6379, "dashboard": 8265, "gateway": 8266},
    )


def test_the_heads_orders_carry_the_keys_of_who_may_use_it_and_follow_changes(
    alpha, django_capture_on_commit_callbacks
) -> None:
    """Writers' and admins' keys, never a reader's; a new key and a revoked member reach
    the head at its next heartbeat, whatever the orders' cache held."""
    from accounts.services.projects import project_member_remove
    from workloads.workspaces.ssh_keys import ssh_key_add

    workspace = started(alpha, django_capture_on_commit_callbacks)
    member_key = alpha.ssh_key.public_key
    SshKey.objects.create(user=alpha.viewer, name="r", public_key=a_public_key(), fingerprint="v")
    assert ssh_orders(workspace) == [member_key]
    with django_capture_on_commit_callbacks(execute=True):
        admin_key = ssh_key_add(user=alpha.admin, name="a", public_key=a_public_key()).public_key
    assert ssh_orders(workspace) == [member_key, admin_key]
    with django_capture_on_commit_callbacks(execute=True):
        project_member_remove(project_membership=alpha.project_membership, actor=alpha.owner)
    assert ssh_orders(workspace) == [admin_key]


def test_ssh_access_says_what_is_missing_and_is_audited(
    alpha, tenant_b, django_capture_on_commit_callbacks
) -> None:
    api = as_role(alpha, OrgRole.MEMBER)
    base = f"/orgs/{alpha.org.slug}/workspaces"
    stopped = api.post(f"{base}/{alpha.workspace.uuid}/ssh")
    assert_error(stopped, 409, "conflict")
    assert "is stopped: start it first" in stopped.body["error"]["message"]
    other = f"/orgs/{alpha.org.slug}/workspaces/{tenant_b.workspace.uuid}/ssh"
    assert api.post(other).status == 404
    viewer = as_role(alpha, OrgRole.VIEWER).post(f"{base}/{alpha.workspace.uuid}/ssh")
    assert_error(viewer, 403, "permission_denied")

    workspace = started(alpha, django_capture_on_commit_callbacks)
    cluster_becomes(workspace, ClusterState.RUNNING)
    report(workspace, {"restored_at": timezone.now().timestamp()})
    services.workspace_sync(workspace_id=workspace.pk)
    report(workspace, {"ssh": {"unavailable": "sshd is not installed"}})
    url = f"{base}/{workspace.uuid}/ssh"
    missing = api.post(url)
    said = "This workspace's head has no SSH server (sshd is not installed)"
    assert said in missing.body["error"]["message"]
    assert "install OpenSSH's server here" in missing.body["error"]["message"]  # local cloud
    page = client_for(alpha.member).get(
        reverse("workspace_detail", args=[alpha.org.slug, workspace.pk])
    )
    shown = html.unescape(page.content.decode())
    assert said in shown and "install OpenSSH's server here" in shown
    assert "raydeck workspaces ssh-config" not in shown  # no commands that cannot work

    report(workspace, {"ssh": {"user": "ray"}})
    head = make_head(workspace)
    answer = api.post(url)
    assert answer.status == 200, answer.body
    assert answer.body["url"] == f"wss://{head.private_address}:{head.ray_ports['gateway']}/ssh"
    assert answer.body["user"] == "ray" and answer.body["token"]
    assert AuditEvent.objects.filter(verb="workspace.ssh", actor=alpha.member).count() == 1
    page = (
        client_for(alpha.member)
        .get(reverse("workspace_detail", args=[alpha.org.slug, workspace.pk]))
        .content.decode()
    )
    assert f"raydeck workspaces ssh {workspace.name} --project {alpha.project.slug}" in page

    SshKey.objects.filter(user=alpha.member).delete()
    no_key = api.post(url)
    assert "You have no SSH key in Raydeck" in no_key.body["error"]["message"]
