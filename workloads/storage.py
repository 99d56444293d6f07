"""Working directories in the cloud's own storage, content-addressed.

The laptop zips the tree and asks for an upload of (SHA-256, size); Raydeck answers with
a short-lived signed URL for the cloud's bucket (S3, Cloud Storage, or the local cloud's
folder), or with none when that digest is already stored in that cloud, so the same
tree is uploaded once. The bytes go straight to the bucket, never through the control
plane's storage. A job's runtime_env points at `working_dir_uri`, which the cloud's
nodes read with their own identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import Project, User
from accounts.permissions import require
from clouds.models import Cloud
from clouds.providers.base import STORAGE_URL_SECONDS, PermanentCloudError, SignedUrl
from clouds.providers.registry import provider_for
from clusters.services.lifecycle import cloud_usable_by

from .models import WORKING_DIRS, WorkingDir

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WorkingDirUpload:
    working_dir: WorkingDir
    upload: SignedUrl | None  # None: the cloud already holds it, nothing to send


def human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:g} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def size_refusal(size: int) -> str | None:
    """Why a zipped tree of `size` bytes cannot be a working directory, or None."""
    limit = settings.RAYDECK_WORKDIR_MAX_BYTES
    if size <= 0:
        return "The zipped working directory is empty."
    if size > limit:
        return (
            f"The zipped working directory is {human_size(size)}; the limit is "
            f"{human_size(limit)}. Leave data sets and build outputs out (list them in "
            ".gitignore or .rayignore) and read them from storage in the job instead."
        )
    return None


def _cloud_error(exc: PermanentCloudError) -> ValidationError:
    return ValidationError({"cloud": exc.user_message})


@transaction.atomic(durable=True)
def _record(*, project: Project, cloud: Cloud, sha256: str, size: int, actor: User) -> WorkingDir:
    working_dir, created = WorkingDir.objects.get_or_create(
        cloud=cloud,
        sha256=sha256,
        defaults={"organization_id": cloud.organization_id, "size": size, "created_by": actor},
    )
    if working_dir.size != size:
        raise ValidationError(
            {"size": f"This digest was stored as {working_dir.size} bytes, not {size}."}
        )
    if created:
        audit(
            actor=actor,
            verb="working_dir.create",
            target=working_dir,
            changes={"sha256": [None, sha256], "size": [None, size], "cloud": [None, cloud.name]},
        )
    return working_dir


def working_dir_request_upload(
    *, project: Project, cloud: Cloud, sha256: str, size: int, actor: User
) -> WorkingDirUpload:
    """The working directory `sha256` (hex) of `size` bytes in `cloud`, with a signed
    upload URL unless the cloud already holds it. Refusals name their field (`sha256`,
    `size`, `cloud`) and record nothing. The cloud calls happen after the row commits:
    no transaction waits on a cloud."""
    require(actor, "workdir.upload", project)
    sha256 = sha256.strip().lower()
    errors = {}
    if not SHA256.fullmatch(sha256):
        errors["sha256"] = "Give the zip's SHA-256 as 64 hexadecimal characters."
    if reason := size_refusal(size):
        errors["size"] = reason
    if reason := cloud_usable_by(cloud, project):
        errors["cloud"] = reason
    if errors:
        raise ValidationError(errors)
    working_dir = _record(project=project, cloud=cloud, sha256=sha256, size=size, actor=actor)
    if working_dir.uploaded_at is not None:
        return WorkingDirUpload(working_dir, None)
    provider = provider_for(cloud)
    try:
        if provider.object_size(key=working_dir.key) == size:
            # Uploaded after the last request (or by someone else): it counts now.
            mark_uploaded(working_dir)
            return WorkingDirUpload(working_dir, None)
        upload = provider.upload_url(
            key=working_dir.key, size=size, sha256=sha256, expires_in=STORAGE_URL_SECONDS
        )
    except PermanentCloudError as exc:
        raise _cloud_error(exc) from exc
    return WorkingDirUpload(working_dir, upload)


def mark_uploaded(working_dir: WorkingDir) -> None:
    now = timezone.now()
    WorkingDir.objects.filter(pk=working_dir.pk, uploaded_at=None).update(uploaded_at=now)
    working_dir.uploaded_at = working_dir.uploaded_at or now


def working_dir_confirm(*, working_dir: WorkingDir) -> bool:
    """Whether the working directory is in its cloud's storage with the size recorded
    (looked up once, then remembered): a job may only use one that is."""
    if working_dir.uploaded_at is not None:
        return True
    try:
        stored = provider_for(working_dir.cloud).object_size(key=working_dir.key)
    except PermanentCloudError as exc:
        raise _cloud_error(exc) from exc
    if stored != working_dir.size:
        return False
    mark_uploaded(working_dir)
    return True


def working_dir_packed(
    *, project: Project, cloud: Cloud, sha256: str, size: int, actor: User
) -> WorkingDir:
    """A working directory a cluster zipped and stored itself (a workspace's snapshot,
    under working_dirs_uri), recorded once it is there with that size; refusals name
    `working_dir` and record nothing."""
    sha256 = sha256.strip().lower()
    reason = size_refusal(size) if SHA256.fullmatch(sha256) else "The digest is not a SHA-256."
    if reason:
        raise ValidationError({"working_dir": reason})
    stored = WorkingDir(cloud=cloud, sha256=sha256, size=size)
    try:
        there = provider_for(cloud).object_size(key=stored.key) == size
    except PermanentCloudError as exc:
        raise _cloud_error(exc) from exc
    if not there:
        raise ValidationError({"working_dir": "The packed files are not in the cloud's storage."})
    working_dir = _record(project=project, cloud=cloud, sha256=sha256, size=size, actor=actor)
    mark_uploaded(working_dir)
    return working_dir


def working_dirs_uri(cloud: Cloud) -> str:
    """The folder a cluster stores a working directory it zipped in, as `<sha256>.zip`
    (where WorkingDir.key puts it; read and written with the nodes' own identity)."""
    return provider_for(cloud).object_uri(key=WORKING_DIRS)


def working_dir_uri(working_dir: WorkingDir) -> str:
    """What a job's runtime_env names as its working_dir (read by the cloud's nodes)."""
    return provider_for(working_dir.cloud).object_uri(key=working_dir.key)


# --- Archived job logs ---------------------------------------------------------------------

# What one page of an archived log is (the API hands out a signed URL and a byte range
# per page; the console shows one page at a time).
LOG_PAGE_BYTES = 256 * 1024
MAX_PAGES_PER_ANSWER = 100


def job_log_key(job_uuid: str, number: int) -> str:
    """Where an attempt's whole driver log is kept in its cloud's storage."""
    return f"joblogs/{job_uuid}/attempt-{number}/driver.log"


def job_log_uri(cloud: Cloud, key: str) -> str | None:
    """Where the head stores the log (read by the cloud's nodes with their own identity),
    or None when the cloud has no storage (the log then stays on the cluster only)."""
    try:
        return provider_for(cloud).object_uri(key=key)
    except PermanentCloudError:
        return None


@dataclass(frozen=True)
class LogPage:
    number: int
    offset: int
    length: int
    url: str
    headers: dict[str, str]  # the page's byte range; send them with the URL


@dataclass(frozen=True)
class ArchivedLog:
    size: int
    download: SignedUrl
    pages: list[LogPage]
    page_count: int


def archived_log(*, cloud: Cloud, key: str, first_page: int = 0) -> ArchivedLog | None:
    """The archived log at `key` read page by page through one short-lived signed URL
    (bucket → reader, never through the control plane), or None when there is none.
    Callers check who may read it."""
    provider = provider_for(cloud)
    size = provider.object_size(key=key)
    if size is None:
        return None
    download = provider.download_url(key=key, expires_in=STORAGE_URL_SECONDS)
    page_count = -(-size // LOG_PAGE_BYTES)  # an empty log has no page
    pages = []
    for number in range(max(0, first_page), min(page_count, first_page + MAX_PAGES_PER_ANSWER)):
        offset = number * LOG_PAGE_BYTES
        length = min(LOG_PAGE_BYTES, size - offset)
        last = offset + length - 1
        headers = {**download.headers, "Range": f"bytes={offset}-{last}"}
        pages.append(LogPage(number, offset, length, download.url, headers))
    return ArchivedLog(size=size, download=download, pages=pages, page_count=page_count)
