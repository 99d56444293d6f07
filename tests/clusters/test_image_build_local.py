"""Image builds on the local cloud, all real: Buildah (chroot isolation, no daemon)
builds the image, Debian's docker-registry on a loopback port stores it, pip installs
the requirements (from the package index this machine reaches) into the
content-addressed environment, and real Ray runs a cluster from it. The build task's
pass (image_build_advance) is called from the test, the way the task calls it; the
Celery worker killed mid-build is in test_faults_image_build below.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clouds.providers.local_registry import stop_registry
from clouds.providers.registry import local_root
from clusters.choices import BuildState, ClusterState
from clusters.models import ContainerImage, ImageBuild
from clusters.services import builds, lifecycle
from tests.clusters.ray_http import ray_dashboard
from tests.clusters.test_end_to_end import drive
from tests.conftest import Tenant, activate, make_tenant

NEEDS_BUILDAH = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("docker-registry")),
    reason="needs Debian's buildah and docker-registry (.ci/run installs them)",
)
pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True), NEEDS_BUILDAH]
BUILD_SECONDS = 240
PACKAGE = "humanize"  # not in Raydeck's own environment: only the built one has it


def run_build(build: ImageBuild, timeout: float = BUILD_SECONDS) -> ImageBuild:
    """Pass after pass, as the task does, until the build is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = builds.image_build_advance(build_id=build.pk)
        build.refresh_from_db()
        if build.is_final:
            return build
        time.sleep(min(outcome.requeue_in or 1, 1))
    raise AssertionError(f"build stuck in {build.state} at {build.step}\n{build.log_tail}")


def manifest_digest(image_uri: str) -> str | None:
    """What the registry answers for the image's reference by digest."""
    address, _, rest = image_uri.partition("/")
    repository, _, digest = rest.partition("@")
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{digest}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return response.headers.get("Docker-Content-Digest")


@pytest.fixture
def tenant(live_server, settings, tmp_path) -> Iterator[Tenant]:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "cloud"
    tenant = make_tenant("build")
    activate(tenant.cloud)
    try:
        yield tenant
    finally:
        stop_registry(local_root(tenant.cloud))


def start(tenant: Tenant, spec: dict, name: str = "ml") -> ImageBuild:
    return builds.image_build_start(
        organization=tenant.org, actor=tenant.admin, cloud=tenant.cloud, name=name, spec=spec
    )


def test_a_built_image_is_in_the_registry_and_its_cluster_imports_the_package(
    tenant: Tenant,
) -> None:
    assert importlib.util.find_spec(PACKAGE) is None, "the test needs a package Raydeck lacks"
    spec = {
        "requirements": [PACKAGE],
        "env": {"GREETING": "hello"},
        "post_build": [f'python -c "import {PACKAGE}" && echo "$GREETING" > /etc/built'],
    }
    build = run_build(start(tenant, spec))
    assert build.state == BuildState.SUCCEEDED, f"{build.error}\n{build.log_tail}"
    assert build.revision == 1 and build.duration_seconds
    # The image is in the registry, by digest.
    assert "@sha256:" in build.image_uri
    assert manifest_digest(build.image_uri) == build.image_uri.rpartition("@")[2]
    kept = Path(build.log_location).read_text()  # the log stays in the cloud's log folder
    for step in ("base image", "environment: pip install", "image", "post-build: ", "push"):
        assert f"==> {step}" in kept
    image = ContainerImage.objects.get(organization=tenant.org, name="ml")
    assert image.build_id == build.pk and image.cloud_id == tenant.cloud.pk
    assert image.python_executable == build.python_executable

    # The same spec again is not built again: its result is reused at once.
    builds_folder = local_root(tenant.cloud) / "builds"
    before = sorted(builds_folder.iterdir())
    again = start(tenant, dict(spec))
    again.refresh_from_db()
    assert again.state == BuildState.SUCCEEDED and again.reused_from_id == build.pk
    assert again.image_uri == build.image_uri
    assert sorted(builds_folder.iterdir()) == before

    # A cluster started from the image imports the package on its head.
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.member, name="built", cloud=tenant.cloud, image=image
    )
    assert cluster.image_build_id == again.pk
    deadline = time.monotonic() + 150
    try:
        cluster = drive(cluster, {ClusterState.RUNNING, ClusterState.FAILED}, deadline)
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        code = f"import {PACKAGE}, sys; print('IMPORTED', {PACKAGE}.__file__)"
        job = ray_dashboard(cluster, "/api/jobs/", {"entrypoint": f'python -c "{code}"'})
        job_id = job["submission_id"]
        status = ""
        while time.monotonic() < deadline:
            status = ray_dashboard(cluster, f"/api/jobs/{job_id}")["status"]
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(1)
        logs = ray_dashboard(cluster, f"/api/jobs/{job_id}/logs")["logs"]
        assert status == "SUCCEEDED", logs
        assert f"IMPORTED {Path(build.python_executable).parent.parent}" in logs
    finally:
        lifecycle.cluster_terminate(cluster=cluster, actor=None)
        drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 60)


def test_a_bad_requirement_or_command_fails_at_its_step_and_offers_nothing(
    tenant: Tenant,
) -> None:
    bad = run_build(start(tenant, {"requirements": ["raydeck-no-such-package-q7x==1.0"]}))
    assert bad.state == BuildState.FAILED
    assert bad.step == "environment: pip install"
    assert bad.error.startswith("environment: pip install failed")
    assert "raydeck-no-such-package-q7x" in bad.log_tail
    failing = run_build(start(tenant, {"post_build": ["echo about to fail", "exit 3"]}, "other"))
    assert failing.state == BuildState.FAILED, failing.log_tail
    assert failing.step == "post-build: exit 3"
    assert "about to fail" in failing.log_tail
    assert (
        not ContainerImage.objects.filter(organization=tenant.org)
        .exclude(pk=tenant.image.pk)
        .exists()
    )


def test_cancel_while_building_stops_the_build(tenant: Tenant) -> None:
    build = start(tenant, {"post_build": ["sleep 120"]})
    deadline = time.monotonic() + BUILD_SECONDS
    while not build.step.startswith("post-build") and time.monotonic() < deadline:
        builds.image_build_advance(build_id=build.pk)
        build.refresh_from_db()
        time.sleep(1)
    assert build.step == "post-build: sleep 120", build.log_tail
    folder = local_root(tenant.cloud) / "builds" / build.external_id
    pid = json.loads((folder / "process.json").read_text())["pid"]
    builds.image_build_cancel(build=build, actor=tenant.admin)
    builds.image_build_stop(build_id=build.pk)  # what the stop_image_build task it sent does
    build.refresh_from_db()
    assert build.state == BuildState.CANCELLED
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert json.loads((folder / "status.json").read_text())["state"] == "cancelled"
    assert "!! cancelled at post-build: sleep 120" in (folder / "build.log").read_text()
    assert not ContainerImage.objects.filter(organization=tenant.org, name="ml").exists()
