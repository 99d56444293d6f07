"""The head gateway's TLS: its own key pair, the CSR it sends when registering, and the
certificate the control plane signs (and renews in heartbeat answers).

The private key is made here and never leaves the node: it is written to the node's
folder (mode 0600) and only its CSR is sent. The certificate (leaf, then the CA's chain)
is kept beside it; every server of the head that speaks TLS with it (the gateway, and
on AWS and GCP the serve gate) loads both, and loads them again when a renewal arrives
(`renew`), without a restart. TLS 1.2 is the minimum, with forward-secret AEAD ciphers
only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

logger = logging.getLogger("raydeck_agent")

TLS_DIR = "tls"
KEY_FILE = "gateway-key.pem"
CERT_FILE = "gateway-cert.pem"
# TLS 1.2's suites when a client cannot do 1.3 (1.3's own are all modern).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_private(path: Path, data: bytes) -> None:
    """Whole or not at all (temp file + rename), readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class NodeTLS:
    """This node's gateway key and certificate, in `node_dir/tls/`."""

    def __init__(self, node_dir: Path) -> None:
        self.dir = node_dir / TLS_DIR
        self.key_path = self.dir / KEY_FILE
        self.cert_path = self.dir / CERT_FILE
        self._lock = threading.Lock()
        self._reloaders: list[Callable[[], None]] = []  # the running servers' reloads

    def key(self) -> ec.EllipticCurvePrivateKey:
        """The node's key, made on first use (P-256: every browser and client takes it)."""
        if self.key_path.exists():
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(
            self.key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return key

    def csr(self, address: str) -> str:
        """A CSR for this node's address (the control plane adds the cluster's host name
        and refuses any name that is not the head's)."""
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
        except ValueError:
            name = x509.DNSName(address)
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address[:64])]))
            .add_extension(x509.SubjectAlternativeName([name]), critical=False)
            .sign(self.key(), hashes.SHA256())
        )
        return request.public_bytes(serialization.Encoding.PEM).decode()

    def save_certificate(self, chain_pem: str) -> bool:
        """Keep a certificate the control plane signed, if it is for this node's key."""
        try:
            leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        except (ValueError, IndexError):
            logger.warning("ignoring a gateway certificate that is not PEM")
            return False
        if _spki(leaf.public_key()) != _spki(self.key().public_key()):
            logger.warning("ignoring a gateway certificate made for another key")
            return False
        _write_private(self.cert_path, chain_pem.encode())
        return True

    def renew(self, chain_pem: str) -> bool:
        """Keep a renewed certificate and have every running server serve it from its
        next handshake on (one server failing to load it keeps its old one)."""
        if not self.save_certificate(chain_pem):
            return False
        with self._lock:
            reloaders = list(self._reloaders)
        for reload in reloaders:
            try:
                reload()
            except Exception:  # the next renewal tries again
                logger.exception("could not load the renewed certificate")
        return True

    def on_renewal(self, reload: Callable[[], None]) -> None:
        with self._lock:
            self._reloaders.append(reload)

    def forget(self, reload: Callable[[], None]) -> None:
        with self._lock:
            if reload in self._reloaders:
                self._reloaders.remove(reload)

    def has_certificate(self) -> bool:
        return self.cert_path.exists() and self.key_path.exists()

    def expires_at(self) -> float | None:
        """When the certificate served now ends (epoch seconds), for the heartbeat."""
        try:
            leaf = x509.load_pem_x509_certificates(self.cert_path.read_bytes())[0]
        except (OSError, ValueError, IndexError):
            return None
        return leaf.not_valid_after_utc.timestamp()

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        self.load(context)
        return context

    def load(self, context: ssl.SSLContext) -> None:
        """(Re)load the key and certificate: handshakes from now on use them."""
        context.load_cert_chain(self.cert_path, self.key_path)
