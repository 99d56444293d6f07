"""What people ask of services: deploy (a new service, or a new version of one), pin a
canary weight, roll back, add query tokens, terminate. Each checks permission, validates
with field-named errors, writes rows, an event and the audit entry, and asks the
orchestrator (rollout.py, through tasks.py) to act once the transaction commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import Project, User
from accounts.permissions import require
from accounts.tokens import display_prefix, hash_secret, new_secret
from clouds.models import Cloud
from clusters.models import ComputeConfigVersion, ContainerImage
from clusters.services.lifecycle import cluster_create

from .. import live
from ..choices import EventLevel, ServiceState, VersionState
from ..models import Service, ServiceToken, ServiceVersion
from ..serve_config import canary_steps_errors, config_hash, normalize_serve_config
from ..tasks import enqueue_advance
from .events import record_event
from .rollout import abort_rollout

TOKEN_PREFIX = "rds"  # noqa: S105 - a service query token (the API's tokens say "rdk")


@dataclass(frozen=True)
class Deployed:
    service: Service
    version: ServiceVersion
    token: str | None  # the new service's query token, shown once; None for a new version


def _rollout_settings(
    service: Service,
    canary_steps: list[int] | None,
    step_seconds: int | None,
    max_error_rate: float | None,
    max_latency_ratio: float | None,
) -> None:
    if canary_steps is not None:
        if reason := canary_steps_errors(canary_steps):
            raise ValidationError({"canary_steps": reason})
        service.canary_steps = canary_steps
    if step_seconds is not None:
        service.step_seconds = step_seconds
    if max_error_rate is not None:
        service.max_error_rate = max_error_rate
    if max_latency_ratio is not None:
        service.max_latency_ratio = max_latency_ratio


def _new_version(
    *,
    service: Service,
    actor: User,
    serve_config: dict[str, Any],
    compute_config: ComputeConfigVersion | None,
    image: ContainerImage | None,
) -> ServiceVersion:
    """The version row and its cluster, in the caller's transaction: the cluster's rules
    (a compute config and image of this project that the cloud runs) refuse bad choices
    on the fields of the same names before anything is kept."""
    number = (
        service.versions.order_by("-number").values_list("number", flat=True).first() or 0
    ) + 1
    try:
        cluster = cluster_create(
            project=service.project,
            actor=actor,
            name=f"{service.name}-v{number}",
            cloud=service.cloud,
            compute_config=compute_config,
            image=image,
        )
    except ValidationError as exc:
        errors = exc.message_dict
        if "name" in errors:  # the cluster's name, which people did not choose
            errors["name"] = [
                f"A live cluster is already named {service.name}-v{number} in this project; "
                "rename it or choose another service name."
            ]
        raise ValidationError(errors) from exc
    version = ServiceVersion(
        organization_id=service.organization_id,
        service=service,
        number=number,
        serve_config=serve_config,
        config_hash=config_hash(serve_config),
        compute_config=cluster.compute_config,
        image=cluster.image,
        cluster=cluster,
        created_by=actor,
    )
    version.save()
    return version


def _issue_token(service: Service, actor: User | None, name: str) -> str:
    secret = new_secret(TOKEN_PREFIX)
    ServiceToken.objects.create(
        organization_id=service.organization_id,
        service=service,
        name=name,
        prefix=display_prefix(secret),
        token_hash=hash_secret(secret),
        created_by=actor,
    )
    return secret


# Not durable: the API's Idempotency-Key row commits in the same transaction.
@transaction.atomic
def service_deploy(
    *,
    project: Project,
    actor: User,
    name: str,
    serve_config: Any,
    cloud: Cloud | None = None,
    compute_config: ComputeConfigVersion | None = None,
    image: ContainerImage | None = None,
    canary_steps: list[int] | None = None,
    step_seconds: int | None = None,
    max_error_rate: float | None = None,
    max_latency_ratio: float | None = None,
) -> Deployed:
    """Deploy `serve_config` as the service `name` of `project`: a new service (with a
    stable endpoint and a query token), or the next version of the live one of that
    name, which then takes the traffic over step by step."""
    require(actor, "service.manage", project)
    config = normalize_serve_config(serve_config)
    service = (
        Service.objects.select_for_update()
        .filter(project=project, name=name.strip())
        .live()
        .first()
    )
    token = None
    if service is None:
        if cloud is None:
            raise ValidationError({"cloud": "Choose the cloud the service runs on."})
        service = Service(
            organization_id=project.organization_id,
            project=project,
            name=name.strip(),
            cloud=cloud,
            created_by=actor,
        )
        _rollout_settings(service, canary_steps, step_seconds, max_error_rate, max_latency_ratio)
        service.full_clean(exclude=["project", "cloud", "current_version"])
        try:
            with transaction.atomic():
                service.save()
        except IntegrityError as exc:  # another deploy of the same name won the race
            raise ValidationError(
                {"name": f"A service named {service.name} was just created; deploy again."}
            ) from exc
        token = _issue_token(service, actor, "default")
        verb = "service.create"
    else:
        if cloud is not None and cloud.pk != service.cloud_id:
            raise ValidationError(
                {"cloud": f"{service.name} runs on {service.cloud.name}; its versions stay there."}
            )
        if service.state == ServiceState.TERMINATING:
            raise ValidationError({"name": f"{service.name} is being terminated."})
        rolling = service.versions.filter(
            state__in=[VersionState.STARTING, VersionState.HEALTHY],
            number__gt=_current_number(service),
        ).first()
        if rolling is not None or service.state == ServiceState.DEPLOYING:
            raise ValidationError(
                {
                    "name": f"v{rolling.number if rolling else 1} of {service.name} is still "
                    "rolling out. Wait for it, or roll it back, then deploy again."
                }
            )
        _rollout_settings(service, canary_steps, step_seconds, max_error_rate, max_latency_ratio)
        service.full_clean(exclude=["project", "cloud", "current_version"])
        service.save(
            update_fields=[
                "canary_steps",
                "step_seconds",
                "max_error_rate",
                "max_latency_ratio",
                "updated_at",
            ]
        )
        verb = "service.deploy"
    version = _new_version(
        service=service,
        actor=actor,
        serve_config=config,
        compute_config=compute_config,
        image=image,
    )
    record_event(
        service,
        "version created",
        f"{actor.display_name} deployed v{version.number}; its cluster is starting.",
        version=version,
    )
    audit(
        actor=actor,
        verb=verb,
        target=service,
        changes={"version": [None, version.number], "config_hash": [None, version.config_hash]},
    )
    transaction.on_commit(live.orders_changed)
    enqueue_advance(service.pk, on_commit=True)
    return Deployed(service=service, version=version, token=token)


def _current_number(service: Service) -> int:
    current = service.current_version
    return current.number if current is not None else 0


def _candidate(service: Service) -> ServiceVersion | None:
    """The newer version a rollout is moving traffic to, if any."""
    return (
        service.versions.filter(
            state__in=[VersionState.STARTING, VersionState.HEALTHY],
            number__gt=_current_number(service),
        )
        .order_by("-number")
        .first()
    )


@transaction.atomic(durable=True)
def service_set_traffic(*, service: Service, actor: User, canary: int | None) -> Service:
    """Pin the new version's share of the traffic at `canary` percent (the rollout holds
    there, still watching its errors), or unpin it (None) to let the rollout go on."""
    require(actor, "service.manage", service.project)
    service = Service.objects.select_for_update().get(pk=service.pk)
    if canary is not None and (
        isinstance(canary, bool) or not isinstance(canary, int) or not 0 <= canary <= 100
    ):
        raise ValidationError({"canary": "Give a percentage from 0 to 100."})
    candidate = _candidate(service)
    if candidate is None or service.current_version_id is None:
        raise ValidationError(
            {"canary": "No new version is rolling out: deploy one, then set its traffic."}
        )
    old = service.pinned_weight
    service.pinned_weight = canary
    service.save(update_fields=["pinned_weight", "updated_at"])
    message = (
        f"{actor.display_name} pinned v{candidate.number} at {canary}% of the traffic."
        if canary is not None
        else f"{actor.display_name} unpinned v{candidate.number}; the rollout goes on."
    )
    record_event(service, "traffic pinned", message, version=candidate)
    audit(
        actor=actor, verb="service.set_traffic", target=service, changes={"canary": [old, canary]}
    )
    enqueue_advance(service.pk, on_commit=True)
    return service


@transaction.atomic(durable=True)
def service_rollback(*, service: Service, actor: User) -> Service:
    """Stop a rollout under way (traffic returns to the serving version), or, with none
    under way, deploy the previous version's config again as a new version."""
    require(actor, "service.manage", service.project)
    service = Service.objects.select_for_update().get(pk=service.pk)
    if service.is_final or service.state == ServiceState.TERMINATING:
        raise ValidationError(f"{service.name} is {service.get_state_display().lower()}.")
    candidate = _candidate(service)
    current = service.current_version
    if candidate is not None and current is not None:
        abort_rollout(
            service,
            candidate,
            f"{actor.display_name} rolled v{candidate.number} back.",
            level=EventLevel.WARNING,
        )
        audit(
            actor=actor,
            verb="service.rollback",
            target=service,
            changes={"version": [candidate.number, current.number]},
        )
        enqueue_advance(service.pk, on_commit=True)
        return service
    previous = (
        service.versions.filter(number__lt=current.number, state=VersionState.STOPPED)
        .exclude(state_reason__startswith="Rolled back")
        .order_by("-number")
        .first()
        if current
        else None
    )
    if previous is None:
        raise ValidationError("There is no previous version to roll back to.")
    version = _new_version(
        service=service,
        actor=actor,
        serve_config=previous.serve_config,
        compute_config=previous.compute_config,
        image=previous.image,
    )
    record_event(
        service,
        "rollback",
        f"{actor.display_name} rolled back to v{previous.number}'s config as v{version.number}.",
        version=version,
        level=EventLevel.WARNING,
    )
    audit(
        actor=actor,
        verb="service.rollback",
        target=service,
        changes={"version": [current.number if current else None, version.number]},
    )
    transaction.on_commit(live.orders_changed)
    enqueue_advance(service.pk, on_commit=True)
    return service


@transaction.atomic(durable=True)
def service_token_create(*, service: Service, actor: User, name: str) -> str:
    """Another query token (for rotation); the secret is returned once, only its hash kept."""
    require(actor, "service.manage", service.project)
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": "Give the token a name of up to 100 characters."})
    secret = _issue_token(service, actor, name)
    audit(actor=actor, verb="service.token_create", target=service, changes={"token": [None, name]})
    transaction.on_commit(live.orders_changed)  # heads that check tokens get the new set
    enqueue_advance(service.pk, on_commit=True)
    return secret


@transaction.atomic(durable=True)
def service_token_revoke(*, token: ServiceToken, actor: User) -> None:
    require(actor, "service.manage", token.service.project)
    token = ServiceToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(
            actor=actor,
            verb="service.token_revoke",
            target=token.service,
            changes={"token": [token.name, None]},
        )
        transaction.on_commit(live.orders_changed)
        enqueue_advance(token.service_id, on_commit=True)


@transaction.atomic(durable=True)
def service_terminate(*, service: Service, actor: User) -> Service:
    """Stop every version, terminate their clusters and remove the endpoint (idempotent)."""
    require(actor, "service.manage", service.project)
    service = Service.objects.select_for_update().get(pk=service.pk)
    if service.is_final or service.state == ServiceState.TERMINATING:
        return service
    old = service.state
    service.state = ServiceState.TERMINATING
    service.save(update_fields=["state", "updated_at"])
    record_event(service, "terminate requested", f"{actor.display_name} terminated the service.")
    audit(
        actor=actor,
        verb="service.terminate",
        target=service,
        changes={"state": [old, service.state]},
    )
    enqueue_advance(service.pk, on_commit=True)
    return service
