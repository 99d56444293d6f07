"""Certificates for the clusters' gateways (clusters/certificates.py): the installation's
CA, a head's CSR at registration (through the real agent API), renewals in heartbeat
answers, an operator-supplied intermediate CA; and the per-cluster Ray token that only
agents get. The gateway serving these certificates is tested in tests/agent/test_gateway.py
and, on real Ray, in tests/clusters/test_gateway.py."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.test import Client
from django.urls import reverse
from raydeck_agent.tls import NodeTLS

from accounts.models import AuditEvent
from accounts.tokens import hash_secret, new_secret
from clusters import certificates
from clusters.choices import NodeRole, NodeState
from clusters.models import CertificateAuthority, ClusterAccessKey, GatewayCertificate, Node
from tests.clusters.test_agent_api import make_cluster, make_node
from tests.conftest import Tenant, client_for

pytestmark = pytest.mark.django_db

REGISTER = "/agent/v1/register"
HEARTBEAT = "/agent/v1/heartbeat"


@pytest.fixture(autouse=True)
def fresh_ca() -> Any:
    certificates.forget_ca()
    yield
    certificates.forget_ca()


def booting(tenant: Tenant, *, role: str = NodeRole.HEAD, name: str = "c1") -> tuple[Node, str]:
    cluster = make_cluster(tenant, name)
    node, _ = make_node(cluster, role=role, state=NodeState.BOOTING)
    token = new_secret("rdb")
    Node.objects.filter(pk=node.pk).update(
        bootstrap_token_hash=hash_secret(token), credential_hash=""
    )
    return node, token


def register(node: Node, token: str, address: str, csr: str | None) -> Any:
    body: dict[str, Any] = {"node_id": str(node.uuid), "address": address, "ports": {"gcs": 1}}
    if csr is not None:
        body["csr"] = csr
    return Client().post(
        REGISTER,
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def verifies(tls: NodeTLS, name: str, tmp_path: Path) -> bool:
    """Whether a client that trusts the installation's CA bundle (what the CLI pins)
    completes a TLS handshake with a server holding `tls`'s key and certificate, for
    `name`: Python's own verification of the chain and the name."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(certificates.trust_bundle_pem())
    client = ssl.create_default_context(cafile=str(bundle))
    server = tls.server_context()
    left, right = socket.socketpair()
    with left, right:

        def serve() -> None:
            with contextlib.suppress(OSError), server.wrap_socket(right, server_side=True):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            client.wrap_socket(left, server_hostname=name).close()
        except ssl.SSLCertVerificationError:
            return False
        finally:
            thread.join(5)
    return True


def test_a_head_gets_a_certificate_for_its_own_names(tenant_a, settings, tmp_path) -> None:
    settings.RAYDECK_CLUSTER_DOMAIN = "clusters.example.com"
    node, token = booting(tenant_a)
    tls = NodeTLS(tmp_path / "node")
    response = register(node, token, "10.1.2.3", tls.csr("10.1.2.3"))
    assert response.status_code == 200, response.content
    answer = response.json()
    chain = answer["access"]["certificate"]
    assert tls.save_certificate(chain)  # for the node's own key
    host = f"c-{node.cluster.uuid.hex}.clusters.example.com"
    assert verifies(tls, "10.1.2.3", tmp_path) and verifies(tls, host, tmp_path)
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    lifetime = leaf.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=6) < lifetime <= timedelta(days=7)  # short-lived
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The node's private key never left it: the control plane holds the public key only.
    record = GatewayCertificate.objects.get(node=node)
    assert "PRIVATE" not in record.public_key_pem and "PRIVATE" not in response.content.decode()

    # Another cluster's head: its certificate does not validate for the first one's name.
    other, other_token = booting(tenant_a, name="c2")
    other_tls = NodeTLS(tmp_path / "other")
    other_chain = register(other, other_token, "10.9.9.9", other_tls.csr("10.9.9.9")).json()[
        "access"
    ]["certificate"]
    assert other_tls.save_certificate(other_chain)
    assert verifies(other_tls, f"c-{other.cluster.uuid.hex}.clusters.example.com", tmp_path)
    assert not verifies(other_tls, host, tmp_path)
    assert not verifies(tls, f"c-{other.cluster.uuid.hex}.clusters.example.com", tmp_path)


def _csr_for(names: list[str]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def test_a_head_cannot_get_a_certificate_for_a_name_that_is_not_its_own(
    tenant_a, tenant_b, settings, tmp_path
) -> None:
    settings.RAYDECK_CLUSTER_DOMAIN = "clusters.example.com"
    victim = make_cluster(tenant_b, "victim")
    node, token = booting(tenant_a)
    for names, why in [
        ([f"c-{victim.uuid.hex}.clusters.example.com"], "another cluster's host name"),
        (["raydeck.example.com"], "the control plane's name"),
        (["10.1.2.3", "10.0.0.99"], "another address"),
    ]:
        csr = _csr_for(names) if names[0][0].isalpha() else NodeTLS(tmp_path / why).csr(names[1])
        response = register(node, token, "10.1.2.3", csr)
        assert response.status_code == 400, why
        message = response.json()["error"]["message"]
        assert "not this head's name" in message, message
    for garbage in ["not a csr", 42]:
        response = register(node, token, "10.1.2.3", garbage)  # type: ignore[arg-type]
        assert response.status_code == 400
    # Nothing changed: the token is still unused and no certificate was recorded.
    node.refresh_from_db()
    assert node.bootstrap_used_at is None and node.state == NodeState.BOOTING
    assert not GatewayCertificate.objects.exists()
    ok = register(node, token, "10.1.2.3", NodeTLS(tmp_path / "ok").csr("10.1.2.3"))
    assert ok.status_code == 200


def test_workers_get_no_certificate_but_every_node_gets_the_clusters_ray_token(
    tenant_a, tmp_path
) -> None:
    head, head_token = booting(tenant_a)
    answer = register(head, head_token, "10.1.2.3", NodeTLS(tmp_path / "h").csr("10.1.2.3"))
    worker = Node.objects.create(
        organization=tenant_a.org,
        cluster=head.cluster,
        role=NodeRole.WORKER,
        state=NodeState.BOOTING,
        bootstrap_token_hash=hash_secret(worker_token := new_secret("rdb")),
    )
    worker_answer = register(worker, worker_token, "10.1.2.4", NodeTLS(tmp_path / "w").csr("x"))
    assert worker_answer.status_code == 200
    assert "certificate" not in worker_answer.json().get("access", {})
    ray_token = answer.json()["ray"]["auth_token"]
    assert len(ray_token) >= 32 and worker_answer.json()["ray"]["auth_token"] == ray_token
    # Another cluster has its own; the secret is kept encrypted.
    other, other_token = booting(tenant_a, name="c2")
    assert register(other, other_token, "10.1.2.5", None).json()["ray"]["auth_token"] != ray_token
    sealed = ClusterAccessKey.objects.get(cluster=head.cluster).ray_token_encrypted
    assert sealed and ray_token not in sealed
    # It is never shown to users: not in the API's cluster, nor in the audit log.
    assert not AuditEvent.objects.filter(changes__icontains=ray_token).exists()


def heartbeat(credential: str, expires: float | None) -> dict[str, Any]:
    body = {"state": "ready", "ray": {}, "usage": {}, "certificate_expires": expires}
    response = Client().post(
        HEARTBEAT,
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_the_certificate_is_renewed_in_a_heartbeat_before_it_ends(
    tenant_a, settings, tmp_path
) -> None:
    node, token = booting(tenant_a)
    tls = NodeTLS(tmp_path / "node")
    answer = register(node, token, "10.1.2.3", tls.csr("10.1.2.3")).json()
    assert tls.save_certificate(answer["access"]["certificate"])
    credential = answer["credential"]
    expires = tls.expires_at()
    assert expires is not None
    assert "certificate" not in heartbeat(credential, expires)["access"]  # days left
    assert "certificate" not in heartbeat(credential, None)["access"]  # an older agent
    # With less than a third of its life left, the answer carries the renewal.
    soon = time.time() + settings.RAYDECK_GATEWAY_CERT_SECONDS / 3 - 60
    renewed = heartbeat(credential, soon)["access"]["certificate"]
    assert tls.save_certificate(renewed)  # the same key: nothing new left the node
    leaf = x509.load_pem_x509_certificates(renewed.encode())[0]
    assert leaf.not_valid_after_utc.timestamp() > expires - 5
    assert verifies(tls, "10.1.2.3", tmp_path)
    assert GatewayCertificate.objects.get(node=node).renewed_at is not None


def test_the_installation_ca_is_made_once_and_its_key_kept_encrypted(tmp_path) -> None:
    first = certificates.trust_bundle_pem()
    certificates.forget_ca()  # as another process would
    assert certificates.trust_bundle_pem() == first
    row = CertificateAuthority.objects.get()
    assert "PRIVATE KEY" not in row.private_key_encrypted
    ca = x509.load_pem_x509_certificate(first.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_an_operator_supplied_intermediate_ca_signs_instead(tenant_a, settings, tmp_path) -> None:
    """The operator's company root signs an intermediate; Raydeck signs with that, and
    clients that trust the root alone accept the gateway (no row of our own is made)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Company root")])
    now = datetime.now(UTC)

    def issue(subject: str, key: Any, issuer: x509.Name, signer: Any) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    root = issue("Company root", root_key, root_name, root_key)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = issue("Raydeck intermediate", inter_key, root_name, root_key)
    pem = serialization.Encoding.PEM
    cert_file, key_file = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert_file.write_bytes(intermediate.public_bytes(pem) + root.public_bytes(pem))
    key_file.write_bytes(
        inter_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    settings.RAYDECK_CA_CERT_FILE, settings.RAYDECK_CA_KEY_FILE = str(cert_file), str(key_file)
    node, token = booting(tenant_a)
    chain = register(node, token, "10.1.2.3", NodeTLS(tmp_path / "n").csr("10.1.2.3")).json()[
        "access"
    ]["certificate"]
    served = x509.load_pem_x509_certificates(chain.encode())
    assert served[0].issuer == intermediate.subject and served[1] == intermediate
    served[0].verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert not CertificateAuthority.objects.exists()


def test_the_ca_is_offered_to_browsers_and_tools(tenant_a, tenant_b) -> None:
    pem = certificates.trust_bundle_pem()
    page_url = reverse("cluster_ca", args=[tenant_a.org.slug])
    member = client_for(tenant_a.member)
    page = member.get(page_url)
    assert page.status_code == 200
    text = page.content.decode()
    assert certificates.bundle_sha256(pem) in text and "Firefox" in text
    download = member.get(page_url + "?download=1")
    assert download.content.decode() == pem
    assert download["Content-Disposition"] == 'attachment; filename="raydeck-ca.pem"'
    # Tools fetch it from the API without a token (it is public), with its digest.
    answer = Client().get("/api/v1/ca")
    assert answer.status_code == 200
    assert answer.json() == {"certificate": pem, "sha256": certificates.bundle_sha256(pem)}
    # The page is an organization's: another organization's member gets a 404.
    assert client_for(tenant_b.owner).get(page_url).status_code == 404
