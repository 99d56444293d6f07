"""The AWS and GCP boot script installs OpenSSH's server where the image has none (a
workspace's head runs its own sshd on loopback) and leaves no system sshd running.

The script's lines run for real under bash; only `apt-get` and `systemctl` are small
stand-in programs on PATH that record how they were called (and apt-get runs the
policy-rc.d a real package's maintainer script would ask), and the script's fixed
paths (policy-rc.d, /usr/sbin/sshd) point into tmp_path."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from clouds.choices import CloudKind
from clouds.providers import boot
from clouds.providers.registry import traits_for
from clusters.services import reconcile
from tests.factories import CloudFactory, ClusterFactory, NodeFactory

FAKE_APT = """#!/bin/sh
echo "apt-get $*" >> "$CALLS"
case "$*" in *install*)
  # What a package's maintainer script does before it starts its service.
  if [ -x "$POLICY" ]; then "$POLICY" ssh start; echo "policy said $?" >> "$CALLS"
  else echo "no policy: ssh started on port 22" >> "$CALLS"; fi;;
esac
"""
FAKE_SYSTEMCTL = '#!/bin/sh\necho "systemctl $*" >> "$CALLS"\n'


def run_lines(tmp_path: Path, *, sshd: bool, policy_before: bool) -> tuple[list[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apt-get", FAKE_APT), ("systemctl", FAKE_SYSTEMCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    policy, installed_sshd = tmp_path / "policy-rc.d", tmp_path / "sbin-sshd"
    if sshd:
        installed_sshd.write_text("#!/bin/sh\n")
        installed_sshd.chmod(0o755)
    if policy_before:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    lines = (
        boot.sshd_install_lines()
        .replace(boot.POLICY_RC_D, str(policy))
        .replace("/usr/sbin/sshd", str(installed_sshd))
    )
    calls = tmp_path / "calls"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "POLICY": str(policy)}
    done = subprocess.run(
        ["/bin/bash", "-c", f"set -euo pipefail\n{lines}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return (calls.read_text().splitlines() if calls.exists() else []), policy


@pytest.mark.django_db
def test_a_head_whose_agent_runs_on_the_machine_gets_the_lines_before_it_starts() -> None:
    """On AWS and GCP; not a worker (no workspace there), not a node running a container
    image (its sshd must come with the image), not the local cloud (the machine's own)."""
    for kind in (CloudKind.AWS, CloudKind.GCP, CloudKind.LOCAL):
        cluster = ClusterFactory(cloud=CloudFactory(kind=kind, region="us-east-1"))
        spec = reconcile.boot_spec(cluster, NodeFactory(cluster=cluster))
        script = traits_for(kind).boot_script(replace(spec, head=True, image_uri=""))
        if kind == CloudKind.LOCAL:
            assert "openssh-server" not in script
            continue
        assert boot.sshd_install_lines() in script
        assert script.index("openssh-server") < script.index("-m raydeck_agent")
        container = replace(spec, head=True, image_uri="registry.example.com/ray:2")
        for other in (replace(spec, head=False, image_uri=""), container):
            assert "openssh-server" not in traits_for(kind).boot_script(other)


@pytest.mark.parametrize("policy_before", [False, True])
def test_an_image_without_sshd_gets_it_and_no_system_sshd_starts(
    tmp_path: Path, policy_before: bool
) -> None:
    calls, policy = run_lines(tmp_path, sshd=False, policy_before=policy_before)
    assert "apt-get install -y -qq openssh-server" in calls
    assert "policy said 101" in calls  # the package was told not to start its sshd
    assert not any("port 22" in call for call in calls)
    assert "systemctl disable --now ssh.service ssh.socket" in calls
    # Ours goes again; an image's own policy stays.
    assert policy.exists() == policy_before


def test_an_image_with_sshd_is_left_alone(tmp_path: Path) -> None:
    calls, policy = run_lines(tmp_path, sshd=True, policy_before=False)
    assert calls == [] and not policy.exists()
