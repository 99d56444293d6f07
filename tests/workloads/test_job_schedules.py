"""Job schedules: a run fires when its cron says (in its time zone), a control plane
that was down for several periods runs once when it is back, pause and resume, bad cron
expressions and time zones are refused on their fields, every change is audited, and
only writers manage them; another organization's schedule is a 404. Time moves with
time-machine; the beat's task is called as beat calls it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from accounts.choices import OrgRole
from accounts.models import AuditEvent, Membership
from tests.api.conftest import as_role, assert_error
from tests.conftest import Tenant, client_for
from workloads.jobs.models import Job, JobSchedule
from workloads.jobs.schedules import (
    schedule_create,
    schedule_pause,
    schedule_resume,
)
from workloads.jobs.tasks import run_due_schedules

pytestmark = pytest.mark.django_db

START = datetime(2026, 1, 12, 10, 0, 30, tzinfo=UTC)


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return START.replace(hour=hour, minute=minute, second=second)


def create(tenant: Tenant, **options: Any) -> JobSchedule:
    assert tenant.cloud is not None
    values: dict[str, Any] = {
        "project": tenant.project,
        "actor": tenant.member,
        "name": "nightly",
        "cron": "*/5 * * * *",
        "entrypoint": "python train.py",
        "cloud": tenant.cloud,
        **options,
    }
    return schedule_create(**values)


def ours() -> Any:
    """The schedules a test made (not the tenants' own, paused ones)."""
    return JobSchedule.objects.exclude(name__endswith="-schedule")


def runs(schedule: JobSchedule) -> int:
    return Job.objects.filter(schedule=schedule).count()


def test_a_schedule_fires_on_time_and_not_before(alpha: Tenant) -> None:
    with time_machine.travel(START, tick=False):
        schedule = create(alpha)
    assert schedule.next_run_at == at(10, 5)
    with time_machine.travel(at(10, 4, 59), tick=False):
        assert run_due_schedules() == 0
    with time_machine.travel(at(10, 5, 10), tick=False):
        assert run_due_schedules() == 1
        assert run_due_schedules() == 0  # a second beat in the same minute adds nothing
    schedule.refresh_from_db()
    job = Job.objects.get(schedule=schedule)
    assert (job.name, job.entrypoint, job.created_by) == (
        "nightly",
        "python train.py",
        alpha.member,
    )
    assert (schedule.last_run_at, schedule.next_run_at, schedule.last_job) == (
        at(10, 5, 10),
        at(10, 10),
        job,
    )
    assert AuditEvent.objects.filter(verb="job.submit", target_id=str(job.pk)).exists()


def test_a_downtime_of_three_periods_runs_once(alpha: Tenant) -> None:
    with time_machine.travel(START, tick=False):
        schedule = create(alpha)
    # Nobody ran the beat at 10:05, 10:10 or 10:15.
    with time_machine.travel(at(10, 17), tick=False):
        assert run_due_schedules() == 1
        assert run_due_schedules() == 0
    assert runs(schedule) == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == at(10, 20)
    with time_machine.travel(at(10, 20, 5), tick=False):
        assert run_due_schedules() == 1
    assert runs(schedule) == 2


def test_the_cron_is_read_in_the_schedules_time_zone(alpha: Tenant) -> None:
    with time_machine.travel(START, tick=False):
        berlin = create(alpha, cron="0 3 * * *", timezone_name="Europe/Berlin")
        new_york = create(alpha, cron="0 3 * * *", timezone_name="America/New_York")
    assert berlin.next_run_at == datetime(2026, 1, 13, 2, 0, tzinfo=UTC)  # CET = UTC+1
    assert new_york.next_run_at == datetime(2026, 1, 13, 8, 0, tzinfo=UTC)  # EST = UTC-5


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 3 * * * *"}, "cron"),  # six fields: seconds are not a thing here
        ({"cron": ""}, "cron"),
        ({"timezone_name": "Mars/Olympus"}, "timezone"),
        ({"timezone_name": ""}, "timezone"),
        ({"entrypoint": " "}, "entrypoint"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_bad_input_is_refused_on_its_field_and_creates_nothing(
    alpha: Tenant, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        create(alpha, **options)
    assert field in refused.value.message_dict, refused.value.message_dict
    assert not ours().exists()


def test_a_paused_schedule_skips_its_runs_and_resumes_from_the_next_one(alpha: Tenant) -> None:
    with time_machine.travel(START, tick=False):
        schedule = create(alpha)
        schedule = schedule_pause(schedule=schedule, actor=alpha.member)
    assert (schedule.paused, schedule.next_run_at) == (True, None)
    with time_machine.travel(at(10, 12), tick=False):
        assert run_due_schedules() == 0
        schedule = schedule_resume(schedule=schedule, actor=alpha.member)
    assert schedule.next_run_at == at(10, 15)  # 10:05 and 10:10 are not made up
    assert runs(schedule) == 0
    verbs = set(
        AuditEvent.objects.filter(target_id=str(schedule.pk)).values_list("verb", flat=True)
    )
    assert verbs >= {"job_schedule.create", "job_schedule.pause", "job_schedule.resume"}


def test_a_run_its_creator_may_no_longer_submit_is_recorded_not_retried(alpha: Tenant) -> None:
    with time_machine.travel(START, tick=False):
        schedule = create(alpha)
    Membership.objects.filter(organization=alpha.org, user=alpha.member).update(role=OrgRole.VIEWER)
    with time_machine.travel(at(10, 5, 1), tick=False):
        assert run_due_schedules() == 1
    schedule.refresh_from_db()
    assert runs(schedule) == 0
    assert "Could not submit the run due 2026-01-12 10:05 UTC" in schedule.last_error
    assert schedule.next_run_at == at(10, 10) and not schedule.paused
    assert AuditEvent.objects.filter(verb="job_schedule.run_failed").exists()


def test_viewers_read_schedules_and_only_writers_manage_them(alpha: Tenant) -> None:
    viewer = alpha.users[OrgRole.VIEWER]
    with pytest.raises(PermissionDenied):
        create(alpha, actor=viewer)
    schedule = create(alpha)
    with pytest.raises(PermissionDenied):
        schedule_pause(schedule=schedule, actor=viewer)
    page = client_for(viewer).get(reverse("schedule_detail", args=[alpha.org.slug, schedule.pk]))
    assert page.status_code == 200
    assert "nightly" in page.content.decode() and "Pause" not in page.content.decode()


def test_the_api_creates_lists_pauses_resumes_and_deletes_schedules(
    alpha: Tenant, bravo: Tenant
) -> None:
    member = as_role(alpha)
    base = f"/orgs/{alpha.org.slug}/job-schedules"
    body = {
        "project": alpha.project.slug,
        "name": "nightly",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "entrypoint": "python train.py",
    }
    answer = member.post(base, body)
    assert answer.status == 201, answer.body
    created = answer.body
    assert (created["paused"], created["timezone"], created["last_run_at"]) == (
        False,
        "Europe/Berlin",
        None,
    )
    assert created["next_run_at"] is not None
    one = f"{base}/{created['id']}"
    listed = as_role(alpha, OrgRole.VIEWER).get(base).body["items"]
    assert [s["name"] for s in listed] == ["alpha-schedule", "nightly"]
    paused = member.post(f"{one}/pause").body
    assert (paused["paused"], paused["next_run_at"]) == (True, None)
    assert member.post(f"{one}/resume").body["paused"] is False

    assert_error(member.post(base, {**body, "cron": "0 25 * * *"}), 422, "validation_error")
    assert_error(member.post(base, {**body, "timezone": "Nowhere/Else"}), 422, "validation_error")
    assert_error(as_role(alpha, OrgRole.VIEWER).post(base, body), 403, "permission_denied")
    assert_error(as_role(alpha, OrgRole.VIEWER).delete(one), 403, "permission_denied")
    assert ours().filter(organization=alpha.org).count() == 1

    theirs = f"/orgs/{bravo.org.slug}/job-schedules"
    their_id = as_role(bravo).post(theirs, {**body, "project": bravo.project.slug}).body["id"]
    assert_error(member.get(f"{base}/{their_id}"), 404, "not_found")
    assert_error(member.post(f"{base}/{their_id}/pause"), 404, "not_found")
    assert_error(member.delete(f"{base}/{their_id}"), 404, "not_found")
    assert_error(member.get(theirs), 404, "not_found")

    assert member.delete(one).status == 204
    assert member.get(one).status == 404
    assert ours().filter(organization=bravo.org).count() == 1
    assert AuditEvent.objects.filter(verb="job_schedule.delete").count() == 1


def test_the_console_creates_pauses_and_deletes_a_schedule_after_confirmation(
    alpha: Tenant,
) -> None:
    client = client_for(alpha.member)
    slug = alpha.org.slug
    assert alpha.cloud is not None
    form = {
        "project": alpha.project.pk,
        "name": "nightly",
        "cron": "0 3 * * *",
        "timezone": "UTC",
        "entrypoint": "python train.py",
        "cloud": alpha.cloud.pk,
        "max_retries": 1,
    }
    refused = client.post(reverse("schedule_create", args=[slug]), {**form, "cron": "0 3 * *"})
    assert refused.status_code == 200 and "five fields" in refused.content.decode()
    answer = client.post(reverse("schedule_create", args=[slug]), form)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    schedule = ours().get()
    listing = client.get(reverse("schedule_list", args=[slug])).content.decode()
    assert "nightly" in listing and "0 3 * * *" in listing

    client.post(reverse("schedule_pause", args=[slug, schedule.pk]))
    schedule.refresh_from_db()
    assert schedule.paused
    confirm = client.get(reverse("schedule_delete", args=[slug, schedule.pk]))
    assert "Delete the schedule nightly?" in confirm.content.decode()
    assert ours().exists()  # asking is not deleting
    client.post(reverse("schedule_delete", args=[slug, schedule.pk]))
    assert not ours().exists()
