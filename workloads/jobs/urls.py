"""Job pages, mounted under /o/<org_slug>/ by console/urls.py."""

from django.urls import path

from . import views

org_urlpatterns = [
    path("jobs/", views.JobListView.as_view(), name="job_list"),
    path("jobs/new/", views.JobCreateView.as_view(), name="job_create"),
    path("jobs/<int:job_id>/", views.JobDetailView.as_view(), name="job_detail"),
    path(
        "jobs/<int:job_id>/attempts/<int:number>/log/",
        views.JobAttemptLogView.as_view(),
        name="job_attempt_log",
    ),
    path(
        "jobs/<int:job_id>/attempts/<int:number>/live/",
        views.JobLiveLogView.as_view(),
        name="job_attempt_live_log",
    ),
    path("jobs/<int:job_id>/stop/", views.JobStopView.as_view(), name="job_stop"),
    path("jobs/<int:job_id>/again/", views.JobAgainView.as_view(), name="job_again"),
    path("jobs/schedules/", views.ScheduleListView.as_view(), name="schedule_list"),
    path("jobs/schedules/new/", views.ScheduleCreateView.as_view(), name="schedule_create"),
    path(
        "jobs/schedules/<int:schedule_id>/",
        views.ScheduleDetailView.as_view(),
        name="schedule_detail",
    ),
    path(
        "jobs/schedules/<int:schedule_id>/pause/",
        views.SchedulePauseView.as_view(),
        name="schedule_pause",
    ),
    path(
        "jobs/schedules/<int:schedule_id>/resume/",
        views.ScheduleResumeView.as_view(),
        name="schedule_resume",
    ),
    path(
        "jobs/schedules/<int:schedule_id>/delete/",
        views.ScheduleDeleteView.as_view(),
        name="schedule_delete",
    ),
    path(
        "clusters/<int:cluster_id>/queue/", views.ClusterQueueView.as_view(), name="cluster_queue"
    ),
]
