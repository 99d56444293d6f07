"""Organizations: create one (its creator becomes owner) and change its settings."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from ..audit import audit, changes_between, snapshot
from ..choices import OrgRole
from ..models import (
    RESERVED_SLUGS,
    Membership,
    Organization,
    User,
)
from ..permissions import require


def check_slug_not_reserved(slug: str) -> None:
    if slug in RESERVED_SLUGS:
        raise ValidationError({"slug": f"“{slug}” is reserved; choose another."})


@transaction.atomic
def organization_create(*, name: str, slug: str, actor: User) -> Organization:
    check_slug_not_reserved(slug)
    organization = Organization(name=name.strip(), slug=slug)
    organization.full_clean()
    organization.save()
    membership = Membership.objects.create(
        organization=organization, user=actor, role=OrgRole.OWNER
    )
    actor.forget_roles()
    audit(
        actor=actor,
        verb="organization.create",
        target=organization,
        changes={"name": [None, organization.name], "slug": [None, organization.slug]},
    )
    audit(
        actor=actor, verb="member.add", target=membership, changes={"role": [None, membership.role]}
    )
    return organization


ORGANIZATION_SETTINGS = ["name", "max_token_days"]


@transaction.atomic(durable=True)
def organization_update(
    *, organization: Organization, name: str, actor: User, max_token_days: int | None = None
) -> Organization:
    """Rename, and set the longest lifetime new API tokens may have (tokens that already
    exist keep their expiry; revoke them to cut them short)."""
    require(actor, "organization.update", organization)
    before = snapshot(organization, ORGANIZATION_SETTINGS)
    organization.name = name.strip()
    if max_token_days is not None:
        organization.max_token_days = max_token_days
    organization.full_clean()
    organization.save(update_fields=[*ORGANIZATION_SETTINGS, "updated_at"])
    changes = changes_between(before, snapshot(organization, ORGANIZATION_SETTINGS))
    if changes:
        audit(actor=actor, verb="organization.update", target=organization, changes=changes)
    return organization
