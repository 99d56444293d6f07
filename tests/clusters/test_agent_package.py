"""The agent package index (/agent/v1/simple/) that AWS and GCP boot scripts install
`raydeck-agent` from: real pip, in a fresh virtual environment, against a live server
(pytest-django's live_server, a real HTTP server on loopback). No stand-in."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from django.test import Client

from clouds.choices import CloudKind
from clouds.providers import boot
from clouds.providers.registry import traits_for
from clusters import agent_package
from clusters.choices import NodeRole
from clusters.services import reconcile
from tests.factories import CloudFactory, ClusterFactory, NodeFactory

pytestmark = pytest.mark.django_db

INDEX = "/agent/v1/simple/"
PIP_TIMEOUT = 300  # a loaded machine; pip itself needs a few seconds


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with pip and nothing else (no Raydeck, no agent)."""
    path = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=PIP_TIMEOUT)
    return path


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        args, capture_output=True, text=True, timeout=PIP_TIMEOUT, env=env, **kwargs
    )


def test_pip_installs_the_agent_from_the_control_plane_and_it_runs(
    live_server, venv: Path, tmp_path: Path
) -> None:
    index = live_server.url + INDEX
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    downloaded = run(
        [
            *pip,
            "download",
            "--no-deps",
            "--index-url",
            index,
            "--dest",
            str(tmp_path / "dl"),
            "raydeck-agent",
        ]
    )
    assert downloaded.returncode == 0, downloaded.stderr
    wheel = agent_package.agent_wheel()
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [wheel.filename]
    assert (tmp_path / "dl" / wheel.filename).read_bytes() == wheel.data

    installed = run([*pip, "install", "--index-url", index, "raydeck-agent"])
    assert installed.returncode == 0, installed.stderr
    helped = run([str(venv / "bin" / "raydeck-agent"), "--help"])
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: raydeck-agent") and "RAYDECK_URL" in helped.stdout
    version = run([str(venv / "bin" / "raydeck-agent"), "--version"])
    assert version.stdout.strip() == "raydeck-agent 0.1.0"
    # The installed files are the agent's sources, as pip recorded them.
    shown = run([*pip, "show", "--files", "raydeck-agent"])
    assert "raydeck_agent/agent.py" in shown.stdout


def test_the_aws_and_gcp_boot_script_installs_the_agent_that_way(
    live_server, venv: Path, tmp_path: Path, settings
) -> None:
    """The exact commands of the boot script, run by bash against the live index (only
    its folders moved under tmp_path, and --help instead of starting the agent)."""
    settings.RAYDECK_AGENT_URL = live_server.url
    for kind in (CloudKind.AWS, CloudKind.GCP):
        cluster = ClusterFactory(cloud=CloudFactory(kind=kind, region="us-east-1"))
        # A worker: a head's script also stops the machine's own Prometheus service.
        node = NodeFactory(cluster=cluster, role=NodeRole.WORKER)
        spec = reconcile.boot_spec(cluster, node)
        assert not spec.image_uri  # the factory's image: the host's Python runs the agent
        script = traits_for(kind).boot_script(spec)
        command = boot.agent_install_command(spec)
        assert f"\n{command}\n" in script
        assert f"--index-url {live_server.url}/agent/v1/simple/ raydeck-agent" in command
    target = tmp_path / "agent"
    runnable = (
        script.replace(boot.AGENT_INSTALL_DIR, str(target))
        .replace(boot.NODE_DIR, str(tmp_path / "node"))
        .replace("exec python3 -m raydeck_agent\n", "exec python3 -m raydeck_agent --help\n")
    )
    path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"  # python3: the bare venv's
    # Ray is found (Raydeck's own), so the script does not fetch it from PyPI; the agent
    # is not (editable installs are not on PYTHONPATH): it must come from the index.
    ray_site = str(Path(importlib.util.find_spec("ray").origin).parent.parent)
    booted = run(["/bin/bash", "-c", runnable], env={"PATH": path, "PYTHONPATH": ray_site})
    assert booted.returncode == 0, booted.stderr
    assert booted.stdout.startswith("usage: raydeck-agent")
    assert (target / "raydeck_agent" / "__main__.py").is_file()
    assert "import ray" in script and "ray[default]==" in script


def test_the_index_is_pep_503_and_serves_nothing_else() -> None:
    client = Client()  # anonymous: a node has no credential before it registers
    wheel = agent_package.agent_wheel()
    root = client.get(INDEX)
    assert root.status_code == 200 and 'href="raydeck-agent/"' in root.content.decode()
    project = client.get(INDEX + "raydeck-agent/").content.decode()
    href = re.search(r'href="([^"]+)"', project)[1]
    assert href == f"{wheel.filename}#sha256={hashlib.sha256(wheel.data).hexdigest()}"
    served = client.get(INDEX + "raydeck-agent/" + wheel.filename)
    assert served.status_code == 200 and served.content == wheel.data
    for path in (
        "raydeck-agent/other-1.0-py3-none-any.whl",
        "raydeck-agent/../../register",
        "ray/",
        "raydeck-agent/" + wheel.filename.replace(".whl", ".tar.gz"),
    ):
        assert client.get(INDEX + path).status_code == 404, path
    assert client.post(INDEX + "raydeck-agent/").status_code == 405


def test_the_wheel_is_the_same_bytes_in_every_process_and_records_every_file() -> None:
    """Every web process builds its own: the hash in one's index must match another's file."""
    source = Path(agent_package.__file__).resolve().parent.parent / "agent"
    first, second = agent_package.build_wheel(source), agent_package.build_wheel(source)
    assert first.data == second.data
    with zipfile.ZipFile(BytesIO(first.data)) as archive:
        names = set(archive.namelist())
        record = archive.read("raydeck_agent-0.1.0.dist-info/RECORD").decode().splitlines()
        recorded = {line.split(",")[0] for line in record}
        assert recorded == names
        assert "raydeck_agent/__main__.py" in names
        metadata = archive.read("raydeck_agent-0.1.0.dist-info/METADATA").decode()
        assert "License: Apache-2.0" in metadata  # pyproject's SPDX string
        assert (
            "raydeck-agent = raydeck_agent.__main__:main"
            in archive.read("raydeck_agent-0.1.0.dist-info/entry_points.txt").decode()
        )
