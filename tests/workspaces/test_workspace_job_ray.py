"""A workspace's files and packages reach a job, and `raydeck workspaces sync` moves files,
on real Ray on the local cloud: the real agent, its gateway and sshd (Debian's
openssh-server), the `raydeck` command in a child process, Ray's own pip runtime env.
No stand-ins.

The image is a Python environment of this test's own (a venv that sees this project's
packages), so `pip install` on the head changes it and nothing else. One workspace
serves every check: sync says what is missing (not running, no key), pushes a folder
and pulls one back (with rsync, then with tar on a laptop without rsync), sessions
start in the working directory; a tiny wheel made here is pip-installed on the head;
`raydeck workspaces job` packs the files; the wheel is then removed from the image, so
the job's cluster has it only if the job carries it; the job's driver log shows the
synced file and the package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from accounts.models import AuditEvent
from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.models import ContainerImage
from tests.cli.conftest import Cli, cli  # noqa: F401 - the fixture
from tests.cli.test_commands import secret_of
from tests.conftest import make_tenant
from tests.workloads.test_jobs_ray import drive, stored_log
from tests.workspaces.test_workspace_ray import stop_everything
from tests.workspaces.test_workspace_ssh import (
    HEARTBEAT_SECONDS,
    NEEDS_OPENSSH,
    head_folder,
    key_pair,
    running_with_sshd,
)
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job
from workloads.workspaces import services
from workloads.workspaces.models import SshKey

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True), *NEEDS_OPENSSH]
JOB_SECONDS = 300  # a cluster of its own, then Ray's pip env (a clone of the image's)
PACKAGE = "tinypkg_wsjob"
SHOW = f"""
import {PACKAGE}
print("notes:", open("notes.txt").read().strip(), flush=True)
print("package:", {PACKAGE}.VALUE, flush=True)
"""


def image_env(folder: Path) -> Path:
    """A venv whose Python sees this project's packages (Ray, the agent, pip) behind its
    own: what is pip-installed there stays there. Returns its Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = site.getsitepackages()[0]  # this project's venv; .pth files there work too
    Path(own, "_raydeck_project.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel with no dependencies: pip installs it without an index."""
    files = {
        f"{PACKAGE}/__init__.py": 'VALUE = "from the workspace"\n',
        f"{PACKAGE}-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg-wsjob\n"
        "Version: 0.1\n",
        f"{PACKAGE}-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: raydeck-test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256="
        f"{base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).decode().rstrip('=')},"
        f"{len(body.encode())}"
        for name, body in files.items()
    ]
    record.append(f"{PACKAGE}-0.1.dist-info/RECORD,,")
    files[f"{PACKAGE}-0.1.dist-info/RECORD"] = "\n".join(record)
    wheel = folder / f"{PACKAGE}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, body in files.items():
            archive.writestr(name, body)
    return wheel


def pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        timeout=120,
    )


def test_a_job_from_a_workspace_sees_its_files_and_packages_and_sync_moves_files(
    cli: Cli,  # noqa: F811
    live_server,
    settings,
    tmp_path,
) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_BASE_URL = live_server.url  # serves the local cloud's storage
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("wsjob")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    user = tenant.member
    token = secret_of(tenant)
    python = image_env(tmp_path / "image")
    import ray

    image = ContainerImage.objects.create(
        organization=tenant.org,
        name="wsjob env",
        ray_version=ray.__version__,
        python_executable=str(python),
    )
    workspace = services.workspace_create(
        project=tenant.project, actor=user, name="ws", cloud=tenant.cloud, image=image
    )
    services.workspace_start(workspace=workspace, actor=user)

    def raydeck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, RAYDECK_TOKEN=token, RAYDECK_ORG="wsjob", **env)

    laptop = tmp_path / "laptop"
    laptop.mkdir()
    (laptop / "notes.txt").write_text("written on my laptop\n")
    (laptop / "show.py").write_text(SHOW)
    try:
        early = raydeck("workspaces", "sync", "ws", str(laptop))
        assert early.returncode != 0 and "start it first" in early.stderr, early.stderr
        workspace = running_with_sshd(workspace)
        SshKey.objects.filter(user=user).delete()  # the fixture's
        no_key = raydeck("workspaces", "sync", "ws", str(laptop))
        assert no_key.returncode != 0 and "You have no SSH key" in no_key.stderr, no_key.stderr
        key, _ = key_pair(tmp_path, user)
        work = head_folder(workspace.cluster) / "work"

        # Push, with the key on the profile (the head hears of it at a heartbeat).
        deadline = time.monotonic() + HEARTBEAT_SECONDS
        while True:
            pushed = raydeck("workspaces", "sync", "ws", str(laptop), "-i", str(key))
            if pushed.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert pushed.returncode == 0, pushed.stderr
        assert (work / "notes.txt").read_text() == "written on my laptop\n"
        # Sessions start in the working directory; pull what the head made.
        where = raydeck("workspaces", "ssh", "ws", "-i", str(key), "--", "pwd")
        assert where.stdout.strip() == str(work), where.stderr
        (work / "results").mkdir()
        (work / "results" / "scores.csv").write_text("epoch,score\n1,0.93\n")
        back = tmp_path / "back"
        pulled = raydeck("workspaces", "sync", "ws", str(back), "--down", "-i", str(key))
        assert pulled.returncode == 0, pulled.stderr
        assert (back / "results" / "scores.csv").read_text() == "epoch,score\n1,0.93\n"

        # Without rsync on the laptop, tar carries it, both ways, deleting nothing on the
        # receiving side (the head's own results stay; so does the laptop's own file).
        laptop_tools = tmp_path / "laptop-bin"
        laptop_tools.mkdir()
        for tool in ("ssh", "tar"):
            (laptop_tools / tool).symlink_to(shutil.which(tool) or tool)
        without_rsync = {"PATH": str(laptop_tools)}
        assert shutil.which("rsync", path=without_rsync["PATH"]) is None
        data = bytes(range(256)) * 64
        (laptop / "more").mkdir()
        (laptop / "more" / "data.bin").write_bytes(data)
        (laptop / "__pycache__").mkdir()
        (laptop / "__pycache__" / "x.pyc").write_bytes(b"\0")
        tarred = raydeck("workspaces", "sync", "ws", str(laptop), "-i", str(key), **without_rsync)
        assert tarred.returncode == 0, tarred.stderr
        assert (work / "more" / "data.bin").read_bytes() == data
        assert (work / "results" / "scores.csv").is_file() and not (work / "__pycache__").exists()
        (work / "results" / "later.txt").write_text("made on the head\n")
        (back / "mine.txt").write_text("only on the laptop\n")
        args = ("workspaces", "sync", "ws", str(back), "--down", "-i", str(key))
        untarred = raydeck(*args, **without_rsync)
        assert untarred.returncode == 0, untarred.stderr
        assert (back / "results" / "later.txt").read_text() == "made on the head\n"
        assert (back / "more" / "data.bin").read_bytes() == data
        assert (back / "mine.txt").read_text() == "only on the laptop\n"

        # A package installed in the workspace; then the job, packed from it.
        pip(python, "install", str(tiny_wheel(tmp_path)))
        misplaced = raydeck("workspaces", "job", "ws", "--wait", "--", "python", "show.py")
        assert misplaced.returncode != 0 and "Put options before" in misplaced.stderr
        made = raydeck("workspaces", "job", "-o", "json", "ws", "--", "python", "show.py")
        assert made.returncode == 0, made.stderr
        job = Job.objects.get(uuid=json.loads(made.stdout)["id"])
        assert job.name == "ws: python show.py" and job.image == image
        assert [p.split(" ")[0] for p in job.runtime_env["pip"]] == ["tinypkg-wsjob"]
        assert AuditEvent.objects.filter(verb="workspace.job_create", actor=user).exists()
        # The image no longer has it: the job's cluster gets it from the job only.
        pip(python, "uninstall", "-y", "tinypkg-wsjob")
        services.workspace_stop(workspace=workspace, actor=user)

        def done() -> bool:
            services.workspace_sync(workspace_id=workspace.pk)  # its stop, meanwhile
            job.refresh_from_db()
            return job.is_final

        drive([job], time.monotonic() + JOB_SECONDS, done)
        job.refresh_from_db()
        log = stored_log(job)
        assert job.state == JobState.SUCCEEDED, (job.state_reason, log[-2000:])
        assert "notes: written on my laptop" in log
        assert "package: from the workspace" in log
    finally:
        stop_everything(tenant.project)
