"""Image builds on a GCP cloud: Cloud Build in the customer's project, pushing to the
cloud's Artifact Registry repository, its log in the cloud's bucket, followed by the
same services and task passes as every build.

Stand-in: the fake REST endpoint (tests/clouds/gcp_fake.py) behind the real
google-cloud-build and google-cloud-artifact-registry clients (REST transport) and the
driver's Cloud Storage reads, with anonymous credentials instead of Workload Identity
Federation (which would call Google). The fake runs no build: the test plays Cloud
Build's part (`finish_build`, the log object) and says so.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from google.cloud import artifactregistry_v1

from clouds.choices import CloudKind, CloudState
from clouds.models import Cloud
from clouds.policies import GCP_BUILD_PERMISSIONS, gcp_commands
from clouds.providers import boot
from clouds.providers.base import CloudProvider
from clouds.providers.gcp_build_names import repository_id
from clouds.providers.kinds import GcpTraits
from clouds.services import DRIVER_FIELDS, cloud_firewall_remove
from clusters.choices import BuildState
from clusters.models import ContainerImage, ImageBuild
from clusters.services import builds
from tests.clouds.gcp_fake import FakeComputeServer, fake_provider
from tests.conftest import Tenant
from tests.factories import CloudFactory

pytestmark = pytest.mark.django_db

PROJECT = "raydeck-test"
BUCKET = "acme-raydeck"
SPEC = {"requirements": ["humanize==4.9.0"], "post_build": ["python -c 'import humanize'"]}
DIGEST = "sha256:" + "b" * 64


@pytest.fixture
def gcp(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeComputeServer]:
    with FakeComputeServer() as server:
        server.fake.buckets.add(BUCKET)

        def provider_for(cloud: Cloud) -> CloudProvider:
            return fake_provider(server, cloud)

        monkeypatch.setattr(builds, "provider_for", provider_for)
        monkeypatch.setattr("clouds.providers.registry.provider_for", provider_for)
        yield server


@pytest.fixture
def cloud(tenant_a: Tenant) -> Cloud:
    return CloudFactory(
        organization=tenant_a.org,
        kind=CloudKind.GCP,
        region="us-central1",
        zones=["us-central1-a"],
        gcp_project_id=PROJECT,
        log_location=f"gs://{BUCKET}/logs",
        state=CloudState.ACTIVE,
    )


def start(tenant: Tenant, cloud: Cloud, spec: dict = SPEC) -> ImageBuild:
    build = builds.image_build_start(
        organization=tenant.org, actor=tenant.admin, cloud=cloud, name="ml", spec=spec
    )
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    return build


def advance(build: ImageBuild) -> ImageBuild:
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    return build


def write_log(server: FakeComputeServer, cloud: Cloud, build: ImageBuild, text: str) -> None:
    """What Cloud Build does with a GCS_ONLY log: an object in the logs bucket."""
    name = f"logs/raydeck-builds/{cloud.uuid}/log-{build.external_id}.txt"
    server.fake.texts[(BUCKET, name)] = text


def test_a_build_runs_in_cloud_build_in_the_customers_project_and_becomes_a_revision(
    tenant_a: Tenant, cloud: Cloud, gcp: FakeComputeServer
) -> None:
    build = start(tenant_a, cloud)
    assert build.state == BuildState.BUILDING, build.error
    repository = f"projects/{PROJECT}/locations/us-central1/repositories/raydeck-{cloud.uuid}"
    # The client sends enums as numbers.
    docker = artifactregistry_v1.Repository.Format.DOCKER
    assert gcp.fake.repositories[repository]["format"] == docker
    assert gcp.fake.repositories[repository]["labels"] == {"raydeck-cloud": str(cloud.uuid)}

    (sent,) = [c.body for c in gcp.fake.calls("POST", r"/locations/us-central1/builds$")]
    short = str(cloud.uuid)[:8]
    assert sent["serviceAccount"] == (
        f"projects/{PROJECT}/serviceAccounts/raydeck-builds-{short}@{PROJECT}.iam.gserviceaccount.com"
    )
    image = (
        f"us-central1-docker.pkg.dev/{PROJECT}/raydeck-{cloud.uuid}/alpha/ml"
        f":build-{build.uuid.hex[:12]}"
    )
    assert sent["images"] == [image]
    assert sent["logsBucket"] == f"gs://{BUCKET}/logs/raydeck-builds/{cloud.uuid}"
    encoded = sent["steps"][0]["env"][0].removeprefix("RAYDECK_CONTAINERFILE=")
    containerfile = base64.b64decode(encoded).decode()
    assert containerfile.splitlines()[:3] == [
        f"FROM rayproject/ray:{build.ray_version}-py311",
        "RUN python -m pip install --no-cache-dir humanize==4.9.0",
        "RUN python -c 'import humanize'",
    ]
    assert sent["steps"][1]["args"][-3:] == ["-t", image, "."]

    # A rerun of the start (a worker that died before recording it) finds the build.
    assert (
        builds._builder(cloud).start_build(
            build=builds.BuildRequest(
                build_id=build.uuid,
                spec=build.spec,
                spec_hash=build.spec_hash,
                repository="alpha/ml",
                ray_version=build.ray_version,
            )
        )
        == build.external_id
    )
    assert len(gcp.fake.calls("POST", r"/builds$")) == 1

    write_log(gcp, cloud, build, "Step #1 - building the image: #7 [2/3] RUN pip\nPUSH\nDONE\n")
    gcp.fake.finish_build(build.external_id, "SUCCESS", digest=DIGEST)
    build = advance(build)
    assert build.state == BuildState.SUCCEEDED, build.error
    assert build.image_uri == f"{image.rsplit(':', 1)[0]}@{DIGEST}"
    assert build.revision == 1
    assert ContainerImage.objects.get(organization=tenant_a.org, name="ml").image_uri == (
        build.image_uri
    )
    assert "DONE" in build.log_tail
    assert build.log_location.startswith(f"gs://{BUCKET}/logs/raydeck-builds/")
    assert "PUSH" in builds.build_log(build)

    again = start(tenant_a, cloud, {**SPEC, "requirements": ["humanize==4.9.0"]})
    assert again.state == BuildState.SUCCEEDED
    assert len(gcp.fake.calls("POST", r"/builds$")) == 1

    # The deleted cloud takes its repository with it.
    driver = {field: getattr(cloud, field) for field in DRIVER_FIELDS}
    cloud_firewall_remove(driver={**driver, "uuid": str(cloud.uuid)})
    assert repository not in gcp.fake.repositories


def test_a_failed_build_names_its_step_and_offers_nothing(
    tenant_a: Tenant, cloud: Cloud, gcp: FakeComputeServer
) -> None:
    build = start(tenant_a, cloud, {"requirements": ["no-such-package-raydeck==9"]})
    write_log(gcp, cloud, build, "ERROR: No matching distribution found\n")
    gcp.fake.finish_build(
        build.external_id, "FAILURE", failed_step=1, detail='Build step 1 "docker" failed'
    )
    build = advance(build)
    assert build.state == BuildState.FAILED
    assert build.step == "building the image"
    assert 'Build step 1 "docker" failed' in build.error
    assert "No matching distribution" in build.log_tail
    assert not ContainerImage.objects.filter(organization=tenant_a.org, name="ml").exists()


def test_cancel_stops_the_cloud_build(
    tenant_a: Tenant, cloud: Cloud, gcp: FakeComputeServer, django_capture_on_commit_callbacks
) -> None:
    build = start(tenant_a, cloud)
    with django_capture_on_commit_callbacks(execute=False):
        builds.image_build_cancel(build=build, actor=tenant_a.admin)
    builds.image_build_stop(build_id=build.pk)
    builds.image_build_stop(build_id=build.pk)  # already final in Cloud Build: left alone
    assert gcp.fake.cloud_builds[build.external_id]["status"] == "CANCELLED"
    assert len(gcp.fake.calls("POST", r":cancel$")) == 2
    assert advance(build).state == BuildState.CANCELLED


def test_a_cloud_without_a_bucket_fails_the_build_saying_what_to_set(
    tenant_a: Tenant, cloud: Cloud, gcp: FakeComputeServer
) -> None:
    Cloud.objects.filter(pk=cloud.pk).update(log_location="")
    cloud.refresh_from_db()
    build = start(tenant_a, cloud)
    assert build.state == BuildState.FAILED
    assert "set the cloud's log location" in build.error


def test_the_gcp_commands_grant_exactly_the_build_permissions(cloud: Cloud) -> None:
    cloud.node_identity = f"nodes@{PROJECT}.iam.gserviceaccount.com"
    commands = gcp_commands(cloud)
    assert ",".join(GCP_BUILD_PERMISSIONS) in commands
    short = str(cloud.uuid)[:8]
    assert f"raydeck-builds-{short}@{PROJECT}.iam.gserviceaccount.com" in commands
    # The nodes' service account gets exactly one grant: reading the cloud's repository,
    # where the builds push (its images' host is the one their boot script logs in to).
    joined = commands.replace(" \\\n", " ").splitlines()
    granted = [c for c in joined if f"--member serviceAccount:{cloud.node_identity} " in c]
    repository = f"projects/{PROJECT}/locations/us-central1/repositories/"
    repository += repository_id(cloud.uuid)
    assert len(granted) == 1, granted
    assert "--role roles/artifactregistry.reader " in granted[0]
    assert f'resource.name.startsWith("{repository}")' in granted[0]
    built = f"us-central1-docker.pkg.dev/{PROJECT}/{repository_id(cloud.uuid)}/ml@{DIGEST}"
    assert GcpTraits.registry_login(built) is boot.ARTIFACT_REGISTRY_LOGIN
    assert GcpTraits.registry_login(f"docker.io/rayproject/ray@{DIGEST}") is None
