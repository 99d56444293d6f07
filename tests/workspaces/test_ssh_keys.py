"""SSH public keys on the profile page: validated (a clear error on the field, nothing
saved), fingerprinted as ssh-keygen does, audited, removable only by their owner."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.urls import reverse

from accounts.models import AuditEvent
from tests.conftest import Tenant, client_for
from workloads.workspaces.models import SshKey

pytestmark = pytest.mark.django_db


def openssh(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def test_add_a_key_see_it_and_remove_it(tenant_a: Tenant, tmp_path) -> None:
    client = client_for(tenant_a.member)
    line = openssh(ed25519.Ed25519PrivateKey.generate()) + " me@laptop"
    answer = client.post(reverse("ssh_keys"), {"name": "", "public_key": line})
    assert answer.status_code == 302
    key = SshKey.objects.get(user=tenant_a.member, name="me@laptop")
    keygen = shutil.which("ssh-keygen")
    if keygen:
        (tmp_path / "k.pub").write_text(line + "\n")
        listed = subprocess.run(
            [keygen, "-lf", str(tmp_path / "k.pub")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert key.fingerprint in listed
    page = client.get(reverse("ssh_keys")).content.decode()
    assert key.fingerprint in page
    assert AuditEvent.objects.filter(verb="ssh_key.add", actor=tenant_a.member).exists()
    again = client.post(reverse("ssh_keys"), {"name": "x", "public_key": line})
    assert again.status_code == 200 and "You already added this key" in again.content.decode()
    client.post(reverse("ssh_key_remove", args=[key.pk]))
    assert not SshKey.objects.filter(pk=key.pk).exists()
    assert AuditEvent.objects.filter(verb="ssh_key.remove", actor=tenant_a.member).exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a key", "Paste one public key line"),
        ("ssh-ed25519 AAAAnotbase64!!", "not a valid ssh-ed25519 public key"),
        ("-----BEGIN OPENSSH PRIVATE KEY----- abc", "That is a private key"),
    ],
)
def test_invalid_keys_are_refused_on_the_field(tenant_a: Tenant, text: str, message: str) -> None:
    client = client_for(tenant_a.member)
    answer = client.post(reverse("ssh_keys"), {"name": "bad", "public_key": text})
    assert answer.status_code == 200 and message in answer.content.decode()
    assert not SshKey.objects.filter(name="bad").exists()


def test_short_rsa_keys_are_refused(tenant_a: Tenant) -> None:
    weak = openssh(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the weak key refused
    answer = client_for(tenant_a.member).post(reverse("ssh_keys"), {"public_key": weak})
    assert "at least 2048 bits" in answer.content.decode()


def test_another_persons_key_is_missing(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_a.member)
    url = reverse("ssh_key_remove", args=[tenant_b.ssh_key.pk])
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404
    assert SshKey.objects.filter(pk=tenant_b.ssh_key.pk).exists()
    assert tenant_b.ssh_key.fingerprint not in client.get(reverse("ssh_keys")).content.decode()
