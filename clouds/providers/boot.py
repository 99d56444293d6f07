"""What a node runs first, for every kind of cloud: the boot scripts and their shared
parts (the agent's environment, installing the agent, the packages an AWS/GCP machine
lacks, the systemd unit that runs its container), and the agent's port names.

Callers pass a `BootSpec` of plain values; each kind picks its script in kinds.py.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass

# The agent owns the names and the order of its ports (RAYDECK_PORTS), which the local
# cloud hands out one loopback port per name, and its exit codes (the node's unit's).
from raydeck_agent.config import PERMANENT_EXITS
from raydeck_agent.config import PORT_NAMES as AGENT_PORT_NAMES

from .base import BootSpec

__all__ = [
    "AGENT_INSTALL_DIR",
    "AGENT_PORT_NAMES",
    "AGENT_ROOT",
    "ARTIFACT_REGISTRY_LOGIN",
    "BOOT_DONE",
    "CONTAINER_NAME",
    "ECR_LOGIN",
    "ENGINE",
    "GPU_FLAGS_LINES",
    "NODE_DIR",
    "NODE_UNIT",
    "PIP",
    "PROMETHEUS",
    "RAY_INSTALL_DIR",
    "RUN_SCRIPT",
    "TOOLS_DIR",
    "UNIT_PATH",
    "UNIT_TEXT",
    "Package",
    "RegistryLogin",
    "agent_exports",
    "agent_install_command",
    "container_command",
    "container_lines",
    "control_plane_ca_lines",
    "image_reference",
    "local_boot_script",
    "package_lines",
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
class Package:
    """Something a node's machine may lack: `present` is the shell test that says it has
    it; `apt` and `rpm` name what gives it with apt-get (Debian, Ubuntu) and with dnf or
    yum (Amazon Linux), space-separated, "" where that family has nothing for it."""

    present: str
    apt: str
    rpm: str


PIP = Package("python3 -m pip --version", "python3-pip", "python3-pip")
# The head's agent scrapes Ray with it (apps.py). Amazon Linux packages none: there the
# head runs without, and the cluster has no charts.
PROMETHEUS = Package("command -v prometheus", "prometheus", "")
# Debian's Podman needs no daemon (catatonit is its --init); Amazon Linux packages only
# Docker (its daemon is started by `container_lines`).
ENGINE = Package("command -v docker || command -v podman", "podman catatonit", "docker")


@dataclass(frozen=True)
class RegistryLogin:
    """How a node logs its container engine in to its image's registry with the node's own
    identity (kinds.py picks one per kind): shell lines run with "$engine" and "$registry"
    set, and the package they need where the machine image lacks it."""

    lines: str
    package: Package | None = None


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
    package=Package(
        "command -v docker-credential-ecr-login",
        "amazon-ecr-credential-helper",
        "amazon-ecr-credential-helper",
    ),
)
# Artifact Registry: the VM's service account's access token from the metadata server.
_METADATA_ACCESS = (
    "curl -fsS -H 'Metadata-Flavor: Google' "
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
)
ARTIFACT_REGISTRY_LOGIN = RegistryLogin(
    lines="user=oauth2accesstoken\n" + _password_from(_METADATA_ACCESS, "access_token"),
    package=Package("command -v curl", "curl", "curl"),
)

CONTAINER_NAME = "raydeck-node"
TOOLS_DIR = f"{AGENT_ROOT}/bin"  # what the host adds for the container (Prometheus)
# The systemd unit that runs the container at every boot (EC2 runs user data once) and
# restarts it after a failure; RUN_SCRIPT, its start, makes the container anew each time.
NODE_UNIT = "raydeck-node.service"
UNIT_PATH = f"/etc/systemd/system/{NODE_UNIT}"
RUN_SCRIPT = f"{NODE_DIR}/run-container"
BOOT_DONE = f"{NODE_DIR}/boot-done"  # the digest of the boot script that set the node up


def container_command(boot: BootSpec) -> str:
    """The one command line that runs a node's image (the unit's start script embeds it as
    it is): the agent, installed on the host and mounted read-only, runs under the image's
    Python, so Ray and everything the agent starts (jobs, JupyterLab, Prometheus) run
    inside the image. In the foreground: the agent's exit code is the unit's, which
    decides on a restart. "$engine" is docker or podman; "${gpu_flags[@]}" what passes
    the machine's GPUs.
    """
    env = [*_agent_env(boot), "RAYDECK_NODE_DIR"]
    if boot.control_plane_ca:
        env.append("RAYDECK_CA_BUNDLE")
    args = [
        "run",
        "--name",
        CONTAINER_NAME,
        # Ray's ports are the machine's (the cloud's firewall names them); its object
        # store wants the machine's /dev/shm, not the engine's 64 MB default.
        "--network",
        "host",
        "--ipc",
        "host",
        # PID 1 reaps what Ray's workers leave behind, and passes the agent SIGTERM.
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
        # Values come from the start script's environment, so no secret is on the line.
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
    # An empty array is "unbound" to Amazon Linux 2's bash 4.2 under set -u: hence the +.
    gpus = '${gpu_flags[@]+"${gpu_flags[@]}"}'
    return f'"$engine" {shlex.join(args)} {gpus} {shlex.join(tail)}\n'


def package_lines(boot: BootSpec, login: RegistryLogin | None) -> str:
    """The one step that installs what the machine image lacks, with apt-get (Debian,
    Ubuntu) or dnf/yum (Amazon Linux)."""
    wanted = [PIP]
    if boot.head:
        wanted.append(PROMETHEUS)
    if boot.image_uri:
        wanted.append(ENGINE)
    if login and login.package:
        wanted.append(login.package)
    lines = (
        "packages=()\n"
        'manager="$(command -v apt-get || command -v dnf || command -v yum || true)"\n'
        # want APT RPM: what this machine's family of packages calls a missing thing.
        'want() { if [ "${manager##*/}" = apt-get ]; then packages+=($1); '
        "else packages+=($2); fi; }\n"
    )
    lines += "".join(
        f"{{ {p.present}; }} >/dev/null 2>&1 || want {shlex.quote(p.apt)} {shlex.quote(p.rpm)}\n"
        for p in wanted
    )
    lines += (
        'if [ "${#packages[@]}" -gt 0 ]; then\n'
        '  case "${manager##*/}" in\n'
        "  apt-get)\n"
        "    apt-get update -qq\n"
        "    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        '"${packages[@]}" ;;\n'
        '  "") echo "no apt-get, dnf or yum to install ${packages[*]}" >&2; exit 1 ;;\n'
        '  *) "$manager" install -y -q "${packages[@]}" ;;\n'
        "  esac\n"
        "fi\n"
    )
    if boot.head:  # the package starts its own on the agent's port; the agent runs one
        lines += "systemctl disable --now prometheus >/dev/null 2>&1 || true\n"
    return lines


def _node_lines(boot: BootSpec) -> str:
    """The agent's environment and the node's folder (the working directory after)."""
    return (
        f"{agent_exports(boot)}\n"
        f"export RAYDECK_NODE_DIR={NODE_DIR}\n"
        'mkdir -p "$RAYDECK_NODE_DIR" && cd "$RAYDECK_NODE_DIR"\n'
        f"{control_plane_ca_lines(boot)}"
    )


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
_ENGINE_LINE = 'engine="$(command -v docker || command -v podman)"\n'


# raydeck-node.service: started at every boot, restarted after a failure a restart can
# fix, never after one of the agent's permanent exits (a refused registration).
UNIT_TEXT = (
    "[Unit]\n"
    "Description=Raydeck node: the agent in the cluster's image\n"
    "Wants=network-online.target\n"
    "After=network-online.target docker.service\n"
    "StartLimitIntervalSec=0\n"  # never give up on a control plane that is away
    "\n[Service]\n"
    f"ExecStart={RUN_SCRIPT}\n"
    "Restart=on-failure\n"
    "RestartSec=10\n"
    f"RestartPreventExitStatus={' '.join(map(str, PERMANENT_EXITS))}\n"
    # SIGTERM to the engine alone, which passes it on to the agent (Ray stops first).
    "KillMode=mixed\n"
    "TimeoutStopSec=90\n"
    "\n[Install]\n"
    "WantedBy=multi-user.target\n"
)


def _run_script(boot: BootSpec) -> str:
    """The unit's start: the node's container made anew from the pulled image (a stopped
    one left by the last start or boot goes first), the agent's exit code as its own."""
    return (
        "#!/bin/bash\nset -euo pipefail\n"
        f"{_node_lines(boot)}"
        f"{_ENGINE_LINE}{GPU_FLAGS_LINES}"
        f'"$engine" rm --force {CONTAINER_NAME} >/dev/null 2>&1 || true\n'
        f"exec {container_command(boot)}"
    )


def container_lines(boot: BootSpec, login: RegistryLogin | None) -> str:
    """Pull the image by the reference the cluster recorded (a build's is by digest), then
    hand the node's container to its systemd unit: the unit's start script (the GPUs,
    `container_command`) and the unit, enabled and (re)started."""
    image = shlex.quote(image_reference(boot.image_uri))
    lines = (
        _ENGINE_LINE
        # Amazon Linux's package leaves Docker's daemon stopped.
        + 'if [ "${engine##*/}" = docker ] && ! "$engine" info >/dev/null 2>&1; then\n'
        "  systemctl enable --now docker.service\nfi\n"
        f"mkdir -p {TOOLS_DIR}\n"
        "if command -v prometheus >/dev/null 2>&1; then\n"
        f'  cp -f "$(command -v prometheus)" {TOOLS_DIR}/\nfi\n'
    )
    if login:
        lines += f"registry={shlex.quote(registry_host(boot.image_uri))}\n{login.lines}"
    return lines + (
        f'for attempt in 1 2 3 4 5; do "$engine" pull {image} && break; '
        '[ "$attempt" = 5 ] && exit 1; sleep $((attempt * 10)); done\n'
        # It holds the agent's environment (the bootstrap token): root's alone.
        f"touch {RUN_SCRIPT} && chmod 700 {RUN_SCRIPT}\n"
        f"cat > {RUN_SCRIPT} <<'RAYDECK_RUN_EOF'\n{_run_script(boot)}RAYDECK_RUN_EOF\n"
        f"cat > {UNIT_PATH} <<'RAYDECK_UNIT_EOF'\n{UNIT_TEXT}RAYDECK_UNIT_EOF\n"
        "systemctl daemon-reload\n"
        f"systemctl enable {NODE_UNIT}\n"
        # Queued, not waited for: the cloud's own boot units (cloud-init's, GCE's startup
        # scripts) are still running, and the unit may be ordered after them.
        f"systemctl restart --no-block {NODE_UNIT}\n"
    )


def sshd_install_lines() -> str:
    """Lines that install OpenSSH's server where the image has none: a workspace's head
    runs its own sshd on loopback (raydeck_agent/sshd.py). No system sshd may come with
    it: policy-rc.d forbids starting services while the package installs (removed after
    unless the image had one), and on a systemd machine its units are disabled and
    stopped in case they started anyway. A machine with an sshd is left as it is, and
    one without apt-get too (the agent then says sshd is missing, and the page shows it)."""
    return (
        "if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] "
        "&& command -v apt-get >/dev/null 2>&1; then\n"
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
    and runs the agent inside it under its systemd unit (`container_lines`; `login` for
    its registry); without, the agent runs in the machine's Python, with Ray installed
    there where it lacks it."""
    head = f"#!/bin/bash\nset -euo pipefail\n{_node_lines(boot)}"
    setup = (
        f"{package_lines(boot, login if boot.image_uri else None)}{agent_install_command(boot)}\n"
    )
    if not boot.image_uri:
        # A head whose agent runs on the machine runs a workspace's sshd there; in a
        # container image the image must bring its own.
        sshd = sshd_install_lines() if boot.head else ""
        return head + setup + sshd + _host_python_lines(boot)
    setup += container_lines(boot, login)
    done = hashlib.sha256((head + setup).encode()).hexdigest()
    return (
        head
        # GCP runs this script at every boot. Once it set the node up, the unit brings the
        # container back; a rerun of the same script leaves both be.
        + f'if [ -f {UNIT_PATH} ] && [ "$(cat {BOOT_DONE} 2>/dev/null)" = {done} ]; then '
        "exit 0; fi\n" + setup + f"echo {done} > {BOOT_DONE}\n"
    )
