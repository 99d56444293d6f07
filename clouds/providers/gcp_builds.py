"""Image builds on GCP (mixed into GcpProvider): Cloud Build in the customer's project,
pushing to the cloud's Artifact Registry repository, its log kept in the cloud's bucket.

Per cloud, made at its first build and removed with the cloud: the Docker repository
`raydeck-<cloud uuid>` in the cloud's region, labelled with the cloud. A build runs as
the build service account `raydeck-builds-<short>` that the customer created with the
cloud's service account (clouds/policies.py), which may push to that repository and
write the log; Raydeck's service account may only act as it. Each build is tagged with
its id, so a rerun after a worker died finds it instead of starting a second one. The
result is the digest Cloud Build reports for the image it pushed.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import artifactregistry_v1
from google.cloud.devtools import cloudbuild_v1
from google.protobuf import duration_pb2

from .base import TAG_CLOUD, PermanentCloudError, PermanentErrorKind
from .builds import BuildRequest, BuildState, BuildStatus, containerfile_for
from .gcp_build_names import build_service_account, build_tag, log_folder, repository_id

BUILDER = "gcr.io/cloud-builders/docker"
BUILD_TIMEOUT_SECONDS = 3600
TAIL_LINES = 40
LOG_LIMIT = 5_000_000
_Status = cloudbuild_v1.Build.Status
_STATES = {
    _Status.SUCCESS: BuildState.SUCCEEDED,
    _Status.FAILURE: BuildState.FAILED,
    _Status.INTERNAL_ERROR: BuildState.FAILED,
    _Status.TIMEOUT: BuildState.FAILED,
    _Status.EXPIRED: BuildState.FAILED,
    _Status.CANCELLED: BuildState.CANCELLED,
}
STEP_NAMES = ("writing the Containerfile", "building the image")


@dataclass
class GcpBuilds:
    """What a GCP build needs: the clients (REST, the provider's credentials), the
    project, the cloud's region, its bucket for logs and a call wrapper mapping errors."""

    cloud_id: uuid.UUID
    project_id: str
    region: str
    log_location: str
    builds: cloudbuild_v1.CloudBuildClient
    registry: artifactregistry_v1.ArtifactRegistryClient
    call: Callable[..., Any]  # GcpProvider._call: (fn, action=, permission=, **kwargs)
    read_text: Callable[[str, str], str | None]  # (bucket, object) → text, None if missing

    @property
    def parent(self) -> str:
        return f"projects/{self.project_id}/locations/{self.region}"

    def _repository_name(self) -> str:
        return f"{self.parent}/repositories/{repository_id(self.cloud_id)}"

    def _logs(self) -> tuple[str, str]:
        """The bucket and folder build logs go to (under the cloud's log location)."""
        if not self.log_location.startswith("gs://"):
            raise PermanentCloudError(
                "Builds on GCP keep their logs in the cloud's bucket: set the cloud's log "
                "location (gs://bucket/prefix) first.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        return self.log_location[5:].partition("/")[0], log_folder(self.log_location, self.cloud_id)

    def ensure(self) -> None:
        repository = artifactregistry_v1.Repository(
            format_=artifactregistry_v1.Repository.Format.DOCKER,
            description="Raydeck image builds for one cloud",
            labels={TAG_CLOUD: str(self.cloud_id)},
        )
        try:
            self.call(
                self.registry.create_repository,
                action="create the build repository",
                permission="artifactregistry.repositories.create",
                request={
                    "parent": self.parent,
                    "repository_id": repository_id(self.cloud_id),
                    "repository": repository,
                },
            )
        except PermanentCloudError as exc:
            if not isinstance(exc.__cause__, gexc.Conflict):  # made already
                raise

    def remove(self) -> None:
        try:
            self.call(
                self.registry.delete_repository,
                action="delete the build repository",
                permission="artifactregistry.repositories.delete",
                name=self._repository_name(),
            )
        except PermanentCloudError as exc:
            if exc.kind != PermanentErrorKind.NOT_FOUND:
                raise

    def image(self, build: BuildRequest) -> str:
        name = re.sub(r"[^a-z0-9_./-]+", "-", build.repository.lower()).strip("-./")
        host = f"{self.region}-docker.pkg.dev"
        return (
            f"{host}/{self.project_id}/{repository_id(self.cloud_id)}/{name}"
            f":build-{build.build_id.hex[:12]}"
        )

    def _found(self, build_id: uuid.UUID) -> str | None:
        pager = self.call(
            self.builds.list_builds,
            action="list image builds",
            permission="cloudbuild.builds.list",
            # The regional form only: with project_id the client takes the global path.
            request={"parent": self.parent, "filter": f'tags="{build_tag(build_id)}"'},
        )
        for found in pager.builds:
            return str(found.id)
        return None

    def start(self, build: BuildRequest) -> str:
        """Start the build, or find the one already started for it; its Cloud Build id."""
        bucket, folder = self._logs()
        if found := self._found(build.build_id):
            return found
        ray_base = f"rayproject/ray:{build.ray_version}-py311"
        containerfile = containerfile_for(build.spec, ray_base=ray_base, spec_hash=build.spec_hash)
        image = self.image(build)
        encoded = base64.b64encode(containerfile.encode()).decode()
        request = cloudbuild_v1.Build(
            steps=[
                cloudbuild_v1.BuildStep(
                    id=STEP_NAMES[0],
                    name=BUILDER,
                    entrypoint="bash",
                    # $$ is a literal $ to Cloud Build's substitutions.
                    args=["-c", 'echo "$$RAYDECK_CONTAINERFILE" | base64 -d > Containerfile'],
                    env=[f"RAYDECK_CONTAINERFILE={encoded}"],
                ),
                cloudbuild_v1.BuildStep(
                    id=STEP_NAMES[1],
                    name=BUILDER,
                    args=["build", "--progress=plain", "-f", "Containerfile", "-t", image, "."],
                    env=["DOCKER_BUILDKIT=1"],
                ),
            ],
            images=[image],  # pushed after the steps; its digest is the result
            tags=["raydeck", build_tag(build.build_id)],
            service_account=(
                f"projects/{self.project_id}/serviceAccounts/"
                f"{build_service_account(self.project_id, self.cloud_id)}"
            ),
            logs_bucket=f"gs://{bucket}/{folder}",
            options=cloudbuild_v1.BuildOptions(
                logging=cloudbuild_v1.BuildOptions.LoggingMode.GCS_ONLY
            ),
            timeout=duration_pb2.Duration(seconds=BUILD_TIMEOUT_SECONDS),
        )
        operation = self.call(
            self.builds.create_build,
            action="start an image build",
            permission="cloudbuild.builds.create",
            request={"parent": self.parent, "build": request},
        )
        return str(operation.metadata.build.id)

    def _get(self, external_id: str) -> cloudbuild_v1.Build:
        if not re.fullmatch(r"[A-Za-z0-9-]+", external_id):
            raise PermanentCloudError(
                f"{external_id!r} is not a Cloud Build build.", kind=PermanentErrorKind.NOT_FOUND
            )
        return self.call(
            self.builds.get_build,
            action="read an image build",
            permission="cloudbuild.builds.get",
            request={"name": f"{self.parent}/builds/{external_id}"},
        )

    def log(self, external_id: str) -> str:
        bucket, folder = self._logs()
        text = self.read_text(bucket, f"{folder}/log-{external_id}.txt") or ""
        return text[-LOG_LIMIT:]

    def poll(self, external_id: str) -> BuildStatus:
        found = self._get(external_id)
        bucket, folder = self._logs()
        tail = "\n".join(self.log(external_id).splitlines()[-TAIL_LINES:])
        state = _STATES.get(found.status, BuildState.BUILDING)
        running = [s.id for s in found.steps if s.status == _Status.WORKING]
        failed = [s.id for s in found.steps if s.status in (_Status.FAILURE, _Status.TIMEOUT)]
        status = BuildStatus(
            state=state,
            step=(running or ["queued in Cloud Build"])[0],
            log_tail=tail,
            log_location=f"gs://{bucket}/{folder}/log-{external_id}.txt",
        )
        if state == BuildState.FAILED:
            step = (failed or ["the build"])[0]
            why = found.failure_info.detail or found.status_detail
            error = f"Cloud Build {found.status.name.lower()} at {step}"
            return BuildStatus(
                state=state,
                step=step,
                error=f"{error}: {why}" if why else f"{error}.",
                log_tail=status.log_tail,
                log_location=status.log_location,
            )
        if state == BuildState.SUCCEEDED:
            images = [i for i in found.results.images if i.digest]
            if not images:
                return BuildStatus(
                    state=BuildState.FAILED,
                    step="pushing the image",
                    error="Cloud Build finished but reported no pushed image.",
                    log_tail=status.log_tail,
                    log_location=status.log_location,
                )
            name = images[0].name.rsplit(":", 1)[0] if ":" in images[0].name else images[0].name
            return BuildStatus(
                state=state,
                step="pushed",
                image_uri=f"{name}@{images[0].digest}",
                log_tail=status.log_tail,
                log_location=status.log_location,
            )
        return status

    def cancel(self, external_id: str) -> None:
        try:
            self.call(
                self.builds.cancel_build,
                action="cancel an image build",
                permission="cloudbuild.builds.update",
                request={"name": f"{self.parent}/builds/{external_id}"},
            )
        except PermanentCloudError as exc:
            if not isinstance(exc.__cause__, gexc.BadRequest | gexc.NotFound):
                raise  # a build already final is left as it is
