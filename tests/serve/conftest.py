"""Helpers for Services tests on the local cloud with real Ray Serve behind real HAProxy:
a driver that plays Celery (the reconciler of every cluster of the service and the
orchestrator's passes), and a client that sends steady traffic through the endpoint."""

from __future__ import annotations

import collections
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import close_old_connections

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.choices import ClusterState
from clusters.models import Cluster
from clusters.services import reconcile
from tests.conftest import Tenant, make_tenant
from workloads.serve import live
from workloads.serve.choices import ServiceState
from workloads.serve.models import Service, ServiceVersion
from workloads.serve.services import deploy, rollout

APPS_DIR = Path(__file__).parent / "apps"

needs_haproxy = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="the local cloud's router is HAProxy"
)


def local_tenant(live_server: Any, settings: Any, tmp_path: Path, slug: str) -> Tenant:
    """A tenant whose local cloud is usable, its nodes reporting to the live server."""
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant(slug)
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    return tenant


def echo_config(version: str, *, fail: bool = False) -> dict[str, Any]:
    """The test app (apps/echo_app.py), found by Ray's workers through PYTHONPATH."""
    return {
        "import_path": "echo_app:build",
        "args": {"version": version, "fail": fail},
        "runtime_env": {"env_vars": {"PYTHONPATH": str(APPS_DIR)}},
    }


class Driver(threading.Thread):
    """Runs what Celery would: every live cluster of the service is reconciled and the
    service advanced, about once a second, until stopped."""

    def __init__(self, service: Service) -> None:
        super().__init__(daemon=True, name="driver")
        self.service_id = service.pk
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.step()
                self.stopping.wait(1.0)
        finally:
            close_old_connections()

    def step(self) -> None:
        try:
            ids = Cluster.objects.filter(service_version__service_id=self.service_id).exclude(
                state__in=["terminated", "failed"]
            )
            for cluster_id in ids.values_list("pk", flat=True):
                reconcile.cluster_reconcile(cluster_id=cluster_id)
            rollout.service_advance(service_id=self.service_id)
        except Exception as exc:  # keep driving; the test reports what went wrong
            self.errors.append(exc)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)


@dataclass(eq=False)  # a thread: hashed by identity
class Traffic(threading.Thread):
    """Steady GETs with the query token; every outcome is counted by status and version."""

    url: str
    token: str
    per_second: float = 20.0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    log: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(daemon=True, name="traffic")

    def run(self) -> None:
        interval = 1.0 / self.per_second
        while not self.stopping.is_set():
            started = time.monotonic()
            outcome = query(self.url, self.token)
            self.outcomes[outcome] += 1
            self.log.append((time.time(), outcome))
            if not outcome.startswith("v"):
                self.failures.append(outcome)
            self.stopping.wait(max(0.0, interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def note_traffic(version: ServiceVersion) -> None:
    """Two reports of the version's head, 5 s apart, as its heartbeats would bring them:
    50 requests (5 of them errors) between them, all under 10 ms."""
    from django.core.cache import cache

    live.note_report(
        version.cluster_id,
        {"hash": version.config_hash, "error": "", "applications": {}},
        {"default": {"requests": 0, "errors": 0, "buckets": {"10": 0, "+Inf": 0}}},
    )
    key = live.SAMPLES_KEY.format(version.cluster_id)
    samples = cache.get(key)
    samples.append(
        (
            samples[-1][0] + 5,
            {"default": {"requests": 50, "errors": 5, "buckets": {"10": 50, "+Inf": 50}}},
        )
    )
    cache.set(key, samples)


def query(url: str, token: str | None) -> str:
    """The version that answered, or what went wrong ("HTTP 500", "error: ...")."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return str(json.load(response)["version"])
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError, KeyError) as exc:
        return f"error: {exc}"


def wait_for(predicate: Any, deadline: float, what: str, service: Service) -> None:
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    events = "\n".join(f"{e.step}: {e.message}" for e in service.events.all())
    versions = "\n".join(
        f"v{v.number} {v.state} w={v.weight} {v.state_reason} {v.applications} "
        f"cluster: {(v.cluster.state, v.cluster.state_reason) if v.cluster else None}"
        for v in service.versions.select_related("cluster")
    )
    raise AssertionError(f"timed out waiting for {what}\n{events}\n{versions}")


def wait_serving(service: Service, token: str, seconds: float, what: str) -> str:
    """Wait for the service to run and its first version to answer through the endpoint
    with the token; the URL to query."""
    wait_for(
        lambda: Service.objects.get(pk=service.pk).state == ServiceState.RUNNING,
        time.monotonic() + seconds,
        what,
        service,
    )
    service.refresh_from_db()
    url = service.endpoint_url + "/"
    wait_for(lambda: query(url, token) == "v1", time.monotonic() + 30, "v1 to answer", service)
    return url


def terminate_and_wait(service: Service, actor: Any) -> None:
    """Terminate the service and wait until it and every cluster of its versions ended."""
    deploy.service_terminate(service=service, actor=actor)
    wait_for(
        lambda: Service.objects.get(pk=service.pk).state == ServiceState.TERMINATED,
        time.monotonic() + 60,
        "the service to terminate",
        service,
    )
    wait_for(
        lambda: (
            not service.versions.exclude(cluster__state=ClusterState.TERMINATED)
            .exclude(cluster=None)
            .exists()
        ),
        time.monotonic() + 90,
        "every cluster to terminate",
        service,
    )
