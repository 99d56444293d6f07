"""API token secrets: how they are made, hashed and recognised, and the identity a valid
token stands for. No Django models are imported here, so models, services and the
JSON API can all use it.

A token secret is `rdk_` + 43 URL-safe characters (256 random bits). Only its SHA-256
is stored; its first characters (`ApiToken.prefix`) are kept for display.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import ApiToken, Organization, ServiceAccount, User

TOKEN_PREFIX = "rdk"  # noqa: S105 (a label, not a secret)
# What the lists show of a token: "rdk_" and the next 6 characters.
DISPLAY_PREFIX_LENGTH = len(TOKEN_PREFIX) + 1 + 6
# Longer input is not a token of ours; refusing it early spares a hash and a query.
MAX_SECRET_LENGTH = 100

DEFAULT_TOKEN_DAYS = 30
DEFAULT_MAX_TOKEN_DAYS = 90  # Organization.max_token_days, until an admin changes it
MAX_TOKEN_DAYS_CEILING = 365  # no organization may allow longer-lived tokens

# `raydeck login`: how long the browser hand-off waits, and how often one address may
# start one (the endpoint needs no sign-in, so it is rate limited).
CLI_HANDOFF_MINUTES = 10
CLI_HANDOFF_STARTS_PER_MINUTE = 10
CLI_HANDOFF_POLLS_PER_MINUTE = 120
CLI_HANDOFF_POLL_INTERVAL_SECONDS = 2
# One-time codes people read and type: no 0/O, 1/I/L.
CLI_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CLI_CODE_LENGTH = 8

# last_used_at and last_used_ip are written at most this often per token, so a busy
# script costs one write a minute, not one per request.
LAST_USED_RESOLUTION_SECONDS = 60


def hash_secret(secret: str) -> str:
    """Tokens are stored as SHA-256: they carry 256 random bits, so no slow KDF is needed
    and a lookup by hash stays one indexed query. Node credentials use the same."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str = TOKEN_PREFIX) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_PREFIX_LENGTH]


def looks_like_token(secret: str) -> bool:
    return secret.startswith(f"{TOKEN_PREFIX}_") and len(secret) <= MAX_SECRET_LENGTH


def secret_for_poll_token(poll_token: str) -> str:
    """The API token secret a CLI hand-off delivers, derived from its poll token.

    The server never keeps either in the clear: when the hand-off starts it stores the
    hash of the poll token and the hash of this secret; when the user confirms, the
    ApiToken is created with that stored hash; when the CLI polls with its poll token,
    the secret is derived again and returned once."""
    digest = hmac.new(poll_token.encode(), b"raydeck cli api token", hashlib.sha256).digest()
    return f"{TOKEN_PREFIX}_{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def new_cli_code() -> str:
    return "".join(secrets.choice(CLI_CODE_ALPHABET) for _ in range(CLI_CODE_LENGTH))


def normalize_cli_code(code: str) -> str:
    """What the user typed, as stored: upper case, without spaces or dashes."""
    return "".join(c for c in code.upper() if c.isalnum())[: CLI_CODE_LENGTH * 2]


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid API token acts as: a person or a service account, always inside the
    token's one organization. Made by `accounts.services.tokens.authenticate_token`; checked
    with `accounts.permissions.token_may`."""

    token: ApiToken
    organization: Organization
    principal: User | ServiceAccount
    read_only: bool

    @property
    def is_service_account(self) -> bool:
        return self.token.service_account_id is not None
