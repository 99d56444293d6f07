"""Personal and service-account API tokens: issue, revoke, and authenticate a bearer secret."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from kit.statements import Param, StatementCache

from ..audit import audit
from ..models import (
    ApiToken,
    Membership,
    Organization,
    ServiceAccount,
    User,
)
from ..permissions import READ_ONLY_ORG_ROLES, require
from ..tokens import (
    LAST_USED_RESOLUTION_SECONDS,
    TokenIdentity,
    display_prefix,
    hash_secret,
    looks_like_token,
    new_secret,
)


def _check_token_days(organization: Organization, days: int) -> None:
    if not 1 <= days <= organization.max_token_days:
        raise ValidationError(
            {
                "days": f"Choose from 1 to {organization.max_token_days} days: "
                f"{organization.name} allows tokens to live at most "
                f"{organization.max_token_days} days."
            }
        )


def issue_token(
    *,
    organization: Organization,
    actor: User,
    name: str,
    days: int,
    read_only: bool,
    token_hash: str,
    prefix: str,
    user: User | None = None,
    service_account: ServiceAccount | None = None,
    via: str = "console",
) -> ApiToken:
    _check_token_days(organization, days)
    holder_role = (
        service_account.role if service_account is not None else actor.org_role(organization)
    )
    token = ApiToken(
        organization=organization,
        user=user,
        service_account=service_account,
        name=name.strip(),
        prefix=prefix,
        token_hash=token_hash,
        # A viewer's token could not write anyway; saying so keeps it read-only should
        # its holder be promoted later.
        read_only=read_only or holder_role in READ_ONLY_ORG_ROLES,
        expires_at=timezone.now() + timedelta(days=days),
        created_by=actor,
    )
    token.full_clean()
    token.save()
    audit(
        actor=actor,
        verb="token.create",
        target=token,
        changes={
            "name": [None, token.name],
            "holder": [None, str(service_account or user)],
            "read_only": [None, token.read_only],
            "expires_at": [None, token.expires_at.isoformat(timespec="seconds")],
            "via": [None, via],
        },
    )
    return token


@transaction.atomic(durable=True)
def token_create(
    *,
    organization: Organization,
    actor: User,
    name: str,
    days: int,
    read_only: bool,
    service_account: ServiceAccount | None = None,
) -> tuple[ApiToken, str]:
    """A personal token of `actor` in `organization`, or a token of `service_account`.
    Returns the token and its secret: the secret is never stored, so show it now."""
    if service_account is None:
        require(actor, "token.manage_own", organization)
    else:
        require(actor, "service_account.manage", organization)
        if service_account.organization_id != organization.pk:
            raise ValidationError("Choose a service account of this organization.")
        service_account = ServiceAccount.objects.select_for_update().get(pk=service_account.pk)
        if service_account.disabled_at is not None:
            raise ValidationError("This service account is disabled: it cannot get new tokens.")
    secret = new_secret()
    token = issue_token(
        organization=organization,
        actor=actor,
        name=name,
        days=days,
        read_only=read_only,
        token_hash=hash_secret(secret),
        prefix=display_prefix(secret),
        user=actor if service_account is None else None,
        service_account=service_account,
    )
    return token, secret


@transaction.atomic(durable=True)
def token_revoke(*, token: ApiToken, actor: User, by_support: bool = False) -> ApiToken:
    """Revoke a token: your own (token.manage_own), anyone's in the organization
    (token.manage_all), or, with `by_support`, any token from the support admin."""
    if by_support:
        if not (actor.is_active and actor.is_staff):
            raise PermissionDenied("Only support staff can do this.")
    elif token.user_id is not None and token.user_id == actor.pk:
        require(actor, "token.manage_own", token.organization)
    else:
        require(actor, "token.manage_all", token.organization)
    token = ApiToken.objects.select_for_update().select_related("organization").get(pk=token.pk)
    if token.revoked_at is not None:
        raise ValidationError("This token was already revoked.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit(actor=actor, verb="token.revoke", target=token)
    return token


# What one token lookup loads: the token, its organization, its person or service
# account (LEFT JOINs: one of the two is empty), under these prefixes of `.values()`.
_TOKEN_ROW_MODELS: dict[str, type[models.Model]] = {
    "": ApiToken,
    "organization__": Organization,
    "user__": User,
    "service_account__": ServiceAccount,
}
# Each model's columns, in the order from_db takes them.
_TOKEN_ROW_FIELDS = {
    prefix: [field.attname for field in model._meta.concrete_fields]
    for prefix, model in _TOKEN_ROW_MODELS.items()
}
_token_lookups = StatementCache(size=1)


def _token_lookup() -> QuerySet:
    """The token with `token_hash` (unique: no ordering), what it belongs to, and its
    person's role in its organization: one query instead of select_related plus the
    membership lookup, compiled once (this runs on every API call)."""
    role = Membership.objects.filter(
        user_id=OuterRef("user_id"), organization_id=OuterRef("organization_id")
    ).values("role")[:1]
    columns = [prefix + name for prefix, names in _TOKEN_ROW_FIELDS.items() for name in names]
    return (
        ApiToken.objects.filter(token_hash=Param("token_hash"))
        .order_by()
        .values(*columns, member_role=Subquery(role))[:1]
    )


def _instances(row: dict[str, Any], db: str) -> dict[str, Any]:
    """The row's model instances by prefix (None for the empty side of a LEFT JOIN)."""
    found: dict[str, Any] = {}
    for prefix, model in _TOKEN_ROW_MODELS.items():
        names = _TOKEN_ROW_FIELDS[prefix]
        values = [row[prefix + n] for n in names]
        found[prefix] = None if values[0] is None else model.from_db(db, names, values)
    return found


def authenticate_token(secret: str, *, ip: str | None) -> TokenIdentity | None:
    """The identity an API token secret stands for, or None.

    None when the secret is not one of ours, or its token is revoked or expired, or its
    person is deactivated or no longer a member of the token's organization, or its
    service account is disabled. Callers answer None with 401 and the same message
    whatever the reason. On success the token's last use (time and `ip`) is recorded,
    at most once a minute per token.

    The identity acts only inside `identity.organization`; check every permission with
    `accounts.permissions.token_may(identity, perm, obj)` (the JSON API turns a refusal
    on another organization's object into 404).
    """
    if not looks_like_token(secret):
        return None
    lookup = _token_lookups.get("token", _token_lookup)
    rows = lookup.rows(token_hash=hash_secret(secret))
    if not rows:
        return None
    found = _instances(rows[0], lookup.alias)
    token: ApiToken = found[""]
    if not token.is_active:
        return None
    token.organization = found["organization__"]
    principal: User | ServiceAccount
    user, account = found["user__"], found["service_account__"]
    if user is not None:
        principal = token.user = user
        role = rows[0]["member_role"]
        if not user.is_active or role is None:
            return None
        user.remember_org_role(token.organization, role)
    elif account is not None:
        principal = token.service_account = account
        if not account.is_active or account.organization_id != token.organization_id:
            return None
    else:  # the table's check constraint makes this unreachable
        return None
    _record_use(token, ip)
    return TokenIdentity(
        token=token,
        organization=token.organization,
        principal=principal,
        read_only=token.read_only,
    )


def _record_use(token: ApiToken, ip: str | None) -> None:
    now = timezone.now()
    stale = now - timedelta(seconds=LAST_USED_RESOLUTION_SECONDS)
    if token.last_used_at is not None and token.last_used_at > stale:
        return
    # Conditional, so concurrent requests with the same token write once.
    ApiToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at=None) | Q(last_used_at__lte=stale)
    ).update(last_used_at=now, last_used_ip=ip)
    token.last_used_at, token.last_used_ip = now, ip
