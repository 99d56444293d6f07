"""raydeck.Client against a live server: configuration, pages, errors as exceptions,
rate limits waited out, and waiting for a cluster that fails."""

from __future__ import annotations

import threading
import time

import pytest
import raydeck
from raydeck import client as client_module

from accounts import services
from clusters.choices import ClusterState, DesiredState
from clusters.models import Cluster
from clusters.services.events import record_event
from tests.conftest import Tenant, make_tenant
from tests.factories import ClusterFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alpha() -> Tenant:
    return make_tenant("alpha")


@pytest.fixture
def sdk(live_server, alpha: Tenant) -> raydeck.Client:
    _, secret = services.token_create(
        organization=alpha.org, actor=alpha.member, name="sdk", days=30, read_only=False
    )
    return raydeck.Client(live_server.url, secret, org="alpha")


def test_client_from_the_environment(live_server, alpha, sdk, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("RAYDECK_URL", live_server.url)
    monkeypatch.setenv("RAYDECK_TOKEN", sdk.transport.token or "")
    monkeypatch.setenv("RAYDECK_ORG", "alpha")
    client = raydeck.Client()
    me = client.me()
    assert me.user is not None and me.user.email == alpha.member.email
    assert [o.slug for o in client.list_orgs()] == ["alpha"]


def test_lists_follow_the_cursor_page_after_page(sdk, alpha, monkeypatch) -> None:
    for i in range(4):
        ClusterFactory(project=alpha.project, cloud=alpha.cloud, name=f"more-{i}")
    first = sdk.page("/orgs/alpha/clusters", raydeck.Cluster, limit=2)
    assert len(first.items) == 2 and first.next_cursor
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)  # so 5 clusters take 3 pages
    names = [c.name for c in sdk.list_clusters()]
    assert sorted(names) == sorted(["alpha-cluster", *(f"more-{i}" for i in range(4))])
    assert len(list(sdk.list_clusters(max_items=3))) == 3


def test_errors_are_typed(live_server, sdk, alpha) -> None:
    bravo = make_tenant("bravo")
    with pytest.raises(raydeck.NotFound) as found:
        sdk.get_cluster(str(bravo.cluster.uuid))
    assert (found.value.status, found.value.code) == (404, "not_found")
    with pytest.raises(raydeck.NotFound):
        sdk.get_project("alpha-project", org="bravo")
    with pytest.raises(raydeck.ValidationFailed) as invalid:
        next(sdk.list_clusters(state="sleeping"))
    assert "state" in invalid.value.details
    bad = raydeck.Client(live_server.url, "rdk_" + "x" * 43, org="alpha")
    with pytest.raises(raydeck.Unauthenticated):
        bad.me()
    # Every error is a RaydeckError, so one `except` catches them all.
    assert issubclass(raydeck.Unauthenticated, raydeck.RaydeckError)


def test_rate_limits_are_waited_out_or_reported(sdk, settings) -> None:
    settings.RAYDECK_API_RATE_LIMIT = 3
    settings.RAYDECK_API_RATE_WINDOW = 2
    # Eight calls at three per two seconds: the client sleeps through each 429.
    for _ in range(8):
        assert sdk.get_org().slug == "alpha"
    impatient = raydeck.Client(sdk.url, sdk.transport.token, org="alpha", retries=0)
    with pytest.raises(raydeck.RateLimited) as limited:
        for _ in range(5):
            impatient.get_org()
    assert limited.value.status == 429
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 2


def test_waiting_for_a_cluster_that_fails(sdk, alpha) -> None:
    cluster = ClusterFactory(
        project=alpha.project,
        cloud=alpha.cloud,
        name="doomed",
        state=ClusterState.STARTING,
        desired_state=DesiredState.RUNNING,
    )
    record_event(cluster, "queued", "Someone created the cluster.")
    seen: list[str] = []
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            for event in sdk.wait_until_running(str(cluster.uuid), poll_interval=0.2, timeout=60):
                seen.append(event.step)
        except raydeck.RaydeckError as exc:
            failure.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.1)
    record_event(cluster, "launch failed", "No capacity.")
    Cluster.objects.filter(pk=cluster.pk).update(
        state=ClusterState.FAILED, state_reason="No capacity."
    )
    waiter.join(timeout=30)
    assert seen == ["queued", "launch failed"]
    assert len(failure) == 1 and isinstance(failure[0], raydeck.ClusterFailed)
    assert "failed, not running: No capacity." in str(failure[0])
