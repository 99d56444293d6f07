"""A member submits a job from the console's New job form, follows its driver log live on
the cluster's gateway, watches the job reach `succeeded` on its page (which updates by
itself) and reads its driver log from the cloud's storage a page at a time: real
Chromium, real Ray on the local cloud, the gateway's TLS from an operator CA this
Chromium trusts, the local cloud's storage served by the live server through a signed
URL. No stand-in.

The reconcilers are driven from the test (as their tasks would run them); everything the
member does is the browser's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.choices import ClusterState
from clusters.models import Cluster
from tests.browser.gateway_ca import chromium_extra_args, gateway_ca, operator_ca  # noqa: F401
from tests.conftest import make_tenant
from tests.factories import PASSWORD
from tests.workloads.test_job_logs_ray import drive_until
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ray,
    pytest.mark.usefixtures("transactional_db", "gateway_ca"),
]
DEADLINE_SECONDS = 240


def test_submit_a_job_watch_it_succeed_and_read_its_log(
    live_server: LiveServer, new_page: Callable[[], Page], settings, tmp_path: Path
) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_BASE_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("console-jobs")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.member.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{live_server.url}/o/{tenant.org.slug}/jobs/")
    page.get_by_role("link", name="New job").first.click()
    # The printed lines are computed by the driver: the form holds only the sums. It
    # waits for the test's word between them.
    release = tmp_path / "release"
    page.get_by_label("Entrypoint").fill(
        "python -c \"import os, time; print('console-says', 20000 + 26, flush=True); "
        f"[time.sleep(0.2) for _ in iter(lambda: os.path.exists('{release}'), True)]; "
        "print('console-done', 6 * 7)\""
    )
    page.get_by_label("Name").fill("hello-console")
    page.get_by_label("Retries").fill("0")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("heading", name="hello-console")).to_be_visible()
    state = page.get_by_test_id("job-state")
    job = Job.objects.get(name="hello-console")
    deadline = time.monotonic() + DEADLINE_SECONDS

    def running() -> bool:
        job.refresh_from_db()
        return job.state == JobState.RUNNING or job.is_final

    drive_until([job], deadline, running, "running driver")
    # The page offers the live log by itself; it opens on the cluster's gateway.
    follow = page.get_by_test_id("attempt-live-log")
    expect(follow).to_be_visible(timeout=15_000)
    with page.context.expect_page() as opened:
        follow.click()
    live = opened.value
    expect(live.locator("#log")).to_contain_text("console-says 20026", timeout=30_000)
    assert "token=" not in live.url  # the gateway swapped the link's token for a session
    expect(live.locator("#status")).to_have_text("RUNNING")
    release.touch()
    # The driver ends by itself; the live page shows the end and stops reloading (the
    # cluster stays until the reconcilers, driven below, release it).
    expect(live.locator("#status")).to_have_text("SUCCEEDED", timeout=60_000)
    expect(live.locator("#log")).to_contain_text("console-done 42")
    expect(live.locator("meta[http-equiv='refresh']")).to_have_count(0)

    def done() -> bool:
        job.refresh_from_db()
        gone = not Cluster.objects.filter(job_attempts__job=job).exclude(
            state=ClusterState.TERMINATED
        )
        return job.is_final and gone

    drive_until([job], deadline, done, "job's end")
    assert job.state == JobState.SUCCEEDED, job.state_reason
    # The page noticed by itself (it polls until the job is final), without a reload.
    expect(state).to_contain_text("Succeeded", timeout=15_000)
    expect(page.locator("#job-live")).not_to_have_attribute("hx-trigger", re.compile("every"))
    with page.context.expect_page() as opened:
        page.get_by_test_id("attempt-log").click()
    log = opened.value
    # One page of the stored log, read by the browser with a byte range from the bucket.
    expect(log.get_by_test_id("log-position")).to_contain_text("Page 1 of 1")
    expect(log.get_by_test_id("log-page")).to_contain_text("console-says 20026")
    expect(log.get_by_test_id("log-page")).to_contain_text("console-done 42")
    download = log.get_by_test_id("log-download").get_attribute("href") or ""
    assert "/storage/local/" in download and "token=" in download  # bucket → browser, signed
