"""What the workloads keep on a cloud, as the cloud's services see it (registered in
`WorkloadsConfig.ready`, after the clusters app, so their rows are removed before the
clusters and compute configs they point at).

A workspace holds its cloud while it exists (its files are in the cloud's storage); a job
or a service holds it until it has ended; a schedule while it is active (it would
submit jobs there). Ended jobs and services, and paused schedules, go with the cloud,
as ended clusters do; the audit log keeps their history."""

from __future__ import annotations

from typing import Any

from clouds.models import Cloud
from clouds.services import CloudDependent

from .jobs.models import Job, JobSchedule
from .models import WorkingDir
from .serve.models import Service
from .workspaces.models import Workspace


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}" if number else ""


def _holds(cloud: Cloud) -> str:
    parts = [
        _count(Workspace.objects.filter(cloud=cloud).count(), "workspace"),
        _count(Job.objects.filter(cloud=cloud).active().count(), "unfinished job"),
        _count(Service.objects.filter(cloud=cloud).live().count(), "running service"),
        _count(JobSchedule.objects.filter(cloud=cloud, paused=False).count(), "active schedule"),
    ]
    return ", ".join(part for part in parts if part)


def _remove(cloud: Cloud) -> dict[str, list[Any]]:
    jobs = Job.objects.filter(cloud=cloud)
    services = Service.objects.filter(cloud=cloud)
    schedules = JobSchedule.objects.filter(cloud=cloud)
    changes = {
        "ended_jobs_removed": [jobs.count(), 0],
        "ended_services_removed": [services.count(), 0],
        "paused_schedules_removed": [schedules.count(), 0],
    }
    jobs.delete()  # before their schedules, which they point at
    schedules.delete()
    services.delete()
    WorkingDir.objects.filter(cloud=cloud).delete()
    return changes


def _no_live_clusters(cloud: Cloud) -> int:
    return 0  # their clusters are the clusters app's to count


WORKLOADS_ON_CLOUDS = CloudDependent(live_clusters=_no_live_clusters, remove=_remove, holds=_holds)
