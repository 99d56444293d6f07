"""`raydeck services …` as a user runs it (the installed command, against a live server)
and `client.services` of the SDK. No Ray here: the orchestrator is not run; the rows it
would write are set by hand where a command needs a rollout under way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import raydeck

from accounts import services as account_services
from clouds.choices import CloudState
from clusters.certificates import trust_bundle_pem
from tests.cli.conftest import Cli, cli  # noqa: F401 - the fixture
from tests.conftest import Tenant, make_tenant
from workloads.serve.choices import ServiceState, VersionState
from workloads.serve.models import Service, ServiceVersion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alpha() -> Tenant:
    tenant = make_tenant("alpha")
    tenant.cloud.state = CloudState.ACTIVE
    tenant.cloud.save(update_fields=["state"])
    return tenant


def secret_of(tenant: Tenant) -> str:
    _, secret = account_services.token_create(
        organization=tenant.org, actor=tenant.member, name="cli", days=30, read_only=False
    )
    return secret


def test_deploy_list_versions_traffic_rollback_terminate(
    cli: Cli,  # noqa: F811
    alpha: Tenant,
    tmp_path: Path,
) -> None:
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    spec = tmp_path / "service.yaml"
    spec.write_text(
        "name: echo\n"
        f"project: {alpha.project.slug}\n"
        "cloud: local\n"
        "serve_config:\n"
        "  import_path: echo_app:build\n"
        "  args: {version: v1}\n"
        "canary_steps: [20, 100]\n"
        "step_seconds: 30\n"
    )
    result = cli("services", "deploy", "-f", str(spec), "-o", "json", **env)
    assert result.returncode == 0, result.stderr
    assert "Query token (shown once" in result.stderr
    assert "Endpoint: not made yet" in result.stderr  # the rollout makes it
    made = json.loads(result.stdout)
    assert made["name"] == "echo" and made["state"] == "deploying"
    service = Service.objects.get(uuid=made["id"])
    assert service.canary_steps == [20, 100] and service.step_seconds == 30

    result = cli("services", "list", **env)
    assert result.returncode == 0 and "echo" in result.stdout and "deploying" in result.stdout

    # As if v1 came up: a second deploy of the same file is v2 of the same service.
    v1 = service.versions.get()
    ServiceVersion.objects.filter(pk=v1.pk).update(state=VersionState.HEALTHY, weight=100)
    Service.objects.filter(pk=service.pk).update(state=ServiceState.RUNNING, current_version=v1)
    spec.write_text(spec.read_text().replace("v1", "v2"))
    result = cli("services", "deploy", "-f", str(spec), **env)
    assert result.returncode == 0, result.stderr
    assert "Query token" not in result.stderr and "Deployed v2 of echo" in result.stderr
    ServiceVersion.objects.filter(service=service, number=2).update(state=VersionState.HEALTHY)

    result = cli("services", "versions", "echo", **env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "STATE", "WEIGHT"]
    assert [line.split()[:2] for line in lines[1:]] == [["2", "healthy"], ["1", "healthy"]]

    assert cli("services", "set-traffic", "echo", "--canary", "150", **env).returncode == 1
    result = cli("services", "set-traffic", "echo", "--canary", "10", "-o", "json", **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pinned_weight"] == 10

    result = cli("services", "rollback", "echo", **env)
    assert result.returncode == 0, result.stderr
    assert service.versions.get(number=2).state == VersionState.UNHEALTHY

    result = cli("services", "terminate", "echo", "-o", "json", **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "terminating"
    assert cli("services", "get", "nope", **env).returncode == 4


def _as_if_it_serves(service: Service, *, endpoint_url: str) -> None:
    """The rows the orchestrator would write once the newest version serves."""
    newest = service.versions.order_by("-number").first()
    assert newest is not None
    ServiceVersion.objects.filter(pk=newest.pk).update(state=VersionState.HEALTHY, weight=100)
    service.versions.exclude(pk=newest.pk).update(state=VersionState.STOPPED, weight=0)
    Service.objects.filter(pk=service.pk).update(
        state=ServiceState.RUNNING, current_version=newest, endpoint_url=endpoint_url
    )


def test_deploy_says_where_the_endpoint_is_and_which_ca_to_trust(
    cli: Cli,  # noqa: F811
    alpha: Tenant,
    tmp_path: Path,
) -> None:
    """An HTTPS endpoint (AWS's and GCP's, set by hand here: no cloud is called) has a
    certificate from the installation's CA: deploy prints the `curl --cacert` line with
    the CA the CLI pinned; a plain one (the local cloud's HAProxy) needs none."""
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    spec = tmp_path / "service.yaml"
    spec.write_text(
        f"name: echo\nproject: {alpha.project.slug}\ncloud: local\n"
        "serve_config: {import_path: 'echo_app:build'}\n"
    )
    assert cli("services", "deploy", "-f", str(spec), **env).returncode == 0
    service = Service.objects.get(name="echo")
    url = "https://rd-0123456789abcdef0123-1.us-east-1.elb.amazonaws.com"
    _as_if_it_serves(service, endpoint_url=url)
    spec.write_text(spec.read_text().replace("build'}", "build', args: {v: 2}}"))

    result = cli("services", "deploy", "-f", str(spec), "-o", "json", **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["endpoint_url"] == url  # stdout stays JSON
    lines = result.stderr.splitlines()
    assert f"Endpoint: {url}" in lines
    [trust] = [line for line in lines if "--cacert" in line]
    words = trust.split()
    ca = Path(words[words.index("--cacert") + 1])
    assert ca.read_text() == trust_bundle_pem()  # the CA that signs the endpoints
    assert trust.endswith(f"-H 'Authorization: Bearer <token>' {url}/")

    _as_if_it_serves(service, endpoint_url="http://127.0.0.1:10080")
    spec.write_text(spec.read_text().replace("v: 2", "v: 3"))
    result = cli("services", "deploy", "-f", str(spec), **env)
    assert result.returncode == 0, result.stderr
    assert "Endpoint: http://127.0.0.1:10080" in result.stderr
    assert "--cacert" not in result.stderr


def test_sdk_deploys_and_reads_a_service(live_server, alpha: Tenant) -> None:
    client = raydeck.Client(live_server.url, secret_of(alpha), org="alpha")
    deployed = client.services.deploy(
        "sdk-echo",
        project=alpha.project.slug,
        serve_config={"import_path": "echo_app:build"},
        cloud=str(alpha.cloud.pk),
    )
    assert deployed.token and deployed.token.startswith("rds_")
    assert deployed.version.number == 1 and deployed.version.state == "starting"
    assert client.services.get("sdk-echo").id == deployed.service.id
    assert [v.number for v in client.services.versions("sdk-echo")] == [1]
    with pytest.raises(raydeck.ValidationFailed) as refused:
        client.services.deploy(
            "sdk-bad", project=alpha.project.slug, serve_config={"import_path": "no such"}
        )
    assert "serve_config" in refused.value.details
    second = client.services.create_token("sdk-echo", "rotation")
    assert second.startswith("rds_") and second != deployed.token
