"""Image builds on an AWS cloud: CodeBuild in the customer's account, pushing to the
cloud's ECR repository, logging to CloudWatch Logs, followed by the same services and
task passes as every build.

Stand-in: moto (in-process `mock_aws()`) is the customer's account behind Raydeck's own
AWS driver, reached through the cloud's role. Where moto is not CodeBuild, the test
plays CodeBuild's part and says so:
- moto runs no build: the test pushes the image to ECR and writes the build's log to
  CloudWatch Logs as the build would;
- moto reports every build as succeeded: a failed build's answer is given by a
  `before-call` hook on BatchGetBuilds (as AWS would answer it);
- moto asks a location of a NO_SOURCE project, which AWS refuses: its check is
  relaxed to AWS's rule.
Every call the driver makes is recorded from its session's events, so the test checks
the requests themselves (source, role, destination) and that the generated IAM policy
allows exactly what the driver calls.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto.codebuild import codebuild_backends
from moto.codebuild import responses as moto_codebuild

from clouds.choices import CloudKind, CloudState
from clouds.models import Cloud
from clouds.policies import (
    AWS_BUILD_ECR_ACTIONS,
    AWS_BUILD_LOG_ACTIONS,
    AWS_BUILD_PROJECT_ACTIONS,
    aws_build_role_policy,
    aws_node_pull_policy,
    aws_permissions_policy,
)
from clouds.providers import aws as aws_driver
from clouds.providers import aws_builds, boot
from clouds.providers.base import TAG_CLOUD
from clouds.providers.builds import BuildRequest
from clouds.providers.kinds import AwsTraits
from clouds.providers.registry import provider_for
from clouds.services import DRIVER_FIELDS, cloud_firewall_remove
from clusters.choices import BuildState
from clusters.models import ContainerImage, ImageBuild
from clusters.services import builds
from tests.clouds.moto_account import moto_account
from tests.conftest import Tenant
from tests.factories import CloudFactory

pytestmark = pytest.mark.django_db

ACCOUNT = "123456789012"  # moto's account: the customer's
REGION = "eu-west-1"
SPEC = {
    "requirements": ["humanize==4.9.0"],
    "env": {"MODEL": "small"},
    "post_build": ["python -c 'import humanize'"],
}


class Calls:
    """Every AWS call the driver makes, with its parameters."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, dict[str, Any]]] = []

    def record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.signing_name
        self.made.append((service, model.name, dict(params)))

    def params(self, operation: str) -> list[dict[str, Any]]:
        return [p for _, name, p in self.made if name == operation]

    def actions(self) -> set[str]:
        return {f"{service}:{name}" for service, name, _ in self.made if service != "sts"}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Calls, Any]]:
    def relaxed_source(source: dict[str, Any]) -> None:
        if source["type"] != "NO_SOURCE":
            raise AssertionError("Raydeck's builds have no source but their buildspec")

    monkeypatch.setattr(moto_codebuild, "_validate_required_params_source", relaxed_source)
    with moto_account(monkeypatch, tmp_path, REGION):
        boto3.client("iam").create_role(RoleName="raydeck", AssumeRolePolicyDocument="{}")
        session = boto3.session.Session(region_name=REGION)
        recorder = Calls()
        session.events.register("provide-client-params", recorder.record)
        monkeypatch.setattr(aws_driver, "_DEFAULT_SESSION", session)
        yield recorder, session


def aws_cloud(tenant: Tenant) -> Cloud:
    """A verified AWS cloud of `tenant` in moto's account, with a log bucket."""
    return CloudFactory(
        organization=tenant.org,
        kind=CloudKind.AWS,
        region=REGION,
        state=CloudState.ACTIVE,
        aws_role_arn=f"arn:aws:iam::{ACCOUNT}:role/raydeck",
        aws_external_id=f"raydeck-ext-{tenant.org.slug}-0123456789abcdef",
        log_location=f"s3://{tenant.org.slug}-logs/raydeck",
    )


@pytest.fixture
def cloud(tenant_a: Tenant) -> Cloud:
    return aws_cloud(tenant_a)


def start(tenant: Tenant, cloud: Cloud, spec: dict[str, Any] = SPEC) -> ImageBuild:
    build = builds.image_build_start(
        organization=tenant.org, actor=tenant.admin, cloud=cloud, name="ml", spec=spec
    )
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    return build


def play_codebuild(build: ImageBuild, lines: list[str], *, push: bool = True) -> str:
    """What the CodeBuild build does in the account: write its log, push its tag."""
    tag, codebuild_id = aws_builds.split_id(build.external_id)
    logs = boto3.client("logs", region_name=REGION)
    group, stream = aws_builds.log_group(build.cloud.uuid), codebuild_id.split(":", 1)[1]
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)],
    )
    if not push:
        return ""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": f"sha256:{'a' * 64}"},
        }
    )
    pushed = boto3.client("ecr", region_name=REGION).put_image(
        repositoryName=aws_builds.resource_name(build.cloud.uuid),
        imageManifest=manifest,
        imageTag=tag,
    )
    return str(pushed["image"]["imageId"]["imageDigest"])


def test_a_build_runs_in_codebuild_in_the_customers_account_and_becomes_a_revision(
    tenant_a: Tenant, cloud: Cloud, calls: tuple[Calls, Any]
) -> None:
    recorder, _ = calls
    build = start(tenant_a, cloud)
    assert build.state == BuildState.BUILDING
    name = aws_builds.resource_name(cloud.uuid)

    # The project, in the customer's account, runs as the build role and logs to the
    # cloud's group; the repository is the cloud's, both tagged with it.
    project = boto3.client("codebuild", region_name=REGION).batch_get_projects(names=[name])
    project = project["projects"][0]
    short = str(cloud.uuid)[:8]
    assert project["serviceRole"] == f"arn:aws:iam::{ACCOUNT}:role/raydeck-builds-{short}"
    assert project["source"]["type"] == "NO_SOURCE"
    assert project["environment"]["privilegedMode"] is True
    assert project["logsConfig"]["cloudWatchLogs"]["groupName"] == f"/raydeck/builds/{cloud.uuid}"
    assert {"key": TAG_CLOUD, "value": str(cloud.uuid)} in project["tags"]
    ecr = boto3.client("ecr", region_name=REGION)
    repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    tags = ecr.list_tags_for_resource(resourceArn=repository["repositoryArn"])["tags"]
    assert {"Key": TAG_CLOUD, "Value": str(cloud.uuid)} in tags

    # The build: the Containerfile of the spec on Raydeck's Ray image, pushed to the
    # cloud's repository under a tag of its own.
    (started,) = recorder.params("StartBuild")
    variables = {v["name"]: v["value"] for v in started["environmentVariablesOverride"]}
    destination = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}:alpha-ml-{build.uuid.hex[:12]}"
    assert variables["RAYDECK_IMAGE"] == destination
    containerfile = base64.b64decode(variables["RAYDECK_CONTAINERFILE"]).decode()
    assert containerfile.splitlines()[:4] == [
        f"FROM rayproject/ray:{build.ray_version}-py311",
        "RUN python -m pip install --no-cache-dir humanize==4.9.0",
        'ENV MODEL="small"',
        "RUN python -c 'import humanize'",
    ]
    assert f"dev.raydeck.spec-hash={build.spec_hash}" in containerfile
    buildspec = json.loads(started["buildspecOverride"])
    assert buildspec["phases"]["build"]["commands"][-1] == 'docker push "$RAYDECK_IMAGE"'
    assert started["idempotencyToken"] == build.uuid.hex

    # A worker that dies after StartBuild, before the row records it, starts nothing
    # twice: the rerun finds the build by its destination (CodeBuild keeps a build's
    # variables; moto does not, so the test writes them as CodeBuild would).
    history = codebuild_backends[ACCOUNT][REGION].build_metadata_history[name]
    history[0]["environment"]["environmentVariables"] = started["environmentVariablesOverride"]
    request = BuildRequest(
        build_id=build.uuid,
        spec=build.spec,
        spec_hash=build.spec_hash,
        repository="alpha/ml",
        ray_version=build.ray_version,
    )
    assert provider_for(cloud).start_build(build=request) == build.external_id
    assert len(recorder.params("StartBuild")) == 1

    digest = play_codebuild(build, ["#7 [3/4] RUN python -m pip install humanize", "pushed"])
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    assert build.state == BuildState.SUCCEEDED, build.error
    repository_uri = destination.rsplit(":", 1)[0]
    assert build.image_uri == f"{repository_uri}@{digest}"
    assert build.revision == 1
    image = ContainerImage.objects.get(organization=tenant_a.org, name="ml")
    assert image.image_uri == build.image_uri
    assert "pushed" in build.log_tail
    assert (
        build.log_location
        == f"CloudWatch Logs /raydeck/builds/{cloud.uuid} " + (build.external_id.split(":")[-1])
    )
    assert "#7 [3/4] RUN python -m pip install humanize" in builds.build_log(build)

    # The same spec again is not built again: no second StartBuild.
    again = start(tenant_a, cloud, {**SPEC, "requirements": ["humanize==4.9.0", "humanize==4.9.0"]})
    assert again.state == BuildState.SUCCEEDED
    assert again.image_uri == build.image_uri
    assert len(recorder.params("StartBuild")) == 1

    # The cloud's role is allowed exactly what the driver called for the build, and
    # the deleted cloud takes its project, repository and log group with it.
    driver = {field: getattr(cloud, field) for field in DRIVER_FIELDS}
    cloud_firewall_remove(driver={**driver, "uuid": str(cloud.uuid)})
    assert not boto3.client("codebuild", region_name=REGION).list_projects()["projects"]
    assert not ecr.describe_repositories()["repositories"]
    logs = boto3.client("logs", region_name=REGION).describe_log_groups()["logGroups"]
    assert not logs
    allowed = {
        action
        for statement in aws_permissions_policy(cloud)["Statement"]
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    used = {a for a in recorder.actions() if a.split(":")[0] in ("codebuild", "ecr", "logs")}
    assert used - allowed == set()
    granted = {*AWS_BUILD_ECR_ACTIONS, *AWS_BUILD_PROJECT_ACTIONS, *AWS_BUILD_LOG_ACTIONS}
    # All but StopBuild (cancel's, below) and the tag and exists-already paths were used.
    assert granted - used <= {"codebuild:StopBuild", "ecr:TagResource", "logs:TagResource"}
    build_role = aws_build_role_policy(cloud)["Statement"]
    assert build_role[1]["Resource"] == f"arn:aws:ecr:*:*:repository/{name}"

    # Nodes of a cluster with the image log in to ECR with their own role (boot.py's
    # credential helper) and pull it by digest: the nodes' policy grants exactly that,
    # on this repository only.
    assert AwsTraits.registry_login(build.image_uri) is boot.ECR_LOGIN
    pull = [(s["Action"], s["Resource"]) for s in aws_node_pull_policy(cloud)["Statement"]]
    assert pull == [
        ("ecr:GetAuthorizationToken", "*"),  # account-wide: no narrower resource exists
        (["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], build_role[1]["Resource"]),
    ]
    assert fnmatch.fnmatch(repository["repositoryArn"], pull[1][1])


def _failed_answer(build_id: str) -> tuple[AWSResponse, dict[str, Any]]:
    failed = {
        "id": build_id,
        "buildStatus": "FAILED",
        "currentPhase": "COMPLETED",
        "phases": [
            {"phaseType": "PRE_BUILD", "phaseStatus": "SUCCEEDED"},
            {
                "phaseType": "BUILD",
                "phaseStatus": "FAILED",
                "contexts": [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": "exit status 1"}],
            },
        ],
    }
    parsed = {"builds": [failed], "ResponseMetadata": {"HTTPStatusCode": 200}}
    return AWSResponse("https://aws.invalid", 200, {}, None), parsed


def test_a_failed_build_names_its_step_and_offers_nothing(
    tenant_a: Tenant, cloud: Cloud, calls: tuple[Calls, Any]
) -> None:
    _, session = calls
    build = start(tenant_a, cloud, {"requirements": ["no-such-package-raydeck==9"]})
    codebuild_id = aws_builds.split_id(build.external_id)[1]
    play_codebuild(
        build,
        [
            "#6 [2/3] RUN python -m pip install --no-cache-dir no-such-package-raydeck==9",
            "#6 ERROR: No matching distribution found for no-such-package-raydeck==9",
        ],
        push=False,
    )
    session.events.register(
        "before-call.codebuild.BatchGetBuilds", lambda **_: _failed_answer(codebuild_id)
    )
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    assert build.state == BuildState.FAILED
    assert build.step == (
        "step 2/3: RUN python -m pip install --no-cache-dir no-such-package-raydeck==9"
    )
    assert "exit status 1" in build.error
    assert "No matching distribution" in build.log_tail
    assert not ContainerImage.objects.filter(organization=tenant_a.org, name="ml").exists()


def test_a_build_that_pushed_nothing_fails(
    tenant_a: Tenant, cloud: Cloud, calls: tuple[Calls, Any]
) -> None:
    build = start(tenant_a, cloud)
    builds.image_build_advance(build_id=build.pk)  # moto: succeeded, but no image pushed
    build.refresh_from_db()
    assert build.state == BuildState.FAILED
    assert "no image tagged" in build.error
    assert not ContainerImage.objects.filter(organization=tenant_a.org, name="ml").exists()


def test_cancel_stops_the_codebuild_build(
    tenant_a: Tenant, cloud: Cloud, calls: tuple[Calls, Any], django_capture_on_commit_callbacks
) -> None:
    recorder, _ = calls
    build = start(tenant_a, cloud)
    with django_capture_on_commit_callbacks(execute=False):
        builds.image_build_cancel(build=build, actor=tenant_a.admin)
    builds.image_build_stop(build_id=build.pk)
    builds.image_build_stop(build_id=build.pk)  # safe twice: the build is already final
    codebuild_id = aws_builds.split_id(build.external_id)[1]
    assert [p["id"] for p in recorder.params("StopBuild")] == [codebuild_id, codebuild_id]
    history = codebuild_backends[ACCOUNT][REGION].build_metadata_history
    (stopped,) = [b for b in history[aws_builds.resource_name(cloud.uuid)]]
    assert stopped["buildStatus"] == "STOPPED"
    builds.image_build_advance(build_id=build.pk)
    build.refresh_from_db()
    assert build.state == BuildState.CANCELLED
    assert not ContainerImage.objects.filter(organization=tenant_a.org, name="ml").exists()
