"""Image builds on AWS (mixed into AwsProvider): CodeBuild in the customer's account,
pushing to the cloud's ECR repository, logging to CloudWatch Logs.

Per cloud, made at its first build and removed with the cloud (like its security
group), each named after the cloud and tagged with it:
- the ECR repository `raydeck-<cloud uuid>` (tags immutable: each build pushes a tag of
  its own, so a result never moves);
- the log group `/raydeck/builds/<cloud uuid>` (kept BUILD_LOG_DAYS days);
- the CodeBuild project `raydeck-<cloud uuid>` (no source: the buildspec is given with
  each build), running as the build role `raydeck-builds-<short>` that the customer
  created with the cloud's role (clouds/policies.py), which may push to that repository
  and write that log group and nothing else.

A build is StartBuild with the Containerfile (builds.containerfile_for) and the image's
destination as variables; the control plane's role only passes the build role to
CodeBuild. The result is read back from ECR (the pushed tag's digest), never from the
build's own word, so nothing half-pushed is offered to clusters.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import uuid
from dataclasses import replace
from typing import Any

from .base import TAG_CLOUD, PermanentCloudError, PermanentErrorKind
from .builds import BuildRequest, BuildState, BuildStatus, containerfile_for

BUILD_LOG_DAYS = 365
BUILD_IMAGE = "aws/codebuild/standard:7.0"  # Docker, the AWS CLI, bash
BUILD_COMPUTE = "BUILD_GENERAL1_MEDIUM"
BUILD_TIMEOUT_MINUTES = 60
TAIL_LINES = 40
LOG_LIMIT = 5_000_000  # characters of a whole log read back

# The buildspec of every build (JSON is YAML): log in to the cloud's registry, write the
# Containerfile, build with BuildKit's plain progress (each step named), push.
BUILDSPEC = json.dumps(
    {
        "version": 0.2,
        "env": {"shell": "bash", "variables": {"DOCKER_BUILDKIT": "1"}},
        "phases": {
            "pre_build": {
                "commands": [
                    'aws ecr get-login-password --region "$AWS_REGION" | docker login '
                    '--username AWS --password-stdin "${RAYDECK_IMAGE%%/*}"',
                    'echo "$RAYDECK_CONTAINERFILE" | base64 -d > Containerfile',
                ]
            },
            "build": {
                "commands": [
                    'docker build --progress=plain -f Containerfile -t "$RAYDECK_IMAGE" .',
                    'docker push "$RAYDECK_IMAGE"',
                ]
            },
        },
    },
    indent=2,
)

# CodeBuild's phases, as the step a person reads.
PHASE_STEPS = {
    "SUBMITTED": "submitted",
    "QUEUED": "queued in CodeBuild",
    "PROVISIONING": "starting the build machine",
    "DOWNLOAD_SOURCE": "starting the build machine",
    "INSTALL": "starting the build machine",
    "PRE_BUILD": "logging in to the registry",
    "BUILD": "building and pushing the image",
    "POST_BUILD": "finishing",
    "UPLOAD_ARTIFACTS": "finishing",
    "FINALIZING": "finishing",
    "COMPLETED": "finishing",
}
_FINAL_STATES = {
    "SUCCEEDED": BuildState.SUCCEEDED,
    "FAILED": BuildState.FAILED,
    "FAULT": BuildState.FAILED,
    "TIMED_OUT": BuildState.FAILED,
    "STOPPED": BuildState.CANCELLED,
}
# BuildKit's plain progress names each Containerfile step: "#7 [3/5] RUN pip install x".
_DOCKER_STEP = re.compile(r"^#\d+ \[(\d+/\d+)\] (.+)$")


def resource_name(cloud_id: uuid.UUID) -> str:
    """The cloud's ECR repository and CodeBuild project."""
    return f"raydeck-{cloud_id}"


def log_group(cloud_id: uuid.UUID) -> str:
    return f"/raydeck/builds/{cloud_id}"


def build_role_name(cloud_id: uuid.UUID) -> str:
    return f"raydeck-builds-{str(cloud_id)[:8]}"


def build_role_arn(role_arn: str, cloud_id: uuid.UUID) -> str:
    """The build role, in the account of the cloud's role ("*" before there is one)."""
    parts = role_arn.split(":")
    account = parts[4] if len(parts) > 4 and parts[4] else "*"
    return f"arn:aws:iam::{account}:role/{build_role_name(cloud_id)}"


def image_tag(build: BuildRequest) -> str:
    """The build's own tag: its repository (`<organization>/<image>`) and its id."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", build.repository.lower()).strip("-.")[:100]
    return f"{name}-{build.build_id.hex[:12]}"


def _code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def repository_uri(role_arn: str, region: str, cloud_id: uuid.UUID) -> str:
    """The cloud's ECR repository, in the account of the cloud's role."""
    account = role_arn.split(":")[4]
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{resource_name(cloud_id)}"


def ensure(clients: Any, cloud_id: uuid.UUID, role_arn: str) -> None:
    """The cloud's repository, log group and project, made where missing.
    `clients(service)` gives a client with the cloud's role."""
    name = resource_name(cloud_id)
    ecr = clients("ecr")
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            tags=[{"Key": TAG_CLOUD, "Value": str(cloud_id)}],
        )
    logs = clients("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=log_group(cloud_id), tags={TAG_CLOUD: str(cloud_id)})
    logs.put_retention_policy(logGroupName=log_group(cloud_id), retentionInDays=BUILD_LOG_DAYS)
    codebuild = clients("codebuild")
    if not codebuild.batch_get_projects(names=[name])["projects"]:
        # Another worker may make it meanwhile.
        with contextlib.suppress(codebuild.exceptions.ResourceAlreadyExistsException):
            codebuild.create_project(
                name=name,
                description="Raydeck image builds for one cloud",
                source={"type": "NO_SOURCE", "buildspec": BUILDSPEC},
                artifacts={"type": "NO_ARTIFACTS"},
                environment={
                    "type": "LINUX_CONTAINER",
                    "image": BUILD_IMAGE,
                    "computeType": BUILD_COMPUTE,
                    "privilegedMode": True,  # Docker builds need it
                },
                serviceRole=build_role_arn(role_arn, cloud_id),
                timeoutInMinutes=BUILD_TIMEOUT_MINUTES,
                logsConfig={
                    "cloudWatchLogs": {"status": "ENABLED", "groupName": log_group(cloud_id)}
                },
                tags=[{"key": TAG_CLOUD, "value": str(cloud_id)}],
            )


def remove(clients: Any, cloud_id: uuid.UUID) -> None:
    """Delete the cloud's project, repository (with its images) and log group."""
    name = resource_name(cloud_id)
    codebuild = clients("codebuild")
    if codebuild.batch_get_projects(names=[name])["projects"]:
        codebuild.delete_project(name=name)
    ecr = clients("ecr")
    with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
        ecr.delete_repository(repositoryName=name, force=True)
    logs = clients("logs")
    with contextlib.suppress(logs.exceptions.ResourceNotFoundException):
        logs.delete_log_group(logGroupName=log_group(cloud_id))


def _started_already(codebuild: Any, project: str, destination: str) -> str | None:
    """The project's recent build with this destination: started by a worker that died
    before the control plane recorded it (CodeBuild's idempotency token lasts only
    minutes, the sweep may come later)."""
    ids = codebuild.list_builds_for_project(projectName=project)["ids"][:100]
    for found in codebuild.batch_get_builds(ids=ids)["builds"] if ids else []:
        variables = found.get("environment", {}).get("environmentVariables", [])
        if {"name": "RAYDECK_IMAGE", "value": destination, "type": "PLAINTEXT"} in variables:
            return str(found["id"])
    return None


def start(clients: Any, cloud_id: uuid.UUID, repository_uri: str, build: BuildRequest) -> str:
    """Start the build, or find the one started for it; its external id is
    `<tag> <CodeBuild build id>` (the tag finds the result in ECR)."""
    tag = image_tag(build)
    destination = f"{repository_uri}:{tag}"
    codebuild = clients("codebuild")
    if found := _started_already(codebuild, resource_name(cloud_id), destination):
        return f"{tag} {found}"
    ray_base = f"rayproject/ray:{build.ray_version}-py311"
    containerfile = containerfile_for(build.spec, ray_base=ray_base, spec_hash=build.spec_hash)
    started = codebuild.start_build(
        projectName=resource_name(cloud_id),
        idempotencyToken=build.build_id.hex,
        buildspecOverride=BUILDSPEC,
        environmentVariablesOverride=[
            {"name": "RAYDECK_IMAGE", "value": destination, "type": "PLAINTEXT"},
            {
                "name": "RAYDECK_CONTAINERFILE",
                "value": base64.b64encode(containerfile.encode()).decode(),
                "type": "PLAINTEXT",
            },
        ],
    )["build"]
    return f"{tag} {started['id']}"


def split_id(external_id: str) -> tuple[str, str]:
    tag, _, build_id = external_id.partition(" ")
    if not build_id or ":" not in build_id:
        raise PermanentCloudError(
            f"{external_id!r} is not a CodeBuild build of this cloud.",
            kind=PermanentErrorKind.NOT_FOUND,
        )
    return tag, build_id


def _stream(cloud_id: uuid.UUID, build: dict[str, Any]) -> tuple[str, str]:
    """Where CodeBuild writes the build's log: the group of the project, a stream named
    after the build's id (what it reports, or its rule when it reports none)."""
    logs = build.get("logs") or {}
    group = logs.get("groupName") or log_group(cloud_id)
    stream = logs.get("streamName") or build["id"].split(":", 1)[1]
    return str(group), str(stream)


def _lines(clients: Any, group: str, stream: str, *, tail: bool) -> list[str]:
    logs = clients("logs")
    lines: list[str] = []
    token = None
    size = 0
    while True:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream}
        if tail:
            kwargs.update(startFromHead=False, limit=TAIL_LINES)
        else:
            kwargs["startFromHead"] = True
        if token:
            kwargs["nextToken"] = token
        try:
            page = logs.get_log_events(**kwargs)
        except logs.exceptions.ResourceNotFoundException:
            return lines  # the build has written nothing yet
        for event in page["events"]:
            lines.append(str(event["message"]).rstrip("\n"))
            size += len(lines[-1])
        if tail or not page["events"] or page.get("nextForwardToken") == token:
            return lines
        if size > LOG_LIMIT:
            return [*lines, f"… (the rest is in CloudWatch Logs: {group} {stream})"]
        token = page.get("nextForwardToken")


def _failed_step(phases: list[dict[str, Any]], tail: list[str]) -> tuple[str, str]:
    """The step that failed (the Containerfile's step when the log names one) and why."""
    failed = [p for p in phases if p.get("phaseStatus") not in (None, "SUCCEEDED")]
    phase = failed[0] if failed else (phases[-1] if phases else {})
    step = PHASE_STEPS.get(str(phase.get("phaseType", "")), "the build")
    why = "; ".join(
        str(c.get("message", "")) for c in phase.get("contexts", []) if c.get("message")
    )
    if phase.get("phaseType") == "BUILD":
        found = [m for line in tail if (m := _DOCKER_STEP.match(line))]
        if found:
            step = f"step {found[-1].group(1)}: {found[-1].group(2)}"
    return step[:300], why


def poll(clients: Any, cloud_id: uuid.UUID, repository_uri: str, external_id: str) -> BuildStatus:
    tag, build_id = split_id(external_id)
    found = clients("codebuild").batch_get_builds(ids=[build_id])["builds"]
    if not found:
        raise PermanentCloudError(
            "CodeBuild no longer knows this build.", kind=PermanentErrorKind.NOT_FOUND
        )
    build = found[0]
    group, stream = _stream(cloud_id, build)
    tail = _lines(clients, group, stream, tail=True)
    state = _FINAL_STATES.get(str(build.get("buildStatus")), BuildState.BUILDING)
    status = BuildStatus(
        state=state,
        step=PHASE_STEPS.get(str(build.get("currentPhase", "")), "building"),
        log_tail="\n".join(tail),
        log_location=f"CloudWatch Logs {group} {stream}",
    )
    if state == BuildState.BUILDING:
        return status
    if state == BuildState.FAILED:
        step, why = _failed_step(list(build.get("phases") or []), tail)
        error = f"CodeBuild {str(build.get('buildStatus')).lower()} at {step}"
        return replace(status, step=step, error=f"{error}: {why}" if why else f"{error}.")
    if state == BuildState.CANCELLED:
        return replace(status, step="cancelled")
    ecr = clients("ecr")
    try:
        images = ecr.describe_images(
            repositoryName=resource_name(cloud_id), imageIds=[{"imageTag": tag}]
        )["imageDetails"]
    except ecr.exceptions.ImageNotFoundException:
        images = []
    if not images:
        return replace(
            status,
            state=BuildState.FAILED,
            step="pushing the image",
            error=f"CodeBuild finished but no image tagged {tag} is in {repository_uri}.",
        )
    return replace(status, step="pushed", image_uri=f"{repository_uri}@{images[0]['imageDigest']}")


def cancel(clients: Any, external_id: str) -> None:
    codebuild = clients("codebuild")
    # A build already final is left as it is.
    with contextlib.suppress(codebuild.exceptions.InvalidInputException):
        codebuild.stop_build(id=split_id(external_id)[1])


def log(clients: Any, cloud_id: uuid.UUID, external_id: str) -> str:
    _, build_id = split_id(external_id)
    found = clients("codebuild").batch_get_builds(ids=[build_id])["builds"]
    group, stream = _stream(cloud_id, found[0] if found else {"id": build_id})
    return "\n".join(_lines(clients, group, stream, tail=False))
