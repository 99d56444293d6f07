"""SSH into a workspace on real Ray on the local cloud: the real agent starts the image's
sshd (Debian's openssh-server here) on the head's loopback, its gateway tunnels a
WebSocket to it, and the `raydeck` command (the installed console script, in a child
process, with the system's ssh client) runs commands there. No stand-ins.

One head serves every check, in the order a team would meet them: the creator runs a
command with the key on their profile, and plain ssh does with the `ssh-config` entry; a
reader's key is refused; a token of another cluster, and a browser's gateway session,
are refused by the gateway; a writer's open session keeps the workspace busy (and is
named), then, once they are removed from the project, it is closed and neither their
key nor their token gets in again; stopping the workspace leaves no sshd.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from accounts.choices import ProjectRole
from accounts.services import token_create
from accounts.services.projects import project_member_remove
from clouds.choices import CloudState
from clouds.models import Cloud
from clouds.providers.registry import local_root
from clusters import access
from clusters.choices import ClusterState, NodeRole
from clusters.live import head_report
from clusters.models import Node
from clusters.services.idle import report_reasons
from tests.cli.conftest import Cli, cli  # noqa: F401 - the fixture
from tests.cli.test_commands import secret_of
from tests.clusters.test_end_to_end import processes_with
from tests.clusters.test_gateway import call, trust_ca
from tests.conftest import make_tenant
from tests.factories import MembershipFactory, ProjectMembershipFactory, UserFactory
from tests.workspaces.test_workspace_ray import START_SECONDS, follow, stop_everything
from workloads.workspaces import services
from workloads.workspaces.choices import WorkspaceState
from workloads.workspaces.models import Workspace
from workloads.workspaces.ssh_keys import ssh_key_add, workspace_ssh_access

# Real OpenSSH on both ends (test_workspace_job_ray.py's sync needs them too).
NEEDS_OPENSSH = [
    pytest.mark.skipif(
        shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(),
        reason="no OpenSSH server (.ci/run installs it)",
    ),
    pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client"),
]
pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True), *NEEDS_OPENSSH]
HEARTBEAT_SECONDS = 30  # the head hears of a key or a revocation at its next heartbeat
OPEN_SECONDS = 60  # a WebSocket handshake on a loaded shared 2-core machine


def key_pair(folder: Path, user) -> tuple[Path, str]:
    """A private key file for ssh, and its public half, added to `user`'s profile."""
    private = Ed25519PrivateKey.generate()
    path = folder / f"id_{user.pk}"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    key = ssh_key_add(user=user, name="laptop", public_key=public.decode() + " test@laptop")
    return path, key.public_key


def ssh_argv(config: Path, key: Path, *command: str) -> list[str]:
    """The system's ssh with a Host entry from `raydeck workspaces ssh-config` and one key."""
    options = ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
    return ["ssh", "-F", str(config), *options, "raydeck-lab", *command]


def ssh_with(run: Cli, config: Path, key: Path, token: str, *command: str):
    """Run ssh to the end (the tunnel asks the server with `token`)."""
    return subprocess.run(
        ssh_argv(config, key, *command),
        env=run.env(RAYDECK_TOKEN=token, RAYDECK_ORG="sshws"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def head_folder(cluster) -> Path:
    head = Node.objects.filter(cluster=cluster, role=NodeRole.HEAD).latest("created_at")
    return local_root(cluster.cloud) / str(head.uuid)


def ssh_session(run: Cli, config: Path, key: Path, token: str, command: str):
    """ssh_with, left running (its output read line by line)."""
    return subprocess.Popen(
        ssh_argv(config, key, command),
        env=run.env(RAYDECK_TOKEN=token, RAYDECK_ORG="sshws"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def running_with_sshd(workspace: Workspace) -> Workspace:
    """Once the workspace runs and its head's sshd has said it is up."""
    workspace = follow(workspace, {WorkspaceState.RUNNING, WorkspaceState.FAILED}, START_SECONDS)
    assert workspace.state == WorkspaceState.RUNNING, workspace.state_reason
    deadline = time.monotonic() + HEARTBEAT_SECONDS
    while not workspace.ssh_user and time.monotonic() < deadline:
        time.sleep(0.5)
        workspace.refresh_from_db()
    assert workspace.ssh_user and not workspace.ssh_unavailable, workspace.ssh_unavailable
    return workspace


def busy_by_ssh_after(cluster, moment) -> bool:
    """The head's last report names an SSH session active after `moment` (a session open
    since then counts as activity at every heartbeat)."""
    now = timezone.now()
    _, touches = report_reasons(head_report(cluster.pk), now)
    active = touches.get("SSH session active")
    return active is not None and active > moment + timedelta(seconds=2)


def keys_on_head(cluster) -> str:
    path = head_folder(cluster) / "ssh" / "authorized_keys"
    return path.read_text() if path.exists() else ""


def test_ssh_into_a_workspace_through_the_gateway(
    cli: Cli,  # noqa: F811
    live_server,
    settings,
    tmp_path,
):
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("sshws")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    creator = tenant.member  # a writer of the project
    creator_key, creator_public = key_pair(tmp_path, creator)
    reader_key, _ = key_pair(tmp_path, tenant.viewer)  # reads the project: no access
    leaver = UserFactory(email="leaver@sshws.example.com")
    MembershipFactory(organization=tenant.org, user=leaver, role="member")
    leaving = ProjectMembershipFactory(project=tenant.project, user=leaver, role=ProjectRole.WRITER)
    leaver_key, leaver_public = key_pair(tmp_path, leaver)
    creator_token = secret_of(tenant)
    _, leaver_token = token_create(
        organization=tenant.org, actor=leaver, name="cli", days=1, read_only=False
    )

    workspace = services.workspace_create(
        project=tenant.project, actor=creator, name="lab", cloud=tenant.cloud
    )
    services.workspace_start(workspace=workspace, actor=creator)
    try:
        # Not running yet: the CLI says so before ssh runs.
        early = cli(
            "workspaces",
            "ssh",
            "lab",
            "--",
            "true",
            RAYDECK_TOKEN=creator_token,
            RAYDECK_ORG="sshws",
        )
        assert early.returncode != 0 and "start it first" in early.stderr, early.stderr
        workspace = running_with_sshd(workspace)
        cluster = workspace.cluster
        work = head_folder(cluster) / "work"
        (work / "notes.txt").write_text("written on the head\n")

        # The creator: `raydeck workspaces ssh NAME -- command`, with the key on their profile.
        ran = cli(
            "workspaces",
            "ssh",
            "lab",
            "-i",
            str(creator_key),
            "--",
            "cat",
            str(work / "notes.txt"),
            RAYDECK_TOKEN=creator_token,
            RAYDECK_ORG="sshws",
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "written on the head\n"

        # VS Code's way: the Host entry, used by plain ssh.
        entry = cli(
            "workspaces", "ssh-config", "lab", RAYDECK_TOKEN=creator_token, RAYDECK_ORG="sshws"
        )
        assert entry.returncode == 0 and entry.stdout.startswith("Host raydeck-lab\n")
        config = tmp_path / "ssh_config"
        config.write_text(entry.stdout)
        assert ssh_with(cli, config, creator_key, creator_token, "echo", "ok").stdout == "ok\n"

        # A reader's key is not among the head's: refused by sshd.
        refused = ssh_with(cli, config, reader_key, creator_token, "true")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr

        # A token of another cluster is refused by the gateway itself.
        trust_ca(tmp_path)
        tunnel = workspace_ssh_access(workspace=workspace, user=creator)
        other = access.mint_token(
            user=creator, cluster=tenant.cluster, lifetime=access.LINK_LIFETIME
        )
        wrong = refusal(tunnel["url"], tmp_path, {"Authorization": f"Bearer {other.token}"})
        # Signed with the other cluster's key: this gateway cannot verify it.
        assert wrong.status_code == 401 and b"the token is not valid" in wrong.body
        # Nor does a browser's gateway session open it (another site's page could try).
        link = access.mint_token(user=creator, cluster=cluster, lifetime=access.LINK_LIFETIME)
        _, headers, _ = call(f"{access.gateway_address(cluster)}/?token={link.token}")
        by_cookie = refusal(
            tunnel["url"], tmp_path, {"Cookie": headers["Set-Cookie"].split(";")[0]}
        )
        assert b"Authorization header only" in by_cookie.body

        # A writer who leaves the project: in (an open session keeps the workspace busy,
        # and the "why not idle" line says so), then out: the open session is closed,
        # and neither their key nor their token lets them in again.
        opened = timezone.now()
        session = ssh_session(cli, config, leaver_key, leaver_token, "echo in; sleep 300")
        assert session.stdout.readline() == "in\n", session.stderr.read()
        deadline = time.monotonic() + HEARTBEAT_SECONDS
        while time.monotonic() < deadline and not busy_by_ssh_after(cluster, opened):
            time.sleep(0.5)
        assert busy_by_ssh_after(cluster, opened)
        leaver_access = workspace_ssh_access(workspace=workspace, user=leaver)
        project_member_remove(project_membership=leaving, actor=tenant.owner)
        assert session.wait(HEARTBEAT_SECONDS) != 0  # the gateway closed it
        deadline = time.monotonic() + HEARTBEAT_SECONDS
        while leaver_public in keys_on_head(cluster) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert leaver_public not in keys_on_head(cluster)
        assert creator_public in keys_on_head(cluster)
        gone = ssh_with(cli, config, leaver_key, creator_token, "true")
        assert gone.returncode == 255 and "Permission denied" in gone.stderr
        bearer = {"Authorization": f"Bearer {leaver_access['token']}"}
        assert b"revoked" in refusal(leaver_access["url"], tmp_path, bearer).body
        no_access = cli(
            "workspaces",
            "ssh",
            "lab",
            "--",
            "true",
            RAYDECK_TOKEN=leaver_token,
            RAYDECK_ORG="sshws",
        )
        assert no_access.returncode != 0

        services.workspace_stop(workspace=workspace, actor=creator)
        follow(workspace, {WorkspaceState.STOPPED}, 90)
        cluster.refresh_from_db()
        assert cluster.state == ClusterState.TERMINATED
        deadline = time.monotonic() + 10
        while processes_with(str(cluster.uuid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_with(str(cluster.uuid)) == []  # sshd went with the node
    finally:
        stop_everything(tenant.project)


def refusal(url: str, tmp_path: Path, headers: dict[str, str]):
    """The gateway's answer to a WebSocket to /ssh that it must refuse."""
    with pytest.raises(InvalidStatus) as refused:
        connect(
            url,
            ssl=ssl.create_default_context(cafile=str(tmp_path / "raydeck-ca.pem")),
            open_timeout=OPEN_SECONDS,
            additional_headers=headers,
        )
    return refused.value.response
