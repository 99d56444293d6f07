"""Trusting the clusters' gateways: their certificates come from the Raydeck
installation's own CA (or an intermediate CA its operator supplies), not a public one.

The CA is fetched once from the control plane (GET /api/v1/ca, over the connection the
SDK already trusts) and pinned per installation beside the config file:
`<config folder>/ca/<hash of the URL>.pem`. It is fetched again only when the API says
the installation's CA changed (its SHA-256 differs from the pinned copy's).

Ray's own tools verify with what the environment names: `requests` (the job API) reads
REQUESTS_CA_BUNDLE, and Python's ssl (the job log stream) reads SSL_CERT_FILE. Both
replace the system's CAs for that shell, so they point at a bundle of the system's CAs
plus the installation's (`<hash>-bundle.pem`): other HTTPS keeps working.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .config import FILE_MODE, FOLDER_MODE, config_path

if TYPE_CHECKING:
    from .transport import Transport

CA_PATH = "/api/v1/ca"


def _folder() -> Path:
    return config_path().parent / "ca"


def pinned_path(url: str) -> Path:
    return _folder() / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.pem"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ca-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _system_cas() -> str:
    """The system's trusted CAs as PEM ('' when they are not in one file)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return Path(candidate).read_text()
    return ""


def installation_ca(transport: Transport, expected_sha256: str | None = None) -> Path:
    """The pinned CA of the installation `transport` talks to, fetched when there is
    none yet (or when `expected_sha256`, from the API, says it changed)."""
    path = pinned_path(transport.url)
    current = path.exists() and bundle_path(path).exists()
    if current and expected_sha256 in (None, _sha256(path.read_text())):
        return path
    answer = transport.request("GET", CA_PATH)
    pem = str(answer["certificate"])
    if _sha256(pem) != answer.get("sha256"):
        raise ValueError("The installation's CA arrived damaged; try again.")
    _write(path, pem)
    _write(bundle_path(path), _system_cas().rstrip("\n") + "\n" + pem)
    return path


def bundle_path(pinned: Path) -> Path:
    """The system's CAs plus the pinned one: for REQUESTS_CA_BUNDLE / SSL_CERT_FILE."""
    return pinned.with_name(pinned.stem + "-bundle.pem")


def ssl_context(pinned: Path) -> ssl.SSLContext:
    """A client context that trusts the cluster gateways of this installation."""
    return ssl.create_default_context(cafile=str(pinned))


def ray_env(pinned: Path) -> dict[str, str]:
    """What Ray's CLI and SDK need to verify a gateway's certificate."""
    bundle = str(bundle_path(pinned))
    return {"REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle}
