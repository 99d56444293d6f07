"""The SDK's jobs: `client.jobs.submit(...)`, `.list`, `.get`, `.stop`, `.attempts`,
`.events`, `.wait`, `.log_chunks` (the driver log: live from the cluster's gateway, then
from the cloud's storage) and `.upload_working_dir(path)`, over /api/v1/orgs/{org}/jobs.

A working directory is zipped here (files matched by .gitignore or .rayignore patterns
are left out, and so is .git), refused before upload when over the limit, and sent once
per content: the API answers a signed URL to the cloud's storage only when that digest
is not stored there yet. The bytes go straight to the bucket."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pathspec

from .errors import RaydeckError, ValidationFailed, WaitTimeout
from .models import Resource

if TYPE_CHECKING:
    from .client import Client

FINAL_JOB_STATES = ("succeeded", "failed", "stopped", "timed_out")
IGNORE_FILES = (".gitignore", ".rayignore")
ALWAYS_LEFT_OUT = [".git/", "__pycache__/", "*.pyc"]
# The server's limit is the one that counts (RAYDECK_WORKDIR_MAX_BYTES); this refuses
# an obviously huge tree before zipping all of it.
LOCAL_LIMIT_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class Job(Resource):
    id: str = ""
    name: str = ""
    project: str | None = None
    entrypoint: str = ""
    state: str = ""
    state_reason: str | None = None
    max_retries: int = 0
    timeout_seconds: int | None = None
    attempts: int = 0
    cluster: str | None = None
    priority: int = 0
    queue_position: int | None = None  # its place in its cluster's queue (1: next)
    schedule: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    url: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_JOB_STATES


@dataclass(frozen=True)
class JobQueue(Resource):
    cluster: str = ""
    order: str = ""
    max_concurrency: int = 0
    running: list[dict[str, Any]] | None = None
    waiting: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class JobAttempt(Resource):
    number: int = 0
    state: str = ""
    reason: str | None = None
    exit_code: int | None = None
    cluster: str | None = None
    submission_id: str = ""
    started_at: str | None = None
    ended_at: str | None = None


@dataclass(frozen=True)
class JobEvent(Resource):
    step: str = ""
    message: str = ""
    attempt: int | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class WorkingDir(Resource):
    id: str = ""
    sha256: str = ""
    size: int = 0
    cloud: str | None = None
    uploaded: bool = False


def zip_working_dir(path: str | Path, *, limit: int = LOCAL_LIMIT_BYTES) -> bytes:
    """The tree under `path` as a zip, without what its .gitignore / .rayignore exclude.
    Entries are sorted and dated alike, so the same tree always gives the same bytes
    (and so the same digest: it is uploaded once)."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise ValidationFailed(f"{path} is not a folder.", status=0, code="usage")
    patterns = list(ALWAYS_LEFT_OUT)
    for name in IGNORE_FILES:
        if (root / name).is_file():
            patterns += (root / name).read_text(errors="replace").splitlines()
    spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    files = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(
            d for d in dirnames if not spec.match_file(f"{(rel_dir / d).as_posix()}/")
        )
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            if spec.match_file(rel) or (Path(dirpath) / name).is_symlink():
                continue
            total += (Path(dirpath) / name).stat().st_size
            if total > limit:
                raise ValidationFailed(
                    f"The working directory {path} holds more than {limit // 1_000_000} MB; "
                    "the limit is that. List data sets and build outputs in .gitignore or "
                    ".rayignore and read them from storage in the job instead.",
                    status=0,
                    code="too_large",
                )
            files.append(rel)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in files:
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = ((root / rel).stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (root / rel).read_bytes())
    return buffer.getvalue()


class Jobs:
    """A client's jobs (of its organization, or `org=`)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _path(self, org: str | None, *parts: str) -> str:
        return self.client._org_path(org, "jobs", *parts)

    def upload_working_dir(
        self, path: str | Path, project: str, *, cloud: str | None = None, org: str | None = None
    ) -> WorkingDir:
        """Zip `path` and upload it unless the cloud already holds the same tree."""
        body = zip_working_dir(path)
        request = {
            "project": project,
            "sha256": hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "cloud": cloud,
        }
        answer = self.client.request(
            "POST",
            self.client._org_path(org, "working-dirs"),
            body={k: v for k, v in request.items() if v is not None},
        )
        upload = answer.get("upload")
        if upload:
            put = urllib.request.Request(  # noqa: S310 - the URL the API signed (http/https)
                upload["url"], data=body, method=upload["method"], headers=upload["headers"]
            )
            try:
                with urllib.request.urlopen(put, timeout=300) as response:  # noqa: S310
                    response.read()
            except OSError as exc:
                raise RaydeckError(f"Uploading the working directory failed: {exc}") from exc
            answer["uploaded"] = True
        return WorkingDir.from_api(answer)

    def submit(
        self,
        entrypoint: str,
        project: str,
        *,
        name: str = "",
        working_dir: str | Path | None = None,
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
        idempotency_key: str | None = None,
    ) -> Job:
        uploaded = None
        if working_dir is not None:
            uploaded = self.upload_working_dir(working_dir, project, cloud=cloud, org=org)
            cloud = cloud or uploaded.cloud
        body: dict[str, Any] = {
            "project": project,
            "entrypoint": entrypoint,
            "name": name,
            "cloud": cloud,
            "compute_config": compute_config,
            "image": image,
            "working_dir": uploaded.id if uploaded else None,
            "env_vars": env_vars or None,
            "pip": pip or None,
            "max_retries": max_retries,
            "timeout_seconds": timeout_seconds,
            "cluster": cluster,
            "priority": priority,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self.client._create(self._path(org), Job, body, idempotency_key)

    def queue(self, cluster: str, *, org: str | None = None) -> JobQueue:
        """A shared cluster's job queue: its order, jobs at once, running and waiting."""
        path = self.client._org_path(org, "clusters", cluster, "queue")
        return JobQueue.from_api(self.client.request("GET", path))

    def set_queue(
        self,
        cluster: str,
        *,
        order: str | None = None,
        max_concurrency: int | None = None,
        org: str | None = None,
    ) -> JobQueue:
        """Change how the cluster's queue runs jobs ("fifo" or "priority"; jobs at once)."""
        body = {"order": order, "max_concurrency": max_concurrency}
        path = self.client._org_path(org, "clusters", cluster, "queue")
        answer = self.client.request(
            "PATCH", path, body={k: v for k, v in body.items() if v is not None}
        )
        return JobQueue.from_api(answer)

    def list(
        self,
        *,
        project: str | None = None,
        state: str | None = None,
        creator: str | None = None,
        org: str | None = None,
        max_items: int | None = None,
    ) -> Iterator[Job]:
        params = {
            k: v for k, v in {"project": project, "state": state, "creator": creator}.items() if v
        }
        return self.client.iterate(self._path(org), Job, params=params, max_items=max_items)

    def get(self, job_id: str, *, org: str | None = None) -> Job:
        return Job.from_api(self.client.request("GET", self._path(org, job_id)))

    def stop(self, job_id: str, *, org: str | None = None) -> Job:
        return Job.from_api(self.client.request("POST", self._path(org, job_id, "stop")))

    def attempts(self, job_id: str, *, org: str | None = None) -> Sequence[JobAttempt]:
        body = self.client.request("GET", self._path(org, job_id, "attempts"))
        return [JobAttempt.from_api(item) for item in body.get("items", [])]

    def events(self, job_id: str, *, org: str | None = None) -> Sequence[JobEvent]:
        body = self.client.request("GET", self._path(org, job_id, "events"))
        return [JobEvent.from_api(item) for item in body.get("items", [])]

    def log_places(
        self, job_id: str, *, attempt: int | None = None, page: int = 0, org: str | None = None
    ) -> dict[str, Any]:
        """Where an attempt's driver log is read (the API's answer: `archive` once the
        attempt ended, `live` while it runs)."""
        params = {"attempt": attempt, "page": page}
        return dict(self.client.request("GET", self._path(org, job_id, "logs"), params=params))

    def log_chunks(
        self,
        job_id: str,
        *,
        attempt: int | None = None,
        follow: bool = False,
        every: float = 1.0,
        org: str | None = None,
    ) -> Iterator[bytes]:
        """The attempt's driver log, piece by piece: the stored log page by page once the
        attempt ended; with `follow`, its live tail from the cluster's gateway first, then
        what was stored after the last line seen. The bytes come from the cluster and the
        bucket, never through Raydeck."""
        sent = 0
        live_failures = 0
        while True:
            places = self.log_places(job_id, attempt=attempt, org=org)
            if places.get("archive"):
                yield from self._archived_from(job_id, places, sent, org)
                return
            live = places.get("live")
            if not follow and live:
                yield self._live_text(live).encode()  # what it printed so far
                return
            if not follow or places.get("final"):
                note = places.get("note") or "No driver log is stored for this attempt."
                raise RaydeckError(note)
            deadline = time.monotonic() + 60  # ask again for the state and a fresh token
            while live and time.monotonic() < deadline:
                try:
                    text = self._live_text(live).encode()
                except OSError as exc:
                    live_failures += 1
                    if live_failures > 30:
                        raise RaydeckError(f"The cluster's gateway did not answer: {exc}") from exc
                    break
                if len(text) > sent:
                    yield text[sent:]
                    sent = len(text)
                status = self.log_places(job_id, attempt=places["attempt"], org=org)
                if status.get("final"):
                    break
                time.sleep(every)
            else:
                time.sleep(every)
            attempt = places["attempt"]

    def _live_text(self, live: dict[str, Any]) -> str:
        request = urllib.request.Request(  # noqa: S310 - the cluster's https gateway
            live["url"], headers=dict(live.get("headers") or {})
        )
        context = self.client.gateway_ssl_context()
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
            body = json.loads(response.read() or b"{}")
        return str(body.get("logs", "")) if isinstance(body, dict) else ""

    def _archived_from(
        self, job_id: str, places: dict[str, Any], skip: int, org: str | None
    ) -> Iterator[bytes]:
        """The stored log's pages from byte `skip` on, each fetched with its Range."""
        archive = places["archive"]
        page_count = int(archive.get("page_count") or 0)
        pages = list(archive.get("pages") or [])
        number = 0
        while number < page_count:
            if not pages:
                more = self.log_places(job_id, attempt=places["attempt"], page=number, org=org)
                pages = list((more.get("archive") or {}).get("pages") or [])
                if not pages:
                    return
            page = pages.pop(0)
            number = int(page["number"]) + 1
            end = int(page["offset"]) + int(page["length"])
            if end <= skip:
                continue
            request = urllib.request.Request(  # noqa: S310 - a signed storage URL
                page["url"], headers=dict(page.get("headers") or {})
            )
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                data = response.read()
            yield data[max(0, skip - int(page["offset"])) :]

    def wait(
        self, job_id: str, *, timeout: float = 24 * 3600, every: float = 2.0, org: str | None = None
    ) -> Job:
        """Poll until the job has ended (in any final state)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id, org=org)
            if job.is_final:
                return job
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"The job {job.name} is still {job.state}.")
            time.sleep(every)
