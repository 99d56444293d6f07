"""The orchestrator: one pass of `service_advance` moves a service one step toward what
its rows ask for, and says when to look again.

A pass reads the heads' reports (live.py), then, in order:
1. makes sure the endpoint exists and admits exactly the live query tokens;
2. judges starting versions (healthy when every Serve application of their config runs
   on their cluster; failed when the cluster or the config fails, or they take too long);
3. moves traffic: the first healthy version takes 100 %; a newer healthy version takes
   the canary steps (default 10 → 50 → 100), each held for `step_seconds` while its error
   rate and p99 latency are compared with the serving version's, and, while the service
   has traffic, until the new version's head has reported enough requests to judge it
   (its counters lag by seconds: a step that passed on time alone could promote a
   version whose errors had not arrived yet); a bad figure, figures that never come, or
   an application that turns unhealthy, roll it back, with an event that says why;
4. drains what no longer takes traffic (weight 0, in-flight requests finish), then stops
   it and terminates its cluster;
5. tells the router the weights the rows now say.

Every decision is written to rows before the router or a cluster is touched, and each
step states a whole desired state (weights, tokens, terminations are idempotent), so a
worker killed at any point (kill -9) leaves rows the next pass resumes from: no second
cluster, no weight left half-set. A lease in the shared cache keeps two workers from
advancing one service at once; no row lock is held across a cloud call. A load balancer
the cloud refuses (PermanentCloudError) becomes one error event, and later passes try
again.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from clouds.providers.base import Backend, PermanentCloudError, ServiceRouter
from clouds.providers.registry import provider_for, traits_for
from clusters.certificates import endpoint_certificate
from clusters.choices import ClusterState, NodeRole
from clusters.models import Node
from clusters.services.lifecycle import cluster_terminate

from .. import live, metrics
from ..choices import EventLevel, ServiceState, VersionState
from ..models import Service, ServiceToken, ServiceVersion
from .events import record_event

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 20 * 60  # a version whose apps are not up by then has failed
DRAIN_TIMEOUT_SECONDS = 60  # in-flight requests get this long to finish
MIN_DRAIN_SECONDS = 3  # the router has taken the version out before its cluster goes
REPORT_FRESH_SECONDS = 30  # an older head report says nothing about health
MIN_REQUESTS = 10  # fewer requests than this in a step prove nothing either way
# A service whose serving version had fewer than MIN_REQUESTS in this window is quiet: a
# new version could wait for ever for figures, so its steps pass on time alone. It is
# longer than a head's counters lag behind (Ray exports them every few seconds).
QUIET_WINDOW_SECONDS = 60
# A step of a busy service waits for the new version's figures at most this long past its
# hold, then rolls it back: a version that cannot be judged is given no more traffic.
EVIDENCE_WAIT_SECONDS = 300
LATENCY_ALLOWANCE_MS = 50.0  # p99s closer than this are the same
ACTIVE_POLL_SECONDS = 2  # while something moves
IDLE_POLL_SECONDS = 15  # while one version serves everything

FAILED_APP_STATES = {"DEPLOY_FAILED", "UNHEALTHY"}


@dataclass(frozen=True)
class Verdict:
    bad: bool
    reason: str = ""
    # Why the step cannot be judged yet (too few of the new version's requests reported
    # while the service is busy); "" once it can, or when the service is quiet.
    waiting: str = ""


def _head(version: ServiceVersion) -> tuple[str, int, str] | None:
    """Where the version's Serve proxy listens: its head's address and "serve" port, and
    the head's instance in its cloud (a GCP router names it)."""
    if version.cluster_id is None:
        return None
    head = (
        Node.objects.filter(cluster_id=version.cluster_id, role=NodeRole.HEAD)
        .live()
        .values_list("private_address", "ray_ports", "instance_id")
        .first()
    )
    if head is None or not head[0] or not isinstance(head[1], dict) or not head[1].get("serve"):
        return None
    return head[0], int(head[1]["serve"]), head[2]


def _fresh_report(version: ServiceVersion) -> dict | None:
    if version.cluster_id is None:
        return None
    found = live.report(version.cluster_id)
    if found is None or time.time() - found[0] > REPORT_FRESH_SECONDS:
        return None
    return found[1]


def _save_version(version: ServiceVersion, *fields: str) -> None:
    version.save(update_fields=["state", "state_reason", "state_changed_at", *fields])


# -- 2. health ---------------------------------------------------------------------


def _judge_starting(service: Service, version: ServiceVersion) -> None:
    cluster = version.cluster
    reason = ""
    if cluster is None or cluster.state in (ClusterState.FAILED, ClusterState.TERMINATED):
        why = cluster.state_reason if cluster else "it has no cluster"
        reason = f"Its cluster did not come up: {why or 'it ended'}."
    elif (timezone.now() - version.created_at).total_seconds() > START_TIMEOUT_SECONDS:
        reason = f"It was not healthy within {START_TIMEOUT_SECONDS // 60} minutes."
    report = _fresh_report(version)
    apps: dict[str, dict] = {}
    if not reason and report is not None and report.get("hash") == version.config_hash:
        apps = report.get("applications") or {}
        failed = {n: a for n, a in apps.items() if a.get("status") in FAILED_APP_STATES}
        if failed:
            name, app = next(iter(failed.items()))
            reason = f"Serve application {name} is {app.get('status')}: {app.get('message', '')}"
    elif not reason and report is not None and report.get("error"):
        apps = {}
        if (timezone.now() - version.created_at).total_seconds() > 120:
            reason = report["error"]
    with transaction.atomic():
        version = ServiceVersion.objects.select_for_update().get(pk=version.pk)
        if version.state != VersionState.STARTING:
            return
        if apps:
            version.applications = apps
        if reason:
            version.move_to(VersionState.FAILED, reason.strip())
            _save_version(version, "applications")
            record_event(
                service,
                "version failed",
                f"v{version.number} failed: {version.state_reason}",
                version=version,
                level=EventLevel.ERROR,
            )
        elif apps and all(a.get("status") == "RUNNING" for a in apps.values()):
            head = _head(version)
            if head is None:
                return
            version.move_to(VersionState.HEALTHY)
            version.head_tls = _speaks_tls(report)  # before the load balancer names it
            _save_version(version, "applications", "head_tls")
            record_event(
                service,
                "version healthy",
                f"v{version.number}: every Serve application runs ({', '.join(sorted(apps))}).",
                version=version,
            )
        elif apps:
            version.save(update_fields=["applications"])


def _speaks_tls(report: dict | None) -> bool:
    """Whether the head's "serve" port speaks TLS (head.py `clean_report`)."""
    return bool(report and report.get("tls"))


def _watch_health(version: ServiceVersion) -> str:
    """Why a healthy version is no longer healthy, or ""; follows what its head's port
    speaks (a head replaced by one with a newer agent speaks TLS)."""
    report = _fresh_report(version)
    if report is not None and _speaks_tls(report) != version.head_tls:
        version.head_tls = _speaks_tls(report)
        ServiceVersion.objects.filter(pk=version.pk).update(head_tls=version.head_tls)
    if report is None or report.get("hash") != version.config_hash:
        return ""
    apps = report.get("applications") or {}
    for name, app in apps.items():
        if app.get("status") in FAILED_APP_STATES:
            return f"Serve application {name} turned {app['status']}: {app.get('message', '')}"
    if apps != version.applications:
        ServiceVersion.objects.filter(pk=version.pk).update(applications=apps)
    return ""


# -- 3. traffic --------------------------------------------------------------------


def compare(service: Service, new: ServiceVersion, old: ServiceVersion, start: float) -> Verdict:
    """The new version's errors and p99 latency since `start`, against the old one's."""
    if new.cluster_id is None:
        return Verdict(False)
    fresh = metrics.since(live.samples(new.cluster_id), start)
    if fresh is None or fresh.requests < MIN_REQUESTS:
        if _quiet(old):
            return Verdict(False)
        served = fresh.requests if fresh else 0
        return Verdict(
            False,
            waiting=f"v{new.number} has reported {served:.0f} of the {MIN_REQUESTS} "
            "requests a step needs to judge it",
        )
    base = metrics.since(live.samples(old.cluster_id), start) if old.cluster_id else None
    base_rate = base.error_rate if base and base.requests >= MIN_REQUESTS else 0.0
    if fresh.error_rate > service.max_error_rate and fresh.error_rate > base_rate * 2:
        return Verdict(
            True,
            f"v{new.number} failed {fresh.errors:.0f} of {fresh.requests:.0f} requests "
            f"({fresh.error_rate:.0%}; v{old.number}: {base_rate:.0%}; the limit is "
            f"{service.max_error_rate:.0%}).",
        )
    if (
        base is not None
        and base.requests >= MIN_REQUESTS
        and fresh.p99_ms is not None
        and base.p99_ms is not None
        and fresh.p99_ms > base.p99_ms * service.max_latency_ratio + LATENCY_ALLOWANCE_MS
    ):
        return Verdict(
            True,
            f"v{new.number}'s p99 latency is {fresh.p99_ms:.0f} ms against v{old.number}'s "
            f"{base.p99_ms:.0f} ms (the limit is {service.max_latency_ratio:g} times).",
        )
    return Verdict(False)


def _quiet(version: ServiceVersion) -> bool:
    """Whether the version served too few requests of late to judge a newcomer against."""
    if version.cluster_id is None:
        return True
    recent = metrics.since(live.samples(version.cluster_id), time.time() - QUIET_WINDOW_SECONDS)
    return recent is None or recent.requests < MIN_REQUESTS


def abort_rollout(service: Service, candidate: ServiceVersion, reason: str, *, level: str) -> None:
    """Traffic back to the serving version; the candidate drains (if it took any) and
    stops. In the caller's transaction, with the service row locked."""
    current = service.current_version
    if current is not None:
        ServiceVersion.objects.filter(pk=current.pk).update(weight=100)
    candidate = ServiceVersion.objects.select_for_update().get(pk=candidate.pk)
    target = (
        VersionState.UNHEALTHY if candidate.state == VersionState.HEALTHY else VersionState.STOPPED
    )
    candidate.move_to(target, f"Rolled back: {reason}")
    candidate.weight = 0
    candidate.drain_started_at = timezone.now()
    _save_version(candidate, "weight", "drain_started_at")
    service.rollout_step = None
    service.step_started_at = None
    service.pinned_weight = None
    service.state = ServiceState.RUNNING
    service.state_reason = f"v{candidate.number} rolled back: {reason}"
    service.save(
        update_fields=[
            "rollout_step",
            "step_started_at",
            "pinned_weight",
            "state",
            "state_reason",
            "updated_at",
        ]
    )
    back_to = f"; traffic is back on v{current.number}" if current else ""
    record_event(
        service,
        "rolled back",
        f"v{candidate.number} rolled back{back_to}. {reason}",
        version=candidate,
        level=level,
    )
    transaction.on_commit(live.orders_changed)


def _move_traffic(service_id: int) -> bool:
    """Step 3 in one transaction; True while a rollout or the first start is under way."""
    with transaction.atomic():
        service = Service.objects.select_for_update().get(pk=service_id)
        versions = list(service.versions.select_for_update().order_by("number"))
        current = next((v for v in versions if v.pk == service.current_version_id), None)
        newer = [
            v
            for v in versions
            if v.number > (current.number if current else 0)
            and v.state in (VersionState.STARTING, VersionState.HEALTHY)
        ]
        candidate = newer[-1] if newer else None
        # An older candidate that a newer deploy overtook never gets traffic.
        for stale in newer[:-1]:
            stale.move_to(VersionState.STOPPED, f"Superseded by v{newer[-1].number}.")
            stale.weight = 0
            _save_version(stale, "weight")
        if current is None:
            return _first_version(service, versions, candidate)
        if current.state == VersionState.HEALTHY:
            _watch_health(current)  # keeps its applications' health up to date
        if candidate is None:
            if service.state == ServiceState.ROLLING_OUT:
                service.state = ServiceState.RUNNING
                service.save(update_fields=["state", "updated_at"])
            return False
        if candidate.state == VersionState.STARTING:
            if service.state != ServiceState.ROLLING_OUT:
                service.state = ServiceState.ROLLING_OUT
                service.state_reason = ""
                service.save(update_fields=["state", "state_reason", "updated_at"])
            return True
        if reason := _watch_health(candidate):
            abort_rollout(service, candidate, reason, level=EventLevel.ERROR)
            return True
        steps = list(service.canary_steps)
        now = timezone.now()
        if service.rollout_step is None:
            service.rollout_step = 0
            service.step_started_at = now
            _set_step_weights(service, current, candidate, steps[0])
            record_event(
                service,
                "traffic step",
                f"v{candidate.number} takes {candidate.weight}% of the traffic "
                f"(step 1 of {len(steps)}).",
                version=candidate,
            )
            service.state = ServiceState.ROLLING_OUT
            service.save(update_fields=["rollout_step", "step_started_at", "state", "updated_at"])
            return True
        started = service.step_started_at or now
        verdict = compare(service, candidate, current, started.timestamp())
        if verdict.bad:
            abort_rollout(service, candidate, verdict.reason, level=EventLevel.ERROR)
            return True
        if service.pinned_weight is not None:
            if candidate.weight != service.pinned_weight:
                _set_step_weights(service, current, candidate, service.pinned_weight)
            return True
        held = (now - started).total_seconds()
        if verdict.waiting and held >= service.step_seconds:
            # A step passes on figures, not on time: its errors may not have arrived yet.
            if held > service.step_seconds + EVIDENCE_WAIT_SECONDS:
                abort_rollout(
                    service,
                    candidate,
                    f"{verdict.waiting}, {held:.0f} s into the step at {candidate.weight}% "
                    f"while v{current.number} serves traffic: a version whose figures do "
                    "not arrive is given no more.",
                    level=EventLevel.ERROR,
                )
                return True
            _note_waiting(service, candidate, started, verdict.waiting)
        if held < service.step_seconds or verdict.waiting:
            if candidate.weight != steps[service.rollout_step]:  # unpinned: back on plan
                _set_step_weights(service, current, candidate, steps[service.rollout_step])
            return True
        if service.rollout_step + 1 < len(steps):
            service.rollout_step += 1
            service.step_started_at = now
            _set_step_weights(service, current, candidate, steps[service.rollout_step])
            service.save(update_fields=["rollout_step", "step_started_at", "updated_at"])
            record_event(
                service,
                "traffic step",
                f"v{candidate.number} takes {candidate.weight}% of the traffic (step "
                f"{service.rollout_step + 1} of {len(steps)}).",
                version=candidate,
            )
            return True
        # The last step held: the candidate serves everything, the old version drains.
        current.move_to(VersionState.DRAINING, f"Replaced by v{candidate.number}.")
        current.weight = 0
        current.drain_started_at = now
        _save_version(current, "weight", "drain_started_at")
        service.current_version = candidate
        service.rollout_step = None
        service.step_started_at = None
        service.state = ServiceState.RUNNING
        service.state_reason = ""
        service.save(
            update_fields=[
                "current_version",
                "rollout_step",
                "step_started_at",
                "state",
                "state_reason",
                "updated_at",
            ]
        )
        record_event(
            service,
            "rollout done",
            f"v{candidate.number} serves 100% of the traffic; v{current.number} is draining.",
            version=candidate,
        )
        transaction.on_commit(live.orders_changed)
        return True


def _note_waiting(
    service: Service, candidate: ServiceVersion, started: datetime, waiting: str
) -> None:
    """One event per step that outlasts its hold for want of figures."""
    if not service.events.filter(step="traffic held", created_at__gte=started).exists():
        record_event(
            service,
            "traffic held",
            f"{waiting}: v{candidate.number} stays at {candidate.weight}% until they arrive.",
            version=candidate,
        )


def _set_step_weights(
    service: Service, current: ServiceVersion, candidate: ServiceVersion, weight: int
) -> None:
    candidate.weight = weight
    current.weight = 100 - weight
    candidate.save(update_fields=["weight"])
    current.save(update_fields=["weight"])


def _first_version(
    service: Service, versions: list[ServiceVersion], candidate: ServiceVersion | None
) -> bool:
    if candidate is not None and candidate.state == VersionState.HEALTHY:
        candidate.weight = 100
        candidate.save(update_fields=["weight"])
        service.current_version = candidate
        service.state = ServiceState.RUNNING
        service.state_reason = ""
        service.save(update_fields=["current_version", "state", "state_reason", "updated_at"])
        record_event(
            service,
            "serving",
            f"v{candidate.number} serves 100% of the traffic at {service.endpoint_url}.",
            version=candidate,
        )
        return True
    if candidate is None and service.state == ServiceState.DEPLOYING:
        last = versions[-1] if versions else None
        service.state = ServiceState.FAILED
        service.state_reason = last.state_reason if last else "It has no version."
        service.save(update_fields=["state", "state_reason", "updated_at"])
        record_event(
            service,
            "failed",
            f"The service did not start: {service.state_reason}",
            level=EventLevel.ERROR,
        )
        return False
    return True


# -- 4. drain and stop -------------------------------------------------------------


def _drain(service: Service, router: ServiceRouter) -> bool:
    """Stop what drained; True while something still drains."""
    draining = service.versions.filter(
        state__in=[VersionState.DRAINING, VersionState.UNHEALTHY]
    ).exclude(drain_started_at=None)
    waiting = False
    # Until the load balancer's last front end has heard of the weight change, the
    # version may still get new requests (GCP); in-flight ones get their time after it.
    settle = traits_for(service.cloud.kind).router_settle_seconds
    for version in draining:
        busy = router.in_flight(ref=service.router_ref, backend=f"v{version.number}")
        drained_for = (
            timezone.now() - (version.drain_started_at or timezone.now())
        ).total_seconds()
        late = drained_for > settle + DRAIN_TIMEOUT_SECONDS
        if (busy and not late) or drained_for < max(MIN_DRAIN_SECONDS, settle):
            waiting = True
            continue
        with transaction.atomic():
            locked = ServiceVersion.objects.select_for_update().get(pk=version.pk)
            if locked.state not in (VersionState.DRAINING, VersionState.UNHEALTHY):
                continue
            reason = locked.state_reason
            locked.move_to(VersionState.STOPPED, reason)
            _save_version(locked)
            record_event(
                service,
                "version stopped",
                f"v{locked.number} drained{' (timed out)' if busy else ''}; its cluster is "
                "terminating.",
                version=locked,
            )
            transaction.on_commit(live.orders_changed)
    return waiting


def _terminate_stopped_clusters(service: Service) -> None:
    ended = service.versions.filter(
        state__in=[VersionState.STOPPED, VersionState.FAILED], cluster__isnull=False
    ).exclude(cluster__desired_state="terminated")
    for version in ended.select_related("cluster"):
        if version.cluster is None:
            continue
        cluster_terminate(
            cluster=version.cluster,
            actor=None,
            reason=f"Version v{version.number} of service {service.name} stopped.",
        )


# -- 5. the router -----------------------------------------------------------------


def _route(service: Service, router: ServiceRouter) -> None:
    backends = []
    routed = service.versions.filter(
        state__in=[VersionState.HEALTHY, VersionState.DRAINING, VersionState.UNHEALTHY]
    )
    for version in routed:
        head = _head(version)
        if head is None:
            continue
        healthy = version.state == VersionState.HEALTHY
        backends.append(
            Backend(
                name=f"v{version.number}",
                address=head[0],
                port=head[1],
                instance=head[2],
                weight=version.weight if healthy else 0,
                draining=not healthy,
                tls=version.head_tls,
            )
        )
    router.set_backends(ref=service.router_ref, backends=backends)
    hashes = list(
        ServiceToken.objects.filter(service=service, revoked_at=None).values_list(
            "token_hash", flat=True
        )
    )
    router.set_token_hashes(ref=service.router_ref, token_hashes=hashes)


def _ensure_endpoint(service: Service, router: ServiceRouter) -> Service:
    endpoint = router.ensure_endpoint(
        service_id=service.uuid, ref=service.router_ref, sign=endpoint_certificate
    )
    if endpoint.url != service.endpoint_url or endpoint.ref != service.router_ref:
        Service.objects.filter(pk=service.pk).update(
            endpoint_url=endpoint.url, router_ref=endpoint.ref
        )
        service.endpoint_url, service.router_ref = endpoint.url, endpoint.ref
    return service


def _terminate(service: Service, router: ServiceRouter) -> None:
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=service.pk)
        for version in locked.versions.select_for_update().exclude(state=VersionState.STOPPED):
            version.weight = 0
            version.state, version.state_reason = (
                VersionState.STOPPED,
                "The service was terminated.",
            )
            version.state_changed_at = timezone.now()
            _save_version(version, "weight")
        transaction.on_commit(live.orders_changed)
    _terminate_stopped_clusters(service)
    router.remove(ref=service.router_ref)
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=service.pk)
        locked.state = ServiceState.TERMINATED
        locked.terminated_at = timezone.now()
        locked.save(update_fields=["state", "terminated_at", "updated_at"])
        record_event(locked, "terminated", "Every version is stopped and the endpoint is removed.")


def service_advance(*, service_id: int, holder: str | None = None) -> int | None:
    """One pass (see the module's docstring); seconds until the next, or None when the
    service is final. Another worker's pass under way: come back soon."""
    holder = holder or uuid.uuid4().hex
    if not live.take_lease(service_id, holder):
        return ACTIVE_POLL_SECONDS
    try:
        service = Service.objects.select_related("cloud").filter(pk=service_id).first()
        if service is None or service.is_final:
            return None
        try:
            router = provider_for(service.cloud).router()
            if service.state == ServiceState.TERMINATING:
                _terminate(service, router)
                return None
            service = _ensure_endpoint(service, router)
            for version in service.versions.filter(state=VersionState.STARTING).select_related(
                "cluster"
            ):
                _judge_starting(service, version)
            moving = _move_traffic(service.pk)
            service.refresh_from_db()
            _route(service, router)
            draining = _drain(service, router)
        except PermanentCloudError as exc:
            _router_refused(service, exc)
            return IDLE_POLL_SECONDS
        _terminate_stopped_clusters(service)
        if service.is_final:
            return None
        return ACTIVE_POLL_SECONDS if moving or draining else IDLE_POLL_SECONDS
    finally:
        live.release_lease(service_id, holder)


def _router_refused(service: Service, exc: PermanentCloudError) -> None:
    """The cloud refused the service's load balancer (a missing permission, a limit):
    say so on the service's page once, and try again on later passes."""
    message = f"The service's load balancer: {exc.user_message}"
    last = service.events.order_by("-created_at", "-pk").values_list("message", flat=True)
    if last.first() != message[:1000]:
        record_event(service, "router refused", message, level=EventLevel.ERROR)


def services_needing_advance() -> list[int]:
    return list(Service.objects.live().values_list("pk", flat=True))
