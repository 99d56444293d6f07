"""Image builds: start one from a spec, follow it to its end, cancel it.

A build runs in the cloud's data plane (the provider starts, polls and cancels it);
the control plane keeps the ImageBuild row. Its life:

    queued → building → succeeded | failed | cancelled

- Identical specs (normalized, hashed, on the same cloud) are built once: a new build
  of a spec already built succeeds at once with that result; one whose twin is still
  building waits for it.
- A succeeded build is a revision of its image: the image is created by the first one
  (nothing half-built is ever offered to clusters) and moves to each later one; a
  cluster keeps the revision it started with (Cluster.image_build).
- The task (tasks.advance_image_build) polls; the beat sweep re-sends builds nobody
  polled for a while, so a build whose worker was killed still reaches a final state,
  and the provider reports a build whose own process died as failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.audit import audit
from accounts.models import Organization, User
from accounts.permissions import require
from clouds.models import Cloud
from clouds.providers.base import PermanentCloudError
from clouds.providers.builds import BuildRequest, BuildState, BuildStatus, ImageBuilder
from clouds.providers.registry import provider_for, traits_for

from ..choices import FINAL_BUILD_STATES
from ..choices import BuildState as State
from ..image_specs import normalize_spec, spec_hash
from ..models import ContainerImage, ImageBuild
from .defaults import ray_version

logger = logging.getLogger(__name__)

POLL_SECONDS = 2  # between polls of a build that is running
TWIN_WAIT_SECONDS = 5  # between looks at an identical build still running
ERROR_LIMIT = 2000
TAIL_LIMIT = 8000


@dataclass(frozen=True)
class Advance:
    """What a pass over a build did, and when to look again (None: it is final)."""

    summary: str
    requeue_in: int | None = None


def _builder(cloud: Cloud) -> ImageBuilder:
    """The cloud's driver, as a builder: image_build_start only lets clouds whose kind
    builds images (traits' builds_images) get this far."""
    return provider_for(cloud)  # type: ignore[return-value]


def _repository(build: ImageBuild) -> str:
    """Where in the cloud's registry the image goes: `<organization>/<image name>`."""
    name = "".join(c if c.isalnum() else "-" for c in build.name.lower()).strip("-") or "image"
    return f"{build.organization.slug}/{name}"


def _image_named(organization: Organization, name: str) -> ContainerImage | None:
    return ContainerImage.objects.available().filter(organization=organization, name=name).first()


# Not durable: the API's Idempotency-Key row commits in the same transaction.
@transaction.atomic
def image_build_start(
    *, organization: Organization, actor: User, cloud: Cloud, name: str, spec: Any
) -> ImageBuild:
    """Build `spec` into the image `name` on `cloud` (image.manage). A new name makes a
    new image once the build succeeds; the name of an image built on this cloud builds
    its next revision. Errors name the field: name, cloud, or the spec's own."""
    require(actor, "image.manage", organization)
    return image_build_queue(
        organization=organization, actor=actor, cloud=cloud, name=name, spec=spec
    )


@transaction.atomic
def image_build_queue(
    *, organization: Organization, actor: User, cloud: Cloud, name: str, spec: Any
) -> ImageBuild:
    """image_build_start's work without its permission check, for a caller that has
    checked its own: a workspace's default image is built for whoever may create one
    (workloads/workspaces/images.py)."""
    name = (name or "").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "Give the image a name."
    elif len(name) > 100:
        errors["name"] = "An image name has at most 100 characters."
    if cloud.organization_id != organization.pk:
        raise ValidationError({"cloud": "Choose a cloud of this organization."})
    if not cloud.is_usable:
        errors["cloud"] = f"The cloud {cloud.name} is not verified. Verify it first."
    normalized = normalize_spec(spec)  # raises on the first bad field
    errors.update(traits_for(cloud.kind).build_spec_errors(normalized, cloud_name=cloud.name))
    image = _image_named(organization, name) if "name" not in errors else None
    if image is not None and image.cloud_id != cloud.pk:
        errors["name"] = (
            f"An image named {name} already exists and was not built on {cloud.name}. "
            "Choose another name."
        )
    if errors:
        raise ValidationError(errors)
    ray = ray_version()
    build = ImageBuild.objects.create(
        organization=organization,
        cloud=cloud,
        image=image,
        name=name,
        spec=normalized,
        spec_hash=spec_hash(normalized, ray_version=ray),
        ray_version=ray,
        created_by=actor,
    )
    audit(
        actor=actor,
        verb="image.build",
        target=build,
        organization=organization,
        changes={"name": [None, name], "cloud": [None, cloud.name], "spec": [None, normalized]},
    )
    twin = _succeeded_twin(build)
    if twin is not None:
        _reuse(build, twin)
    else:
        from ..tasks import advance_image_build

        advance_image_build.delay_on_commit(build_id=build.pk)
    return build


def _succeeded_twin(build: ImageBuild) -> ImageBuild | None:
    """A finished build of the same spec on the same cloud whose result is still there
    (its environment or image): reuse it rather than build again."""
    return (
        ImageBuild.objects.filter(
            cloud_id=build.cloud_id, spec_hash=build.spec_hash, state=State.SUCCEEDED
        )
        .exclude(pk=build.pk)
        .filter(reused_from=None)
        .order_by("-finished_at")
        .first()
    )


def _reuse(build: ImageBuild, twin: ImageBuild) -> None:
    """Inside the caller's transaction, with `build` current."""
    now = timezone.now()
    build.reused_from = twin
    build.image_uri = twin.image_uri
    build.python_executable = twin.python_executable
    build.log_location = twin.log_location
    build.step = ""
    build.log_tail = f"The same spec was built by build {twin.uuid}: its result is reused."
    build.started_at = build.started_at or now
    _finish(build, State.SUCCEEDED, now=now)


def _finish(build: ImageBuild, state: str, *, now: Any = None, error: str = "") -> None:
    """Record the final state (and a succeeded build's revision). Inside a transaction
    that holds the build's row."""
    build.state = state
    build.finished_at = now or timezone.now()
    build.error = error[:ERROR_LIMIT]
    if state == State.SUCCEEDED:
        _publish(build)
    build.save()
    audit(
        actor=None,
        verb=f"image.build.{state}",
        target=build,
        organization=build.organization,
        changes={"state": [None, state], **({"error": [None, build.error]} if error else {})},
    )


def _publish(build: ImageBuild) -> None:
    """The build becomes the image's newest revision (the image is made by the first)."""
    image = build.image
    if image is None:
        image = _image_named(build.organization, build.name)
    if image is not None:
        image = ContainerImage.objects.select_for_update().get(pk=image.pk)
    if image is not None and image.cloud_id != build.cloud_id:
        raise ValidationError(f"An image named {build.name} was made meanwhile; build again.")
    if image is None:
        image = ContainerImage(organization=build.organization, name=build.name, cloud=build.cloud)
    # A Python environment (local cloud) is what its nodes run; else the image by digest.
    image.python_executable = build.python_executable
    image.image_uri = "" if build.python_executable else build.image_uri
    image.ray_version = build.ray_version
    image.save()
    last = ImageBuild.objects.filter(image=image).aggregate(last=Max("revision"))["last"]
    build.image = image
    build.revision = (last or 0) + 1
    ContainerImage.objects.filter(pk=image.pk).update(build=build)


def _twin_in_flight(build: ImageBuild) -> ImageBuild | None:
    return (
        ImageBuild.objects.filter(
            cloud_id=build.cloud_id,
            spec_hash=build.spec_hash,
            state=State.BUILDING,
            pk__lt=build.pk,
        )
        .order_by("pk")
        .first()
    )


def image_build_advance(*, build_id: int) -> Advance:
    """One pass (the task's): start a queued build, or poll a running one and record
    where it is; a final one is left alone. Never holds a row lock across a cloud call."""
    build = ImageBuild.objects.select_related("cloud", "organization").filter(pk=build_id).first()
    if build is None or build.is_final:
        return Advance("final")
    if build.state == State.QUEUED:
        with transaction.atomic():
            locked = ImageBuild.objects.select_for_update().get(pk=build.pk)
            if locked.state != State.QUEUED:
                return Advance("started elsewhere", requeue_in=POLL_SECONDS)
            twin = _succeeded_twin(locked)
            if twin is not None:
                _reuse(locked, twin)
                return Advance("reused")
        if _twin_in_flight(build) is not None:
            ImageBuild.objects.filter(pk=build.pk).update(
                step="waiting for an identical build", updated_at=timezone.now()
            )
            return Advance("waiting for its twin", requeue_in=TWIN_WAIT_SECONDS)
        try:
            external_id = _builder(build.cloud).start_build(
                build=BuildRequest(
                    build_id=build.uuid,
                    spec=build.spec,
                    spec_hash=build.spec_hash,
                    repository=_repository(build),
                    ray_version=build.ray_version,
                )
            )
        except PermanentCloudError as exc:
            return _fail(build, exc.user_message)
        with transaction.atomic():
            locked = ImageBuild.objects.select_for_update().get(pk=build.pk)
            if locked.state == State.QUEUED:
                locked.state = State.BUILDING
                locked.external_id = external_id
                locked.started_at = timezone.now()
                locked.save(update_fields=["state", "external_id", "started_at", "updated_at"])
                return Advance("started", requeue_in=POLL_SECONDS)
        return Advance("cancelled while starting")  # cancel_build stops it
    try:
        status = _builder(build.cloud).poll_build(external_id=build.external_id)
    except PermanentCloudError as exc:
        return _fail(build, exc.user_message)
    return _record(build, status)


def _record(build: ImageBuild, status: BuildStatus) -> Advance:
    with transaction.atomic():
        locked = (
            ImageBuild.objects.select_for_update().select_related("organization").get(pk=build.pk)
        )
        if locked.is_final:  # cancelled meanwhile: the result is not offered
            return Advance("final")
        locked.step = status.step[:300]
        locked.log_tail = status.log_tail[-TAIL_LIMIT:]
        locked.log_location = status.log_location or locked.log_location
        if not status.is_final:
            locked.save(update_fields=["step", "log_tail", "log_location", "updated_at"])
            return Advance(f"building: {status.step}", requeue_in=POLL_SECONDS)
        if status.state == BuildState.SUCCEEDED:
            locked.image_uri = status.image_uri
            locked.python_executable = status.python_executable
        _finish(locked, status.state.value, error=status.error)
        return Advance(status.state.value)


def _fail(build: ImageBuild, message: str) -> Advance:
    with transaction.atomic():
        locked = ImageBuild.objects.select_for_update().get(pk=build.pk)
        if not locked.is_final:
            _finish(locked, State.FAILED, error=message)
    return Advance("failed")


@transaction.atomic(durable=True)
def image_build_cancel(*, build: ImageBuild, actor: User) -> ImageBuild:
    """Stop a build that has not finished (image.manage); its result is never offered."""
    require(actor, "image.manage", build.organization)
    build = ImageBuild.objects.select_for_update().select_related("organization").get(pk=build.pk)
    if build.is_final:
        raise ValidationError(f"The build already {build.get_state_display().lower()}.")
    build.step = build.step or ""
    _finish(build, State.CANCELLED)
    audit(actor=actor, verb="image.build.cancel", target=build, organization=build.organization)
    from ..tasks import stop_image_build

    stop_image_build.delay_on_commit(build_id=build.pk)
    return build


def image_build_stop(*, build_id: int) -> None:
    """Stop a cancelled build in its cloud (the task's; safe to run twice)."""
    build = ImageBuild.objects.select_related("cloud").filter(pk=build_id).first()
    if build is None or build.state != State.CANCELLED or not build.external_id:
        return
    _builder(build.cloud).cancel_build(external_id=build.external_id)


def builds_needing_advance() -> list[int]:
    """Builds not final that nobody polled for a while: their task was lost (a worker
    killed, a broker restarted)."""
    cutoff = timezone.now() - timedelta(seconds=settings.RAYDECK_BUILD_STALE_SECONDS)
    return list(
        ImageBuild.objects.exclude(state__in=FINAL_BUILD_STATES)
        .filter(updated_at__lt=cutoff)
        .values_list("pk", flat=True)
    )


def build_log(build: ImageBuild) -> str:
    """The whole log of a build, from its cloud (the last lines when it cannot say)."""
    if not build.external_id:
        return build.log_tail
    try:
        return _builder(build.cloud).build_log(external_id=build.external_id) or build.log_tail
    except PermanentCloudError:
        return build.log_tail
