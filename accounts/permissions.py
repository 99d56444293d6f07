"""Who may do what: the one role -> permission table, and the one function that checks it.

A permission is "<object>.<action>". Organization roles grant permissions on the
organization and, for owners and admins, on every project in it. Project roles grant
project permissions to members and viewers on the projects they belong to. Viewers
never write, whatever their project role says.

API tokens act through the same table: a token holds what its person (or service
account, by its role) holds, inside the token's one organization, minus writes when it
is read-only, minus the permissions that need a signed-in session (`token_may`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import PermissionDenied

from .choices import OrgRole, ProjectRole

if TYPE_CHECKING:
    from .models import Organization, Project
    from .tokens import TokenIdentity

# Permissions that apply to one project (checked against a Project, or an object in one).
PROJECT_READ = frozenset({"project.view"})
# "cluster.access": open a cluster's Ray Dashboard / Jupyter / Grafana and submit jobs
# through its gateway (clusters/access.py). That runs code on the cluster: a write.
PROJECT_WRITE = frozenset(
    {
        "project.update",
        "cluster.create",
        "cluster.update",
        "cluster.access",
        "compute_config.manage",
        # Jobs (workloads/jobs): uploading a working directory is part of submitting one.
        "workdir.upload",
        "job.submit",
        "job.stop",
        "job.schedule",  # create, pause, resume and delete job schedules
        # Create, start, stop and delete workspaces (workloads/workspaces).
        "workspace.manage",
        "service.manage",  # deploy, shift traffic, roll back, terminate a Service
    }
)
PROJECT_ADMIN = frozenset({"project.delete", "project.manage_members"})
PROJECT_PERMISSIONS = PROJECT_READ | PROJECT_WRITE | PROJECT_ADMIN

# token.view: seeing tokens (one's own; everyone's with token.manage_all), never their
# secrets: the JSON API lists them for tokens too, unlike the session-only writes below.
ORG_READ = frozenset(
    {"organization.view", "member.view", "project.list", "cloud.view", "token.view"}
)
# Everyone may keep API tokens for themselves: a token never holds more than its
# person, so a viewer's token reads and nothing else (and is marked read-only).
OWN_TOKENS = frozenset({"token.manage_own"})
# Seeing and revoking everyone's tokens, and running service accounts.
TOKEN_ADMIN = frozenset({"token.manage_all", "service_account.manage"})

ORG_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    OrgRole.VIEWER: ORG_READ | OWN_TOKENS,
    OrgRole.MEMBER: ORG_READ | OWN_TOKENS | {"project.create"},
    OrgRole.ADMIN: ORG_READ
    | OWN_TOKENS
    | TOKEN_ADMIN
    | PROJECT_PERMISSIONS
    | {
        "project.create",
        "organization.update",
        "member.invite",
        "member.update_role",
        "member.remove",
        "audit.view",
        "cloud.manage",
        "image.manage",
    },
    OrgRole.OWNER: ORG_READ
    | OWN_TOKENS
    | TOKEN_ADMIN
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
        "image.manage",
        "sso.manage",
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

# The permissions that change nothing: all a read-only API token can hold. Anything
# not listed here counts as a write, so a new permission is closed to read-only tokens
# until someone decides otherwise.
READ_PERMISSIONS = frozenset(
    {
        "organization.view",
        "member.view",
        "project.list",
        "project.view",
        "cloud.view",
        "audit.view",
        "token.view",
    }
)
# Permissions no API token holds, only a signed-in person: a leaked token must not be
# able to mint itself successors (outliving its expiry or revocation) or make new
# identities.
SESSION_ONLY_PERMISSIONS = frozenset(
    {"token.manage_own", "token.manage_all", "service_account.manage", "sso.manage"}
)


def roles_granting(perm: str) -> frozenset[str]:
    """The organization roles whose row of the table holds `perm`."""
    return frozenset(role for role, perms in ORG_ROLE_PERMISSIONS.items() if perm in perms)


class Principal(Protocol):
    """Whoever a permission is checked for: a User, or a ServiceAccount (which holds its
    organization role and no project roles). has_perm needs nothing else of them."""

    @property
    def is_authenticated(self) -> bool: ...

    @property
    def is_active(self) -> bool: ...

    def org_role(self, organization: Organization) -> str | None: ...

    def project_role(self, project: Project) -> str | None: ...


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


def has_perm(user: Principal, perm: str, obj: Any) -> bool:
    """True when `user` holds `perm` on `obj` (an Organization, a Project, or a row of one).
    `user` may also be a ServiceAccount: its role is looked up in the same table."""
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


def require(user: Principal, perm: str, obj: Any) -> None:
    """Raise PermissionDenied unless `user` holds `perm` on `obj`.

    Callers reach `obj` through `visible_to(user)` first, so an object of another
    organization is already a 404 before this runs.
    """
    if not has_perm(user, perm, obj):
        raise PermissionDenied(f"You do not have permission to do this ({perm}).")


def token_may(identity: TokenIdentity, perm: str, obj: Any) -> bool:
    """True when the API token behind `identity` may use `perm` on `obj`.

    A token acts only inside its own organization (an object of any other one is
    refused, even when the token's person belongs to both); it holds what its person or
    service account holds now, through the table above; a read-only token holds only
    READ_PERMISSIONS; and no token holds SESSION_ONLY_PERMISSIONS. The JSON API turns a
    refusal on an object of another organization into a 404, like the pages do.
    """
    if perm not in ALL_PERMISSIONS:
        raise ValueError(f"Unknown permission {perm!r}")
    if perm in SESSION_ONLY_PERMISSIONS:
        return False
    if identity.read_only and perm not in READ_PERMISSIONS:
        return False
    _, organization = _owning_project_and_org(obj)
    if organization.pk != identity.organization.pk:
        return False
    return has_perm(identity.principal, perm, obj)


def token_require(identity: TokenIdentity, perm: str, obj: Any) -> None:
    """Raise PermissionDenied unless the token may use `perm` on `obj` (see token_may)."""
    if not token_may(identity, perm, obj):
        raise PermissionDenied(f"This token does not allow this ({perm}).")
