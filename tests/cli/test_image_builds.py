"""`raydeck images build -f image.yaml --wait` against a live server, with a real build
on the local cloud (Buildah, the registry on loopback): each step is printed as it
starts, and a failing command ends the wait with its step, the last lines and exit 1.
This test stands in for the Celery worker: a thread makes the task's passes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from accounts import services
from clouds.providers.local_registry import stop_registry
from clouds.providers.registry import local_root
from clusters.models import ImageBuild
from clusters.services import builds
from tests.clusters.test_image_build_local import NEEDS_BUILDAH
from tests.conftest import activate, make_tenant

from .conftest import Cli

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True), NEEDS_BUILDAH]


def worker(stop: threading.Event) -> None:
    """What advance_image_build does, pass after pass, for every build not final."""
    try:
        while not stop.is_set():
            for build in ImageBuild.objects.filter(state__in=["queued", "building"]):
                builds.image_build_advance(build_id=build.pk)
            time.sleep(1)
    finally:
        connection.close()


def test_build_wait_prints_each_step_and_the_failed_one(cli: Cli, settings, tmp_path: Path) -> None:
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "cloud"
    tenant = make_tenant("cli")
    activate(tenant.cloud)
    _, secret = services.token_create(
        organization=tenant.org, actor=tenant.admin, name="cli", days=1, read_only=False
    )
    image_yaml = tmp_path / "image.yaml"
    image_yaml.write_text(
        "name: ml\ncloud: local\nbase: ray\npost_build:\n  - echo checking\n  - exit 3\n"
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker, args=(stop,), daemon=True)
    thread.start()
    try:
        result = cli(
            "images",
            "build",
            "-f",
            str(image_yaml),
            "--wait",
            "--timeout",
            "110",
            RAYDECK_TOKEN=secret,
            RAYDECK_ORG="cli",
        )
    finally:
        stop.set()
        thread.join(10)
        stop_registry(local_root(tenant.cloud))
    assert result.returncode == 1, (result.stdout, result.stderr)
    for step in ("==> base image", "==> post-build: exit 3"):
        assert step in result.stderr, result.stderr
    assert "failed at post-build: exit 3" in result.stderr
    assert "checking" in result.stderr  # the last lines of the log
    assert "Traceback" not in result.stderr
    assert "state" in result.stdout and "failed" in result.stdout
