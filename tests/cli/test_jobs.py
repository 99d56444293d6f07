"""`raydeck jobs …` as a user runs it (the installed command in a child process), and
the SDK's `client.jobs` as a program calls it, against this test's live server; the
working dir goes to the local cloud's storage through the signed URL the server hands
out. No Ray here: test_jobs_ray.py runs jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from raydeck import Client, NotFound, ValidationFailed

from clouds.choices import CloudState
from clouds.models import Cloud
from tests.conftest import make_tenant
from workloads.jobs.models import Job
from workloads.models import WorkingDir

from .conftest import Cli
from .test_commands import secret_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_submit_a_folder_list_get_attempts_and_stop(
    cli: Cli, live_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.RAYDECK_BASE_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "cloud"
    alpha = make_tenant("alpha")
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "train.py").write_text("print('hello')\n")
    (folder / "data" / "big.bin").write_bytes(b"x" * 1000)
    (folder / ".gitignore").write_text("data/\n")

    def submit() -> dict[str, Any]:
        result = cli(
            "jobs", "submit", "--project", alpha.project.slug, "--working-dir", str(folder),
            "--env", "SEED=1", "--max-retries", "0", "-o", "json", "--", "python", "train.py",
            **env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first, second = submit(), submit()
    assert first["entrypoint"] == "python train.py" and first["state"] == "pending"
    # The same tree twice: one working dir, stored once, without what .gitignore excludes.
    [working_dir] = WorkingDir.objects.all()
    assert working_dir.uploaded_at is not None
    stored = list((tmp_path / "cloud").rglob("*.zip"))
    assert len(stored) == 1 and b"big.bin" not in stored[0].read_bytes()
    assert Job.objects.get(uuid=first["id"]).runtime_env == {"env_vars": {"SEED": "1"}}

    listed = cli("jobs", "list", "--state", "pending", **env)
    assert first["id"] in listed.stdout and second["id"] in listed.stdout
    got = cli("jobs", "get", first["id"], "-o", "json", **env)
    assert json.loads(got.stdout)["id"] == first["id"]
    assert cli("jobs", "attempts", str(alpha.job.uuid), **env).returncode == 0
    stopped = cli("jobs", "stop", first["id"], **env)
    assert stopped.returncode == 0, stopped.stderr
    logs = cli("jobs", "events", first["id"], **env)
    assert "stop requested" in logs.stdout


def test_bad_input_exits_with_the_field_and_submits_nothing(cli: Cli, tmp_path: Path) -> None:
    alpha = make_tenant("alpha")
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    result = cli(
        "jobs", "submit", "--project", alpha.project.slug, "--max-retries", "-1",
        "--", "python", "x.py", **env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "max_retries" in result.stderr
    assert Job.objects.exclude(name__endswith="-job").count() == 0


def test_the_sdk_submits_a_folder_reads_and_stops_the_job_and_refuses_bad_input(
    live_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.RAYDECK_BASE_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "cloud"
    alpha, bravo = make_tenant("alpha"), make_tenant("bravo")
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    client = Client(url=live_server.url, token=secret_of(alpha), org="alpha")
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text("print('hello')\n")

    job = client.jobs.submit(
        "python train.py", alpha.project.slug, name="train", working_dir=folder, max_retries=2
    )
    assert (job.name, job.state, job.max_retries) == ("train", "pending", 2)
    assert Job.objects.get(uuid=job.id).working_dir is not None
    assert len(list((tmp_path / "cloud").rglob("*.zip"))) == 1
    assert client.jobs.get(job.id).entrypoint == "python train.py"
    assert job.id in [j.id for j in client.jobs.list(state="pending")]
    assert client.jobs.stop(job.id).id == job.id
    assert any("stop" in event.message for event in client.jobs.events(job.id))

    with pytest.raises(ValidationFailed) as refused:
        client.jobs.submit("  ", alpha.project.slug, max_retries=-1)
    assert {"entrypoint", "max_retries"} & set(refused.value.details)
    with pytest.raises((ValidationFailed, NotFound)):  # another organization's cluster
        client.jobs.submit("python x.py", alpha.project.slug, cluster=str(bravo.cluster.uuid))
    with pytest.raises(NotFound):
        client.jobs.get(str(bravo.job.uuid))
    assert Job.objects.filter(project=alpha.project).exclude(name__endswith="-job").count() == 1
