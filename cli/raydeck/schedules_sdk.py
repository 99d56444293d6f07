"""The SDK's job schedules: `client.schedules.create(...)`, `.list`, `.get`, `.pause`,
`.resume`, `.delete`, over /api/v1/orgs/{org}/job-schedules. Each run of a schedule
submits a job (client.jobs) at the times its cron expression names in its time zone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .models import Resource

if TYPE_CHECKING:
    from .client import Client


@dataclass(frozen=True)
class JobSchedule(Resource):
    id: str = ""
    name: str = ""
    project: str | None = None
    cron: str = ""
    timezone: str = "UTC"
    paused: bool = False
    entrypoint: str = ""
    cluster: str | None = None
    next_run_at: str | None = None
    last_run_at: str | None = None
    last_job: str | None = None
    last_error: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    url: str | None = None


class Schedules:
    def __init__(self, client: Client) -> None:
        self.client = client

    def _path(self, org: str | None, *parts: str) -> str:
        return self.client._org_path(org, "job-schedules", *parts)

    def create(
        self,
        entrypoint: str,
        project: str,
        *,
        name: str,
        cron: str,
        timezone: str = "UTC",
        cloud: str | None = None,
        compute_config: str | None = None,
        image: str | None = None,
        env_vars: dict[str, str] | None = None,
        pip: list[str] | None = None,
        max_retries: int | None = None,
        timeout_seconds: int | None = None,
        cluster: str | None = None,
        priority: int | None = None,
        org: str | None = None,
    ) -> JobSchedule:
        """A schedule that submits `entrypoint` as a job at each time `cron` names."""
        body: dict[str, Any] = {
            "project": project,
            "entrypoint": entrypoint,
            "name": name,
            "cron": cron,
            "timezone": timezone,
            "cloud": cloud,
            "compute_config": compute_config,
            "image": image,
            "env_vars": env_vars or None,
            "pip": pip or None,
            "max_retries": max_retries,
            "timeout_seconds": timeout_seconds,
            "cluster": cluster,
            "priority": priority,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return JobSchedule.from_api(self.client.request("POST", self._path(org), body=body))

    def list(self, *, project: str | None = None, org: str | None = None) -> Iterator[JobSchedule]:
        params = {"project": project} if project else None
        return self.client.iterate(self._path(org), JobSchedule, params=params)

    def get(self, schedule_id: str, *, org: str | None = None) -> JobSchedule:
        return JobSchedule.from_api(self.client.request("GET", self._path(org, schedule_id)))

    def pause(self, schedule_id: str, *, org: str | None = None) -> JobSchedule:
        path = self._path(org, schedule_id, "pause")
        return JobSchedule.from_api(self.client.request("POST", path))

    def resume(self, schedule_id: str, *, org: str | None = None) -> JobSchedule:
        """Runs again from the next time its cron names (missed ones do not run)."""
        path = self._path(org, schedule_id, "resume")
        return JobSchedule.from_api(self.client.request("POST", path))

    def delete(self, schedule_id: str, *, org: str | None = None) -> None:
        """The jobs it submitted stay."""
        self.client.request("DELETE", self._path(org, schedule_id))
