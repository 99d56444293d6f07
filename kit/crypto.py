"""Encryption at rest for the few secrets Raydeck must be able to read back
(an OIDC client secret, a cluster's token-signing key).

Keys come from `RAYDECK_ENCRYPTION_KEYS` (comma-separated Fernet keys, newest first,
so a key can be rotated: old rows still decrypt, new rows use the first key). Without
it, one key is derived from SECRET_KEY and its fallbacks, which is enough for the
embedded default; production should set its own keys so that rotating SECRET_KEY
never makes stored secrets unreadable.
"""

from __future__ import annotations

import base64
import hashlib
import os
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["InvalidToken", "decrypt", "encrypt"]


def _derived_key(secret: str) -> bytes:
    digest = hashlib.sha256(b"raydeck-encryption-v1:" + secret.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@cache
def _box() -> MultiFernet:
    configured = [k.strip() for k in os.environ.get("RAYDECK_ENCRYPTION_KEYS", "").split(",")]
    keys = [k.encode() for k in configured if k]
    if not keys:
        secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        keys = [_derived_key(s) for s in secrets]
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(plaintext: str) -> str:
    return _box().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """Raises InvalidToken when no configured key opens it."""
    return _box().decrypt(ciphertext.encode()).decode()
