"""`kill -9` of the Celery worker in the middle of an image build, with real Celery
(worker and beat) against a Redis of the test's own, real Buildah and the registry on
loopback (the harness of test_faults.py). The build runs in the local cloud's data
plane (a process of its own), so it goes on without the worker; the beat sweep sends
its poll again to a new worker, and the build reaches a final state: never stuck in
`building`."""

from __future__ import annotations

import time

import pytest

from clouds.providers.local_registry import stop_registry
from clouds.providers.registry import local_root
from clusters.choices import BuildState
from clusters.models import ImageBuild
from clusters.services import builds
from tests.clusters.test_faults import Faults, faults  # noqa: F401 - the fixture
from tests.clusters.test_image_build_local import NEEDS_BUILDAH

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True), NEEDS_BUILDAH]
DEADLINE_SECONDS = 240


def wait_for(build: ImageBuild, done, what: str, deadline: float) -> ImageBuild:  # type: ignore[no-untyped-def]
    while time.monotonic() < deadline:
        build.refresh_from_db()
        if done(build):
            return build
        time.sleep(0.5)
    raise AssertionError(f"no {what}: {build.state} at {build.step}\n{build.log_tail}")


def test_killed_worker_mid_build_still_ends_in_a_final_state(faults: Faults) -> None:  # noqa: F811
    faults.env.update(RAYDECK_BUILD_SWEEP_SECONDS="2", RAYDECK_BUILD_STALE_SECONDS="4")
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        faults.start_beat()
        worker = faults.start_worker("builds-1")
        tenant = faults.tenant
        build = builds.image_build_start(
            organization=tenant.org,
            actor=tenant.admin,
            cloud=tenant.cloud,
            name="ml",
            spec={"post_build": ["sleep 6"]},
        )
        build = wait_for(build, lambda b: b.state == BuildState.BUILDING, "building", deadline)
        worker.kill_group()  # kill -9 of the whole worker, mid-build
        worker.popen.wait(5)
        faults.say(f"worker killed at step {build.step or 'start'}")
        faults.start_worker("builds-2")
        build = wait_for(build, lambda b: b.is_final, "final state", deadline)
        assert build.state == BuildState.SUCCEEDED, f"{build.error}\n{build.log_tail}"
        assert "@sha256:" in build.image_uri
        # Built once: the new worker polled the build the dead one started.
        assert len(list((local_root(tenant.cloud) / "builds").iterdir())) == 1
    finally:
        stop_registry(local_root(faults.cloud))
