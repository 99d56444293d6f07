"""What a node runs first, for every kind of cloud: the boot scripts and their shared
parts (the agent's environment, installing the agent), and the agent's port names.

Callers pass a `BootSpec` of plain values; each kind picks its script in kinds.py.
"""

from __future__ import annotations

import shlex

# The agent owns the names and the order of its ports (RAYDECK_PORTS); the local cloud
# hands out one loopback port per name.
from raydeck_agent.config import PORT_NAMES as AGENT_PORT_NAMES

from .base import BootSpec

__all__ = [
    "AGENT_INSTALL_DIR",
    "AGENT_PORT_NAMES",
    "NODE_DIR",
    "RAY_INSTALL_DIR",
    "agent_exports",
    "agent_install_command",
    "control_plane_ca_lines",
    "local_boot_script",
    "sshd_install_lines",
    "vm_boot_script",
]

# Where AWS/GCP nodes keep the agent and their own folder (logs, registration state).
AGENT_INSTALL_DIR = "/opt/raydeck/agent"
RAY_INSTALL_DIR = "/opt/raydeck/ray"
NODE_DIR = "/var/lib/raydeck"
# Debian's maintainer scripts ask it whether they may start a service (101: no).
POLICY_RC_D = "/usr/sbin/policy-rc.d"


def agent_exports(boot: BootSpec) -> str:
    """`export` lines for what the agent reads first: where to register, and as whom."""
    env = {
        "RAYDECK_URL": boot.control_plane_url,
        "RAYDECK_BOOTSTRAP_TOKEN": boot.bootstrap_token,
        "RAYDECK_NODE_ID": str(boot.node_id),
        "RAYDECK_CLUSTER_ID": str(boot.cluster_id),
    }
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


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


def vm_boot_script(boot: BootSpec) -> str:
    """An AWS or GCP machine: the agent comes from the control plane's package index, into
    a folder of its own: --target leaves the image's Python untouched and is allowed where
    that Python is externally managed (PEP 668). An image without pip, sshd or Ray gets
    them here; a prepared image skips those steps."""
    ray = shlex.quote(f"ray[default]=={boot.ray_version}")
    return (
        "#!/bin/bash\nset -euo pipefail\n"
        f"{agent_exports(boot)}\n"
        f"export RAYDECK_NODE_DIR={NODE_DIR}\n"
        'mkdir -p "$RAYDECK_NODE_DIR" && cd "$RAYDECK_NODE_DIR"\n'
        f"{control_plane_ca_lines(boot)}"
        "if ! python3 -m pip --version >/dev/null 2>&1; then\n"
        "  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "python3-pip\nfi\n"
        f"{sshd_install_lines()}"
        f"{agent_install_command(boot)}\n"
        f'export PYTHONPATH="{AGENT_INSTALL_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        'if ! python3 -c "import ray" 2>/dev/null; then\n'
        f"  python3 -m pip install --quiet --disable-pip-version-check --target {RAY_INSTALL_DIR} "
        f"{ray}\n"
        f'  export PYTHONPATH="$PYTHONPATH:{RAY_INSTALL_DIR}" PATH="{RAY_INSTALL_DIR}/bin:$PATH"\n'
        "fi\n"
        "exec python3 -m raydeck_agent\n"
    )
