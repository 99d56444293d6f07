"""What users ask of clusters: create, terminate, restart. Each request writes the
desired state, records an event and an audit entry, and enqueues the reconciler once
the transaction commits; the reconciler does the cloud work."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.audit import audit
from accounts.models import Project, User
from accounts.permissions import require
from clouds.choices import LaunchAccess
from clouds.models import Cloud

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
    if (
        cloud.launch_access == LaunchAccess.PROJECTS
        and not cloud.projects.filter(pk=project.pk).exists()
    ):
        return f"The project {project.name} may not launch clusters on {cloud.name}."
    return None


@transaction.atomic
def cluster_create(
    *,
    project: Project,
    actor: User,
    name: str,
    cloud: Cloud,
    compute_config: ComputeConfigVersion | None = None,
    image: ContainerImage | None = None,
) -> Cluster:
    require(actor, "cluster.create", project)
    reason = cloud_usable_by(cloud, project)
    if reason:
        raise ValidationError({"cloud": reason})
    if compute_config is None:
        compute_config = default_compute_config(
            cloud=cloud, organization=project.organization, actor=actor
        )
    if compute_config.organization_id != project.organization_id:
        raise ValidationError({"compute_config": "Choose a compute config of this organization."})
    if compute_config.cloud_id != cloud.pk:
        raise ValidationError(
            {"compute_config": f"This compute config runs on {compute_config.cloud}, not {cloud}."}
        )
    image = image or default_image(cloud)
    if image.organization_id not in (None, project.organization_id):
        raise ValidationError({"image": "Choose an image of this organization."})
    if image.organization_id is not None:
        # Locked, so image_delete (which locks it too) sees this cluster, or this sees
        # the image gone.
        locked = ContainerImage.objects.select_for_update().filter(pk=image.pk).first()
        if locked is None or locked.deleted_at is not None:
            raise ValidationError({"image": f"The image {image.name} was deleted. Choose another."})
    cluster = Cluster(
        organization_id=project.organization_id,
        project=project,
        name=name.strip(),
        cloud=cloud,
        compute_config=compute_config,
        image=image,
        created_by=actor,
    )
    cluster.full_clean(exclude=["compute_config", "image", "cloud", "project"])
    try:
        with transaction.atomic():
            cluster.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"name": f"A cluster named {cluster.name} is already live in {project.name}."}
        ) from exc
    access_key(cluster)  # the key pair its gateway's tokens are signed with
    record_event(cluster, "queued", f"{actor.display_name} created the cluster.")
    audit(actor=actor, verb="cluster.create", target=cluster,
          changes={"name": [None, cluster.name], "cloud": [None, cloud.name]})  # fmt: skip
    enqueue_reconcile(cluster.pk)
    return cluster


@transaction.atomic
def cluster_terminate(*, cluster: Cluster, actor: User | None, reason: str = "") -> Cluster:
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


@transaction.atomic
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
    if cluster.image.organization_id is not None:  # locked: see cluster_create
        image = ContainerImage.objects.select_for_update().get(pk=cluster.image_id)
        if image.deleted_at is not None:
            raise ValidationError(
                f"Its image {image.name} was deleted. Create a new cluster with another image."
            )
    cluster.desired_state = DesiredState.RUNNING
    cluster.move_to(ClusterState.PENDING)
    cluster.save()
    record_event(cluster, "queued", f"{actor.display_name} restarted the cluster.",
                 level=EventLevel.INFO)  # fmt: skip
    audit(actor=actor, verb="cluster.restart", target=cluster)
    enqueue_reconcile(cluster.pk)
    return cluster
