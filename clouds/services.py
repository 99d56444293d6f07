"""Every change to clouds: `cloud_<verb>` functions that check permission, validate,
write, audit and enqueue in one transaction. Cloud calls never run inside one."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit, changes_between, snapshot
from accounts.models import Organization, Project, User
from accounts.permissions import require

from .choices import CloudKind, CloudState, LaunchAccess, VerificationState
from .models import Cloud, CloudCheck, CloudVerification, DefaultCloud, new_external_id
from .providers.base import CheckResult, CloudError

logger = logging.getLogger(__name__)

# Fields whose change means we must verify the cloud again before using it.
IDENTITY_FIELDS = [
    "region",
    "zones",
    "aws_role_arn",
    "gcp_project_id",
    "gcp_workload_identity_provider",
    "gcp_service_account",
    "local_root",
    "log_location",
    "node_identity",
]
# Who may reach the clusters' gateways (the cloud's firewall, providers/*_firewall.py).
NETWORK_FIELDS = ["gateway_cidrs", "gateway_open_to_internet", "node_addresses"]
EDITABLE_FIELDS = ["name", "launch_access", *IDENTITY_FIELDS, *NETWORK_FIELDS]
# What a driver needs to find the cloud's firewall once the row is gone.
DRIVER_FIELDS = [
    "uuid",
    "kind",
    "region",
    "zones",
    "aws_role_arn",
    "aws_external_id",
    "gcp_project_id",
    "gcp_workload_identity_provider",
    "gcp_service_account",
    "node_identity",
    "log_location",
    "local_root",
]


def kind_available(kind: str) -> str | None:
    """Why this installation cannot add clouds of `kind`, or None when it can."""
    if kind == CloudKind.LOCAL and not settings.RAYDECK_LOCAL_CLOUD_ENABLED:
        return "This installation does not allow clusters on its own machine."
    if kind in (CloudKind.AWS, CloudKind.GCP) and not settings.RAYDECK_AWS_PRINCIPAL_ARN:
        # GCP federation uses the same installation identity (see policies.gcp_commands).
        return (
            "This installation has no cloud identity configured yet: its administrator "
            "must set RAYDECK_AWS_PRINCIPAL_ARN."
        )
    return None


def _check_projects(organization: Organization, projects: list[Project]) -> None:
    if any(p.organization_id != organization.pk for p in projects):
        raise ValidationError({"projects": "Choose projects of this organization."})


def _save_new(cloud: Cloud) -> None:
    cloud.full_clean()
    try:
        with transaction.atomic():
            cloud.save()
    except IntegrityError as exc:  # the name raced with another create
        raise ValidationError({"name": "A cloud with this name already exists."}) from exc


# Not durable: the API's Idempotency-Key row commits in the same transaction.
@transaction.atomic
def cloud_create(
    *,
    organization: Organization,
    actor: User,
    kind: str,
    name: str,
    projects: list[Project] | None = None,
    **fields: Any,
) -> Cloud:
    require(actor, "cloud.manage", organization)
    if kind not in CloudKind.values:
        raise ValidationError({"kind": f"Unknown cloud kind “{kind}”."})
    reason = kind_available(kind)
    if reason:
        raise ValidationError(reason)
    if Cloud.objects.filter(organization=organization, name=name.strip()).exists():
        raise ValidationError({"name": "A cloud with this name already exists."})
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"Unexpected cloud fields: {sorted(unknown)}")
    cloud = Cloud(
        organization=organization, kind=kind, name=name.strip(), created_by=actor, **fields
    )
    if kind == CloudKind.AWS:
        cloud.aws_external_id = new_external_id()
    _save_new(cloud)
    projects = projects or []
    _check_projects(organization, projects)
    cloud.projects.set(projects)
    audit(
        actor=actor,
        verb="cloud.create",
        target=cloud,
        changes={k: [None, v] for k, v in snapshot(cloud, ["name", "kind", "region"]).items()},
    )
    for dependent in _dependents:
        dependent.created(cloud, actor)
    if cloud.identity_configured:
        cloud_verify_request(cloud=cloud, actor=actor)
        cloud.refresh_from_db()  # now verifying
    return cloud


@transaction.atomic(durable=True)
def cloud_update(
    *, cloud: Cloud, actor: User, projects: list[Project] | None = None, **fields: Any
) -> Cloud:
    require(actor, "cloud.manage", cloud)
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"Unexpected cloud fields: {sorted(unknown)}")
    cloud = Cloud.objects.select_for_update().get(pk=cloud.pk)
    before = snapshot(cloud, EDITABLE_FIELDS)
    for name, value in fields.items():
        setattr(cloud, name, value.strip() if isinstance(value, str) else value)
    cloud.full_clean()
    changes = changes_between(before, snapshot(cloud, EDITABLE_FIELDS))
    reverify = any(f in changes for f in IDENTITY_FIELDS)
    if reverify:
        cloud.state, cloud.state_reason = CloudState.UNVERIFIED, ""
    cloud.save()
    if projects is not None:
        _check_projects(cloud.organization, projects)
        old = sorted(p.slug for p in cloud.projects.all())
        cloud.projects.set(projects if cloud.launch_access == LaunchAccess.PROJECTS else [])
        new = sorted(p.slug for p in cloud.projects.all())
        if old != new:
            changes["projects"] = [", ".join(old), ", ".join(new)]
    if changes:
        audit(actor=actor, verb="cloud.update", target=cloud, changes=changes)
    if reverify and cloud.identity_configured:
        cloud_verify_request(cloud=cloud, actor=actor)
        cloud.refresh_from_db()  # now verifying
    return cloud


@dataclass(frozen=True)
class CloudDependent:
    """What an app built on clouds keeps on one (the clusters app: clusters and compute
    configs). The app registers it when Django starts (its AppConfig.ready), so clouds
    never imports the apps above it."""

    # How many of its clusters on the cloud are not terminated or failed.
    live_clusters: Callable[[Cloud], int]
    # Deletes what it keeps on the cloud (called inside cloud_delete's transaction, once
    # no cluster is live) and returns what the deletion's audit event records.
    remove: Callable[[Cloud], dict[str, list[Any]]]
    # Makes what a new cloud comes with (the default compute configs), inside
    # cloud_create's transaction.
    created: Callable[[Cloud, User], None] = lambda cloud, actor: None
    # What else of it holds the cloud back, for the refusal ("2 workspaces"), or "".
    holds: Callable[[Cloud], str] = lambda cloud: ""


_dependents: list[CloudDependent] = []


def register_dependent(dependent: CloudDependent) -> None:
    """Apps register in INSTALLED_APPS order, so an app registers after those it builds
    on; removal runs the other way (jobs' rows go before the clusters they point at)."""
    if dependent not in _dependents:
        _dependents.append(dependent)


def live_cluster_count(cloud: Cloud) -> int:
    """Clusters on this cloud that are not terminated or failed."""
    return sum(dependent.live_clusters(cloud) for dependent in _dependents)


@transaction.atomic(durable=True)
def cloud_delete(*, cloud: Cloud, actor: User) -> None:
    require(actor, "cloud.manage", cloud)
    cloud = Cloud.objects.select_for_update().get(pk=cloud.pk)
    live = live_cluster_count(cloud)
    if live:
        raise ValidationError(
            f"{cloud.name} still has {live} cluster(s) that are not terminated. "
            "Terminate them first; then the cloud can be deleted."
        )
    if holding := [held for dependent in _dependents if (held := dependent.holds(cloud))]:
        raise ValidationError(
            f"{cloud.name} still has {', '.join(holding)}. "
            "Delete or stop them first; then the cloud can be deleted."
        )
    changes: dict[str, list[Any]] = {"name": [cloud.name, None]}
    for dependent in reversed(_dependents):
        changes |= dependent.remove(cloud)
    audit(actor=actor, verb="cloud.delete", target=cloud, changes=changes)
    # The firewall goes with the cloud, after the commit (a cloud call holds no lock).
    driver = {name: getattr(cloud, name) for name in DRIVER_FIELDS}
    driver["uuid"] = str(driver["uuid"])
    from .tasks import remove_cloud_firewall

    transaction.on_commit(lambda: remove_cloud_firewall.delay(driver=driver))
    cloud.delete()


def cloud_firewall_remove(*, driver: dict[str, Any]) -> None:
    """Remove what a deleted cloud made in its account: its firewall rules and what its
    image builds used (a task, retried while the cloud is busy)."""
    from .providers.registry import provider_for

    provider = provider_for(Cloud(**{**driver, "uuid": uuid.UUID(driver["uuid"])}))
    provider.remove_firewall()
    provider.remove_builds()


# --- Preferred default cloud ------------------------------------------------------------


@transaction.atomic(durable=True)
def default_cloud_set(
    *, organization: Organization, project: Project | None, cloud: Cloud | None, actor: User
) -> DefaultCloud | None:
    """Prefer `cloud` for the requests of `project` (None: of the whole organization)
    that name no cloud; `cloud=None` removes the preference. Which preference wins is
    clusters.selectors.cloud_for_create's rule."""
    if project is None:
        require(actor, "organization.update", organization)
    else:
        require(actor, "project.update", project)
        if project.organization_id != organization.pk:
            raise ValidationError({"project": "Choose a project of this organization."})
    if cloud is not None:
        if cloud.organization_id != organization.pk:
            raise ValidationError({"cloud": "No such cloud here."})  # as if missing
        if project is not None and not cloud.open_to(project):
            raise ValidationError(
                {"cloud": f"The project {project.name} may not launch clusters on {cloud.name}."}
            )
    current = (
        DefaultCloud.objects.select_for_update()
        .select_related("cloud")
        .filter(organization=organization, project=project)
        .first()
    )
    before = current.cloud.name if current else None
    if cloud is None:
        if current is not None:
            current.delete()
        current = None
    elif current is None:
        current = DefaultCloud.objects.create(
            organization=organization, project=project, cloud=cloud, updated_by=actor
        )
    else:
        current.cloud, current.updated_by = cloud, actor
        current.save(update_fields=["cloud", "updated_by", "updated_at"])
    after = cloud.name if cloud else None
    if before != after:
        audit(
            actor=actor,
            verb="project.default_cloud" if project else "organization.default_cloud",
            target=project or organization,
            organization=organization,
            changes={"default_cloud": [before, after]},
        )
    return current


# --- Verification ----------------------------------------------------------------------


@transaction.atomic
def cloud_verify_request(*, cloud: Cloud, actor: User | None) -> CloudVerification:
    """Start a verification, or return the one already running for this cloud."""
    if actor is not None:
        require(actor, "cloud.manage", cloud)
    cloud = Cloud.objects.select_for_update().get(pk=cloud.pk)
    running = cloud.verifications.filter(state=VerificationState.RUNNING).first()
    if running is not None:
        return running
    if not cloud.identity_configured:
        raise ValidationError("Finish the setup first: Raydeck does not know how to reach it.")
    verification = CloudVerification.objects.create(
        organization_id=cloud.organization_id, cloud=cloud, requested_by=actor
    )
    cloud.state = CloudState.VERIFYING
    cloud.save(update_fields=["state", "updated_at"])
    audit(actor=actor, verb="cloud.verify", target=cloud, organization=cloud.organization)
    from .tasks import verify_cloud

    verify_cloud.delay_on_commit(verification_id=verification.pk)
    return verification


def cloud_verify_run(*, verification_id: int) -> CloudVerification | None:
    """Run the checks of one verification and record them. Safe to run twice: a
    finished verification is left alone. No transaction is held during cloud calls."""
    from .providers.registry import provider_for

    verification = (
        CloudVerification.objects.select_related("cloud").filter(pk=verification_id).first()
    )
    if verification is None or verification.state != VerificationState.RUNNING:
        return verification
    try:
        results = provider_for(verification.cloud).verify()
    except CloudError as exc:
        results = [CheckResult(name="Reach the cloud", passed=False, message=exc.user_message)]
    except Exception:
        # A bug must not leave the cloud "verifying" forever; the log has the traceback.
        logger.exception("Verification %s crashed", verification_id)
        results = [
            CheckResult(
                name="Run the checks",
                passed=False,
                message="Raydeck hit an unexpected error while verifying. Try again; if it "
                "persists, contact your Raydeck administrator.",
            )
        ]
    return _record_verification(verification_id=verification.pk, results=results)


@transaction.atomic
def _record_verification(*, verification_id: int, results: list[CheckResult]) -> CloudVerification:
    verification = CloudVerification.objects.select_for_update().get(pk=verification_id)
    if verification.state != VerificationState.RUNNING:
        return verification  # another run finished it first
    cloud = Cloud.objects.select_for_update().get(pk=verification.cloud_id)
    verification.checks.all().delete()
    CloudCheck.objects.bulk_create(
        CloudCheck(
            verification=verification,
            position=i,
            name=r.name[:100],
            passed=r.passed,
            message=r.message[:1000],
        )
        for i, r in enumerate(results)
    )
    failed = [r for r in results if not r.passed]
    verification.state = VerificationState.FAILED if failed else VerificationState.PASSED
    verification.finished_at = timezone.now()
    verification.save(update_fields=["state", "finished_at"])
    before = cloud.state
    cloud.state = CloudState.ERROR if failed else CloudState.ACTIVE
    cloud.state_reason = f"{failed[0].name}: {failed[0].message}"[:500] if failed else ""
    cloud.verified_at = verification.finished_at
    cloud.save(update_fields=["state", "state_reason", "verified_at", "updated_at"])
    # What a check changed in the customer's cloud (a CORS rule on the log bucket).
    made = {r.name: [None, r.change] for r in results if r.change}
    audit(
        actor=None,
        verb="cloud.verified" if not failed else "cloud.verify_failed",
        target=cloud,
        changes={"state": [before, cloud.state], **made},
    )
    return verification


def clouds_reverify_all() -> int:
    """Daily: verify every configured cloud again, so a revoked role shows up."""
    count = 0
    for cloud in Cloud.objects.exclude(state=CloudState.VERIFYING):
        if cloud.identity_configured:
            cloud_verify_request(cloud=cloud, actor=None)
            count += 1
    return count


@transaction.atomic
def verifications_expire_stuck(*, older_than_seconds: int = 15 * 60) -> int:
    """A verification whose worker died is failed after a while, so "Verify" works again."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stuck = list(
        CloudVerification.objects.select_for_update()
        .filter(state=VerificationState.RUNNING, started_at__lt=cutoff)
        .select_related("cloud")
    )
    for verification in stuck:
        CloudCheck.objects.create(
            verification=verification,
            name="Finish in time",
            passed=False,
            message="The verification did not finish. Run it again.",
        )
        verification.state = VerificationState.FAILED
        verification.finished_at = timezone.now()
        verification.save(update_fields=["state", "finished_at"])
        Cloud.objects.filter(pk=verification.cloud_id, state=CloudState.VERIFYING).update(
            state=CloudState.ERROR, state_reason="The last verification did not finish."
        )
    return len(stuck)
