"""Jobs' rules and their life without Ray: what a submit refuses, how attempts follow
the head's reports, retries, stops and timeouts, and what the heartbeat path costs.
(Real Ray runs them in test_jobs_ray.py.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from accounts.models import AuditEvent
from clusters import head_orders
from clusters.choices import ClusterState, DesiredState
from clusters.models import Cluster, ComputeConfigVersion
from tests.conftest import Tenant
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job, JobAttempt
from workloads.jobs.selectors import jobs_to_sweep
from workloads.jobs.services import LOG_GRACE, job_reconcile, job_stop, job_submit
from workloads.models import WorkingDir

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


def submit(tenant: Tenant, **options: Any) -> Job:
    assert tenant.cloud is not None
    values: dict[str, Any] = {
        "project": tenant.project,
        "actor": tenant.member,
        "name": "train",
        "entrypoint": "python train.py",
        "cloud": tenant.cloud,
        **options,
    }
    return job_submit(**values)


def report(cluster_id: int, **statuses: dict[str, Any]) -> None:
    head_orders.deliver_reports(cluster_id, {"jobs": {"submissions": statuses}})


def attempt_of(job: Job, number: int = 1) -> JobAttempt:
    return JobAttempt.objects.select_related("cluster").get(job=job, number=number)


def test_a_submit_is_recorded_audited_and_queued(
    alpha: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        job = submit(alpha, env_vars={"SEED": "1"}, pip=["requests"], timeout_seconds=60)
    assert (job.state, job.max_retries, job.runtime_env) == (
        JobState.PENDING,
        1,
        {"env_vars": {"SEED": "1"}, "pip": ["requests"]},
    )
    assert list(job.events.values_list("step", flat=True)) == ["submitted"]
    assert AuditEvent.objects.filter(verb="job.submit", target_id=str(job.pk)).exists()
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"entrypoint": "  "}, "entrypoint"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 11}, "max_retries"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"env_vars": {"A": 1}}, "env_vars"),
    ],
)
def test_bad_input_is_refused_on_its_field_and_creates_nothing(
    alpha: Tenant, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        submit(alpha, **options)
    assert field in refused.value.message_dict
    assert not Job.objects.exclude(name__endswith="-job").exists()  # only the tenants'


def test_another_organizations_config_cloud_and_cluster_are_refused(
    alpha: Tenant, bravo: Tenant
) -> None:
    assert bravo.cloud is not None
    their_config = ComputeConfigVersion.objects.get(pk=bravo.cluster.compute_config_id)
    with pytest.raises(ValidationError) as refused:
        submit(alpha, compute_config=their_config)
    assert "compute_config" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        submit(alpha, cloud=bravo.cloud)
    assert "cloud" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        submit(alpha, target_cluster=bravo.cluster)
    assert "cluster" in refused.value.message_dict
    assert not Job.objects.exclude(name__endswith="-job").exists()  # only the tenants'


def test_a_working_dir_must_be_uploaded_first(alpha: Tenant, settings: Any, tmp_path: Any) -> None:
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path
    assert alpha.cloud is not None
    working_dir = WorkingDir.objects.create(
        organization=alpha.org, cloud=alpha.cloud, sha256="a" * 64, size=10
    )
    with pytest.raises(ValidationError) as refused:
        submit(alpha, working_dir=working_dir)
    assert "upload it first" in refused.value.message_dict["working_dir"][0]


def test_viewers_may_not_submit(alpha: Tenant) -> None:
    with pytest.raises(PermissionDenied):
        submit(alpha, actor=alpha.viewer)
    assert not Job.objects.exclude(name__endswith="-job").exists()  # only the tenants'


def test_a_failed_attempt_is_retried_on_a_new_cluster_and_each_is_released(
    alpha: Tenant,
) -> None:
    job = submit(alpha, max_retries=1)
    job_reconcile(job_id=job.pk)
    first = attempt_of(job)
    assert first.owns_cluster and first.cluster is not None
    orders = head_orders.collect_orders(first.cluster.pk)["jobs"]
    assert [o["submission_id"] for o in orders["submit"]] == [first.submission_id]
    assert orders["submit"][0]["entrypoint"] == "python train.py"

    report(first.cluster.pk, **{first.submission_id: {"status": "RUNNING"}})
    job_reconcile(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.started_at is not None

    report(
        first.cluster.pk,
        **{first.submission_id: {"status": "FAILED", "exit_code": 3, "message": "boom"}},
    )
    job_reconcile(job_id=job.pk)
    first.refresh_from_db()
    assert (first.state, first.exit_code) == (JobState.FAILED, 3)
    assert "exit code 3" in first.reason
    assert Cluster.objects.get(pk=first.cluster_id).desired_state == DesiredState.TERMINATED
    second = attempt_of(job, 2)
    assert second.cluster_id not in (None, first.cluster_id)
    assert "jobs" not in head_orders.collect_orders(first.cluster_id)

    report(second.cluster_id, **{second.submission_id: {"status": "SUCCEEDED", "exit_code": 0}})
    job_reconcile(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.ended_at is not None
    assert Cluster.objects.get(pk=second.cluster_id).desired_state == DesiredState.TERMINATED
    assert AuditEvent.objects.filter(verb="job.succeeded", target_id=str(job.pk)).exists()


def test_retries_spent_end_the_job_failed_with_the_last_reason(alpha: Tenant) -> None:
    job = submit(alpha, max_retries=0)
    job_reconcile(job_id=job.pk)
    attempt = attempt_of(job)
    report(attempt.cluster_id, **{attempt.submission_id: {"status": "FAILED", "exit_code": 1}})
    job_reconcile(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "no retries left" in job.state_reason and "exit code 1" in job.state_reason
    assert job.attempts.count() == 1


def test_a_lost_cluster_fails_the_attempt_and_says_why(alpha: Tenant) -> None:
    job = submit(alpha, max_retries=0)
    job_reconcile(job_id=job.pk)
    attempt = attempt_of(job)
    Cluster.objects.filter(pk=attempt.cluster_id).update(
        state=ClusterState.FAILED, state_reason="the head node was lost"
    )
    job_reconcile(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "the head node was lost" in job.state_reason


def test_a_timeout_ends_the_job_and_stops_its_driver(alpha: Tenant) -> None:
    job = submit(alpha, timeout_seconds=5)
    job_reconcile(job_id=job.pk)
    attempt = attempt_of(job)
    report(attempt.cluster_id, **{attempt.submission_id: {"status": "RUNNING"}})
    JobAttempt.objects.filter(pk=attempt.pk).update(
        started_at=timezone.now() - timedelta(seconds=6)
    )
    job_reconcile(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.TIMED_OUT
    assert head_orders.collect_orders(attempt.cluster_id)["jobs"]["stop"] == [attempt.submission_id]


def test_a_timed_out_attempt_keeps_its_cluster_until_the_head_stored_the_log(
    alpha: Tenant, settings: Any, tmp_path: Any
) -> None:
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"  # the local cloud's storage

    def timed_out_on_a_running_cluster() -> tuple[Job, JobAttempt]:
        job = submit(alpha, timeout_seconds=5)
        job_reconcile(job_id=job.pk)
        attempt = attempt_of(job)
        Cluster.objects.filter(pk=attempt.cluster_id).update(state=ClusterState.RUNNING)
        report(attempt.cluster_id, **{attempt.submission_id: {"status": "RUNNING"}})
        JobAttempt.objects.filter(pk=attempt.pk).update(
            started_at=timezone.now() - timedelta(seconds=6)
        )
        assert job_reconcile(job_id=job.pk) is not None  # kept: it looks again
        job.refresh_from_db()
        assert job.state == JobState.TIMED_OUT
        assert Cluster.objects.get(pk=attempt.cluster_id).desired_state == DesiredState.RUNNING
        assert job.pk in jobs_to_sweep()  # a lost follow-up is swept up again
        return job, attempt

    # The head stops the driver, stores its log, reports: the cluster goes.
    job, attempt = timed_out_on_a_running_cluster()
    stored = {"status": "STOPPED", "log_archived": True, "log_bytes": 10}
    report(attempt.cluster_id, **{attempt.submission_id: stored})
    assert job_reconcile(job_id=job.pk) is None
    attempt.refresh_from_db()
    assert attempt.log_key and attempt.state == JobState.TIMED_OUT
    assert Cluster.objects.get(pk=attempt.cluster_id).desired_state == DesiredState.TERMINATED
    assert job.pk not in jobs_to_sweep()

    # A head that never stores it: past the grace the cluster goes, and the attempt says so.
    job, attempt = timed_out_on_a_running_cluster()
    JobAttempt.objects.filter(pk=attempt.pk).update(
        ended_at=timezone.now() - LOG_GRACE - timedelta(seconds=1)
    )
    assert job_reconcile(job_id=job.pk) is None
    attempt.refresh_from_db()
    assert "The driver log could not be saved." in attempt.reason
    assert job.events.filter(step="log not saved").exists()
    assert Cluster.objects.get(pk=attempt.cluster_id).desired_state == DesiredState.TERMINATED


def test_a_stop_orders_the_driver_stopped_and_says_by_whom(alpha: Tenant) -> None:
    job = submit(alpha)
    job_reconcile(job_id=job.pk)
    attempt = attempt_of(job)
    report(attempt.cluster_id, **{attempt.submission_id: {"status": "RUNNING"}})
    job_stop(job=job, actor=alpha.member)
    orders = head_orders.collect_orders(attempt.cluster_id)["jobs"]
    assert orders == {"submit": [], "stop": [attempt.submission_id]}
    report(attempt.cluster_id, **{attempt.submission_id: {"status": "STOPPED"}})
    job_reconcile(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.STOPPED
    assert f"Stopped by {alpha.member.display_name}" in job.state_reason
    assert job.attempts.count() == 1
    with pytest.raises(PermissionDenied):
        job_stop(job=submit(alpha), actor=alpha.viewer)


def test_a_report_moves_only_attempts_of_its_own_cluster(alpha: Tenant) -> None:
    job = submit(alpha)
    job_reconcile(job_id=job.pk)
    attempt = attempt_of(job)
    report(alpha.cluster.pk, **{attempt.submission_id: {"status": "SUCCEEDED"}})
    attempt.refresh_from_db()
    assert attempt.state == JobState.PENDING


def test_heartbeats_cost_no_query_when_nothing_changed(
    alpha: Tenant, django_assert_num_queries: Any
) -> None:
    job = submit(alpha)
    job_reconcile(job_id=job.pk)
    attempt = attempt_of(job)
    quiet = alpha.cluster.pk
    running = {attempt.submission_id: {"status": "RUNNING"}}
    report(attempt.cluster_id, **running)
    head_orders.collect_orders(quiet)
    head_orders.collect_orders(attempt.cluster_id)
    with django_assert_num_queries(0):
        for _ in range(3):
            assert "jobs" not in head_orders.collect_orders(quiet)
            assert "jobs" in head_orders.collect_orders(attempt.cluster_id)
            report(attempt.cluster_id, **running)
