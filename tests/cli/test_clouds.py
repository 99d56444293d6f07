"""Clouds from the `raydeck` command and the SDK against a live server: create, get,
update, verify (local clouds are verified for real on this machine), delete, the
preferred default cloud, and what a member or bad input gets.

No Celery worker runs beside the live server: a thread does the worker's part for
verifications (`cloud_verify_run`, the task's whole body) while a test waits."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import raydeck

from accounts import services
from clouds import services as cloud_services
from clouds.choices import CloudState, VerificationState
from clouds.models import Cloud, CloudVerification, DefaultCloud
from tests.conftest import Tenant, make_tenant

from .conftest import Cli

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alpha() -> Tenant:
    tenant = make_tenant("alpha")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    return tenant


def secret_of(tenant: Tenant, role: str) -> str:
    _, secret = services.token_create(
        organization=tenant.org, actor=tenant.users[role], name="cli", days=1, read_only=False
    )
    return secret


@pytest.fixture
def verifier() -> Iterator[None]:
    """The worker's part: run each verification the server queued."""
    from django.db import connection

    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.wait(0.2):
                for pk in CloudVerification.objects.filter(
                    state=VerificationState.RUNNING
                ).values_list("pk", flat=True):
                    cloud_services.cloud_verify_run(verification_id=pk)
        finally:
            connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def test_an_admin_manages_clouds_from_the_command_line(
    cli: Cli, alpha: Tenant, verifier: None, tmp_path: Path
) -> None:
    env = {"RAYDECK_TOKEN": secret_of(alpha, "admin"), "RAYDECK_ORG": "alpha"}
    settings = f"local_root: {tmp_path / 'nodes'}\nlog_location: {tmp_path / 'logs'}\n"
    made = cli("clouds", "create", "local", "Laptop", "-f", "-", "--wait", "-o", "json",
               input=settings, **env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    cloud = json.loads(made.stdout)
    assert (cloud["name"], cloud["status"]) == ("Laptop", "active"), cloud
    assert all(check["passed"] for check in cloud["verification"]["checks"])

    shown = cli("clouds", "get", "Laptop", "-o", "json", **env)
    assert json.loads(shown.stdout)["local_root"] == str(tmp_path / "nodes")
    renamed = cli("clouds", "update", "Laptop", "--name", "Desk", "-o", "json", **env)
    assert renamed.returncode == 0, renamed.stderr
    assert json.loads(renamed.stdout)["name"] == "Desk"
    again = cli("clouds", "verify", "Desk", "--wait", "-o", "json", **env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "active"

    # The preferred default cloud decides where a cluster that names none goes.
    chosen = cli("clouds", "default", "Desk", **env)
    assert "Preferred default cloud for the organization: Desk" in chosen.stdout, chosen.stderr
    created = cli("clusters", "create", "no-cloud-named", "--project", "alpha-project",
                  "-o", "json", **env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["cloud"] == cloud["id"]
    cleared = cli("clouds", "default", "--clear", **env)
    assert "No preferred default cloud for the organization." in cleared.stdout

    spare = cli("clouds", "create", "local", "Spare", "-o", "json", **env)
    assert spare.returncode == 0, spare.stderr
    gone = cli("clouds", "delete", "Spare", **env)
    assert gone.returncode == 0, gone.stderr
    assert not Cloud.objects.filter(name="Spare").exists()
    listed = cli("clouds", "list", **env)
    assert "Desk" in listed.stdout and "Spare" not in listed.stdout


def test_a_member_reads_but_cannot_change_and_bad_input_says_which_field(
    cli: Cli, alpha: Tenant
) -> None:
    member = {"RAYDECK_TOKEN": secret_of(alpha, "member"), "RAYDECK_ORG": "alpha"}
    assert "alpha local" in cli("clouds", "list", **member).stdout
    refused = cli("clouds", "create", "local", "Mine", **member)
    assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
    refused = cli("clouds", "delete", "alpha local", **member)
    assert refused.returncode != 0 and "403" in refused.stderr

    admin = {"RAYDECK_TOKEN": secret_of(alpha, "admin"), "RAYDECK_ORG": "alpha"}
    bad = cli("clouds", "create", "local", "Bad", "-f", "-", input="local_root: relative\n",
              **admin)  # fmt: skip
    assert bad.returncode != 0 and "local_root" in bad.stderr and "absolute" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not Cloud.objects.filter(name__in=["Mine", "Bad"]).exists()


def test_the_sdk_manages_clouds_and_the_project_s_default(
    live_server, alpha: Tenant, verifier: None, tmp_path: Path
) -> None:
    client = raydeck.Client(live_server.url, secret_of(alpha, "admin"), org="alpha")
    cloud = client.clouds.create("local", "SDK cloud", local_root=str(tmp_path / "nodes"))
    assert cloud.status == "verifying"
    cloud = client.clouds.wait_verified(cloud.id, timeout=120)
    assert cloud.status == "active", cloud.status_reason
    assert client.clouds.update(cloud.id, name="SDK renamed").name == "SDK renamed"
    assert client.clouds.set_default(cloud.id, project="alpha-project") == cloud.id
    assert client.clouds.default(project="alpha-project") == cloud.id
    assert client.clouds.default() is None  # the organization has none of its own
    assert DefaultCloud.objects.get(project=alpha.project).cloud_id == int(cloud.id)
    with pytest.raises(raydeck.ValidationFailed) as invalid:
        client.clouds.create("local", "SDK cloud 2", aws_role_arn="arn:aws:iam::1:role/x")
    assert "aws_role_arn" in invalid.value.details
    bravo = make_tenant("bravo")
    with pytest.raises(raydeck.NotFound):
        client.clouds.get(str(bravo.cloud.pk))
    member = raydeck.Client(live_server.url, secret_of(alpha, "member"), org="alpha")
    assert sorted(c.name for c in member.clouds.list()) == ["SDK renamed", "alpha local"]
    with pytest.raises(raydeck.PermissionDenied):
        member.clouds.delete(cloud.id)
    client.clouds.set_default(None, project="alpha-project")
    client.clouds.delete(cloud.id)
    assert not Cloud.objects.filter(pk=cloud.id).exists()
