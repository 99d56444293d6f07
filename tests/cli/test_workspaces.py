"""`raydeck workspaces …` and the SDK's Workspaces against a live server (the installed
console script in a child process): create, list, get, start, stop, delete, by name,
with readable refusals."""

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
    again = cli("workspaces", "create", "lab", "--project", alpha.project.slug, **env)
    assert_readable_failure(again, 1, "already has a workspace named lab")
    listed = cli("workspaces", "list", **env)
    assert "lab" in listed.stdout and "alpha-workspace" in listed.stdout
    assert "bravo-workspace" not in listed.stdout
    started = cli("workspaces", "start", "lab", "-o", "json", **env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["state"] == "starting"
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
    assert workspaces.start(made.id).state == "starting"
    with pytest.raises(raydeck.Conflict):
        workspaces.jupyter_url(made.id)
    with pytest.raises(raydeck.WaitTimeout):
        workspaces.wait(made.id, "running", timeout=0.1, every=0.05)
    assert {w.name for w in workspaces.list()} == {"sdk-lab", "alpha-workspace"}
