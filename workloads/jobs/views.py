"""Job pages: the list (filters, pagination), New job, the live job page (attempts,
events, logs), stop (with confirmation) and submit again. Views parse input and pick
templates; selectors read, services write."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from accounts.permissions import has_perm
from accounts.views.base import OrgView
from clouds.providers.base import TransientCloudError
from clusters.models import Cluster
from clusters.views import CloudFieldsFormView
from kit.forms import service_errors_on
from kit.outages import outage_response
from kit.types import AuthedRequest
from kit.views import done, paginate

from . import selectors
from .choices import JobState
from .forms import JobCreateForm, QueueForm, ScheduleCreateForm
from .models import Job, JobAttempt, JobSchedule
from .schedules import schedule_create, schedule_delete, schedule_pause, schedule_resume
from .services import (
    job_live_log_link,
    job_logs,
    job_queue_update,
    job_stop,
    job_submit,
    job_submit_again,
)


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class JobListView(OrgView):
    permission = "project.list"
    template = "jobs/job_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        filters = {
            "project": request.GET.get("project", "").strip()[:100],
            "state": request.GET.get("state", "").strip()[:20],
            "creator": request.GET.get("creator", "").strip()[:200],
        }
        rows = selectors.job_list(viewer=request.user, organization=self.organization, **filters)
        return self.render(
            self.partial(self.template, "job-table"),
            {
                "page": paginate(request, rows),
                "filters": filters,
                "filtered": any(filters.values()),
                "states": JobState.choices,
            },
        )


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class JobCreateView(CloudFieldsFormView):
    permission = "project.list"
    template = "jobs/job_create.html"

    def form(self, data: Any = None) -> JobCreateForm:
        form = JobCreateForm(data, organization=self.organization, viewer=self.request.user)
        if not form.projects:
            raise PermissionDenied("You may not submit jobs in any project here.")
        form.follow_cloud(reverse("job_create", args=[self.organization.slug]))
        return form

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                job = job_submit(actor=request.user, **form.job_fields())
                return done(
                    request,
                    reverse("job_detail", args=[org_slug, job.pk]),
                    f"Job {job.name} submitted.",
                )
        return self.render(self.template, {"form": form})


class JobObjectView(OrgView):
    """A page of one job, reached only through `visible_to` inside the organization of
    the URL (another organization's is a 404)."""

    permission = "project.view"
    job: Job

    def load_objects(self, **kwargs: Any) -> None:
        self.job = self.object_or_404(
            self.scoped(Job).select_related(
                "project", "cloud", "created_by", "working_dir", "target_cluster", "schedule"
            ),
            pk=kwargs["job_id"],
        )

    def permission_target(self) -> Any:
        return self.job.project

    def detail_url(self) -> str:
        return reverse("job_detail", args=[self.organization.slug, self.job.pk])

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "job": self.job,
            "can_stop": has_perm(self.request.user, "job.stop", self.job.project),
            "can_submit": has_perm(self.request.user, "job.submit", self.job.project),
            "can_follow": has_perm(self.request.user, "cluster.access", self.job.project),
        }
        return super().render(template, {**base, **(context or {})}, status)


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class JobDetailView(JobObjectView):
    template = "jobs/job_detail.html"

    def get(self, request: AuthedRequest, org_slug: str, job_id: int) -> HttpResponse:
        attempts = list(selectors.job_attempts(self.job))
        changes = selectors.job_page_changes(self.job, attempts)
        context = {
            "queue_position": selectors.queue_position(self.job),
            "attempts": attempts,
            "events": list(self.job.events.order_by("created_at", "pk")[:200]),
            "changes": changes,
        }
        if request.htmx and request.htmx.target == "job-live":
            response = self.render(f"{self.template}#job-live", context)
            if not changes:
                return HttpResponseStopPolling(response.content)
            return response
        return self.render(self.template, context)


class JobAttemptLogView(JobObjectView):
    """An ended attempt's driver log, one page at a time: the page names a byte range of
    a fresh short-lived signed URL of the cloud's storage, which the browser reads
    (static/console/console.js), so the log goes from the bucket to the browser, never
    through here, and a log of any size never loads whole. The whole log is a download
    link."""

    template = "jobs/job_log.html"

    def get(self, request: AuthedRequest, org_slug: str, job_id: int, number: int) -> HttpResponse:
        try:
            wanted = max(1, int(request.GET.get("page", "1")))
        except ValueError:
            wanted = 1
        try:
            logs = job_logs(job=self.job, actor=request.user, number=number, first_page=wanted - 1)
        except ValidationError as exc:
            raise Http404(" ".join(exc.messages)) from exc
        except TransientCloudError:  # signing the URL asks the cloud: a 503, as in the API
            return outage_response(request, "the cloud's storage")
        archive = logs.archive
        if archive is None:
            messages.info(request, logs.note or "No driver log is stored for this attempt.")
            return redirect(self.detail_url())
        if wanted > archive.page_count > 0:
            return redirect(f"{request.path}?page={archive.page_count}")
        page = archive.pages[0] if archive.pages else None
        response = self.render(
            self.template,
            {
                "attempt": logs.attempt,
                "archive": archive,
                "page": page,
                "number": wanted,
                "headers": json.dumps(page.headers if page else {}),
            },
        )
        # The browser reads the page from the bucket's origin (S3, GCS): allow just that.
        bucket = urlsplit(archive.download.url)
        if bucket.scheme in ("http", "https") and bucket.netloc:
            response._csp_update = {"connect-src": [f"{bucket.scheme}://{bucket.netloc}"]}  # type: ignore[attr-defined]
        return response


class JobLiveLogView(JobObjectView):
    """A running attempt's driver log, followed on its head's gateway (a new tab). A POST:
    it hands out (and audits) a token."""

    permission = "cluster.access"
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, job_id: int, number: int) -> HttpResponse:
        try:
            link = job_live_log_link(job=self.job, actor=request.user, number=number)
        except ValidationError as exc:
            messages.info(request, " ".join(exc.messages))
            return redirect(self.detail_url())
        # A page that moves on at once, like the cluster page's app buttons: a redirect
        # to another origin after a POST is refused by the console's CSP (form-action).
        cluster = self.job.attempts.get(number=number).cluster
        response = self.render(
            "clusters/cluster_open.html",
            {"url": link, "app": "the live driver log", "cluster": cluster},
        )
        response["Referrer-Policy"] = "no-referrer"
        response["Cache-Control"] = "no-store"
        return response


class JobStopView(JobObjectView):
    permission = "job.stop"
    template = "jobs/job_stop.html"

    def get(self, request: AuthedRequest, org_slug: str, job_id: int) -> HttpResponse:
        return self.render(self.template)

    def post(self, request: AuthedRequest, org_slug: str, job_id: int) -> HttpResponse:
        job_stop(job=self.job, actor=request.user)
        return done(request, self.detail_url(), f"Stopping {self.job.name}.")


class JobAgainView(JobObjectView):
    permission = "job.submit"
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, job_id: int) -> HttpResponse:
        try:
            job = job_submit_again(job=self.job, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return done(request, self.detail_url())
        return done(
            request,
            reverse("job_detail", args=[org_slug, job.pk]),
            f"Submitted {job.name} again.",
        )


# --- A shared cluster's queue (a section of the cluster page, and its settings) ----------


def queue_section(request: AuthedRequest, cluster: Cluster) -> str:
    """The cluster page's job queue: which jobs run, which wait and in what place. Not
    on a cluster created for one job's attempt, nor on an ended one no job targeted."""
    if JobAttempt.objects.filter(cluster=cluster, owns_cluster=True).exists():
        return ""
    if cluster.is_final and not Job.objects.filter(target_cluster=cluster).exists():
        return ""
    queue = selectors.cluster_queue(cluster.pk)
    return render_to_string(
        "jobs/_cluster_queue.html",
        {
            **queue,
            "cluster": cluster,
            "organization": cluster.project.organization,
            "can_update": has_perm(request.user, "cluster.update", cluster.project),
        },
        request=request,
    )


class ClusterQueueView(OrgView):
    """The queue settings of a cluster (order, jobs at once), reached through
    `visible_to` like the cluster page."""

    permission = "cluster.update"
    template = "jobs/cluster_queue.html"
    cluster: Cluster

    def load_objects(self, **kwargs: Any) -> None:
        self.cluster = self.object_or_404(
            self.scoped(Cluster).select_related("project"), pk=kwargs["cluster_id"]
        )

    def permission_target(self) -> Any:
        return self.cluster.project

    def get(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        queue = selectors.queue_of(self.cluster.pk)
        form = QueueForm(initial={"order": queue.order, "max_concurrency": queue.max_concurrency})
        return self.render(self.template, {"form": form, "cluster": self.cluster})

    def post(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        form = QueueForm(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                job_queue_update(cluster=self.cluster, actor=request.user, **form.cleaned_data)
                return done(
                    request,
                    reverse("cluster_detail", args=[org_slug, self.cluster.pk]),
                    "Job queue saved.",
                )
        return self.render(self.template, {"form": form, "cluster": self.cluster})


# --- Schedules -----------------------------------------------------------------------------


class ScheduleListView(OrgView):
    permission = "project.list"
    template = "jobs/schedule_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        rows = selectors.schedule_rows(viewer=request.user, organization=self.organization)
        return self.render(self.template, {"page": paginate(request, rows)})


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class ScheduleCreateView(CloudFieldsFormView):
    permission = "project.list"
    template = "jobs/schedule_create.html"

    def form(self, data: Any = None) -> ScheduleCreateForm:
        form = ScheduleCreateForm(data, organization=self.organization, viewer=self.request.user)
        if not form.projects:
            raise PermissionDenied("You may not schedule jobs in any project here.")
        form.follow_cloud(reverse("schedule_create", args=[self.organization.slug]))
        return form

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                schedule = schedule_create(
                    actor=request.user,
                    cron=data["cron"],
                    timezone_name=data["timezone"],
                    **form.job_fields(),
                )
                return done(
                    request,
                    reverse("schedule_detail", args=[org_slug, schedule.pk]),
                    f"Schedule {schedule.name} created.",
                )
        return self.render(self.template, {"form": form})


class ScheduleObjectView(OrgView):
    """A page of one schedule, reached only through `visible_to` (another
    organization's is a 404)."""

    permission = "project.view"
    schedule: JobSchedule

    def load_objects(self, **kwargs: Any) -> None:
        self.schedule = self.object_or_404(
            selectors.schedule_rows(viewer=self.request.user, organization=self.organization),
            pk=kwargs["schedule_id"],
        )

    def permission_target(self) -> Any:
        return self.schedule.project

    def detail_url(self) -> str:
        return reverse("schedule_detail", args=[self.organization.slug, self.schedule.pk])

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "schedule": self.schedule,
            "can_manage": has_perm(self.request.user, "job.schedule", self.schedule.project),
        }
        return super().render(template, {**base, **(context or {})}, status)


class ScheduleDetailView(ScheduleObjectView):
    template = "jobs/schedule_detail.html"

    def get(self, request: AuthedRequest, org_slug: str, schedule_id: int) -> HttpResponse:
        jobs = self.schedule.jobs.select_related("created_by").order_by("-created_at", "-pk")
        return self.render(self.template, {"jobs": list(jobs[:20])})


class SchedulePauseView(ScheduleObjectView):
    permission = "job.schedule"
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, schedule_id: int) -> HttpResponse:
        schedule_pause(schedule=self.schedule, actor=request.user)
        return done(request, self.detail_url(), f"Paused {self.schedule.name}.")


class ScheduleResumeView(ScheduleObjectView):
    permission = "job.schedule"
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, schedule_id: int) -> HttpResponse:
        schedule_resume(schedule=self.schedule, actor=request.user)
        return done(request, self.detail_url(), f"Resumed {self.schedule.name}.")


class ScheduleDeleteView(ScheduleObjectView):
    permission = "job.schedule"
    template = "jobs/schedule_delete.html"

    def get(self, request: AuthedRequest, org_slug: str, schedule_id: int) -> HttpResponse:
        return self.render(self.template)

    def post(self, request: AuthedRequest, org_slug: str, schedule_id: int) -> HttpResponse:
        schedule_delete(schedule=self.schedule, actor=request.user)
        return done(
            request,
            reverse("schedule_list", args=[org_slug]),
            f"Deleted the schedule {self.schedule.name}.",
        )
