"""`raydeck login`: the CLI starts a hand-off, the browser confirms it, the CLI collects a token."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..audit import audit
from ..choices import CliHandoffStatus
from ..models import (
    ApiToken,
    CliHandoff,
    Organization,
    User,
)
from ..permissions import require
from ..tokens import (
    DEFAULT_TOKEN_DAYS,
    display_prefix,
    hash_secret,
    new_cli_code,
    secret_for_poll_token,
)
from .tokens import issue_token


def cli_handoff_start(*, ip: str | None, user_agent: str) -> tuple[CliHandoff, str]:
    """Start a CLI sign-in; returns the hand-off (its `code` is for the person) and the
    poll token (for the CLI only; only its hash is kept)."""
    now = timezone.now()
    # Housekeeping: hand-offs are useless once expired; keep a day of them for support.
    CliHandoff.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
    poll_token = secrets.token_urlsafe(32)
    secret = secret_for_poll_token(poll_token)
    for _ in range(5):
        try:
            with transaction.atomic():
                handoff = CliHandoff.objects.create(
                    code=new_cli_code(),
                    poll_token_hash=hash_secret(poll_token),
                    token_hash=hash_secret(secret),
                    token_prefix=display_prefix(secret),
                    requested_ip=ip,
                    requested_user_agent=user_agent[:300],
                )
            return handoff, poll_token
        except IntegrityError:  # the code is taken (31^8 codes: it happens rarely)
            continue
    raise RuntimeError("Could not find a free one-time code.")


CLOSED_HANDOFF_MESSAGES = {
    CliHandoffStatus.CONFIRMED: "This sign-in was already confirmed.",
    CliHandoffStatus.DELIVERED: "This sign-in is complete: the CLI has its token.",
    CliHandoffStatus.DENIED: "This sign-in was denied.",
    CliHandoffStatus.EXPIRED: "This code has expired. Run `raydeck login` again.",
}


def _lock_pending_handoff(handoff: CliHandoff) -> CliHandoff:
    handoff = CliHandoff.objects.select_for_update().get(pk=handoff.pk)
    if handoff.status != CliHandoffStatus.PENDING:
        raise ValidationError(CLOSED_HANDOFF_MESSAGES[handoff.status])
    return handoff


@transaction.atomic(durable=True)
def cli_handoff_confirm(
    *, handoff: CliHandoff, organization: Organization, actor: User, read_only: bool = False
) -> ApiToken:
    """The person confirms the code: a personal token for `organization` is created now
    (with the hash made when the hand-off started), for the CLI to collect once."""
    require(actor, "token.manage_own", organization)
    handoff = _lock_pending_handoff(handoff)
    token = issue_token(
        organization=organization,
        actor=actor,
        name=f"raydeck CLI ({timezone.now():%Y-%m-%d})",
        days=min(DEFAULT_TOKEN_DAYS, organization.max_token_days),
        read_only=read_only,
        token_hash=handoff.token_hash,
        prefix=handoff.token_prefix,
        user=actor,
        via="cli",
    )
    handoff.organization, handoff.user, handoff.token = organization, actor, token
    handoff.confirmed_at = timezone.now()
    handoff.save(update_fields=["organization", "user", "token", "confirmed_at"])
    audit(
        actor=actor,
        verb="cli_handoff.confirm",
        target=handoff,
        changes={"token": [None, str(token)], "requested_ip": [None, handoff.requested_ip]},
    )
    return token


@transaction.atomic(durable=True)
def cli_handoff_deny(*, handoff: CliHandoff, actor: User) -> CliHandoff:
    """The person did not start this sign-in: the CLI is told, and nothing is created."""
    handoff = _lock_pending_handoff(handoff)
    handoff.denied_at = timezone.now()
    handoff.save(update_fields=["denied_at"])
    audit(
        actor=actor,
        verb="cli_handoff.deny",
        target=handoff,
        changes={"requested_ip": [None, handoff.requested_ip]},
    )
    return handoff


@transaction.atomic(durable=True)
def cli_handoff_poll(*, poll_token: str) -> tuple[CliHandoff | None, str | None]:
    """What the CLI gets for its poll token: (None, None) for an unknown one; the
    hand-off and the API token secret the first time after confirmation (only then);
    otherwise the hand-off, whose `status` says why there is no secret."""
    handoff = (
        # Lock only the hand-off row: PostgreSQL refuses FOR UPDATE on the nullable side
        # of the outer joins that select_related would add.
        CliHandoff.objects.select_for_update(of=("self",))
        .select_related("organization", "token")
        .filter(poll_token_hash=hash_secret(poll_token))
        .first()
    )
    if handoff is None:
        return None, None
    status = handoff.status
    if status == CliHandoffStatus.CONFIRMED:
        handoff.delivered_at = timezone.now()
        handoff.save(update_fields=["delivered_at"])
        return handoff, secret_for_poll_token(poll_token)
    token = handoff.token
    if status == CliHandoffStatus.EXPIRED and token is not None and token.revoked_at is None:
        # Confirmed, never collected: nobody will ever hold this token's secret.
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(actor=None, verb="token.revoke", target=token, actor_email="raydeck")
    return handoff, None
