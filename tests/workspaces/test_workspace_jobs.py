"""Create job from a workspace, without Ray: the refusals (nothing asked of the head,
nothing written), the snapshot's ask and answer through the heartbeat participant
(clusters/head_orders.py), a head that does not answer, the page and the API's roles and
isolation. The real path (the head packs the files, the job sees them and the packages)
is tests/workspaces/test_workspace_job_ray.py."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clusters import head_orders
from clusters.choices import ClusterState
from tests.api.conftest import as_role, assert_error
from tests.conftest import Tenant, client_for
from tests.workspaces.test_workspaces import alpha, cluster_becomes, report, started  # noqa: F401
from workloads.jobs.models import Job
from workloads.models import WorkingDir
from workloads.workspaces import live, services
from workloads.workspaces.models import Workspace

pytestmark = pytest.mark.django_db


def running(tenant: Tenant, capture) -> Workspace:
    workspace = started(tenant, capture)
    cluster_becomes(workspace, ClusterState.RUNNING)
    report(workspace, {"restored_at": timezone.now().timestamp()})
    services.workspace_sync(workspace_id=workspace.pk)
    workspace.refresh_from_db()
    return workspace


def nothing_written(tenant: Tenant) -> bool:
    """No job beyond the fixture's, no audit event of one."""
    return Job.objects.filter(project=tenant.project).count() <= 1 and not (
        AuditEvent.objects.filter(verb="workspace.job_create").exists()
    )


def test_api_refusals_say_what_to_do_and_write_nothing(alpha, tenant_b) -> None:  # noqa: F811
    api = as_role(alpha, OrgRole.MEMBER)
    url = f"/orgs/{alpha.org.slug}/workspaces/{alpha.workspace.uuid}/jobs"

    no_files = api.post(url, {"entrypoint": "python train.py"})
    assert_error(no_files, 422, "validation_error")
    assert "has no saved files yet" in no_files.body["error"]["details"]["workspace"][0]
    empty = api.post(url, {"entrypoint": "  "})
    assert "Give the command to run" in empty.body["error"]["details"]["entrypoint"][0]
    retries = api.post(url, {"entrypoint": "python train.py", "max_retries": 99})
    assert "from 0 to 10" in retries.body["error"]["details"]["max_retries"][0]
    Workspace.objects.filter(pk=alpha.workspace.pk).update(files_saved_at=timezone.now())
    saved = api.post(url, {"entrypoint": "python train.py"})
    assert "is stopped: start it" in saved.body["error"]["details"]["workspace"][0]

    other = f"/orgs/{alpha.org.slug}/workspaces/{tenant_b.workspace.uuid}/jobs"
    assert_error(api.post(other, {"entrypoint": "python train.py"}), 404, "not_found")
    viewer = as_role(alpha, OrgRole.VIEWER).post(url, {"entrypoint": "python train.py"})
    assert_error(viewer, 403, "permission_denied")
    assert nothing_written(alpha)


def test_the_snapshot_is_asked_in_the_heads_orders_and_only_its_answer_counts(
    alpha,  # noqa: F811
    django_capture_on_commit_callbacks,
) -> None:
    workspace = running(alpha, django_capture_on_commit_callbacks)
    cluster_id = workspace.cluster_id
    assert head_orders.collect_orders(cluster_id)["workspace"]["snapshot"] is None

    token = live.ask_snapshot(cluster_id)
    live.forget_orders(cluster_id)
    asked = head_orders.collect_orders(cluster_id)["workspace"]["snapshot"]
    assert asked["for"] == token and asked["to"].endswith("/workdirs")
    assert asked["max_bytes"] > 0

    answer = {"sha256": "ab" * 32, "size": 321, "packages": ["tiny @ file:///w/tiny.whl"]}
    report(workspace, {"snapshot": {"for": "an-old-ask", **answer}})
    report(workspace, {"snapshot": {"for": token, "size": "big"}})  # nonsense
    assert live.packed("an-old-ask") is None
    assert live.packed(token)["error"] == "its answer made no sense"

    token = live.ask_snapshot(cluster_id)
    report(workspace, {"snapshot": {"for": token, **answer}})
    assert live.packed(token)["packages"] == ["tiny @ file:///w/tiny.whl"]
    # Answered: the orders stop asking, so the head stops its quick heartbeats.
    assert head_orders.collect_orders(cluster_id)["workspace"]["snapshot"] is None


def test_a_head_that_does_not_pack_in_time_is_a_clear_refusal(
    alpha,  # noqa: F811
    django_capture_on_commit_callbacks,
    monkeypatch,
) -> None:
    workspace = running(alpha, django_capture_on_commit_callbacks)
    monkeypatch.setattr(services, "SNAPSHOT_WAIT_SECONDS", 0.3)
    with pytest.raises(ValidationError) as refused:
        services.workspace_job_create(
            workspace=workspace, actor=alpha.member, entrypoint="python train.py"
        )
    assert "did not pack its files within 0 s; try again" in str(refused.value)
    api = as_role(alpha, OrgRole.MEMBER)
    url = f"/orgs/{alpha.org.slug}/workspaces/{workspace.uuid}/jobs"
    late = api.post(url, {"entrypoint": "python train.py"})
    assert_error(late, 422, "validation_error")
    assert "try again in a moment" in late.body["error"]["details"]["workspace"][0]
    assert nothing_written(alpha)


def test_the_page_offers_the_button_and_shows_refusals_on_the_form(
    alpha,  # noqa: F811
    tenant_b,
    django_capture_on_commit_callbacks,
) -> None:
    client = client_for(alpha.member)
    slug = alpha.org.slug
    stopped = client.get(reverse("workspace_job", args=[slug, alpha.workspace.pk]))
    assert b"has no saved files yet: start it" in stopped.content
    workspace = running(alpha, django_capture_on_commit_callbacks)
    detail = client.get(reverse("workspace_detail", args=[slug, workspace.pk]))
    url = reverse("workspace_job", args=[slug, workspace.pk])
    assert url.encode() in detail.content and b"Create job" in detail.content
    form = client.get(url)
    assert form.status_code == 200 and b"Submit job" in form.content
    empty = client.post(url, {"entrypoint": "", "max_retries": 1})
    assert empty.status_code == 200 and b"This field is required" in empty.content
    too_many = client.post(url, {"entrypoint": "python x.py", "max_retries": 50})
    assert b"Give a number of retries from 0 to 10" in too_many.content
    other = reverse("workspace_job", args=[slug, tenant_b.workspace.pk])
    assert client.get(other).status_code == 404
    assert client_for(alpha.viewer).post(url, {"entrypoint": "python x.py"}).status_code == 403
    assert nothing_written(alpha)


def test_the_cli_lists_job_and_sync_but_not_the_tunnel_ssh_runs() -> None:
    from raydeck.cli import build_parser

    parser = build_parser()
    listed = parser._subparsers._group_actions[0].choices["workspaces"].format_help()
    assert " job " in listed and " sync " in listed and "tunnel" not in listed
    assert parser.parse_args(["workspaces", "tunnel", "lab"]).workspace == "lab"  # still there


@pytest.mark.parametrize("state", ["stopped", "starting", "stopping", "failed"])
def test_a_job_from_a_workspace_that_is_not_running_is_refused_and_nothing_is_made(
    alpha,  # noqa: F811
    django_capture_on_commit_callbacks,
    monkeypatch,
    state: str,
) -> None:
    """Only a running head packs the files: from any other state the API and the page
    say what to do, no head is asked, and no job, working dir or audit event appears."""
    workspace = running(alpha, django_capture_on_commit_callbacks)
    # It has worked before (saved files): only its state stands in the way.
    Workspace.objects.filter(pk=workspace.pk).update(state=state, files_saved_at=timezone.now())
    asked: list[int] = []
    monkeypatch.setattr(live, "ask_snapshot", lambda cluster_id: asked.append(cluster_id) or "t")
    api, client = as_role(alpha, OrgRole.MEMBER), client_for(alpha.member)  # a login is audited
    jobs, dirs = Job.objects.count(), WorkingDir.objects.count()
    events = set(AuditEvent.objects.values_list("pk", flat=True))
    advice = "create the job once it runs" if state == "starting" else "start it first"

    url = f"/orgs/{alpha.org.slug}/workspaces/{workspace.uuid}/jobs"
    answer = api.post(url, {"entrypoint": "python train.py"})
    assert_error(answer, 422, "validation_error")
    said = answer.body["error"]["details"]["workspace"][0]
    assert f"is {state}" in said and advice in said

    page = reverse("workspace_job", args=[alpha.org.slug, workspace.pk])
    for response in (client.get(page), client.post(page, {"entrypoint": "python train.py"})):
        assert response.status_code == 200
        assert said.encode() in response.content and b"Submit job" not in response.content

    assert asked == []
    assert (Job.objects.count(), WorkingDir.objects.count()) == (jobs, dirs)
    assert [e.verb for e in AuditEvent.objects.exclude(pk__in=events)] == []
