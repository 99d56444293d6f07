"""`raydeck workspaces …` and the SDK's Workspaces against a live server (the installed
console script in a child process): create, list, get, update, start, stop, delete, by
name, with readable refusals."""

from __future__ import annotations

import json

import pytest
import raydeck

from clouds.choices import CloudState
from clouds.models import Cloud
from tests.cli.conftest import Cli
from tests.cli.test_commands import assert_readable_failure, secret_of
from tests.conftest import make_tenant
from workloads.workspaces.models import Workspace

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_workspace_from_the_command_line(cli: Cli) -> None:
    alpha = make_tenant("alpha")
    make_tenant("bravo")  # its workspace must not show
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    made = cli("workspaces", "create", "lab", "--project", alpha.project.slug, "-o", "json", **env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["state"] == "stopped"
    nothing = cli("workspaces", "update", "lab", **env)
    assert_readable_failure(nothing, 2, "Give what to change: --name, --compute-config or --image")
    renamed = cli("workspaces", "update", "lab", "--name", "lab2", "-o", "json", **env)
    assert renamed.returncode == 0, renamed.stderr
    assert json.loads(renamed.stdout)["name"] == "lab2"
    image = str(alpha.image.pk)
    changed = cli("workspaces", "update", "lab2", "--name", "lab", "--image", image, **env)
    assert changed.returncode == 0, changed.stderr
    assert Workspace.objects.get(name="lab").image == alpha.image
    back = cli("workspaces", "update", "lab", "--image", "workspace", "-o", "json", **env)
    assert json.loads(back.stdout)["image"] != image  # Raydeck's workspace image again
    again = cli("workspaces", "create", "lab", "--project", alpha.project.slug, **env)
    assert_readable_failure(again, 1, "already has a workspace named lab")
    listed = cli("workspaces", "list", **env)
    assert "lab" in listed.stdout and "alpha-workspace" in listed.stdout
    assert "bravo-workspace" not in listed.stdout
    started = cli("workspaces", "start", "lab", "-o", "json", **env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["state"] == "starting"
    busy = cli("workspaces", "update", "lab", "--name", "lab3", **env)
    assert_readable_failure(busy, 1, "Stop the workspace lab first: its name cannot change")
    refused = cli("workspaces", "delete", "lab", **env)
    assert_readable_failure(refused, 1, "Stop the workspace lab before deleting it")
    early = cli("workspaces", "job", "lab", "--", "python", "train.py", **env)
    assert_readable_failure(early, 1, "is starting: create the job once it runs")
    bare = cli("workspaces", "job", "lab", **env)
    assert_readable_failure(bare, 2, "Give the command to run after --")
    stopped = cli("workspaces", "stop", "lab", "-o", "json", **env)
    assert json.loads(stopped.stdout)["state"] == "stopping"
    missing = cli("workspaces", "get", "bravo-workspace", **env)
    assert_readable_failure(missing, 4, "No workspace is named 'bravo-workspace'")
    deleted = cli("workspaces", "delete", "alpha-workspace", **env)
    assert deleted.returncode == 0, deleted.stderr
    assert not Workspace.objects.filter(name="alpha-workspace").exists()


def test_the_sdk(live_server) -> None:
    alpha = make_tenant("alpha")
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    client = raydeck.Client(live_server.url, secret_of(alpha), org="alpha")
    workspaces = raydeck.Workspaces(client)
    made = workspaces.create("sdk-lab", alpha.project.slug)
    assert made.state == "stopped" and made.files["location"].endswith(made.id)
    assert workspaces.update(made.id, name="sdk-lab2").name == "sdk-lab2"
    assert workspaces.start(made.id).state == "starting"
    with pytest.raises(raydeck.Conflict):
        workspaces.update(made.id, image=None)
    with pytest.raises(raydeck.Conflict):
        workspaces.jupyter_url(made.id)
    with pytest.raises(raydeck.WaitTimeout):
        workspaces.wait(made.id, "running", timeout=0.1, every=0.05)
    assert {w.name for w in workspaces.list()} == {"sdk-lab2", "alpha-workspace"}


def test_ssh_to_a_head_that_never_answers_gives_up_within_its_bound(monkeypatch) -> None:
    """The ssh that `sync` and `ssh` run carries bounds: here the real ssh, with the
    options the CLI gives it, reaches a "head" that accepts and then says nothing (a
    ProxyCommand that only sleeps, as a stalled tunnel would), and ends with its error
    instead of waiting without end. No server involved."""
    import shutil
    import subprocess
    import time
    from types import SimpleNamespace

    from raydeck import workspaces as cli_workspaces
    from raydeck.workspaces_sdk import SshAccess

    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("no ssh client here (apt-get install openssh-client)")
    monkeypatch.setattr(cli_workspaces, "SSH_CONNECT_SECONDS", 2)
    ctx = SimpleNamespace(client=SimpleNamespace(url="https://raydeck.example", org="o"))
    options = cli_workspaces.ssh_options(ctx, "ws-id", SshAccess.from_api({"user": "ray"}))
    assert options["ServerAliveInterval"] and options["ServerAliveCountMax"]
    options["ProxyCommand"] = "sleep 60"  # a tunnel that opened and stays silent
    argv = [ssh, "-F", "/dev/null", *(f"-o{k}={v}" for k, v in options.items()), "ws", "true"]
    started = time.monotonic()
    ended = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert ended.returncode == 255
    assert time.monotonic() - started < 20
    assert "timed out" in ended.stderr.lower(), ended.stderr
