"""The build part of the provider interface: what crosses it, as plain values.

A build runs in the cloud's own data plane (Buildah on the local cloud, CodeBuild on
AWS: aws_builds.py, Cloud Build on GCP: gcp_builds.py); the control plane only starts
it, polls it and cancels it.
`start_build` is idempotent on `BuildRequest.build_id`: asking twice starts one build.
"""

from __future__ import annotations

import enum
import json
import shlex
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


class BuildState(enum.StrEnum):
    BUILDING = "building"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class BuildRequest:
    """One build: the normalized spec (clusters/image_specs.py), its hash, and the
    repository the image goes to (`<organization>/<image name>`)."""

    build_id: uuid.UUID
    spec: dict[str, Any]
    spec_hash: str
    repository: str
    ray_version: str = ""  # what the built-in base (BASE_RAY) means for this build


@dataclass(frozen=True)
class BuildStatus:
    """What the cloud says of a build. A final state carries its result: the image by
    digest and (local cloud) the Python environment its nodes run; or the failed step."""

    state: BuildState
    step: str = ""
    error: str = ""
    log_tail: str = ""
    log_location: str = ""
    image_uri: str = ""
    python_executable: str = ""
    steps: list[str] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.state != BuildState.BUILDING


class ImageBuilder(Protocol):
    """What a driver that builds images implements (local, AWS, GCP)."""

    def start_build(self, *, build: BuildRequest) -> str:
        """Start the build (or find the one already started for `build.build_id`); the
        cloud's id for it."""
        ...

    def poll_build(self, *, external_id: str) -> BuildStatus:
        """Where the build is, with the last lines of its log."""
        ...

    def cancel_build(self, *, external_id: str) -> None:
        """Stop the build; a build already final is left as it is."""
        ...

    def build_log(self, *, external_id: str) -> str:
        """The whole log so far."""
        ...


BASE_RAY = "ray"  # the built-in base: Raydeck's Ray image for the kind of cloud


class BuildTraits:
    """What a kind of cloud can build, without credentials (mixed into its traits)."""

    builds_images = False

    @classmethod
    def build_spec_errors(cls, spec: dict[str, Any], *, cloud_name: str) -> dict[str, str]:
        """Why a cloud of this kind cannot build the normalized `spec`, by field."""
        return {"cloud": f"{cloud_name} cannot build images; build on a local, AWS or GCP cloud."}


class ContainerBuildTraits(BuildTraits):
    """Clouds that build a real container image from a Containerfile (AWS, GCP): every spec
    the normal form allows, on any base the build can pull."""

    builds_images = True

    @classmethod
    def build_spec_errors(cls, spec: dict[str, Any], *, cloud_name: str) -> dict[str, str]:
        return {}


def containerfile_for(spec: dict[str, Any], *, ray_base: str, spec_hash: str) -> str:
    """The Containerfile a container builder runs for a normalized spec (one rule for
    every cloud that builds one): the spec's own Containerfile, or one made from its
    lists, in order: Debian packages, pip requirements, variables, post-build commands.
    `ray_base` is what the built-in base means (Raydeck's Ray image for this Ray)."""
    if spec.get("containerfile"):
        first, _, rest = spec["containerfile"].partition("\n")
        keyword, _, base = first.strip().partition(" ")
        if base.split()[0] == BASE_RAY:
            first = f"{keyword} {ray_base}{base[len(BASE_RAY) :]}"
        text = f"{first}\n{rest}"
    else:
        base = ray_base if spec.get("base", BASE_RAY) == BASE_RAY else spec["base"]
        lines = [f"FROM {base}"]
        if packages := spec.get("debian_packages"):
            # Ray's images run as a user with sudo; other bases as root.
            lines.append(
                "RUN S=$(command -v sudo >/dev/null && echo sudo) && $S apt-get update && "
                "$S DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                f"{' '.join(packages)} && $S rm -rf /var/lib/apt/lists/*"
            )
        if requirements := spec.get("requirements"):
            quoted = " ".join(shlex.quote(r) for r in requirements)
            lines.append(f"RUN python -m pip install --no-cache-dir {quoted}")
        lines += [f"ENV {name}={json.dumps(value)}" for name, value in spec.get("env", {}).items()]
        lines += [f"RUN {command}" for command in spec.get("post_build", [])]
        text = "\n".join(lines) + "\n"
    return text + f"LABEL dev.raydeck.spec-hash={spec_hash}\n"


class LocalBuildTraits(BuildTraits):
    """The local cloud builds with Buildah from its own base (no registry of base images
    is reachable), and its nodes run the spec's Python environment."""

    builds_images = True

    @classmethod
    def build_spec_errors(cls, spec: dict[str, Any], *, cloud_name: str) -> dict[str, str]:
        errors = {}
        if spec.get("base") != BASE_RAY:
            errors["base"] = (
                f"{cloud_name} builds from its built-in base only ({BASE_RAY}): it cannot "
                "pull other images. Use base: ray."
            )
        if spec.get("debian_packages"):
            errors["debian_packages"] = (
                f"{cloud_name}'s base has no Debian package manager; its nodes run on this "
                "machine, so install the packages here, or build on AWS or GCP."
            )
        if spec.get("containerfile"):
            errors["containerfile"] = (
                f"{cloud_name}'s nodes run a Python environment made from requirements: give "
                "requirements and post-build commands instead of a Containerfile."
            )
        return errors
