"""What a node runs first, for every kind of cloud: the boot scripts and their shared
parts (the agent's environment, installing the agent), and the agent's port names.

Callers pass a `BootSpec` of plain values; each kind picks its script in kinds.py.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# The agent owns the names and the order of its ports (RAYDECK_PORTS); the local cloud
# hands out one loopback port per name.
from raydeck_agent.config import PORT_NAMES as AGENT_PORT_NAMES

from .base import BootSpec

__all__ = [
    "AGENT_INSTALL_DIR",
    "AGENT_PORT_NAMES",
    "AGENT_ROOT",
    "ARTIFACT_REGISTRY_LOGIN",
    "CONTAINER_NAME",
    "ECR_LOGIN",
    "GPU_FLAGS_LINES",
    "NODE_DIR",
    "RAY_INSTALL_DIR",
    "TOOLS_DIR",
    "RegistryLogin",
    "agent_exports",
    "agent_install_command",
    "container_command",
    "container_lines",
    "control_plane_ca_lines",
    "image_reference",
    "local_boot_script",
    "registry_host",
    "sshd_install_lines",
    "vm_boot_script",
]

# Where AWS/GCP nodes keep the agent and their own folder (logs, registration state).
AGENT_ROOT = "/opt/raydeck"  # mounted read-only into a node's container
AGENT_INSTALL_DIR = f"{AGENT_ROOT}/agent"
RAY_INSTALL_DIR = f"{AGENT_ROOT}/ray"
NODE_DIR = "/var/lib/raydeck"
# Debian's maintainer scripts ask it whether they may start a service (101: no).
POLICY_RC_D = "/usr/sbin/policy-rc.d"


def _agent_env(boot: BootSpec) -> dict[str, str]:
    """What the agent reads first: where to register, and as whom."""
    return {
        "RAYDECK_URL": boot.control_plane_url,
        "RAYDECK_BOOTSTRAP_TOKEN": boot.bootstrap_token,
        "RAYDECK_NODE_ID": str(boot.node_id),
        "RAYDECK_CLUSTER_ID": str(boot.cluster_id),
    }


def agent_exports(boot: BootSpec) -> str:
    """`export` lines for what the agent reads first: where to register, and as whom."""
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in _agent_env(boot).items())


def control_plane_ca_lines(boot: BootSpec) -> str:
    """Lines that keep the control plane's CA bundle (if any) in the node's folder and
    point the agent at it (RAYDECK_CA_BUNDLE); run in that folder."""
    if not boot.control_plane_ca:
        return ""
    pem = boot.control_plane_ca.strip()
    return (
        "cat > control-plane-ca.pem <<'RAYDECK_CA_EOF'\n"
        f"{pem}\nRAYDECK_CA_EOF\n"
        'export RAYDECK_CA_BUNDLE="$PWD/control-plane-ca.pem"\n'
    )


def agent_install_command(boot: BootSpec) -> str:
    """pip installs the agent (standard library only) from the control plane's index into
    a folder of its own."""
    cert = '--cert "$RAYDECK_CA_BUNDLE" ' if boot.control_plane_ca else ""
    return (
        "python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade "
        f"--target {AGENT_INSTALL_DIR} {cert}--index-url {shlex.quote(boot.agent_index_url)} "
        f"{boot.agent_package}"
    )


def local_boot_script(boot: BootSpec) -> str:
    """A local node: the agent is already beside the node's Python (the local driver puts
    that Python first on PATH and in RAYDECK_PYTHON)."""
    return (
        "#!/bin/bash\nset -euo pipefail\n"
        f"{agent_exports(boot)}\nexport RAYDECK_NODE_ADDRESS=127.0.0.1\n"
        f"{control_plane_ca_lines(boot)}"
        'exec "${RAYDECK_PYTHON:-python3}" -m raydeck_agent\n'
    )


@dataclass(frozen=True)
class RegistryLogin:
    """How a node logs its container engine in to its image's registry with the node's own
    identity (kinds.py picks one per kind): shell lines run with "$engine" and "$registry"
    set, and the package that gives `command` where the machine image lacks it."""

    lines: str
    command: str = ""
    package: str = ""


def registry_host(image_uri: str) -> str:
    """The registry part of an image reference ("" for Docker Hub's short names)."""
    first, slash, _ = image_uri.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return ""


def image_reference(image_uri: str) -> str:
    """The reference a node pulls and runs: Docker Hub's short names spelled out, since
    Podman refuses to guess a registry."""
    return image_uri if registry_host(image_uri) else f"docker.io/{image_uri}"


def _password_from(command: str, key: str) -> str:
    # The host's python3 reads the token's JSON (the agent's install needs it anyway).
    read = f'import json, sys; print(json.load(sys.stdin)["{key}"])'
    return (
        f"{command} | python3 -c {shlex.quote(read)} \\\n"
        f'  | "$engine" login --username "$user" --password-stdin "$registry" >/dev/null\n'
    )


# ECR: the credential helper's token for the instance role (ecr:GetAuthorizationToken).
ECR_LOGIN = RegistryLogin(
    lines="user=AWS\n"
    + _password_from('echo "$registry" | docker-credential-ecr-login get', "Secret"),
    command="docker-credential-ecr-login",
    package="amazon-ecr-credential-helper",
)
# Artifact Registry: the VM's service account's access token from the metadata server.
_METADATA_ACCESS = (
    "curl -fsS -H 'Metadata-Flavor: Google' "
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
)
ARTIFACT_REGISTRY_LOGIN = RegistryLogin(
    lines="user=oauth2accesstoken\n" + _password_from(_METADATA_ACCESS, "access_token"),
    command="curl",
    package="curl",
)

CONTAINER_NAME = "raydeck-node"
TOOLS_DIR = f"{AGENT_ROOT}/bin"  # what the host adds for the container (Prometheus)


def container_command(boot: BootSpec) -> str:
    """The one command line that runs a node's image (the boot script embeds it as it is):
    the agent, installed on the host and mounted read-only, runs under the image's Python,
    so Ray and everything the agent starts (jobs, JupyterLab, Prometheus) run inside the
    image. "$engine" is docker or podman; "${gpu_flags[@]}" what passes the machine's GPUs.
    """
    env = [*_agent_env(boot), "RAYDECK_NODE_DIR"]
    if boot.control_plane_ca:
        env.append("RAYDECK_CA_BUNDLE")
    args = [
        "run",
        "--detach",
        "--name",
        CONTAINER_NAME,
        # A crashed agent (non-zero exit) comes back; one told to stop (0) stays stopped.
        "--restart",
        "on-failure",
        # Ray's ports are the machine's (the cloud's firewall names them); its object
        # store wants the machine's /dev/shm, not the engine's 64 MB default.
        "--network",
        "host",
        "--ipc",
        "host",
        # PID 1 reaps what Ray's workers leave behind.
        "--init",
        # The node's folder (its credential, certificate and key) stays root's.
        "--user",
        "0:0",
        "--volume",
        f"{NODE_DIR}:{NODE_DIR}",
        "--volume",
        f"{AGENT_ROOT}:{AGENT_ROOT}:ro",
        "--workdir",
        NODE_DIR,
        # Values come from the boot script's environment, so no secret is on the line.
        *(arg for name in env for arg in ("--env", name)),
        "--env",
        f"PYTHONPATH={AGENT_INSTALL_DIR}",
        "--env",
        f"RAYDECK_PROMETHEUS={TOOLS_DIR}/prometheus",
        "--pull",
        "never",
        "--entrypoint",
        "python3",
    ]
    tail = [image_reference(boot.image_uri), "-m", "raydeck_agent"]
    return f'"$engine" {shlex.join(args)} "${{gpu_flags[@]}}" {shlex.join(tail)}\n'


def _packages(boot: BootSpec, login: RegistryLogin | None) -> str:
    """The one step that installs what the machine image lacks (Debian or Ubuntu)."""
    wanted = ["python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)"]
    if boot.head:  # Debian's Prometheus: the head's agent scrapes Ray with it (apps.py)
        wanted.append("command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)")
    if boot.image_uri:
        wanted.append(
            "command -v docker >/dev/null 2>&1 || command -v podman >/dev/null 2>&1 "
            "|| packages+=(podman catatonit)"
        )
    if login and login.command:
        wanted.append(f"command -v {login.command} >/dev/null 2>&1 || packages+=({login.package})")
    lines = "packages=()\n" + "".join(f"{line}\n" for line in wanted)
    lines += (
        'if [ "${#packages[@]}" -gt 0 ]; then\n'
        "  apt-get update -qq\n"
        "  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        '"${packages[@]}"\n'
        "fi\n"
    )
    if boot.head:  # the package starts its own on the agent's port; the agent runs one
        lines += "systemctl disable --now prometheus >/dev/null 2>&1 || true\n"
    return lines


def _host_python_lines(boot: BootSpec) -> str:
    """The agent and Ray in the machine's own Python (an image that has Ray skips it)."""
    ray = shlex.quote(f"ray[default]=={boot.ray_version}")
    return (
        f'export PYTHONPATH="{AGENT_INSTALL_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        'if ! python3 -c "import ray" 2>/dev/null; then\n'
        f"  python3 -m pip install --quiet --disable-pip-version-check --target {RAY_INSTALL_DIR} "
        f"{ray}\n"
        f'  export PYTHONPATH="$PYTHONPATH:{RAY_INSTALL_DIR}" PATH="{RAY_INSTALL_DIR}/bin:$PATH"\n'
        "fi\n"
        "exec python3 -m raydeck_agent\n"
    )


# GPUs where the machine has them and NVIDIA's container toolkit (GPU machine images ship
# it): Docker's --gpus, Podman's CDI device. Sets "${gpu_flags[@]}" for "$engine".
GPU_FLAGS_LINES = (
    "gpu_flags=()\n"
    "if [ -e /dev/nvidia0 ] && command -v nvidia-ctk >/dev/null 2>&1; then\n"
    '  if [ "${engine##*/}" = docker ]; then gpu_flags=(--gpus all)\n'
    "  else nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml >/dev/null "
    "&& gpu_flags=(--device nvidia.com/gpu=all); fi\n"
    "fi\n"
)


def container_lines(boot: BootSpec, login: RegistryLogin | None) -> str:
    """Pull the image by the reference the cluster recorded (a build's is by digest) and
    run it: the engine, the GPUs, the registry login, then `container_command`."""
    image = shlex.quote(image_reference(boot.image_uri))
    lines = (
        'engine="$(command -v docker || command -v podman)"\n'
        f"mkdir -p {TOOLS_DIR}\n"
        "if command -v prometheus >/dev/null 2>&1; then\n"
        f'  cp -f "$(command -v prometheus)" {TOOLS_DIR}/\nfi\n'
        f"{GPU_FLAGS_LINES}"
    )
    if login:
        lines += f"registry={shlex.quote(registry_host(boot.image_uri))}\n{login.lines}"
    lines += (
        f'for attempt in 1 2 3 4 5; do "$engine" pull {image} && break; '
        '[ "$attempt" = 5 ] && exit 1; sleep $((attempt * 10)); done\n'
        # A rerun of this script (GCP runs it at every boot) replaces the container.
        f'"$engine" rm --force {CONTAINER_NAME} >/dev/null 2>&1 || true\n'
    )
    return lines + container_command(boot)


def sshd_install_lines() -> str:
    """Lines that install OpenSSH's server where the image has none: a workspace's head
    runs its own sshd on loopback (raydeck_agent/sshd.py). No system sshd may come with
    it: policy-rc.d forbids starting services while the package installs (removed after
    unless the image had one), and on a systemd machine its units are disabled and
    stopped in case they started anyway. An image with an sshd is left as it is."""
    return (
        "if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then\n"
        "  own_policy=\n"
        f"  if [ ! -e {POLICY_RC_D} ]; then\n"
        f"    printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod +x {POLICY_RC_D}\n"
        "    own_policy=1\n"
        "  fi\n"
        "  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "openssh-server\n"
        f'  if [ -n "$own_policy" ]; then rm -f {POLICY_RC_D}; fi\n'
        "  if command -v systemctl >/dev/null 2>&1; then\n"
        "    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true\n"
        "  fi\n"
        "fi\n"
    )


def vm_boot_script(boot: BootSpec, login: RegistryLogin | None = None) -> str:
    """An AWS or GCP machine: the agent comes from the control plane's package index, into
    a folder of its own: --target leaves the image's Python untouched and is allowed where
    that Python is externally managed (PEP 668). With a container image the node pulls it
    and runs the agent inside it (`container_lines`; `login` for its registry); without,
    the agent runs in the machine's Python, with Ray installed there where it lacks it."""
    run = container_lines(boot, login) if boot.image_uri else _host_python_lines(boot)
    return (
        "#!/bin/bash\nset -euo pipefail\n"
        f"{agent_exports(boot)}\n"
        f"export RAYDECK_NODE_DIR={NODE_DIR}\n"
        'mkdir -p "$RAYDECK_NODE_DIR" && cd "$RAYDECK_NODE_DIR"\n'
        f"{control_plane_ca_lines(boot)}"
        f"{_packages(boot, login if boot.image_uri else None)}"
        # A head whose agent runs on the machine runs a workspace's sshd there; in a
        # container image the image must bring its own.
        f"{sshd_install_lines() if boot.head and not boot.image_uri else ''}"
        f"{agent_install_command(boot)}\n"
        f"{run}"
    )
