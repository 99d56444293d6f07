"""A shared cluster's job queue without Ray: the head is handed only as many jobs as
the queue runs at once, in FIFO or priority order; each waiting job's place shows on
the cluster page, the job page and the API; a queued or running job keeps the cluster
from idling; only writers change the queue, and another organization's is a 404.
(Real Ray runs a queue in test_jobs_ray.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clusters import head_orders
from clusters.choices import ClusterState, NodeRole, NodeState
from clusters.live import note_head_report
from clusters.models import Cluster
from clusters.services.idle import cluster_idle_check, cluster_idleness
from tests.api.conftest import as_role, assert_error
from tests.conftest import Tenant, client_for
from tests.factories import ClusterFactory, NodeFactory
from workloads.jobs import selectors
from workloads.jobs.choices import JobState, QueueOrder
from workloads.jobs.models import Job
from workloads.jobs.services import job_queue_update, job_reconcile, job_submit

pytestmark = pytest.mark.django_db

NO_RAY_ACTIVITY = {"running_jobs": 0, "drivers": 0, "pending_demand": 0}


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


def shared_cluster(tenant: Tenant, name: str = "shared") -> Cluster:
    cluster = ClusterFactory(
        project=tenant.project,
        cloud=tenant.cloud,
        name=name,
        state=ClusterState.RUNNING,
        started_at=timezone.now() - timedelta(hours=2),
    )
    NodeFactory(cluster=cluster, role=NodeRole.HEAD, state=NodeState.READY)
    return cluster


def queue_job(tenant: Tenant, cluster: Cluster, name: str, priority: int = 0) -> Job:
    assert tenant.cloud is not None
    job = job_submit(
        project=tenant.project,
        actor=tenant.member,
        name=name,
        entrypoint=f"python {name}.py",
        cloud=tenant.cloud,
        target_cluster=cluster,
        priority=priority,
    )
    job_reconcile(job_id=job.pk)
    return job


def handed_to_head(cluster: Cluster) -> list[str]:
    """The names of the jobs in the head's orders (submissions), in order."""
    orders = head_orders.collect_orders(cluster.pk).get("jobs", {})
    ids = [order["metadata"]["raydeck_job"] for order in orders.get("submit", [])]
    names = dict(Job.objects.filter(uuid__in=ids).values_list("uuid", "name"))
    return sorted(names[uuid] for uuid in names)


def end_running(cluster: Cluster, name: str) -> None:
    attempt = Job.objects.get(name=name).attempts.get()
    head_orders.deliver_reports(
        cluster.pk,
        {"jobs": {"submissions": {attempt.submission_id: {"status": "SUCCEEDED", "exit_code": 0}}}},
    )


def reconcile_all() -> None:
    for job in Job.objects.active():
        job_reconcile(job_id=job.pk)


def test_the_head_gets_only_as_many_jobs_as_the_queue_runs_at_once(alpha: Tenant) -> None:
    cluster = shared_cluster(alpha)
    job_queue_update(cluster=cluster, actor=alpha.member, max_concurrency=2)
    jobs = [queue_job(alpha, cluster, f"job{n}") for n in range(1, 5)]

    assert handed_to_head(cluster) == ["job1", "job2"]
    assert [selectors.queue_position(j) for j in jobs] == [None, None, 1, 2]
    assert Job.objects.get(name="job3").state == JobState.PENDING

    end_running(cluster, "job1")
    reconcile_all()
    assert handed_to_head(cluster) == ["job2", "job3"]
    assert selectors.queue_position(Job.objects.get(name="job4")) == 1
    assert Job.objects.get(name="job1").state == JobState.SUCCEEDED


def test_heads_of_queue_clusters_and_of_clusters_with_jobs_heartbeat_promptly(
    alpha: Tenant, django_capture_on_commit_callbacks
) -> None:
    def interval(cluster: Cluster) -> float:
        return head_orders.heartbeat_seconds(cluster.pk, head_orders.collect_orders(cluster.pk))

    usual, prompt = settings.RAYDECK_HEARTBEAT_SECONDS, settings.RAYDECK_PROMPT_HEARTBEAT_SECONDS
    assert prompt < usual
    plain, queue = shared_cluster(alpha, "plain"), shared_cluster(alpha, "queue")
    assert interval(plain) == interval(queue) == usual  # (and remembered in the cache)
    with django_capture_on_commit_callbacks(execute=True):
        job_queue_update(cluster=queue, actor=alpha.member, max_concurrency=3)
    # A job may arrive at any moment: it should start within about a second.
    assert interval(queue) == prompt
    # A job on a cluster without a queue: prompt while it is on its way and runs.
    job = queue_job(alpha, plain, "one-off")
    assert interval(plain) == prompt
    with django_capture_on_commit_callbacks(execute=True):
        end_running(plain, "one-off")
        reconcile_all()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert interval(plain) == usual


def test_a_priority_queue_runs_the_highest_priority_first_then_the_oldest(alpha: Tenant) -> None:
    cluster = shared_cluster(alpha)
    job_queue_update(cluster=cluster, actor=alpha.member, order=QueueOrder.PRIORITY)
    queue_job(alpha, cluster, "first")  # takes the one slot at once
    low = queue_job(alpha, cluster, "low", priority=1)
    high = queue_job(alpha, cluster, "high", priority=50)
    high_later = queue_job(alpha, cluster, "high-later", priority=50)
    assert [selectors.queue_position(j) for j in (high, high_later, low)] == [1, 2, 3]

    end_running(cluster, "first")
    for job in (low, high_later, high):  # whoever asks first, the order decides
        job_reconcile(job_id=job.pk)
    assert handed_to_head(cluster) == ["high"]


def test_a_fifo_queue_runs_in_submission_order_whatever_the_priority(alpha: Tenant) -> None:
    cluster = shared_cluster(alpha)
    queue_job(alpha, cluster, "first")
    queue_job(alpha, cluster, "second", priority=-5)
    queue_job(alpha, cluster, "third", priority=99)
    end_running(cluster, "first")
    reconcile_all()
    assert handed_to_head(cluster) == ["second"]


def test_a_stopped_waiting_job_leaves_the_queue_without_running(alpha: Tenant) -> None:
    from workloads.jobs.services import job_stop

    cluster = shared_cluster(alpha)
    queue_job(alpha, cluster, "first")
    waiting = queue_job(alpha, cluster, "waiting")
    behind = queue_job(alpha, cluster, "behind")
    job_stop(job=waiting, actor=alpha.member)
    job_reconcile(job_id=waiting.pk)
    waiting.refresh_from_db()
    assert (waiting.state, waiting.attempts.count()) == (JobState.STOPPED, 0)
    assert selectors.queue_position(behind) == 1


def test_queued_and_running_jobs_keep_the_cluster_from_idling(alpha: Tenant) -> None:
    cluster = shared_cluster(alpha)
    Cluster.objects.filter(pk=cluster.pk).update(last_active_at=timezone.now() - timedelta(hours=2))
    cluster.refresh_from_db()
    now = timezone.now()
    # Ray on the head says nothing runs (the attempt is not submitted yet): still busy.
    note_head_report(cluster.pk, {"pending_demand": []}, NO_RAY_ACTIVITY, now.timestamp())
    queue_job(alpha, cluster, "running")
    queue_job(alpha, cluster, "waiting")
    idleness = cluster_idleness(cluster, now)
    assert not idleness.idle
    assert "1 Raydeck job running" in idleness.reasons
    assert "1 job waiting in its queue" in idleness.reasons
    assert cluster_idle_check(cluster_id=cluster.pk, now=now) is False
    cluster.refresh_from_db()
    assert cluster.idle_warned_at is None

    for name in ("running", "waiting"):
        end_running(cluster, name)
        reconcile_all()
    assert cluster_idleness(cluster, now).idle  # nothing of Raydeck's left on it


def test_queue_settings_are_checked_audited_and_only_for_writers(alpha: Tenant) -> None:
    cluster = shared_cluster(alpha)
    with pytest.raises(ValidationError) as refused:
        job_queue_update(cluster=cluster, actor=alpha.member, max_concurrency=0)
    assert "max_concurrency" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        job_queue_update(cluster=cluster, actor=alpha.member, order="lifo")
    assert "order" in refused.value.message_dict
    with pytest.raises(PermissionDenied):
        job_queue_update(cluster=cluster, actor=alpha.users[OrgRole.VIEWER], max_concurrency=3)
    assert selectors.queue_of(cluster.pk).pk is None  # nothing was saved

    job_queue_update(cluster=cluster, actor=alpha.member, max_concurrency=3)
    event = AuditEvent.objects.get(verb="cluster.queue_update", target_id=str(cluster.pk))
    assert event.changes == {"max_concurrency": [1, 3]}
    assert cluster.events.filter(step="queue updated").exists()


def test_the_cluster_and_job_pages_show_each_waiting_jobs_place(alpha: Tenant) -> None:
    cluster = shared_cluster(alpha)
    queue_job(alpha, cluster, "running")
    waiting = queue_job(alpha, cluster, "waiting-one")
    queue_job(alpha, cluster, "waiting-two")
    client = client_for(alpha.users[OrgRole.VIEWER])
    page = client.get(reverse("cluster_detail", args=[alpha.org.slug, cluster.pk]))
    text = page.content.decode()
    assert "Job queue" in text
    assert text.index("waiting-one") < text.index("waiting-two")
    assert "#2" in text
    assert "Queue settings" not in text  # a viewer reads only
    page = client.get(reverse("job_detail", args=[alpha.org.slug, waiting.pk]))
    assert "waiting, #1 in line" in page.content.decode()

    writer = client_for(alpha.member)
    settings_url = reverse("cluster_queue", args=[alpha.org.slug, cluster.pk])
    assert client.get(settings_url).status_code == 403
    answer = writer.post(settings_url, {"order": "priority", "max_concurrency": "0"})
    assert answer.status_code == 200 and "from 1 to" in answer.content.decode()
    answer = writer.post(settings_url, {"order": "priority", "max_concurrency": "2"})
    assert answer.status_code == 302
    assert selectors.queue_of(cluster.pk).max_concurrency == 2


def test_the_api_reads_and_changes_a_queue_and_hides_other_organizations(
    alpha: Tenant, bravo: Tenant
) -> None:
    cluster = shared_cluster(alpha)
    theirs = shared_cluster(bravo)
    queue_job(alpha, cluster, "running")
    queue_job(alpha, cluster, "waiting")
    member = as_role(alpha)
    path = f"/orgs/{alpha.org.slug}/clusters/{cluster.uuid}/queue"
    body = member.get(path).body
    assert (body["order"], body["max_concurrency"]) == ("fifo", 1)
    assert [j["name"] for j in body["running"]] == ["running"]
    assert [(j["name"], j["position"]) for j in body["waiting"]] == [("waiting", 1)]
    waiting = Job.objects.get(name="waiting")
    job = member.get(f"/orgs/{alpha.org.slug}/jobs/{waiting.uuid}").body
    assert job["queue_position"] == 1

    answer = member.patch(path, {"max_concurrency": 2, "order": "priority"})
    assert answer.status == 200, answer.body
    assert (answer.body["order"], answer.body["max_concurrency"]) == ("priority", 2)
    assert_error(member.patch(path, {"max_concurrency": -1}), 422, "validation_error")
    assert_error(
        as_role(alpha, OrgRole.VIEWER).patch(path, {"max_concurrency": 3}), 403, "permission_denied"
    )
    other = f"/orgs/{alpha.org.slug}/clusters/{theirs.uuid}/queue"
    assert_error(member.get(other), 404, "not_found")
    assert_error(member.patch(other, {"max_concurrency": 3}), 404, "not_found")
    assert selectors.queue_of(theirs.pk).max_concurrency == 1


def test_a_job_may_not_queue_on_another_organizations_cluster(alpha: Tenant, bravo: Tenant) -> None:
    theirs = shared_cluster(bravo)
    answer = as_role(alpha).post(
        f"/orgs/{alpha.org.slug}/jobs",
        {"project": alpha.project.slug, "entrypoint": "python x.py", "cluster": str(theirs.uuid)},
    )
    assert_error(answer, 422, "validation_error")
    assert not Job.objects.filter(target_cluster=theirs).exists()


def test_jobs_waiting_on_a_cluster_that_is_terminated_fail_and_say_why(alpha: Tenant) -> None:
    from clusters.services.lifecycle import cluster_terminate

    cluster = shared_cluster(alpha)
    queue_job(alpha, cluster, "running")
    waiting = queue_job(alpha, cluster, "waiting")
    cluster_terminate(cluster=cluster, actor=alpha.member, reason="done with it")
    job_reconcile(job_id=waiting.pk)
    waiting.refresh_from_db()
    assert (waiting.state, waiting.attempts.count()) == (JobState.FAILED, 0)
    assert "shared was terminated before attempt 1 could run" in waiting.state_reason
