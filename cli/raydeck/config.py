"""Where the SDK finds its server, organization and token.

Explicit arguments win, then RAYDECK_URL / RAYDECK_ORG / RAYDECK_TOKEN, then the file
`raydeck login` writes: $RAYDECK_CONFIG, else $XDG_CONFIG_HOME/raydeck/config.json,
else ~/.config/raydeck/config.json. The file holds secrets, so it is written 0600 in a
0700 folder, replaced atomically (a crash never leaves half a file). A token acts in
one organization, so the file keeps one token per organization and a default one:

    {"url": "https://raydeck.example.com", "org": "acme", "tokens": {"acme": "rdk_..."}}
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, NotSignedIn

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def config_path() -> Path:
    explicit = os.environ.get("RAYDECK_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "raydeck" / "config.json"


def normalize_url(url: str) -> str:
    """The server's base URL without a trailing slash or /api/v1; http(s) only."""
    url = url.strip().rstrip("/")
    url = url.removesuffix("/api/v1")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"The server URL must start with http:// or https://, not {url!r}.")
    return url


@dataclass
class ConfigFile:
    """The contents of the config file."""

    url: str | None = None
    org: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> ConfigFile:
        path = path or config_path()
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} is not a JSON object; delete it and run `raydeck login`.")
        tokens = data.get("tokens")
        return cls(
            url=data.get("url") or None,
            org=data.get("org") or None,
            tokens={str(k): str(v) for k, v in tokens.items()} if isinstance(tokens, dict) else {},
        )

    def save(self, path: Path | None = None) -> Path:
        path = path or config_path()
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        body = json.dumps({"url": self.url, "org": self.org, "tokens": self.tokens}, indent=2)
        # mkstemp creates the file 0600 before anything is written into it.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(body + "\n")
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def remember(self, *, url: str, org: str, token: str) -> None:
        """After a login: this token for this organization, which becomes the default.
        Tokens of another server are forgotten (they would not work there)."""
        if self.url and normalize_url(self.url) != url:
            self.tokens = {}
        self.url = url
        self.org = org
        self.tokens[org] = token

    def forget(self, org: str) -> None:
        self.tokens.pop(org, None)
        if self.org == org:
            self.org = next(iter(self.tokens), None)


def loose_permissions(path: Path) -> bool:
    """True if anyone but the owner may read or write the file."""
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    org: str | None


def resolve(
    url: str | None = None,
    token: str | None = None,
    org: str | None = None,
    *,
    path: Path | None = None,
) -> Settings:
    """Arguments, then the environment, then the config file (whose organization and
    tokens count only for the server it was written for)."""
    file = ConfigFile.load(path)
    raw_url = url or os.environ.get("RAYDECK_URL") or file.url
    if not raw_url:
        raise ConfigError(
            "No Raydeck server is configured: run `raydeck login --url URL` or set RAYDECK_URL."
        )
    url = normalize_url(raw_url)
    if not file.url or normalize_url(file.url) != url:
        file = ConfigFile()
    org = org or os.environ.get("RAYDECK_ORG") or file.org
    token = token or os.environ.get("RAYDECK_TOKEN")
    if not token:
        if org and org in file.tokens:
            token = file.tokens[org]
        elif org and file.tokens:
            raise NotSignedIn(
                f"You are not signed in to the organization {org!r}: run `raydeck login` "
                f"and choose it (signed in to: {', '.join(sorted(file.tokens))})."
            )
        else:
            raise NotSignedIn("You are not signed in: run `raydeck login` or set RAYDECK_TOKEN.")
    return Settings(url=url, token=token.strip(), org=org)
