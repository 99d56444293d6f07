"""What users ask of clusters: create, terminate, restart. Each request writes the
desired state, records an event and an audit entry, and enqueues the reconciler once
the transaction commits; the reconciler does the cloud work."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.audit import audit
from accounts.models import Project, ServiceAccount, User
from accounts.permissions import require
from clouds.models import Cloud
from clouds.providers.registry import traits_for

from ..access import access_key
from ..choices import ClusterState, DesiredState, EventLevel
from ..models import Cluster, ComputeConfigVersion, ContainerImage
from ..tasks import enqueue_reconcile
from .defaults import default_compute_config, default_image
from .events import record_event


def cloud_usable_by(cloud: Cloud, project: Project) -> str | None:
    """Why `project` may not launch on `cloud`, or None when it may."""
    if cloud.organization_id != project.organization_id:
        return "Choose a cloud of this organization."
    if not cloud.is_usable:
        return f"The cloud {cloud.name} is not verified. Verify it first."
    if not cloud.open_to(project):
        return f"The project {project.name} may not launch clusters on {cloud.name}."
    return None


def _deleted_under_lock(image: ContainerImage) -> bool:
    """Whether the organization's `image` is gone, read under its row lock, so
    image_delete (which locks it too) sees the cluster being created, or this sees the
    image gone."""
    locked = ContainerImage.objects.select_for_update().filter(pk=image.pk).first()
    return locked is None or locked.deleted_at is not None


def image_refusal(*, image: ContainerImage, cloud: Cloud) -> str | None:
    """Why `cloud` cannot run `image`, or None when it can (the cloud kind decides; an
    image built in a cloud's registry runs on that cloud only)."""
    if image.cloud_id not in (None, cloud.pk):
        return f"{image.name} was built on another cloud; build it on {cloud.name} first."
    return traits_for(cloud.kind).image_refusal(image=image.spec(), cloud_name=cloud.name)


def checked_choice(
    *,
    project: Project,
    actor: User | ServiceAccount,
    cloud: Cloud,
    compute_config: ComputeConfigVersion | None = None,
    image: ContainerImage | None = None,
) -> tuple[ComputeConfigVersion, ContainerImage]:
    """The compute config and image a cluster of `project` on `cloud` runs with (the
    cloud's defaults for those not given), or a ValidationError on the fields named like
    the arguments: the cloud must be usable by the project, the compute config must run
    on that cloud and belong to the project or the whole organization, and the cloud
    must be able to run the image. Workspaces check their choice with it too."""
    reason = cloud_usable_by(cloud, project)
    if reason:
        raise ValidationError({"cloud": reason})
    errors: dict[str, str] = {}
    if compute_config is None:
        compute_config = default_compute_config(
            cloud=cloud,
            organization=project.organization,
            actor=actor if isinstance(actor, User) else None,
        )
    if compute_config.organization_id != project.organization_id:
        errors["compute_config"] = "Choose a compute config of this organization."
    elif compute_config.cloud_id != cloud.pk:
        errors["compute_config"] = (
            f"{compute_config.config.name} runs on {compute_config.cloud.name}, not "
            f"{cloud.name}. Choose a config for {cloud.name}, or leave it blank for the default."
        )
    elif compute_config.config.project_id not in (None, project.pk):
        errors["compute_config"] = (
            f"{compute_config.config.name} belongs to another project. Choose one of "
            f"{project.name} or of the whole organization."
        )
    image = image or default_image(cloud)
    if image.organization_id not in (None, project.organization_id):
        errors["image"] = "Choose an image of this organization."
    elif image.organization_id is not None and _deleted_under_lock(image):
        errors["image"] = f"The image {image.name} was deleted. Choose another."
    elif reason := image_refusal(image=image, cloud=cloud):
        errors["image"] = reason
    if errors:
        raise ValidationError(errors)
    return compute_config, image


# Not durable: the API's Idempotency-Key row commits in the same transaction (and a
# workspace's start creates its cluster inside its own).
@transaction.atomic
def cluster_create(
    *,
    project: Project,
    actor: User | ServiceAccount,
    name: str,
    cloud: Cloud,
    compute_config: ComputeConfigVersion | None = None,
    image: ContainerImage | None = None,
) -> Cluster:
    """A cluster of `project` on `cloud`, queued for the reconciler. Every rule of the
    choice is in `checked_choice`, for the console, the API and workspaces alike."""
    require(actor, "cluster.create", project)
    compute_config, image = checked_choice(
        project=project, actor=actor, cloud=cloud, compute_config=compute_config, image=image
    )
    cluster = Cluster(
        organization_id=project.organization_id,
        project=project,
        name=name.strip(),
        cloud=cloud,
        compute_config=compute_config,
        image=image,
        # A built image's current revision (read now: a build may have moved it), kept.
        image_build_id=ContainerImage.objects.filter(pk=image.pk)
        .values_list("build_id", flat=True)
        .first(),
        created_by=actor if isinstance(actor, User) else None,
    )
    # created_by is null for a service account's cluster (the audit log names it).
    cluster.full_clean(exclude=["compute_config", "image", "cloud", "project", "created_by"])
    try:
        with transaction.atomic():
            cluster.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"name": f"A cluster named {cluster.name} is already live in {project.name}."}
        ) from exc
    access_key(cluster)  # the key pair its gateway's tokens are signed with
    record_event(cluster, "queued", f"{actor.display_name} created the cluster.")
    audit(
        actor=actor,
        verb="cluster.create",
        target=cluster,
        changes={"name": [None, cluster.name], "cloud": [None, cloud.name]},
    )
    enqueue_reconcile(cluster.pk)
    return cluster


# Not durable: the idle check and the support admin call it inside their transactions.
@transaction.atomic
def cluster_terminate(
    *, cluster: Cluster, actor: User | ServiceAccount | None, reason: str = ""
) -> Cluster:
    """Ask for the cluster to be terminated (idempotent)."""
    if actor is not None:
        require(actor, "cluster.update", cluster.project)
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    if cluster.desired_state == DesiredState.TERMINATED:
        return cluster
    cluster.desired_state = DesiredState.TERMINATED
    cluster.save(update_fields=["desired_state", "updated_at"])
    who = actor.display_name if actor else "Raydeck"
    record_event(cluster, "terminate requested", reason or f"{who} asked to terminate it.")
    changes: dict[str, list[str | None]] = {"desired_state": ["running", "terminated"]}
    if reason:
        changes["reason"] = [None, reason]
    audit(actor=actor, verb="cluster.terminate", target=cluster, changes=changes)
    enqueue_reconcile(cluster.pk)
    return cluster


@transaction.atomic(durable=True)
def cluster_restart(*, cluster: Cluster, actor: User) -> Cluster:
    """Start a terminated or failed cluster again with the same config."""
    require(actor, "cluster.update", cluster.project)
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    if not cluster.is_final:
        raise ValidationError("Only a terminated or failed cluster can be restarted.")
    if Cluster.objects.filter(project=cluster.project, name=cluster.name).live().exists():
        raise ValidationError(f"Another live cluster is already named {cluster.name}.")
    reason = cloud_usable_by(cluster.cloud, cluster.project)
    if reason:
        raise ValidationError(reason)
    if cluster.image.organization_id is not None:  # locked: see _deleted_under_lock
        image = ContainerImage.objects.select_for_update().get(pk=cluster.image_id)
        if image.deleted_at is not None:
            raise ValidationError(
                f"Its image {image.name} was deleted. Create a new cluster with another image."
            )
    cluster.desired_state = DesiredState.RUNNING
    cluster.move_to(ClusterState.PENDING)
    cluster.save()
    record_event(
        cluster, "queued", f"{actor.display_name} restarted the cluster.", level=EventLevel.INFO
    )
    audit(actor=actor, verb="cluster.restart", target=cluster)
    enqueue_reconcile(cluster.pk)
    return cluster
