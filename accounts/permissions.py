"""Who may do what: the one role -> permission table, and the one function that checks it.

A permission is "<object>.<action>". Organization roles grant permissions on the
organization and, for owners and admins, on every project in it. Project roles grant
project permissions to members and viewers on the projects they belong to. Viewers
never write, whatever their project role says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied

from .choices import OrgRole, ProjectRole

if TYPE_CHECKING:
    from .models import Organization, Project, User

# Permissions that apply to one project (checked against a Project, or an object in one).
PROJECT_READ = frozenset({"project.view"})
PROJECT_WRITE = frozenset({"project.update", "cluster.create", "cluster.update"})
PROJECT_ADMIN = frozenset({"project.delete", "project.manage_members"})
PROJECT_PERMISSIONS = PROJECT_READ | PROJECT_WRITE | PROJECT_ADMIN

ORG_READ = frozenset({"organization.view", "member.view", "project.list", "cloud.view"})

ORG_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    OrgRole.VIEWER: ORG_READ,
    OrgRole.MEMBER: ORG_READ | {"project.create"},
    OrgRole.ADMIN: ORG_READ
    | PROJECT_PERMISSIONS
    | {
        "project.create",
        "organization.update",
        "member.invite",
        "member.update_role",
        "member.remove",
        "audit.view",
        "cloud.manage",
    },
    OrgRole.OWNER: ORG_READ
    | PROJECT_PERMISSIONS
    | {
        "project.create",
        "organization.update",
        "organization.delete",
        "member.invite",
        "member.update_role",
        "member.remove",
        "member.manage_owners",
        "audit.view",
        "cloud.manage",
    },
}

PROJECT_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    ProjectRole.READER: PROJECT_READ,
    ProjectRole.WRITER: PROJECT_READ | PROJECT_WRITE,
    ProjectRole.OWNER: PROJECT_PERMISSIONS,
}

# Org roles that may never be granted write access through a project role.
READ_ONLY_ORG_ROLES = frozenset({OrgRole.VIEWER})
# Org roles that see every project of their organization.
ORG_WIDE_ROLES = frozenset({OrgRole.OWNER, OrgRole.ADMIN})

ALL_PERMISSIONS: frozenset[str] = frozenset().union(
    *ORG_ROLE_PERMISSIONS.values(), *PROJECT_ROLE_PERMISSIONS.values()
)


def _owning_project_and_org(obj: Any) -> tuple[Project | None, Organization]:
    from .models import Organization, Project

    if isinstance(obj, Organization):
        return None, obj
    if isinstance(obj, Project):
        return obj, obj.organization
    project = getattr(obj, "project", None)
    if project is not None:
        return project, project.organization
    return None, obj.organization


def has_perm(user: User, perm: str, obj: Any) -> bool:
    """True when `user` holds `perm` on `obj` (an Organization, a Project, or a row of one)."""
    if perm not in ALL_PERMISSIONS:
        raise ValueError(f"Unknown permission {perm!r}")
    if not user.is_authenticated or not user.is_active:
        return False
    project, organization = _owning_project_and_org(obj)
    org_role = user.org_role(organization)
    if org_role is None:
        return False
    if perm in ORG_ROLE_PERMISSIONS[org_role]:
        return True
    if project is None or perm not in PROJECT_PERMISSIONS:
        return False
    project_role = user.project_role(project)
    if project_role is None:
        return False
    if org_role in READ_ONLY_ORG_ROLES:
        return perm in PROJECT_READ
    return perm in PROJECT_ROLE_PERMISSIONS[project_role]


def require(user: User, perm: str, obj: Any) -> None:
    """Raise PermissionDenied unless `user` holds `perm` on `obj`.

    Callers reach `obj` through `visible_to(user)` first, so an object of another
    organization is already a 404 before this runs.
    """
    if not has_perm(user, perm, obj):
        raise PermissionDenied(f"You do not have permission to do this ({perm}).")
