"""The support admin for clusters: find a cluster in any organization, see its nodes and
what happened, and force-terminate it (audited). Node credentials, bootstrap tokens and
log contents of customers' machines are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet

from accounts.admin import ReadOnlyInline, SupportAdmin, recent_values_filter
from accounts.audit import audit
from kit.types import AuthedRequest

from .choices import DesiredState
from .models import Cluster, ClusterEvent, ComputeConfig, ComputeConfigVersion, ContainerImage, Node
from .services.lifecycle import cluster_terminate

# Every Node field a support person may see: not the token hashes, not the log tail.
NODE_FIELDS = (
    "uuid",
    "cluster",
    "organization",
    "role",
    "group",
    "state",
    "state_reason",
    "state_changed_at",
    "instance_type",
    "instance_id",
    "private_address",
    "cpus",
    "memory_mb",
    "launch_attempt",
    "last_heartbeat_at",
    "created_at",
    "launched_at",
    "registered_at",
    "ready_at",
    "terminated_at",
)


class NodeInline(ReadOnlyInline):
    model = Node
    fields = readonly_fields = (
        "role",
        "group",
        "state",
        "instance_id",
        "private_address",
        "last_heartbeat_at",
    )


@admin.register(Cluster)
class ClusterAdmin(SupportAdmin):
    list_display = [
        "name",
        "organization",
        "project",
        "cloud",
        "state",
        "desired_state",
        "created_at",
    ]
    list_filter = [
        "state",
        "desired_state",
        "cloud__kind",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = [
        "name",
        "=uuid",
        "head_address",
        "organization__name",
        "organization__slug",
        "project__name",
        "project__slug",
    ]
    list_select_related = ["organization", "project", "cloud"]
    ordering = ["-pk"]
    fields = readonly_fields = (
        "uuid",
        "name",
        "organization",
        "project",
        "cloud",
        "compute_config",
        "image",
        "desired_state",
        "state",
        "state_reason",
        "state_changed_at",
        "head_address",
        "dashboard_port",
        "created_by",
        "created_at",
        "updated_at",
        "started_at",
        "terminated_at",
        "desired_workers",
        "last_active_at",
        "idle_warned_at",
        "idle_extended_at",
    )
    inlines = [NodeInline]
    actions = ["force_terminate"]

    @admin.action(description="Force terminate the selected clusters (audited)")
    def force_terminate(self, request: AuthedRequest, queryset: QuerySet[Cluster]) -> None:
        """Terminates through the service as Raydeck (support holds no project role) and
        records who asked, in the organization's audit log, in the same transaction."""
        asked = skipped = 0
        staff = request.user
        for cluster in queryset.select_related("organization"):
            if cluster.is_final or cluster.desired_state == DesiredState.TERMINATED:
                skipped += 1
                continue
            with transaction.atomic():
                cluster_terminate(
                    cluster=cluster,
                    actor=None,
                    reason=f"Raydeck support ({staff.email}) force-terminated the cluster.",
                )
                audit(
                    actor=staff,
                    verb="cluster.force_terminate",
                    target=cluster,
                    changes={"desired_state": [cluster.desired_state, "terminated"]},
                )
            asked += 1
        message = f"Terminating {asked} cluster(s); each is in its organization's audit log."
        if skipped:
            message += f" {skipped} already terminated or terminating."
        self.message_user(request, message, messages.SUCCESS if asked else messages.WARNING)


@admin.register(Node)
class NodeAdmin(SupportAdmin):
    list_display = [
        "uuid",
        "cluster",
        "organization",
        "role",
        "state",
        "instance_id",
        "last_heartbeat_at",
    ]
    list_filter = ["state", "role"]
    search_fields = [
        "=uuid",
        "=instance_id",
        "=private_address",
        "cluster__name",
        "=cluster__uuid",
        "organization__slug",
    ]
    list_select_related = ["cluster", "organization"]
    ordering = ["-pk"]
    fields = readonly_fields = NODE_FIELDS


@admin.register(ClusterEvent)
class ClusterEventAdmin(SupportAdmin):
    list_display = [
        "created_at",
        "cluster",
        "organization",
        "level",
        "step",
        "message",
        "duration_ms",
    ]
    list_filter = [
        "level",
        recent_values_filter("step"),
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["cluster__name", "=cluster__uuid", "organization__slug", "message"]
    list_select_related = ["cluster", "organization"]
    ordering = ["-pk"]
    fields = readonly_fields = (
        "cluster",
        "organization",
        "node",
        "level",
        "step",
        "message",
        "duration_ms",
        "created_at",
    )


class ComputeConfigVersionInline(ReadOnlyInline):
    model = ComputeConfigVersion
    fields = readonly_fields = (
        "number",
        "cloud",
        "region",
        "zone",
        "head_instance_type",
        "worker_groups",
        "idle_timeout_minutes",
        "created_at",
    )


@admin.register(ComputeConfig)
class ComputeConfigAdmin(SupportAdmin):
    list_display = ["name", "organization", "project", "updated_at"]
    search_fields = ["name", "organization__name", "organization__slug"]
    list_select_related = ["organization", "project"]
    fields = readonly_fields = (
        "name",
        "organization",
        "project",
        "created_by",
        "created_at",
        "updated_at",
    )
    inlines = [ComputeConfigVersionInline]


@admin.register(ContainerImage)
class ContainerImageAdmin(SupportAdmin):
    list_display = ["name", "organization", "image_uri", "ray_version", "created_at"]
    search_fields = ["name", "image_uri", "organization__slug"]
    list_select_related = ["organization"]
    fields = readonly_fields = (
        "name",
        "organization",
        "image_uri",
        "ray_version",
        "python_executable",
        "aws_amis",
        "gcp_image",
        "created_at",
        "deleted_at",
    )
