"""The image a workspace gets with its image left blank: on AWS Raydeck's workspace image
(Ray's image with JupyterLab and OpenSSH's server), built once per organization and cloud
with the ordinary image builds; on the local cloud Raydeck's own Python, as before.

Stand-in: moto is the customer's AWS account behind Raydeck's real AWS driver, with the
test playing CodeBuild's part where moto runs no build (tests/clusters/
test_image_build_aws.py: it pushes the image to ECR, or answers BatchGetBuilds with a
failed build). PostgreSQL and Redis are real; no Ray runs (the reconciler is not run:
a started workspace's cluster is only queued).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clouds.choices import CloudKind, CloudState
from clouds.models import Cloud
from clouds.providers import aws_builds
from clusters.choices import BuildState
from clusters.models import Cluster, ContainerImage, ImageBuild
from clusters.services import builds
from clusters.services.defaults import ray_version
from tests.api.conftest import as_role, verified
from tests.clusters.test_image_build_aws import (  # noqa: F401 (calls: a fixture)
    ACCOUNT,
    REGION,
    Calls,
    _failed_answer,
    aws_cloud,
    calls,
    play_codebuild,
)
from tests.conftest import Tenant, client_for
from tests.factories import CloudFactory
from workloads.workspaces import services
from workloads.workspaces.choices import WorkspaceState
from workloads.workspaces.models import Workspace
from workloads.workspaces.tasks import sweep_workspaces

pytestmark = pytest.mark.django_db


def create(tenant: Tenant, cloud: Cloud, name: str) -> Workspace:
    return services.workspace_create(
        project=tenant.project, actor=tenant.member, name=name, cloud=cloud
    )


@pytest.fixture
def lab(tenant_a: Tenant, calls: tuple[Calls, Any]) -> tuple[Cloud, Workspace, ImageBuild]:  # noqa: F811
    """tenant_a's first workspace on a new AWS cloud, image blank, and its image's build
    after the task's first pass (StartBuild)."""
    cloud = aws_cloud(tenant_a)
    workspace = create(tenant_a, cloud, "lab")
    build = workspace.image_build
    assert workspace.image is None and build is not None
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    assert build.state == BuildState.BUILDING
    return cloud, workspace, build


def test_blank_image_on_aws_builds_the_workspace_image_once_and_a_start_waits_for_it(
    tenant_a: Tenant,
    tenant_b: Tenant,
    calls: tuple[Calls, Any],  # noqa: F811
    lab: tuple[Cloud, Workspace, ImageBuild],
) -> None:
    recorder, _ = calls
    cloud, first, build = lab
    assert build.name == f"Workspace (Ray {ray_version()}) on {cloud.name}"
    assert build.organization == tenant_a.org and build.created_by == tenant_a.member

    # What the head needs: jupyter-lab beside the image's Python, and sshd.
    (started,) = recorder.params("StartBuild")
    variables = {v["name"]: v["value"] for v in started["environmentVariablesOverride"]}
    containerfile = base64.b64decode(variables["RAYDECK_CONTAINERFILE"]).decode()
    assert containerfile.startswith(f"FROM rayproject/ray:{ray_version()}-py311\n")
    assert "apt-get install -y --no-install-recommends openssh-server" in containerfile
    assert "RUN python -m pip install --no-cache-dir jupyterlab" in containerfile

    # A second workspace waits for the same build: nothing is built twice.
    second = create(tenant_a, cloud, "lab-two")
    assert second.image is None and second.image_build == build
    assert ImageBuild.objects.filter(cloud=cloud).count() == 1

    # While it builds the page and the API say so, and Start is remembered, not made.
    slug = tenant_a.org.slug
    page = client_for(tenant_a.member).get(reverse("workspace_detail", args=[slug, first.pk]))
    text = page.content.decode()
    assert "is still building" in text and 'hx-trigger="every 2s"' in text
    assert "Start now and it starts once the image is built" in text
    pressed = client_for(tenant_a.member).post(
        reverse("workspace_start", args=[slug, second.pk]), follow=True
    )
    assert "Starts once its image" in pressed.content.decode()
    second.refresh_from_db()
    assert second.start_when_built_by == tenant_a.member and second.cluster is None
    assert reverse("image_build_detail", args=[slug, build.pk]) in text
    api = as_role(tenant_a, OrgRole.MEMBER)
    got = api.get(f"/orgs/{slug}/workspaces/{first.uuid}").body
    assert got["image"] is None and got["image_build"]["state"] == "building"
    started_by_api = api.post(f"/orgs/{slug}/workspaces/{first.uuid}/start")
    assert started_by_api.status == 202 and started_by_api.body["state"] == "stopped"
    assert "it starts once the image is built" in started_by_api.body["image_build"]["waiting"]
    first.refresh_from_db()
    assert first.cluster is None and first.start_when_built_by is not None
    assert "Starts once its image" in first.state_reason
    assert AuditEvent.objects.filter(verb="workspace.start", target_id=str(first.pk)).exists()
    sweep_workspaces()  # still building: nothing starts
    first.refresh_from_db()
    assert first.state == WorkspaceState.STOPPED and first.cluster is None

    # Built: the sweep starts both with the workspace image, which they keep.
    play_codebuild(build, ["pushed"])
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    assert build.state == BuildState.SUCCEEDED, build.error
    sweep_workspaces()
    sweep_workspaces()  # a second pass (a rerun after a killed worker) changes nothing
    first.refresh_from_db()
    assert first.state == WorkspaceState.STARTING and first.image == build.image
    assert first.start_when_built_by is None
    assert first.cluster.image == build.image and first.cluster.image_build == build
    assert first.cluster.image.image_uri.startswith(f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/")
    assert Cluster.objects.filter(project=tenant_a.project, name="workspace-lab").count() == 1
    second.refresh_from_db()
    assert second.state == WorkspaceState.STARTING and second.cluster.image == build.image

    # A later workspace gets the built image at once; still one build.
    third = create(tenant_a, cloud, "lab-three")
    assert third.image == build.image and third.image_build is None
    assert len(recorder.params("StartBuild")) == 1
    assert AuditEvent.objects.filter(verb="image.build", target_id=str(build.pk)).count() == 1

    # Another organization neither sees nor reuses it: it gets a build of its own, and
    # tenant_a's build and image are missing to it.
    other_cloud = aws_cloud(tenant_b)
    theirs = create(tenant_b, other_cloud, "lab")
    assert theirs.image is None and theirs.image_build != build
    assert theirs.image_build.organization == tenant_b.org
    assert build.image not in ContainerImage.objects.visible_to(tenant_b.member, tenant_b.org)
    outsider = client_for(tenant_b.member)
    assert outsider.get(reverse("image_build_detail", args=[slug, build.pk])).status_code == 404
    assert outsider.get(reverse("workspace_detail", args=[slug, first.pk])).status_code == 404


def test_a_failed_workspace_image_build_is_said_and_a_new_workspace_builds_again(
    tenant_a: Tenant,
    calls: tuple[Calls, Any],  # noqa: F811
    lab: tuple[Cloud, Workspace, ImageBuild],
) -> None:
    _, session = calls
    cloud, workspace, build = lab
    services.workspace_start(workspace=workspace, actor=tenant_a.member)  # waits for it
    codebuild_id = aws_builds.split_id(build.external_id)[1]
    play_codebuild(build, ["E: Unable to locate package openssh-server"], push=False)
    session.events.register(
        "before-call.codebuild.BatchGetBuilds", lambda **_: _failed_answer(codebuild_id)
    )
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    assert build.state == BuildState.FAILED
    sweep_workspaces()  # the start it waited for is refused, and the page says why
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STOPPED and workspace.cluster is None
    assert workspace.start_when_built_by is None
    assert "It did not start" in workspace.state_reason
    assert "exit status 1" in workspace.state_reason

    with pytest.raises(ValidationError) as refused:
        services.workspace_start(workspace=workspace, actor=tenant_a.member)
    assert "could not be built" in refused.value.messages[0]
    assert "exit status 1" in refused.value.messages[0]
    page = client_for(tenant_a.member).get(
        reverse("workspace_detail", args=[tenant_a.org.slug, workspace.pk])
    )
    text = page.content.decode()
    assert "could not be built" in text and "another image" in text
    assert 'hx-trigger="every 2s"' not in text  # final: nothing to poll for

    again = create(tenant_a, cloud, "lab-again")
    assert again.image_build is not None and again.image_build != build
    assert again.image_build.state == BuildState.QUEUED

    # Its settings saved with the image left blank take that new build (once: saving
    # them again changes nothing).
    url = reverse("workspace_settings", args=[tenant_a.org.slug, workspace.pk])
    blank = {"name": "lab", "compute_config": workspace.compute_config_id, "image": ""}
    for _ in range(2):
        saved = client_for(tenant_a.member).post(url, blank)
        assert saved.status_code == 302
    workspace.refresh_from_db()
    assert workspace.image is None and workspace.image_build == again.image_build
    [event] = AuditEvent.objects.filter(verb="workspace.update", target_id=str(workspace.pk))
    assert event.changes == {
        "image": [f"{build.name} (build failed)", f"{build.name} (build queued)"]
    }


def test_a_start_waiting_for_the_image_can_be_called_off_from_the_page_and_the_api(
    tenant_a: Tenant,
    calls: tuple[Calls, Any],  # noqa: F811
    lab: tuple[Cloud, Workspace, ImageBuild],
) -> None:
    """AWS through moto (CodeBuild's answers played by the test, as above)."""
    cloud, workspace, build = lab
    slug = tenant_a.org.slug
    member = client_for(tenant_a.member)
    member.post(reverse("workspace_start", args=[slug, workspace.pk]))
    page = member.get(reverse("workspace_detail", args=[slug, workspace.pk])).content.decode()
    assert "Cancel start" in page
    asked = member.get(reverse("workspace_stop", args=[slug, workspace.pk])).content.decode()
    assert f"Cancel the start of {workspace.name}?" in asked
    cancelled = member.post(reverse("workspace_stop", args=[slug, workspace.pk]), follow=True)
    assert "called off the start that waited for its image" in cancelled.content.decode()
    workspace.refresh_from_db()
    assert workspace.start_when_built_by is None and workspace.state == WorkspaceState.STOPPED
    entry = AuditEvent.objects.get(verb="workspace.start.cancel", target_id=str(workspace.pk))
    assert entry.actor == tenant_a.member
    assert entry.changes == {"waiting_for_image": [build.name, None]}

    # Built afterwards: nothing starts, since nobody still asks for it.
    play_codebuild(build, ["pushed"])
    builds.image_build_advance(build_id=build.pk)
    sweep_workspaces()
    workspace.refresh_from_db()
    assert workspace.state == WorkspaceState.STOPPED and workspace.cluster is None

    # The API's stop calls off a waiting start the same way.
    second = create(tenant_a, cloud, "lab-two")
    Workspace.objects.filter(pk=second.pk).update(image=None, image_build=build)
    build.state = BuildState.BUILDING
    build.save(update_fields=["state"])
    api = as_role(tenant_a, OrgRole.MEMBER)
    assert api.post(f"/orgs/{slug}/workspaces/{second.uuid}/start").status == 202
    second.refresh_from_db()
    assert second.start_when_built_by is not None
    stopped = api.post(f"/orgs/{slug}/workspaces/{second.uuid}/stop")
    assert stopped.status == 202, stopped.body
    second.refresh_from_db()
    assert second.start_when_built_by is None and second.state == WorkspaceState.STOPPED


def test_the_local_cloud_and_a_chosen_image_build_nothing(tenant_a: Tenant) -> None:
    alpha = verified(tenant_a)
    local = create(alpha, alpha.cloud, "local-lab")
    assert local.image is not None and local.image.name.endswith("(Raydeck's Python)")
    assert local.image_build is None
    cloud = aws_cloud(alpha)
    chosen = ContainerImage.objects.create(
        organization=alpha.org,
        name="mine",
        image_uri="registry.example.com/me/ray:1",
        ray_version=ray_version(),
    )
    # GCP's built-in image is Ray's too: a blank image is queued for the workspace image
    # (nothing reaches Google: the build is not advanced here).
    gcp = CloudFactory(
        organization=alpha.org,
        kind=CloudKind.GCP,
        state=CloudState.ACTIVE,
        log_location="gs://alpha-logs/raydeck",
    )
    on_gcp = create(alpha, gcp, "gcp-lab")
    assert on_gcp.image is None and on_gcp.image_build.state == BuildState.QUEUED
    assert on_gcp.image_build.spec["debian_packages"] == ["openssh-server"]
    explicit = services.workspace_create(
        project=alpha.project, actor=alpha.member, name="mine", cloud=cloud, image=chosen
    )
    assert explicit.image == chosen and explicit.image_build is None
    assert (
        not ImageBuild.objects.filter(cloud__in=[alpha.cloud, cloud])
        .exclude(pk=getattr(alpha.build, "pk", None))
        .exists()
    )
