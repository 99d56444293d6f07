"""TLS for the clusters' gateways without a public CA: the installation's issuing CA and
the short-lived certificates it signs for head nodes.

- The CA: by default the installation's own, made at first use (one row,
  CertificateAuthority, its key sealed by kit/crypto.py). An operator may instead supply
  an intermediate CA that company browsers already trust: RAYDECK_CA_CERT_FILE (the
  intermediate's certificate, then the rest of its chain up to the root, PEM) and
  RAYDECK_CA_KEY_FILE (its unencrypted private key, PEM), read at start.
- A head makes its own key pair and sends a CSR when it registers; the private key
  never leaves the node. Raydeck signs the CSR's public key for the head's own names
  only (`head_names`: its address, and `<cluster>.<RAYDECK_CLUSTER_DOMAIN>` when that is
  set); a CSR asking for any other name is refused. Certificates live
  RAYDECK_GATEWAY_CERT_SECONDS (days) and are renewed in a heartbeat answer once less
  than a third of that is left (`renewal_for`), or at once when the head has a name its
  certificate lacks (a public address learned after registration: `heads_lacking_names`).
- A service's endpoint on AWS or GCP (its load balancer) serves a certificate of the
  same CA for the load balancer's name (`endpoint_certificate`, the routers' signer);
  its key is made here and handed to the cloud's certificate store, never kept.
- Clients trust `trust_bundle_pem()`: the CLI and SDK fetch it once from the API and pin
  it, the console offers it for download.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from clouds.providers.base import ENDPOINT_RENEW_BEFORE_SECONDS, EndpointCertificate
from kit import crypto

from .choices import LIVE_NODE_STATES
from .models import CertificateAuthority, Cluster, GatewayCertificate, Node

CA_LIFETIME = timedelta(days=10 * 365)
BACKDATE = timedelta(minutes=5)  # clock skew between the control plane and nodes
RENEW_WHEN_LEFT = 1 / 3  # of the lifetime
# A load balancer's certificate: renewed by its router with a third of this left.
ENDPOINT_LIFETIME = timedelta(seconds=3 * ENDPOINT_RENEW_BEFORE_SECONDS)


class CertificateRefused(Exception):
    """The CSR cannot be signed; the text says why (shown to the agent)."""


@dataclass(frozen=True)
class IssuingCA:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain_pem: str  # the CA's certificate and any above it, served after the leaf


_lock = threading.Lock()
_cached: IssuingCA | None = None


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _load(cert_pem: bytes, key_pem: bytes) -> IssuingCA:
    certificates = x509.load_pem_x509_certificates(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the CA's key must be an EC or RSA key")
    if _spki(certificates[0].public_key()) != _spki(key.public_key()):
        raise ValueError("the CA's key does not match its certificate")
    chain = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)
    return IssuingCA(certificate=certificates[0], key=key, chain_pem=chain)


def _new_ca() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Raydeck"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Raydeck installation CA"),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), crypto.encrypt(
        key_pem.decode()
    )


def issuing_ca() -> IssuingCA:
    """The CA that signs gateway certificates: the operator's, else the installation's
    own (made now if there is none; two processes racing keep the first)."""
    global _cached
    with _lock:
        if _cached is not None:
            return _cached
        if settings.RAYDECK_CA_CERT_FILE:
            _cached = _load(
                Path(settings.RAYDECK_CA_CERT_FILE).read_bytes(),
                Path(settings.RAYDECK_CA_KEY_FILE).read_bytes(),
            )
            return _cached
        row = CertificateAuthority.objects.filter(name="installation").first()
        if row is None:
            cert_pem, key_sealed = _new_ca()
            try:
                with transaction.atomic():
                    row = CertificateAuthority.objects.create(
                        certificate_pem=cert_pem, private_key_encrypted=key_sealed
                    )
            except IntegrityError:
                row = CertificateAuthority.objects.get(name="installation")
        _cached = _load(
            row.certificate_pem.encode(), crypto.decrypt(row.private_key_encrypted).encode()
        )
        return _cached


def forget_ca() -> None:
    """Drop this process's copy of the CA (tests that switch CAs)."""
    global _cached
    with _lock:
        _cached = None


def trust_bundle_pem() -> str:
    """What clients trust to reach every gateway of this installation."""
    return issuing_ca().chain_pem


def bundle_sha256(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()


# --- The names a head may have ------------------------------------------------------------


def cluster_host_name(cluster: Cluster) -> str | None:
    """`c-<uuid hex>.<RAYDECK_CLUSTER_DOMAIN>`, the cluster's own name (the operator's DNS
    points a wildcard at the heads), or None without a domain."""
    domain = settings.RAYDECK_CLUSTER_DOMAIN.strip(".").lower()
    return f"c-{cluster.uuid.hex}.{domain}" if domain else None


def head_names(node: Node) -> list[str]:
    """Every name a head's certificate may carry: its addresses (the public one is what
    users reach where there is one), and its cluster's host name."""
    names = [a for a in (node.public_address, node.private_address) if a]
    if (host := cluster_host_name(node.cluster)) is not None:
        names.append(host)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _requested_names(csr: x509.CertificateSigningRequest) -> list[str]:
    names: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        names += [dns.lower() for dns in san.get_values_for_type(x509.DNSName)]
    return names


def _public_key_of(csr_pem: str) -> tuple[str, list[str]]:
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise CertificateRefused("The CSR is not a PEM certificate signing request.") from None
    if not csr.is_signature_valid:
        raise CertificateRefused("The CSR's signature does not match its key.")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise CertificateRefused("An RSA key in the CSR needs 2048 bits or more.")
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertificateRefused("The CSR's key must be an EC (P-256) or RSA key.")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return pem, _requested_names(csr)


def _sign(public_key_pem: str, names: list[str], lifetime: timedelta) -> x509.Certificate:
    ca = issuing_ca()
    public_key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertificateRefused("The stored key is not an EC or RSA key.")
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA256())
    )


def _lifetime() -> timedelta:
    return timedelta(seconds=settings.RAYDECK_GATEWAY_CERT_SECONDS)


def _chain(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode() + issuing_ca().chain_pem


def head_certificate(*, node: Node, csr_pem: str) -> str:
    """Sign the head's CSR for its own names; the PEM chain (leaf, then the CA's). A CSR
    naming anything that is not this head's is refused. Runs inside the registration's
    transaction."""
    public_key_pem, requested = _public_key_of(csr_pem)
    allowed = head_names(node)
    if not allowed:
        raise CertificateRefused("The head registered without an address to certify.")
    foreign = [name for name in requested if name not in allowed]
    if foreign:
        raise CertificateRefused(
            f"The CSR asks for {', '.join(foreign)}, which is not this head's name "
            f"(it may have {', '.join(allowed)})."
        )
    certificate = _sign(public_key_pem, allowed, _lifetime())
    GatewayCertificate.objects.update_or_create(
        node=node,
        defaults={
            "organization_id": node.organization_id,
            "public_key_pem": public_key_pem,
            "names": allowed,
            "serial": format(certificate.serial_number, "x"),
            "not_after": certificate.not_valid_after_utc,
        },
    )
    return _chain(certificate)


def endpoint_certificate(names: list[str]) -> EndpointCertificate:
    """A new key and a certificate for a service endpoint's `names` (the load balancer's
    DNS name or address, which its router found itself). RSA 2048: what both ACM and
    GCP's self-managed certificates take from any account."""
    if not names:
        raise CertificateRefused("An endpoint certificate needs the endpoint's name.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_key_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    certificate = _sign(public_key_pem.decode(), names, ENDPOINT_LIFETIME)
    private_key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return EndpointCertificate(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        chain_pem=issuing_ca().chain_pem,
        private_key_pem=private_key_pem,
    )


def heads_lacking_names(cluster_pk: int) -> list[int]:
    """The cluster's live heads whose certificate lacks a name they have now (a public
    address learned after registration, a cluster domain set since): their next
    heartbeat re-issues it at once rather than at the next renewal."""
    records = GatewayCertificate.objects.filter(
        node__cluster_id=cluster_pk, node__state__in=LIVE_NODE_STATES
    ).select_related("node__cluster")
    return [r.node_id for r in records if set(head_names(r.node)) - set(r.names)]


def renewal_for(node_pk: int, expires_at: object, *, reissue: bool = False) -> str | None:
    """For a head's heartbeat: a new certificate (PEM chain) for the head's names now,
    when the one it serves ends within a third of the lifetime or `reissue` (it lacks
    a name, `heads_lacking_names`), else None. Costs nothing until then."""
    if not reissue:
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            return None
        left = expires_at - timezone.now().timestamp()
        if left > _lifetime().total_seconds() * RENEW_WHEN_LEFT:
            return None
    record = (
        GatewayCertificate.objects.filter(node_id=node_pk).select_related("node__cluster").first()
    )
    if record is None:
        return None
    # Only the names the control plane knows for this head, never any the agent asks for.
    names = head_names(record.node) or list(record.names)
    certificate = _sign(record.public_key_pem, names, _lifetime())
    GatewayCertificate.objects.filter(pk=record.pk).update(
        names=names,
        serial=format(certificate.serial_number, "x"),
        not_after=certificate.not_valid_after_utc,
        renewed_at=timezone.now(),
    )
    return _chain(certificate)
