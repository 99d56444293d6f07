"""The SDK's image builds (mixed into raydeck.Client): start a build from a spec, read
it and its log, follow it step by step, cancel it.

    build = client.build_image({"name": "ml", "cloud": "3", "spec": {"requirements": ["humanize"]}})
    build = client.wait_for_build(build.id, on_step=print)   # raises BuildFailed
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import RaydeckError, WaitTimeout
from .models import Resource

FINAL_BUILD_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class ImageBuild(Resource):
    id: str = ""
    name: str = ""
    cloud: str | None = None
    image: str | None = None
    revision: int | None = None
    state: str = ""
    step: str = ""
    error: str = ""
    log_tail: str = ""
    log_location: str | None = None
    image_uri: str = ""
    python_executable: str = ""
    spec_hash: str | None = None
    reused_from: str | None = None
    created_at: str | None = None
    duration_seconds: float | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_BUILD_STATES


class BuildFailed(RaydeckError):
    """The build being waited for failed or was cancelled."""

    def __init__(self, message: str, *, build: ImageBuild) -> None:
        super().__init__(message)
        self.build = build


class ImageBuildMethods:
    """Client methods for /orgs/{org}/image-builds (Client gives the plumbing)."""

    request: Callable[..., Any]
    _org_path: Callable[..., str]
    iterate: Callable[..., Iterator[Any]]

    def build_image(
        self,
        body: Mapping[str, Any],
        *,
        org: str | None = None,
        idempotency_key: str | None = None,
    ) -> ImageBuild:
        """Start a build. `body`: name (the image), cloud (its id) and spec (base,
        requirements, debian_packages, env, post_build, or containerfile)."""
        answer = self.request(
            "POST",
            self._org_path(org, "image-builds"),
            body=dict(body),
            idempotency_key=idempotency_key or str(uuid.uuid4()),
        )
        return ImageBuild.from_api(answer)

    def get_build(self, build_id: str, *, org: str | None = None) -> ImageBuild:
        return ImageBuild.from_api(
            self.request("GET", self._org_path(org, "image-builds", build_id))
        )

    def list_builds(self, *, org: str | None = None) -> Iterator[ImageBuild]:
        return self.iterate(self._org_path(org, "image-builds"), ImageBuild)

    def build_log(self, build_id: str, *, org: str | None = None) -> str:
        answer = self.request("GET", self._org_path(org, "image-builds", build_id, "log"))
        return str(answer.get("log", ""))

    def cancel_build(self, build_id: str, *, org: str | None = None) -> ImageBuild:
        path = self._org_path(org, "image-builds", build_id, "cancel")
        return ImageBuild.from_api(self.request("POST", path))

    def wait_for_build(
        self,
        build_id: str,
        *,
        org: str | None = None,
        timeout: float = 1800,
        poll: float = 2.0,
        on_step: Callable[[ImageBuild], None] | None = None,
    ) -> ImageBuild:
        """Poll until the build is final; `on_step` hears each new step. A failed or
        cancelled build raises BuildFailed (with the step and the last lines)."""
        deadline = time.monotonic() + timeout
        step = None
        while True:
            build = self.get_build(build_id, org=org)
            if on_step is not None and build.step and build.step != step:
                on_step(build)
            step = build.step or step
            if build.is_final:
                if build.state != "succeeded":
                    raise BuildFailed(build.error or f"The build was {build.state}.", build=build)
                return build
            if time.monotonic() > deadline:
                raise WaitTimeout(f"Build {build_id} still {build.state} after {timeout:.0f} s.")
            time.sleep(poll)
