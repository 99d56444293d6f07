"""People's SSH public keys (for `raydeck workspaces ssh` and VS Code's Remote-SSH):
added and removed by their owner, validated, audited; and what the CLI's tunnel needs
to reach a workspace's sshd through its cluster's gateway.

The heads of the workspaces a person may use (selectors.SSH_PERMISSION) get the new
keys at their next heartbeat: a change forgets those workspaces' cached orders."""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.audit import audit
from accounts.models import User
from accounts.permissions import require
from clusters import access

from . import live
from .choices import ACTIVE_WORKSPACE_STATES, WorkspaceState
from .models import SshKey, Workspace
from .selectors import SSH_PERMISSION

SSH_PATH = "/ssh"  # the gateway's tunnel (agent: gateway.py SSH_PATH)

MIN_RSA_BITS = 2048
MAX_KEY_CHARS = 8192
KEY_TYPES = ("ssh-", "ecdsa-")


def parse_public_key(text: str) -> tuple[str, str, str]:
    """(normalized "<type> <base64>", fingerprint, comment) of one OpenSSH public key
    line, or a ValidationError that says what is wrong with it."""
    if "PRIVATE KEY" in text:
        raise ValidationError("That is a private key: never share it. Paste the .pub file.")
    parts = text.strip().split()
    if len(text) > MAX_KEY_CHARS or len(parts) < 2 or not parts[0].startswith(KEY_TYPES):
        raise ValidationError(
            "Paste one public key line, such as the contents of ~/.ssh/id_ed25519.pub "
            "(ssh-ed25519 AAAA… you@laptop)."
        )
    kind, blob = parts[0], parts[1]
    try:
        key = serialization.load_ssh_public_key(f"{kind} {blob}".encode())
        raw = base64.b64decode(blob, validate=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValidationError(f"This is not a valid {kind} public key.") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValidationError(f"RSA keys need at least {MIN_RSA_BITS} bits; use ssh-ed25519.")
    if not isinstance(key, (rsa.RSAPublicKey, ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise ValidationError("Use an ed25519, ECDSA or RSA key.")
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"{kind} {blob}", f"SHA256:{digest}", " ".join(parts[2:])[:100]


@transaction.atomic(durable=True)
def ssh_key_add(*, user: User, name: str, public_key: str) -> SshKey:
    try:
        normalized, fingerprint, comment = parse_public_key(public_key)
    except ValidationError as exc:
        raise ValidationError({"public_key": exc.messages}) from exc
    key = SshKey(
        user=user,
        name=(name.strip() or comment or "SSH key")[:100],
        public_key=normalized,
        fingerprint=fingerprint,
    )
    key.full_clean(exclude=["user"])
    try:
        with transaction.atomic():
            key.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"public_key": f"You already added this key ({fingerprint})."}
        ) from exc
    audit(actor=user, verb="ssh_key.add", target=key, changes={"fingerprint": [None, fingerprint]})
    transaction.on_commit(lambda: _forget_orders_of(user))
    return key


@transaction.atomic(durable=True)
def ssh_key_remove(*, user: User, key: SshKey) -> None:
    if key.user_id != user.pk:
        raise ValidationError("Not your key.")
    audit(
        actor=user,
        verb="ssh_key.remove",
        target=key,
        changes={"fingerprint": [key.fingerprint, None]},
    )
    key.delete()
    transaction.on_commit(lambda: _forget_orders_of(user))


def _forget_orders_of(user: User) -> None:
    """The running workspaces of the person's organizations get their keys again."""
    clusters = Workspace.objects.filter(
        organization__memberships__user=user, state__in=ACTIVE_WORKSPACE_STATES
    ).values_list("cluster_id", flat=True)
    for cluster_id in clusters:
        live.forget_orders(cluster_id)


@transaction.atomic(durable=True)
def workspace_ssh_access(*, workspace: Workspace, user: User) -> dict[str, str]:
    """The gateway's tunnel to the workspace's sshd, a 5-minute token that opens it, and
    the account to log in as; a ValidationError that says what to do when SSH cannot
    work now. Audited, like every token handed out."""
    require(user, SSH_PERMISSION, workspace.project)
    cluster = workspace.cluster
    if workspace.state != WorkspaceState.RUNNING or cluster is None:
        raise ValidationError(
            f"The workspace {workspace.name} is {workspace.state}: start it first."
        )
    if workspace.ssh_unavailable:
        raise ValidationError(workspace.no_sshd_explained)
    address = access.gateway_address(cluster)
    if not workspace.ssh_user or address is None:
        raise ValidationError("The workspace's SSH server is starting: try again in a moment.")
    if not SshKey.objects.filter(user=user).exists():
        raise ValidationError(
            "You have no SSH key in Raydeck: add your public key (such as ~/.ssh/id_ed25519.pub) "
            "under SSH keys on your profile page first."
        )
    token = access.mint_token(user=user, cluster=cluster, lifetime=access.LINK_LIFETIME)
    audit(
        actor=user,
        verb="workspace.ssh",
        target=workspace,
        changes={"token_id": [None, token.jti]},
    )
    return {
        "url": "wss://" + address.removeprefix("https://") + SSH_PATH,
        "token": token.token,
        "expires_at": token.expires_at.isoformat(),
        "user": workspace.ssh_user,
    }
