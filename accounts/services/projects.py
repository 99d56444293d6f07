"""Projects and their members: create, rename, delete; add, re-role, remove members."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from ..audit import audit, changes_between, snapshot
from ..choices import OrgRole, ProjectRole
from ..models import (
    Organization,
    Project,
    ProjectMembership,
    User,
)
from ..permissions import require
from ..revocations import access_revoke
from .organizations import check_slug_not_reserved

PROJECT_FIELDS = ["name", "description"]


def project_slug_taken(*, organization: Organization, slug: str) -> str | None:
    """Why `slug` cannot name a new project of `organization`, or None when it can."""
    if Project.objects.filter(organization=organization, slug=slug).exists():
        return f"A project with URL name “{slug}” already exists."
    return None


@transaction.atomic
def project_create(
    *, organization: Organization, name: str, slug: str = "", description: str = "", actor: User
) -> Project:
    """A project; a blank `slug` is derived from the name."""
    require(actor, "project.create", organization)
    slug = slug.strip() or slugify(name)[:50].strip("-")
    if not slug:
        raise ValidationError({"slug": "Choose a short name made of letters, digits and hyphens."})
    check_slug_not_reserved(slug)
    if taken := project_slug_taken(organization=organization, slug=slug):
        raise ValidationError({"slug": taken})
    project = Project(
        organization=organization, name=name.strip(), slug=slug, description=description.strip()
    )
    project.full_clean()
    project.save()
    audit(
        actor=actor,
        verb="project.create",
        target=project,
        changes={
            k: [None, v] for k, v in snapshot(project, ["name", "slug", "description"]).items()
        },
    )
    if actor.org_role(organization) not in (OrgRole.OWNER, OrgRole.ADMIN):
        # Whoever creates a project can manage it, even without an org-wide role.
        pm = ProjectMembership.objects.create(
            organization=organization, project=project, user=actor, role=ProjectRole.OWNER
        )
        audit(actor=actor, verb="project_member.add", target=pm, changes={"role": [None, pm.role]})
        actor.forget_roles()
    return project


@transaction.atomic(durable=True)
def project_update(*, project: Project, name: str, description: str, actor: User) -> Project:
    require(actor, "project.update", project)
    before = snapshot(project, PROJECT_FIELDS)
    project.name = name.strip()
    project.description = description.strip()
    project.full_clean()
    project.save(update_fields=[*PROJECT_FIELDS, "updated_at"])
    changes = changes_between(before, snapshot(project, PROJECT_FIELDS))
    if changes:
        audit(actor=actor, verb="project.update", target=project, changes=changes)
    return project


@transaction.atomic(durable=True)
def project_delete(*, project: Project, actor: User) -> None:
    require(actor, "project.delete", project)
    audit(
        actor=actor, verb="project.delete", target=project, changes={"name": [project.name, None]}
    )
    project.delete()


@transaction.atomic(durable=True)
def project_member_add(
    *, project: Project, user: User, role: str, actor: User
) -> ProjectMembership:
    require(actor, "project.manage_members", project)
    if role not in ProjectRole.values:
        raise ValidationError({"role": f"Unknown role “{role}”."})
    if user.org_role(project.organization) is None:
        raise ValidationError({"user": "Only members of the organization can join its projects."})
    if ProjectMembership.objects.filter(project=project, user=user).exists():
        raise ValidationError({"user": f"{user} is already in this project."})
    pm = ProjectMembership.objects.create(
        organization=project.organization, project=project, user=user, role=role
    )
    audit(actor=actor, verb="project_member.add", target=pm, changes={"role": [None, role]})
    return pm


@transaction.atomic(durable=True)
def project_member_change_role(
    *, project_membership: ProjectMembership, role: str, actor: User
) -> ProjectMembership:
    require(actor, "project.manage_members", project_membership.project)
    if role not in ProjectRole.values:
        raise ValidationError({"role": f"Unknown role “{role}”."})
    pm = ProjectMembership.objects.select_for_update().get(pk=project_membership.pk)
    if pm.role != role:
        before, pm.role = pm.role, role
        pm.save(update_fields=["role"])
        access_revoke(user=pm.user, organization=pm.organization)
        audit(
            actor=actor,
            verb="project_member.role_change",
            target=pm,
            changes={"role": [before, role]},
        )
    return pm


@transaction.atomic(durable=True)
def project_member_remove(*, project_membership: ProjectMembership, actor: User) -> None:
    require(actor, "project.manage_members", project_membership.project)
    audit(
        actor=actor,
        verb="project_member.remove",
        target=project_membership,
        changes={"role": [project_membership.role, None]},
    )
    project_membership.delete()
    access_revoke(user=project_membership.user, organization=project_membership.organization)
