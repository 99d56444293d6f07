"""An AWS or GCP node with a container image runs its agent inside that image: the boot
script's own lines (clouds/providers/boot.py `container_lines`), run by bash here, and
the start of the node's systemd unit they install.

Real: Buildah (chroot isolation, no daemon) makes a small image (this machine's Python,
as the local cloud's builds make their base, plus a marker package that Raydeck's own
environment lacks) and pushes it to Debian's docker-registry on loopback; the script
pulls it by digest and runs the exact command line of `container_command`.
Stand-ins: the container engine is tests/clouds/buildah_engine.py (Buildah in place of
Docker/Podman, which need a daemon or namespaces this machine lacks); the agent is the
real package with its `__main__` replaced by a probe that reports what it sees, since a
real agent would start Ray, which this small image does not have; systemctl is a
stand-in that runs the unit's ExecStart once when asked to (re)start it (this machine
runs no systemd), and `systemd-analyze verify` checks the unit itself.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import raydeck_agent
from raydeck_agent.config import EXIT_REFUSED

from clouds.providers import boot
from clouds.providers.base import BootSpec
from clouds.providers.kinds import AwsTraits
from clouds.providers.local_build_runner import BASE_PATH, copy_minimal_root
from clouds.providers.local_builds import node_python
from clouds.providers.local_registry import ensure_registry, stop_registry
from tests.clouds.test_kinds import SPEC

NEEDS_BUILDAH = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("docker-registry")),
    reason="needs Debian's buildah and docker-registry (.ci/run installs them)",
)
MARKER = "raydeck_image_marker"
ENGINE = Path(__file__).with_name("buildah_engine.py")
PROBE = f"""
import json, os, subprocess, sys
import {MARKER}
from raydeck_agent.apps import prometheus_executable
from raydeck_agent.config import EXIT_REFUSED

prometheus = prometheus_executable()
version = subprocess.run([str(prometheus), "--version"], capture_output=True, text=True)
seen = {{
    "python": sys.executable,
    "marker": {MARKER}.__file__,
    "cwd": os.getcwd(),
    "env": {{k: v for k, v in os.environ.items() if k.startswith("RAYDECK_")}},
    "ca": open(os.environ["RAYDECK_CA_BUNDLE"]).read(),
    "agent_writable": os.access(os.path.dirname(__file__), os.W_OK),
    "prometheus": (version.stdout + version.stderr).splitlines()[:1],
}}
with open(os.path.join(os.environ["RAYDECK_NODE_DIR"], "seen.json"), "w") as f:
    json.dump(seen, f)
sys.exit(EXIT_REFUSED)  # as a refused registration ends
"""
# Runs the unit's ExecStart when asked to (re)start it, and keeps its exit code.
SYSTEMCTL = """#!/bin/bash
echo "$*" >> "$SYSTEMCTL_LOG"
if [ "$1" = restart ]; then
  "$(sed -n 's/^ExecStart=//p' "$UNIT_FILE")"
  echo $? > "$STARTED_EXIT"
fi
"""


def node_spec(image_uri: str, **fields: Any) -> BootSpec:
    return dataclasses.replace(SPEC, image_uri=image_uri, **fields)


@dataclass
class Image:
    uri: str  # in the loopback registry, by digest
    buildah: list[str]  # `buildah --root ... --runroot ...`
    python: str  # the image's Python (this machine's, at the same path)


def _out(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    root = tmp_path_factory.mktemp("engine")
    buildah = [
        "buildah",
        *("--root", str(root / "storage"), "--runroot", str(root / "run")),
        *("--storage-driver", "vfs"),
    ]
    registry = ensure_registry(root)
    try:
        python = Path(node_python()[1])
        container = _out([*buildah, "from", "scratch"])
        mount = Path(_out([*buildah, "mount", container]))
        copy_minimal_root(mount, python)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = mount / python.parent.parent.relative_to("/") / "lib" / version / "site-packages"
        (site / MARKER).mkdir(parents=True)
        (site / MARKER / "__init__.py").write_text("")
        _out([*buildah, "config", "--env", f"PATH={python.parent}:{BASE_PATH}", container])
        _out([*buildah, "commit", "--quiet", container, "localhost/node-test:1"])
        digest = root / "digest"
        _out(
            [
                *buildah,
                *("push", "--tls-verify=false", "--digestfile", str(digest)),
                *("localhost/node-test:1", f"docker://{registry}/node-test:1"),
            ]
        )
        # Only the registry has it now: the script's pull must fetch it.
        _out([*buildah, "rm", container])
        _out([*buildah, "rmi", "localhost/node-test:1"])
        yield Image(f"{registry}/node-test@{digest.read_text().strip()}", buildah, str(python))
    finally:
        stop_registry(root)
        shutil.rmtree(root, ignore_errors=True)  # vfs keeps whole copies of each layer


@NEEDS_BUILDAH
def test_a_node_pulls_its_image_by_digest_and_runs_the_agent_inside_it(
    image: Image, tmp_path: Path
) -> None:
    assert importlib.util.find_spec(MARKER) is None, "only the image may have the marker"
    pem = "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----"
    spec = node_spec(image.uri, control_plane_ca=pem, head=True)
    script = AwsTraits.boot_script(spec)  # a loopback registry: no login
    lines = boot.container_lines(spec, None)
    assert lines in script and boot.UNIT_TEXT in lines
    # All of the script but the package and agent install steps, which need a Debian
    # machine and the control plane's index (tests/clusters/test_agent_package.py).
    setup = boot.package_lines(spec, None) + boot.agent_install_command(spec) + "\n"
    assert setup in script
    runnable = script.replace(setup, "")
    node_dir, agent_root = tmp_path / "node", tmp_path / "opt"
    unit_file = tmp_path / boot.NODE_UNIT
    runnable = runnable.replace(boot.UNIT_PATH, str(unit_file))
    runnable = runnable.replace(boot.NODE_DIR, str(node_dir))
    runnable = runnable.replace(boot.AGENT_ROOT, str(agent_root))
    # The agent as the host's pip would install it, the probe as its __main__.
    agent = agent_root / "agent" / "raydeck_agent"
    shutil.copytree(Path(raydeck_agent.__file__).parent, agent)
    (agent / "__main__.py").write_text(PROBE)

    engine_bin = tmp_path / "bin"
    engine_bin.mkdir()
    (engine_bin / "podman").write_text(f'#!/bin/sh\nexec {sys.executable} {ENGINE} "$@"\n')
    (engine_bin / "systemctl").write_text(SYSTEMCTL)
    for tool in engine_bin.iterdir():
        tool.chmod(0o755)
    calls, systemctl = tmp_path / "engine.log", tmp_path / "systemctl.log"
    env = {
        # No docker on this PATH: the script picks "podman", the stand-in.
        "PATH": f"{engine_bin}:/usr/bin:/bin",
        "BUILDAH_ENGINE_ARGS": json.dumps(image.buildah),
        "BUILDAH_ENGINE_LOG": str(calls),
        "SYSTEMCTL_LOG": str(systemctl),
        "UNIT_FILE": str(unit_file),
        "STARTED_EXIT": str(tmp_path / "started-exit"),
    }

    def boot_once() -> None:
        ran = subprocess.run(
            ["/bin/bash", "-c", runnable],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr

    boot_once()
    # The unit is installed, enabled at boot and started; its start ran the container.
    assert systemctl.read_text().splitlines() == [
        "daemon-reload",
        f"enable {boot.NODE_UNIT}",
        f"restart --no-block {boot.NODE_UNIT}",
    ]
    assert unit_file.read_text() == boot.UNIT_TEXT.replace(boot.NODE_DIR, str(node_dir))
    assert (node_dir / "run-container").stat().st_mode & 0o777 == 0o700  # the token's in it
    # The agent's "refused" comes out of the engine as the unit's exit code, one the unit
    # does not restart on.
    started_exit = (tmp_path / "started-exit").read_text().strip()
    assert started_exit == str(EXIT_REFUSED)
    [prevent] = [line for line in boot.UNIT_TEXT.splitlines() if "RestartPreventExit" in line]
    assert started_exit in prevent.split("=")[1].split()

    seen = json.loads((node_dir / "seen.json").read_text())  # the node's folder, mounted
    # The image's python3 (this machine's path, but the marker is only in the image).
    assert seen["python"] == str(Path(image.python).with_name("python3"))
    assert seen["marker"].endswith(f"site-packages/{MARKER}/__init__.py")
    assert seen["cwd"] == str(node_dir)
    assert seen["env"] == {
        "RAYDECK_URL": spec.control_plane_url,
        "RAYDECK_BOOTSTRAP_TOKEN": spec.bootstrap_token,
        "RAYDECK_NODE_ID": str(spec.node_id),
        "RAYDECK_CLUSTER_ID": str(spec.cluster_id),
        "RAYDECK_NODE_DIR": str(node_dir),
        "RAYDECK_CA_BUNDLE": str(node_dir / "control-plane-ca.pem"),
        "RAYDECK_PROMETHEUS": f"{agent_root}/bin/prometheus",
    }
    assert seen["ca"].strip() == spec.control_plane_ca
    assert seen["agent_writable"] is False  # mounted read-only
    # The head's Prometheus (Debian's, copied beside the agent) runs inside the image.
    assert seen["prometheus"] and seen["prometheus"][0].startswith("prometheus, version")

    calls_made = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [c[0] for c in calls_made] == ["pull", "rm", "run"]
    assert calls_made[0] == ["pull", image.uri]  # by digest
    run = calls_made[2]
    for option in (["--network", "host"], ["--init"]):
        assert any(run[i : i + len(option)] == option for i in range(len(run))), option
    assert "--detach" not in run and "--restart" not in run  # the unit restarts it
    assert run[-3:] == [image.uri, "-m", "raydeck_agent"]
    assert spec.bootstrap_token not in " ".join(run)  # it travels in the environment

    # GCP runs the same script again at every boot: it leaves the node's unit be.
    boot_once()
    assert len(calls.read_text().splitlines()) == len(calls_made)
    assert len(systemctl.read_text().splitlines()) == 3


ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(not ANALYZE, reason="needs systemd-analyze")
def test_systemd_accepts_the_node_unit(tmp_path: Path) -> None:
    start = tmp_path / "run-container"
    start.write_text("#!/bin/sh\n")
    start.chmod(0o755)
    unit = tmp_path / boot.NODE_UNIT
    unit.write_text(boot.UNIT_TEXT.replace(boot.RUN_SCRIPT, str(start)))
    checked = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # A misspelt key or value is only a warning to systemd: none is allowed here.
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), (
        checked.stdout + checked.stderr
    )


@pytest.mark.parametrize(
    ("engine", "device", "toolkit", "expected"),
    [
        ("docker", True, True, "--gpus all"),
        ("podman", True, True, "--device nvidia.com/gpu=all"),
        ("docker", False, True, ""),  # a machine without a GPU
        ("podman", True, False, ""),  # a GPU without NVIDIA's toolkit: none passed
    ],
)
def test_gpus_are_passed_through_where_the_machine_has_them(
    tmp_path: Path, engine: str, device: bool, toolkit: bool, expected: str
) -> None:
    """The GPU lines of the container lines, run by bash: /dev/nvidia0 is a file of the
    test's, nvidia-ctk a stand-in that writes the CDI spec where it is asked to."""
    nvidia = tmp_path / "nvidia0"
    if device:
        nvidia.touch()
    tools = tmp_path / "bin"
    tools.mkdir()
    if toolkit:
        (tools / "nvidia-ctk").write_text('#!/bin/sh\necho "$@" > "$CDI_ASKED"\n')
        (tools / "nvidia-ctk").chmod(0o755)
    lines = boot.GPU_FLAGS_LINES.replace("/dev/nvidia0", str(nvidia))
    lines = lines.replace("/etc/cdi/", f"{tmp_path}/cdi/")
    spec = node_spec("acme/ray@sha256:" + "0" * 64)
    assert boot.GPU_FLAGS_LINES in boot.container_lines(spec, None)
    ran = subprocess.run(
        ["/bin/bash", "-euc", f'engine=/usr/bin/{engine}\n{lines}echo "${{gpu_flags[@]}}"'],
        env={"PATH": f"{tools}:/usr/bin:/bin", "CDI_ASKED": str(tmp_path / "asked")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == expected
    asked = tmp_path / "asked"
    if expected.startswith("--device"):
        assert asked.read_text().split() == [
            "cdi",
            "generate",
            f"--output={tmp_path}/cdi/nvidia.yaml",
        ]
    else:
        assert not asked.exists()


def _tools(folder: Path, scripts: dict[str, str]) -> Path:
    folder.mkdir()
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml@sha256:" + "0" * 64
HAS_ALL = {
    "python3": "exit 0",  # with pip
    "docker": "exit 0",
    "prometheus": "exit 0",
    "docker-credential-ecr-login": "exit 0",
}


@pytest.mark.parametrize(
    ("manager", "present", "asked"),
    [
        (
            "apt-get",
            {},
            [
                "apt-get update -qq",
                "apt-get install -y -qq --no-install-recommends python3-pip prometheus "
                "podman catatonit amazon-ecr-credential-helper",
            ],
        ),
        # Amazon Linux: Docker, and no Prometheus to be had (its heads have no charts).
        ("dnf", {}, ["dnf install -y -q python3-pip docker amazon-ecr-credential-helper"]),
        ("yum", {}, ["yum install -y -q python3-pip docker amazon-ecr-credential-helper"]),
        ("dnf", HAS_ALL, []),  # a machine image that has it all installs nothing
    ],
)
def test_the_package_step_asks_the_machines_own_package_manager(
    tmp_path: Path, manager: str, present: dict[str, str], asked: list[str]
) -> None:
    """The package step of an ECR head, run by bash on a PATH of stand-ins only: the
    package manager records what it is asked; python3 without pip fails `-m pip`."""
    log = tmp_path / "asked"
    tools = _tools(
        tmp_path / "bin",
        {"python3": "exit 1", **present, manager: f'echo "{manager} $*" >> {log}'},
    )
    lines = boot.package_lines(node_spec(ECR_IMAGE, head=True), AwsTraits.registry_login(ECR_IMAGE))
    ran = subprocess.run(
        ["/bin/bash", "-euc", lines],
        env={"PATH": str(tools)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert (log.read_text().splitlines() if log.exists() else []) == asked


def test_a_machine_without_a_known_package_manager_stops_the_boot_and_says_why(
    tmp_path: Path,
) -> None:
    tools = _tools(tmp_path / "bin", {"python3": "exit 1"})
    ran = subprocess.run(
        ["/bin/bash", "-euc", boot.package_lines(node_spec(ECR_IMAGE), None)],
        env={"PATH": str(tools)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 1
    assert "no apt-get, dnf or yum to install python3-pip" in ran.stderr
