"""The `raydeck` command against a live server: signing in (token and browser
hand-off), lists in every output format, and what a person or a script sees when the
API says no. Real HTTP, real database; nothing stands in for the server."""

from __future__ import annotations

import json
import re
import socket
import stat
import time
import uuid

import pytest
import yaml

from accounts import services
from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.models import Cluster
from tests.conftest import Tenant, client_for, make_tenant

from .conftest import Cli

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world() -> tuple[Tenant, Tenant]:
    return make_tenant("alpha"), make_tenant("bravo")


def secret_of(tenant: Tenant, *, read_only: bool = False, role: str = "member") -> str:
    _, secret = services.token_create(
        organization=tenant.org,
        actor=tenant.users[role],
        name="cli test",
        days=30,
        read_only=read_only,
    )
    return secret


def assert_readable_failure(result, exit_code: int, *phrases: str) -> None:
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for phrase in phrases:
        assert phrase in result.stderr
    assert result.stdout == ""


def test_login_with_a_token_stores_it_privately_and_it_works(cli: Cli, world) -> None:
    alpha, _ = world
    secret = secret_of(alpha)
    result = cli("login", "--token", secret, "--org", "bravo")
    assert_readable_failure(result, 2, "acts in the organization 'alpha', not 'bravo'")
    assert not cli.config_file.exists()
    result = cli("login", "--token", "-", input=secret + "\n")
    assert result.returncode == 0, result.stderr
    assert "Signed in to alpha" in result.stderr
    assert alpha.member.email in result.stderr
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    stored = json.loads(cli.config_file.read_text())
    assert stored["org"] == "alpha" and set(stored["tokens"]) == {"alpha"}

    # Now without RAYDECK_URL or a token in the environment: all from the config file.
    result = cli("orgs", "list", "-o", "json", RAYDECK_URL="")
    assert result.returncode == 0, result.stderr
    assert [o["slug"] for o in json.loads(result.stdout)] == ["alpha"]


def test_a_bad_token_exits_3_with_a_readable_message(cli: Cli, world) -> None:
    result = cli("clusters", "list", RAYDECK_TOKEN="rdk_" + "x" * 43, RAYDECK_ORG="alpha")
    assert_readable_failure(result, 3, "HTTP 401", "raydeck login")
    # Logging in with it is refused too, and nothing is written.
    result = cli("login", "--token", "rdk_not-a-real-token")
    assert_readable_failure(result, 3, "HTTP 401")
    assert not cli.config_file.exists()


def test_not_signed_in_and_no_server_say_what_to_do(cli: Cli, world) -> None:
    assert_readable_failure(cli("clusters", "list"), 3, "raydeck login")
    assert_readable_failure(cli("clusters", "list", RAYDECK_URL=""), 2, "raydeck login --url")


def test_login_without_a_browser_gives_up_with_the_token_route(cli: Cli, world) -> None:
    result = cli("login", "--no-browser", "--timeout", "2")
    assert result.returncode == 5, result.stderr
    assert "/cli/verify?code=" in result.stderr  # the page to open on another device
    assert "within 2 s" in result.stderr
    assert "--token -" in result.stderr


def test_browser_hand_off_signs_the_cli_in(cli: Cli, world) -> None:
    alpha, _ = world
    login = cli.start("login", "--no-browser")
    try:
        code = None
        deadline = time.monotonic() + 60
        assert login.stderr is not None
        while code is None and time.monotonic() < deadline:
            line = login.stderr.readline()
            found = re.search(r"/cli/verify\?code=(\w+)", line)
            code = found.group(1) if found else None
        assert code, "the CLI printed no sign-in URL"
        # The person, signed in to the console, confirms the code in the browser.
        browser = client_for(alpha.member)
        answer = browser.post("/cli/verify", {"code": code, "organization": alpha.org.pk})
        assert answer.status_code == 302
        _, err = login.communicate(timeout=60)
    finally:
        login.kill()
    assert login.returncode == 0, err
    assert "Signed in to alpha" in err
    result = cli("whoami", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["user"]["email"] == alpha.member.email


def test_lists_in_every_output_format(cli: Cli, world) -> None:
    alpha, _ = world
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    clusters = json.loads(cli("clusters", "list", "-o", "json", **env).stdout)
    assert [c["name"] for c in clusters] == ["alpha-cluster"]
    assert yaml.safe_load(cli("clusters", "list", "-o", "yaml", **env).stdout) == clusters
    table = cli("clusters", "list", **env).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "PROJECT", "STATE", "CLOUD", "CONFIG", "CREATED"]
    assert table[1].split()[:4] == [
        clusters[0]["id"],
        "alpha-cluster",
        "alpha-project",
        "terminated",
    ]
    # Names where people read them, not the ids of the cloud and the config.
    cluster = Cluster.objects.get(name="alpha-cluster")
    assert "alpha local" in table[1]
    assert cluster.compute_config.config.name in table[1]
    shown = cli("clusters", "get", "alpha-cluster", **env).stdout
    assert re.search(rf"^cloud\s+alpha local \({cluster.cloud_id}\)$", shown, re.M), shown
    assert re.search(rf"^image\s+{re.escape(cluster.image.name)} \(", shown, re.M), shown
    assert "cloud_name" not in shown

    projects = json.loads(cli("projects", "list", "-o", "json", **env).stdout)
    assert [p["slug"] for p in projects] == ["alpha-project"]
    clouds = json.loads(cli("clouds", "list", "-o", "json", **env).stdout)
    assert [c["name"] for c in clouds] == ["alpha local"]
    # A cluster by name; its events; the options may also come before the command.
    result = cli("-o", "json", "clusters", "get", "alpha-cluster", **env)
    assert json.loads(result.stdout)["id"] == clusters[0]["id"]
    result = cli("clusters", "list", "--state", "running", **env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "No clusters.\n")


def test_another_organizations_cluster_is_not_found(cli: Cli, world) -> None:
    alpha, bravo = world
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    result = cli("clusters", "get", str(bravo.cluster.uuid), **env)
    assert_readable_failure(result, 4, "HTTP 404")
    result = cli("clusters", "get", str(uuid.uuid4()), **env)
    assert_readable_failure(result, 4, "HTTP 404")
    # The token acts in alpha only: bravo's URLs answer 404 too.
    result = cli("--org", "bravo", "clusters", "list", RAYDECK_TOKEN=env["RAYDECK_TOKEN"])
    assert_readable_failure(result, 4, "HTTP 404")


def test_a_read_only_token_is_refused_writes(cli: Cli, world) -> None:
    alpha, _ = world
    env = {"RAYDECK_TOKEN": secret_of(alpha, read_only=True), "RAYDECK_ORG": "alpha"}
    result = cli("clusters", "create", "nope", "--project", "alpha-project", **env)
    assert_readable_failure(result, 3, "HTTP 403")


def test_invalid_compute_config_lists_each_field(cli: Cli, world, tmp_path) -> None:
    alpha, _ = world
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    spec = tmp_path / "config.yaml"
    spec.write_text(
        f"name: small\nproject: alpha-project\ncloud: {alpha.cloud.pk}\n"
        "worker_groups:\n  - {name: cpu, min: 3, max: 1}\n"
    )
    result = cli("compute-configs", "create", "-f", str(spec), **env)
    assert_readable_failure(result, 1, "HTTP 422", "validation_error")
    assert re.search(r"^  \S+: ", result.stderr, re.MULTILINE), result.stderr

    spec.write_text("name: [unclosed")
    result = cli("compute-configs", "create", "-f", str(spec), **env)
    assert_readable_failure(result, 2, "not valid YAML")


def test_compute_config_from_yaml(cli: Cli, world, tmp_path) -> None:
    alpha, _ = world
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    spec = tmp_path / "config.yaml"
    spec.write_text(
        "name: small\nproject: alpha-project\ncloud: alpha local\n"  # a cloud by its name
        "head: {cpus: 1}\n"
        "worker_groups:\n  - {name: cpu, cpus: 1, min: 0, max: 2}\n"
    )
    result = cli("compute-configs", "create", "-f", str(spec), "-o", "json", **env)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["name"] == "small" and str(made["cloud"]) == str(alpha.cloud.pk)
    listed = json.loads(cli("compute-configs", "list", "-o", "json", **env).stdout)
    assert made["id"] in [c["id"] for c in listed]


def test_a_compute_config_changes_from_yaml_as_its_next_version(cli: Cli, world, tmp_path) -> None:
    alpha, _ = world
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    spec = tmp_path / "config.yaml"
    spec.write_text(f"name: small\nproject: alpha-project\ncloud: {alpha.cloud.pk}\n")
    made = json.loads(cli("compute-configs", "create", "-f", str(spec), "-o", "json", **env).stdout)
    change = tmp_path / "change.yaml"
    change.write_text("worker_groups:\n  - {name: cpu, max: 4}\nidle_timeout_minutes: 30\n")
    result = cli("compute-configs", "update", made["id"], "-f", str(change), "-o", "json", **env)
    assert result.returncode == 0, result.stderr
    changed = json.loads(result.stdout)
    assert changed["version"] == 2 and changed["idle_timeout_minutes"] == 30
    assert changed["worker_groups"][0]["max"] == 4
    assert "Saved as version 2" in result.stderr
    again = cli("compute-configs", "update", made["id"], "-f", str(change), **env)
    assert again.returncode == 0 and "Nothing changed: still version 2" in again.stderr
    change.write_text("name: renamed\n")
    result = cli("compute-configs", "update", made["id"], "-f", str(change), **env)
    assert_readable_failure(result, 2, "`name:` cannot change")


def test_an_image_from_yaml_to_deletion(cli: Cli, world, tmp_path) -> None:
    alpha, _ = world
    owner = {"RAYDECK_TOKEN": secret_of(alpha, role="owner"), "RAYDECK_ORG": "alpha"}
    spec = tmp_path / "image.yaml"
    spec.write_text(
        "name: acme ray\nimage_uri: acme/ray:2.40\nray_version: 2.40.0\n"
        "aws_amis: {us-east-1: ami-0123456789abcdef0}\n"
    )
    member = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    assert_readable_failure(cli("images", "create", "-f", str(spec), **member), 3, "HTTP 403")
    result = cli("images", "create", "-f", str(spec), "-o", "json", **owner)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["aws_amis"] == {"us-east-1": "ami-0123456789abcdef0"} and not made["built_in"]
    listed = cli("images", "list", **owner).stdout
    assert "acme ray" in listed and "BUILT IN" in listed
    spec.write_text("name: acme ray 2\n")
    result = cli("images", "update", made["id"], "-f", str(spec), "-o", "json", **owner)
    assert result.returncode == 0 and json.loads(result.stdout)["name"] == "acme ray 2"
    result = cli("images", "delete", made["id"], **owner)
    assert result.returncode == 0 and "deleted" in result.stderr
    assert_readable_failure(cli("images", "get", made["id"], **owner), 4, "HTTP 404")


def test_a_retried_create_makes_one_cluster(cli: Cli, world) -> None:
    alpha, _ = world
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    args = ("clusters", "create", "once", "--project", "alpha-project", "-o", "json")
    first = cli(*args, "--idempotency-key", "k-1", **env)
    again = cli(*args, "--idempotency-key", "k-1", **env)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert json.loads(first.stdout)["id"] == json.loads(again.stdout)["id"]
    assert Cluster.objects.filter(organization=alpha.org, name="once").count() == 1
    # One create, one audit event (the member's own view of the log needs an admin).
    _, admin_secret = services.token_create(
        organization=alpha.org, actor=alpha.admin, name="audit", days=30, read_only=True
    )
    audit = cli(
        "audit-events",
        "list",
        "--action",
        "cluster.create",
        "-o",
        "json",
        RAYDECK_TOKEN=admin_secret,
        RAYDECK_ORG="alpha",
    )
    assert audit.returncode == 0, audit.stderr
    assert [e["actor"] for e in json.loads(audit.stdout)] == [alpha.member.email]
    # The same key with another body is refused, not silently answered.
    other = cli(*args[:2], "other", *args[3:], "--idempotency-key", "k-1", **env)
    assert_readable_failure(other, 1, "idempotency_conflict")


def test_an_unreachable_server_exits_7(cli: Cli) -> None:
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = cli("orgs", "list", RAYDECK_URL=f"http://127.0.0.1:{port}", RAYDECK_TOKEN="rdk_x")
    assert_readable_failure(result, 7, "Cannot reach", "check the URL")


def test_waiting_past_the_timeout_exits_5(cli: Cli, world) -> None:
    alpha, _ = world
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    # Nothing reconciles in this test, so the cluster stays pending.
    result = cli(
        "clusters",
        "create",
        "slow",
        "--project",
        "alpha-project",
        "--wait",
        "--timeout",
        "1",
        **env,
    )
    assert result.returncode == 5, result.stderr
    assert "queued: " in result.stderr  # the progress so far
    assert "error: Cluster slow is still pending after 1 s." in result.stderr


def test_cluster_from_yaml_with_its_compute_config_inline(cli: Cli, world, tmp_path) -> None:
    alpha, _ = world
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "name: from-file\nproject: alpha-project\ncloud: local\n"  # the only local cloud
        "compute_config:\n"
        "  head: {cpus: 1}\n"
        "  worker_groups: [{name: cpu, cpus: 1, min: 0, max: 3}]\n"
    )
    result = cli("clusters", "create", "-f", str(spec), "-o", "json", **env)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert (made["name"], made["project"]) == ("from-file", "alpha-project")
    cluster = Cluster.objects.get(uuid=made["id"])
    assert cluster.cloud_id == alpha.cloud.pk
    assert cluster.compute_config.worker_groups[0]["max"] == 3
    assert str(cluster.compute_config.config_id) == made["compute_config"]
    # A name on the command line wins over the file's.
    result = cli("clusters", "create", "other", "-f", str(spec), "-o", "json", **env)
    assert json.loads(result.stdout)["name"] == "other"


def test_terminate_wait_shows_what_happens_from_now_not_the_history(cli: Cli, world) -> None:
    """The real reconciler (in this process) terminates the cluster on the local cloud."""
    from clusters.choices import ClusterState, DesiredState
    from clusters.services.events import record_event
    from clusters.services.reconcile import cluster_reconcile

    alpha, _ = world
    Cluster.objects.filter(pk=alpha.cluster.pk).update(
        state=ClusterState.RUNNING, desired_state=DesiredState.RUNNING
    )
    for step in range(3):
        record_event(alpha.cluster, "old news", f"an event from before, number {step}")
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    terminate = cli.start(
        "clusters", "terminate", "alpha-cluster", "--wait", "--timeout", "60", **env
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cluster = Cluster.objects.get(pk=alpha.cluster.pk)
            if cluster.desired_state == DesiredState.TERMINATED:
                cluster_reconcile(cluster_id=cluster.pk)
                if Cluster.objects.get(pk=cluster.pk).state == ClusterState.TERMINATED:
                    break
            time.sleep(0.2)
        _, err = terminate.communicate(timeout=60)
    finally:
        terminate.kill()
    assert terminate.returncode == 0, err
    assert "is terminated" in err
    assert "terminated: Every node is terminated." in err
    assert "old news" not in err
