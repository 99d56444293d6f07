"""Organization memberships: change a role, remove a member, always keep one owner."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..audit import audit
from ..choices import OrgRole
from ..models import (
    ApiToken,
    Membership,
    Organization,
    ProjectMembership,
    User,
)
from ..permissions import require
from ..revocations import access_revoke


def _lock_owners(organization: Organization) -> list[Membership]:
    # Locking every owner row serialises concurrent demotions, so two owners demoting
    # each other cannot leave the organization with none.
    return list(
        Membership.objects.select_for_update()
        .filter(organization=organization, role=OrgRole.OWNER)
        .order_by("pk")
    )


def is_last_owner(membership: Membership) -> bool:
    """True when `membership` is its organization's only owner (owners stay locked until
    the transaction ends, so the answer holds for it)."""
    if membership.role != OrgRole.OWNER:
        return False
    return len(_lock_owners(membership.organization)) <= 1


def _ensure_not_last_owner(membership: Membership, *, leaving_role: bool) -> None:
    if membership.role != OrgRole.OWNER or not leaving_role:
        return
    if is_last_owner(membership):
        raise ValidationError(
            "An organization needs at least one owner. Make someone else an owner first."
        )


@transaction.atomic(durable=True)
def membership_change_role(*, membership: Membership, role: str, actor: User) -> Membership:
    if role not in OrgRole.values:
        raise ValidationError({"role": f"Unknown role “{role}”."})
    organization = membership.organization
    require(actor, "member.update_role", organization)
    if OrgRole.OWNER in (role, membership.role):
        require(actor, "member.manage_owners", organization)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == role:
        return membership
    _ensure_not_last_owner(membership, leaving_role=True)
    before = membership.role
    membership.role = role
    membership.full_clean()
    membership.save(update_fields=["role", "updated_at"])
    membership.user.forget_roles()
    access_revoke(user=membership.user, organization=organization)
    audit(
        actor=actor, verb="member.role_change", target=membership, changes={"role": [before, role]}
    )
    return membership


@transaction.atomic(durable=True)
def membership_remove(*, membership: Membership, actor: User) -> None:
    """Remove a member, or let a member leave (when `actor` is the member). Their API
    tokens of this organization are revoked: they would not work without the
    membership, and must not come back to life if the person is invited again."""
    organization = membership.organization
    leaving = membership.user_id == actor.pk
    if not leaving:
        require(actor, "member.remove", organization)
        if membership.role == OrgRole.OWNER:
            require(actor, "member.manage_owners", organization)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _ensure_not_last_owner(membership, leaving_role=True)
    membership_delete(
        membership=membership, actor=actor, verb="member.leave" if leaving else "member.remove"
    )


def membership_delete(
    *, membership: Membership, actor: User, verb: str, changes: dict | None = None
) -> None:
    """The removal itself, for callers that already checked who may remove and that the
    organization keeps an owner (membership_remove, SSO sign-in): project roles go, API
    tokens of the organization are revoked, and the event is recorded."""
    organization = membership.organization
    ProjectMembership.objects.filter(organization=organization, user=membership.user).delete()
    revoked = (
        ApiToken.objects.filter(organization=organization, user=membership.user)
        .filter(revoked_at=None)
        .update(revoked_at=timezone.now())
    )
    changes = {**(changes or {}), "role": [membership.role, None]}
    if revoked:
        changes["unrevoked_api_tokens"] = [revoked, 0]
    audit(actor=actor, verb=verb, target=membership, organization=organization, changes=changes)
    membership.delete()
    membership.user.forget_roles()
    access_revoke(user=membership.user, organization=organization)
