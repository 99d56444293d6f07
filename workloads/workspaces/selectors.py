"""Reads of workspaces, always through `visible_to`."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from accounts.models import Organization, User
from accounts.permissions import has_perm
from accounts.selectors import people_holding
from clusters import access
from clusters.selectors import projects_for_cluster_create

from .choices import WorkspaceState
from .models import SshKey, Workspace

# Who may SSH into a workspace: whoever may reach its cluster through the gateway (the
# project's writers, owners and the organization's admins), who can already open its
# JupyterLab and a terminal there; SSH is the same access from another client.
SSH_PERMISSION = "cluster.access"


def workspace_list(*, organization: Organization, viewer: User, q: str = "") -> QuerySet[Workspace]:
    rows = Workspace.objects.visible_to(viewer, organization).select_related(
        "project", "cloud", "cluster", "created_by"
    )
    if q:
        rows = rows.filter(name__icontains=q)
    return rows


def may_create_workspaces(*, organization: Organization, viewer: User) -> bool:
    return any(
        has_perm(viewer, "workspace.manage", project)
        for project in projects_for_cluster_create(organization=organization, viewer=viewer)
    )


def jupyter_ready(workspace: Workspace) -> bool:
    """JupyterLab can be opened: the workspace runs (its files are back) and the head
    reported a JupyterLab port."""
    if workspace.state != WorkspaceState.RUNNING or workspace.cluster is None:
        return False
    return "jupyter" in access.available_apps(workspace.cluster)


def ssh_keys_for(workspace: Workspace) -> list[str]:
    """The public keys the workspace's sshd accepts: those of every person who may use
    it (SSH_PERMISSION on its project)."""
    people = people_holding(perm=SSH_PERMISSION, project=workspace.project)
    return list(
        SshKey.objects.filter(user__in=people).order_by("pk").values_list("public_key", flat=True)
    )


def files_rules() -> dict:
    return settings.RAYDECK_WORKSPACE_FILES
