"""Agents talk to the control plane over HTTPS and verify its certificate: against the
node's system CAs, or the CA bundle the boot script hands them (RAYDECK_CA_BUNDLE). The
control plane here is the fake one (fake_control_plane.py) behind a certificate from a
throwaway CA (tls_ca.py)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from raydeck_agent.api import ControlPlane, TransientError
from raydeck_agent.config import Config, ConfigError
from raydeck_agent.tls import NodeTLS

from .fake_control_plane import FakeControlPlane
from .tls_ca import TestCA


@pytest.fixture
def https_plane(tmp_path: Path) -> Iterator[tuple[FakeControlPlane, TestCA]]:
    ca = TestCA(tmp_path)
    server_tls = NodeTLS(tmp_path / "server")
    assert server_tls.save_certificate(ca.sign(server_tls.csr("127.0.0.1"), ["127.0.0.1"]))
    plane = FakeControlPlane(tls=server_tls.server_context())
    plane.start()
    yield plane, ca
    plane.stop()


def test_the_agent_verifies_the_control_planes_certificate(https_plane) -> None:
    plane, ca = https_plane
    node = plane.add_node(role="head", num_cpus=1, memory_mb=512, temp_dir="/unused")
    body = {"node_id": str(uuid.uuid4()), "address": "127.0.0.1", "ports": {}}
    # Signed by a CA the node's system does not trust: refused, nothing was sent.
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        ControlPlane(plane.url).register(node.token, body)
    assert plane.requests == []
    # With the bundle the cloud's boot script gives it, the same call goes through.
    answer = ControlPlane(plane.url, ca_bundle=ca.path).register(node.token, body)
    assert answer["credential"].startswith("rdn_")


def test_the_ca_bundle_setting(tmp_path: Path) -> None:
    env = {
        "RAYDECK_URL": "https://raydeck.example.com",
        "RAYDECK_BOOTSTRAP_TOKEN": "rdb_x",
        "RAYDECK_NODE_ID": str(uuid.uuid4()),
    }
    assert Config.from_env(env).ca_bundle is None
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Config.from_env({**env, "RAYDECK_CA_BUNDLE": str(bundle)}).ca_bundle == bundle
    with pytest.raises(ConfigError, match="RAYDECK_CA_BUNDLE"):
        Config.from_env({**env, "RAYDECK_CA_BUNDLE": str(tmp_path / "missing.pem")})


def test_boot_scripts_hand_the_bundle_to_the_agent(tmp_path: Path) -> None:
    """The boot script writes the control plane's CA bundle beside the node and points
    the agent (and pip, for the agent's package) at it; bash runs the lines as written."""
    from clouds.providers.base import BootSpec
    from clouds.providers.boot import control_plane_ca_lines, local_boot_script, vm_boot_script

    pem = TestCA(tmp_path).pem
    boot = BootSpec(
        node_id=uuid.uuid4(),
        cluster_id=uuid.uuid4(),
        control_plane_url="https://raydeck.example.com",
        bootstrap_token="rdb_x",
        agent_index_url="https://raydeck.example.com/agent/v1/simple/",
        agent_package="raydeck-agent",
        ray_version="2.60.0",
        control_plane_ca=pem,
    )
    for script in (local_boot_script(boot), vm_boot_script(boot)):
        assert 'export RAYDECK_CA_BUNDLE="$PWD/control-plane-ca.pem"' in script
    assert '--cert "$RAYDECK_CA_BUNDLE"' in vm_boot_script(boot)
    lines = control_plane_ca_lines(boot) + 'cat "$RAYDECK_CA_BUNDLE"\n'
    ran = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-euc", lines],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == pem.strip()
    assert control_plane_ca_lines(BootSpec(**{**boot.__dict__, "control_plane_ca": ""})) == ""
