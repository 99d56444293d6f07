"""Fixtures for browser tests that open a cluster's gateway over HTTPS: the gateway's
certificate chains to an operator-supplied CA that this Chromium trusts, as a company's
browsers would. A module imports all three (pytest finds fixtures by name in it)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from clusters import certificates
from tests.agent.tls_ca import TestCA


@pytest.fixture(scope="module")
def operator_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """An intermediate CA the operator supplies (RAYDECK_CA_CERT_FILE/KEY_FILE), which
    the company's browsers already trust."""
    ca = TestCA(tmp_path_factory.mktemp("operator-ca"))
    key = ca.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (ca.path.parent / "ca.key").write_bytes(key)
    return ca


@pytest.fixture(scope="module")
def chromium_extra_args(operator_ca: TestCA) -> list[str]:
    """This Chromium trusts the operator's CA: certificates chaining to its key pass."""
    spki = operator_ca.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return [f"--ignore-certificate-errors-spki-list={pin}"]


@pytest.fixture
def gateway_ca(operator_ca: TestCA, settings) -> Iterator[TestCA]:
    settings.RAYDECK_CA_CERT_FILE = str(operator_ca.path)
    settings.RAYDECK_CA_KEY_FILE = str(operator_ca.path.parent / "ca.key")
    certificates.forget_ca()
    yield operator_ca
    certificates.forget_ca()
