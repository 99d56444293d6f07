"""Reading a job's driver log, without Ray: the head's report records where the log is,
the API and the job page hand out short-lived signed URLs of the local cloud's storage
(read a page at a time with a Range), and nothing of what the driver printed lands in
the control plane's rows. The whole path with real Ray is test_job_logs_ray.py."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from raydeck_agent.jobs import job_message
from raydeck_agent.object_store import put_object

from accounts.choices import OrgRole
from clouds.providers.registry import provider_for
from clusters.choices import ClusterState, DesiredState
from clusters.models import Cluster
from tests.api.conftest import as_role, assert_error
from tests.conftest import Tenant
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job, JobAttempt
from workloads.jobs.services import job_attempts_report
from workloads.storage import LOG_PAGE_BYTES, job_log_key

pytestmark = pytest.mark.django_db

RAY_FAILURE = (
    "Job entrypoint command failed with exit code 3, last available logs (truncated to "
    "20,000 chars):\nTraceback (most recent call last):\nValueError: customer-secret-42\n"
)


@pytest.fixture
def stored_log(alpha: Tenant, settings, tmp_path: Path) -> bytes:
    """The alpha job's log stored by "its head" (the agent's own writer, to the URI the
    orders name) and reported, as a head does when an attempt ends."""
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    settings.RAYDECK_BASE_URL = "http://testserver"
    attempt = alpha.job.attempts.get()
    key = job_log_key(str(alpha.job.uuid), attempt.number)
    data = b"".join(b"line %07d %s\n" % (i, b"y" * 40) for i in range(LOG_PAGE_BYTES // 40))
    put_object(provider_for(alpha.cloud).object_uri(key=key), data)
    status = {"status": "SUCCEEDED", "log_archived": True, "log_bytes": len(data)}
    report = {"submissions": {attempt.submission_id: status}}
    job_attempts_report(cluster_id=attempt.cluster_id, report=report)
    attempt.refresh_from_db()
    assert (attempt.log_key, attempt.log_bytes) == (key, len(data))
    return data


def get_signed(url: str, **headers: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    response = Client().get(f"{parts.path}?{parts.query}", headers=headers)
    return response.status_code, b"".join(response) if response.streaming else response.content


def test_an_ended_attempts_log_is_read_page_by_page_from_storage(
    alpha: Tenant, stored_log: bytes
) -> None:
    answer = as_role(alpha, OrgRole.VIEWER).get(f"/orgs/alpha/jobs/{alpha.job.uuid}/logs")
    assert answer.status == 200, answer.body
    assert (answer.body["attempt"], answer.body["final"], answer.body["live"]) == (1, True, None)
    archive = answer.body["archive"]
    assert archive["size"] == len(stored_log) and archive["page_count"] == 2
    read = b""
    for page in archive["pages"]:
        status, body = get_signed(page["url"], **page["headers"])
        assert status == 206 and len(body) == page["length"]
        read += body
    assert read == stored_log
    assert get_signed(archive["download_url"]) == (200, stored_log)
    # The URL is for that object only: another key with its token is refused.
    other = archive["download_url"].replace("driver.log", "other.log")
    assert get_signed(other)[0] == 403


def test_the_job_page_reads_the_stored_log_a_page_at_a_time(
    alpha: Tenant, stored_log: bytes
) -> None:
    client = Client()
    client.force_login(alpha.viewer)
    page = client.get(reverse("job_detail", args=["alpha", alpha.job.pk]))
    link = reverse("job_attempt_log", args=["alpha", alpha.job.pk, 1])
    assert link in page.content.decode()

    read = b""
    for number in (1, 2):
        answer = client.get(link, {"page": number})
        assert answer.status_code == 200
        html = answer.content.decode()
        assert f"Page {number} of 2" in html
        # The page names a byte range of a signed URL of the storage; the browser reads
        # it (console.js) straight from there, the console never holds the log.
        pre = re.search(r'data-log-url="([^"]+)" data-log-headers="([^"]+)"', html)
        assert pre is not None
        url, headers = unescape(pre[1]), json.loads(unescape(pre[2]))
        assert "/storage/local/" in url
        status, body = get_signed(url, **headers)
        assert status == 206 and len(body) <= LOG_PAGE_BYTES
        read += body
        assert stored_log.decode() not in html and body.decode() not in html
        download = re.search(r'href="([^"]+)" download=', html)
        assert download is not None
        assert get_signed(unescape(download[1])) == (200, stored_log)
    assert read == stored_log
    # Past the last page: the last page.
    answer = client.get(link, {"page": 40})
    assert answer.status_code == 302 and answer["Location"].endswith("?page=2")


def test_the_job_page_refreshes_until_an_ended_attempts_log_is_stored(alpha: Tenant) -> None:
    """An attempt Raydeck ended (here by its timeout) keeps its cluster while the head
    stores its driver log: the job is final, yet its page keeps polling until the log is
    stored, and then shows "Read the log" without a reload and stops polling."""
    job, attempt = alpha.job, alpha.job.attempts.get()
    Cluster.objects.filter(pk=attempt.cluster_id).update(
        state=ClusterState.RUNNING, desired_state=DesiredState.RUNNING
    )
    Job.objects.filter(pk=job.pk).update(state=JobState.TIMED_OUT)
    JobAttempt.objects.filter(pk=attempt.pk).update(
        state=JobState.TIMED_OUT, started_at=timezone.now(), ended_at=timezone.now()
    )
    client = Client()
    client.force_login(alpha.viewer)
    url = reverse("job_detail", args=["alpha", job.pk])
    poll = {"HX-Request": "true", "HX-Target": "job-live"}

    assert 'hx-trigger="every 2s"' in client.get(url).content.decode()
    storing = client.get(url, headers=poll)
    assert storing.status_code == 200
    html = storing.content.decode()
    assert 'hx-trigger="every 2s"' in html and "being stored…" in html
    assert "Read the log" not in html

    status = {"status": "STOPPED", "log_archived": True, "log_bytes": 120}
    report = {"submissions": {attempt.submission_id: status}}
    job_attempts_report(cluster_id=attempt.cluster_id, report=report)
    stored = client.get(url, headers=poll)

    assert stored.status_code == 286  # htmx's "stop polling"
    html = stored.content.decode()
    assert "Read the log" in html and "being stored" not in html
    assert "hx-trigger" not in html


def test_another_organizations_job_log_is_not_found(
    alpha: Tenant, bravo: Tenant, stored_log: bytes
) -> None:
    answer = as_role(bravo).get(f"/orgs/alpha/jobs/{alpha.job.uuid}/logs")
    assert answer.status == 404
    answer = as_role(bravo).get(f"/orgs/bravo/jobs/{alpha.job.uuid}/logs")
    assert_error(answer, 404, "not_found")
    client = Client()
    client.force_login(bravo.member)
    assert (
        client.get(reverse("job_attempt_log", args=["alpha", alpha.job.pk, 1])).status_code == 404
    )


def test_an_attempt_without_a_stored_log_says_so(alpha: Tenant, settings, tmp_path) -> None:
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    answer = as_role(alpha).get(f"/orgs/alpha/jobs/{alpha.job.uuid}/logs")
    assert answer.status == 200 and answer.body["archive"] is None
    assert "No driver log" in answer.body["note"]
    answer = as_role(alpha).get(f"/orgs/alpha/jobs/{alpha.job.uuid}/logs", {"attempt": 7})
    assert_error(answer, 422, "validation_error")


def test_what_the_driver_printed_is_cut_from_rays_failure_message(alpha: Tenant) -> None:
    assert job_message(RAY_FAILURE) == "Job entrypoint command failed with exit code 3"
    attempt = alpha.job.attempts.get()
    JobAttempt.objects.filter(pk=attempt.pk).update(state=JobState.RUNNING)
    # An older head that sends Ray's message whole: the server cuts it too.
    status = {"status": "FAILED", "exit_code": 3, "message": RAY_FAILURE}
    report = {"submissions": {attempt.submission_id: status}}
    job_attempts_report(cluster_id=attempt.cluster_id, report=report)
    attempt.refresh_from_db()
    assert attempt.state == JobState.FAILED and "exit code 3" in attempt.reason
    assert "customer-secret-42" not in attempt.reason
    assert not alpha.job.events.filter(message__contains="customer-secret-42").exists()
