"""The role matrix: every permission in the table, for every organization role, with
and without a project role. The expectations below are written out by hand from the
product rules (README, "Roles"), so a change to the table that breaks a rule fails here."""

from __future__ import annotations

import pytest

from accounts.choices import OrgRole, ProjectRole
from accounts.permissions import (
    ALL_PERMISSIONS,
    READ_PERMISSIONS,
    SESSION_ONLY_PERMISSIONS,
    has_perm,
    require,
)
from tests.factories import (
    MembershipFactory,
    ProjectFactory,
    ProjectMembershipFactory,
    ServiceAccountFactory,
    UserFactory,
)

O, A, M, V = OrgRole.OWNER, OrgRole.ADMIN, OrgRole.MEMBER, OrgRole.VIEWER

# Permissions checked against the organization: which org roles hold them.
ORG_MATRIX: dict[str, set[str]] = {
    "organization.view": {O, A, M, V},
    "member.view": {O, A, M, V},
    "project.list": {O, A, M, V},
    "cloud.view": {O, A, M, V},
    # Seeing tokens (one's own; everyone's with token.manage_all), never their secrets.
    "token.view": {O, A, M, V},
    "project.create": {O, A, M},
    "organization.update": {O, A},
    "member.invite": {O, A},
    "member.update_role": {O, A},
    "member.remove": {O, A},
    "audit.view": {O, A},
    "cloud.manage": {O, A},
    # The organization's own images (clusters/services/images.py).
    "image.manage": {O, A},
    "organization.delete": {O},
    "member.manage_owners": {O},
    # Everyone keeps their own API tokens (a viewer's are read-only, see test_tokens);
    # owners and admins see and revoke everyone's, and run service accounts.
    "token.manage_own": {O, A, M, V},
    "token.manage_all": {O, A},
    "service_account.manage": {O, A},
    "sso.manage": {O},
}

# Permissions checked against a project: which (org role, project role) pairs hold
# them. None = not in the project. Owners and admins hold all of them regardless.
PROJECT_MATRIX: dict[str, set[tuple[str, str | None]]] = {}
_ALL_PROJECT_ROLES = [None, *ProjectRole.values]
_org_wide = {(r, p) for r in (O, A) for p in _ALL_PROJECT_ROLES}
PROJECT_MATRIX["project.view"] = _org_wide | {
    (M, "owner"),
    (M, "writer"),
    (M, "reader"),
    (V, "owner"),
    (V, "writer"),
    (V, "reader"),
}
# cluster.access runs code on the cluster (dashboard, jobs): writers and up, like a write.
# compute_config.manage on a project: its writers; on the organization (org-wide
# configs): owners and admins, through the project permissions their role holds.
# Jobs, workspaces and services run code in the project: writers and up too.
for perm in (
    "project.update",
    "cluster.create",
    "cluster.update",
    "cluster.access",
    "compute_config.manage",
    "workdir.upload",
    "job.submit",
    "job.stop",
    "job.schedule",
    "workspace.manage",
    "service.manage",
):
    PROJECT_MATRIX[perm] = _org_wide | {(M, "owner"), (M, "writer")}
for perm in ("project.delete", "project.manage_members"):
    PROJECT_MATRIX[perm] = _org_wide | {(M, "owner")}


def test_matrix_covers_every_permission_in_the_table() -> None:
    assert set(ORG_MATRIX) | set(PROJECT_MATRIX) == set(ALL_PERMISSIONS)


@pytest.mark.django_db
@pytest.mark.parametrize("org_role", OrgRole.values)
@pytest.mark.parametrize("perm", sorted(ORG_MATRIX))
def test_org_permission(perm: str, org_role: str) -> None:
    membership = MembershipFactory(role=org_role)
    allowed = has_perm(membership.user, perm, membership.organization)
    assert allowed is (org_role in ORG_MATRIX[perm])


@pytest.mark.django_db
@pytest.mark.parametrize("project_role", _ALL_PROJECT_ROLES)
@pytest.mark.parametrize("org_role", OrgRole.values)
@pytest.mark.parametrize("perm", sorted(PROJECT_MATRIX))
def test_project_permission(perm: str, org_role: str, project_role: str | None) -> None:
    membership = MembershipFactory(role=org_role)
    project = ProjectFactory(organization=membership.organization)
    if project_role:
        ProjectMembershipFactory(project=project, user=membership.user, role=project_role)
    allowed = has_perm(membership.user, perm, project)
    assert allowed is ((org_role, project_role) in PROJECT_MATRIX[perm])


# What a read-only token may still do, by hand: looking, never changing.
READS = {
    "organization.view",
    "member.view",
    "project.list",
    "project.view",
    "cloud.view",
    "audit.view",
    "token.view",
}


def test_reads_are_exactly_the_permissions_that_change_nothing() -> None:
    assert READ_PERMISSIONS == READS
    assert READ_PERMISSIONS <= ALL_PERMISSIONS


def test_no_token_manages_tokens_service_accounts_or_sso() -> None:
    assert {
        "token.manage_own",
        "token.manage_all",
        "service_account.manage",
        "sso.manage",
    } == set(SESSION_ONLY_PERMISSIONS)


# A service account holds its organization role's row of the same table, and no
# project role: as admin it holds every project permission, as member or viewer none.
@pytest.mark.django_db
@pytest.mark.parametrize("role", [A, M, V])
@pytest.mark.parametrize("perm", sorted(ORG_MATRIX))
def test_service_account_org_permission(perm: str, role: str) -> None:
    account = ServiceAccountFactory(role=role)
    assert has_perm(account, perm, account.organization) is (role in ORG_MATRIX[perm])


@pytest.mark.django_db
@pytest.mark.parametrize("role", [A, M, V])
@pytest.mark.parametrize("perm", sorted(PROJECT_MATRIX))
def test_service_account_project_permission(perm: str, role: str) -> None:
    account = ServiceAccountFactory(role=role)
    project = ProjectFactory(organization=account.organization)
    assert has_perm(account, perm, project) is ((role, None) in PROJECT_MATRIX[perm])


@pytest.mark.django_db
def test_service_account_holds_nothing_elsewhere_or_once_disabled() -> None:
    from django.utils import timezone

    account = ServiceAccountFactory(role=A)
    other = ProjectFactory()
    assert not any(has_perm(account, p, other) for p in ALL_PERMISSIONS)
    account.disabled_at = timezone.now()
    assert not has_perm(account, "organization.view", account.organization)


@pytest.mark.django_db
def test_no_permission_in_an_organization_you_do_not_belong_to() -> None:
    owner_elsewhere = MembershipFactory(role=OrgRole.OWNER).user
    project = ProjectFactory()
    for perm in sorted(ALL_PERMISSIONS):
        assert not has_perm(owner_elsewhere, perm, project.organization)
        assert not has_perm(owner_elsewhere, perm, project)


@pytest.mark.django_db
def test_project_role_in_another_org_grants_nothing_here() -> None:
    """A project membership row pointing at a project of an org the user left."""
    user = UserFactory()
    project = ProjectFactory()
    ProjectMembershipFactory(project=project, user=user, role=ProjectRole.OWNER)
    assert not has_perm(user, "project.view", project)


@pytest.mark.django_db
def test_inactive_user_holds_nothing() -> None:
    membership = MembershipFactory(role=OrgRole.OWNER)
    membership.user.is_active = False
    assert not has_perm(membership.user, "organization.view", membership.organization)


@pytest.mark.django_db
def test_unknown_permission_is_a_programming_error() -> None:
    membership = MembershipFactory(role=OrgRole.OWNER)
    with pytest.raises(ValueError, match="Unknown permission"):
        require(membership.user, "cluster.luanch", membership.organization)
