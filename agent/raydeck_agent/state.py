"""The registration, kept in the node's folder so a restarted agent resumes with its
credential instead of re-sending a bootstrap token that is already spent."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from .api import Registration

STATE_FILE = "agent-state.json"

logger = logging.getLogger("raydeck_agent")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load(node_dir: Path, node_id: str, bootstrap_token: str) -> Registration | None:
    """The saved registration, only if it was made for this node with this very token:
    a relaunch of the node comes with a new token and must register again."""
    path = node_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
        if data.get("node_id") != node_id or data.get("token_sha256") != token_digest(
            bootstrap_token
        ):
            return None
        return Registration.from_json(data["registration"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return None


def save(node_dir: Path, node_id: str, bootstrap_token: str, registration: Registration) -> None:
    data = {
        "node_id": node_id,
        "token_sha256": token_digest(bootstrap_token),
        "registration": registration.to_json(),
    }
    path = node_dir / STATE_FILE
    node_dir.mkdir(parents=True, exist_ok=True)
    # Written whole or not at all (temp file + rename), readable by this user only.
    fd, tmp = tempfile.mkstemp(dir=node_dir, prefix=f".{STATE_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
