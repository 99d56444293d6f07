"""What each kind of cloud is (clouds/providers/kinds.py) and how its nodes boot
(clouds/providers/boot.py): plain values in, no cloud called, no clusters app needed."""

from __future__ import annotations

import ast
import sys
import uuid
from pathlib import Path

import pytest
from raydeck_agent.config import PORT_NAMES

from clouds.choices import CloudKind
from clouds.providers import boot
from clouds.providers.base import BootSpec, ImageSpec, PermanentCloudError, PermanentErrorKind
from clouds.providers.kinds import AwsTraits
from clouds.providers.local import PORT_COUNT, LocalProvider
from clouds.providers.registry import traits_for

SPEC = BootSpec(
    node_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
    cluster_id=uuid.UUID("00000000-0000-4000-8000-000000000002"),
    control_plane_url="https://raydeck.example.com",
    bootstrap_token="rdb_secret",
    agent_index_url="https://raydeck.example.com/agent/v1/simple/",
    agent_package="raydeck-agent",
    ray_version="2.40.0",
)
CONTAINER = ImageSpec(name="acme ray", ray_version="2.40.0", image_uri="acme/ray:2.40")
PYTHON_ENV = ImageSpec(
    name="team python", ray_version="2.40.0", python_executable="/opt/py/bin/python3"
)


def test_every_kind_has_default_machines_and_a_built_in_image() -> None:
    for kind in CloudKind.values:
        traits = traits_for(kind)
        machines = traits.default_machines()
        assert machines.head.instance_type and machines.worker.instance_type
        assert machines.head.cpus > 0 and machines.worker.memory_mb > 0
        image = traits.built_in_image(ray_version="2.40.0")
        assert image.name.startswith("Ray 2.40.0")
        assert bool(image.image_uri) == traits.runs_containers
    assert traits_for(CloudKind.AWS).default_machines().head.instance_type == "m5.large"
    with pytest.raises(ValueError, match="Unknown cloud kind"):
        traits_for("azure")


def test_each_kind_says_which_images_it_runs_and_why_not() -> None:
    local, aws, gcp = (traits_for(k) for k in (CloudKind.LOCAL, CloudKind.AWS, CloudKind.GCP))
    assert local.accepts_image(PYTHON_ENV) and not local.accepts_image(CONTAINER)
    assert aws.accepts_image(CONTAINER) and not aws.accepts_image(PYTHON_ENV)
    assert gcp.accepts_image(CONTAINER) and not gcp.accepts_image(PYTHON_ENV)
    assert local.image_refusal(image=PYTHON_ENV, cloud_name="laptop") is None
    refusal = local.image_refusal(image=CONTAINER, cloud_name="laptop")
    assert refusal and "laptop runs nodes as local processes, not containers" in refusal
    refusal = aws.image_refusal(image=PYTHON_ENV, cloud_name="prod")
    assert refusal and "team python is a local Python environment; prod needs" in refusal


def test_the_local_boot_script_starts_the_agent_beside_the_nodes_python() -> None:
    script = traits_for(CloudKind.LOCAL).boot_script(SPEC)
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")
    assert "export RAYDECK_BOOTSTRAP_TOKEN=rdb_secret\n" in script
    assert f"export RAYDECK_NODE_ID={SPEC.node_id}\n" in script
    assert "export RAYDECK_NODE_ADDRESS=127.0.0.1\n" in script
    assert "pip install" not in script
    assert script.endswith('exec "${RAYDECK_PYTHON:-python3}" -m raydeck_agent\n')


def test_aws_and_gcp_boot_scripts_install_the_agent_and_ray_where_missing() -> None:
    for kind in (CloudKind.AWS, CloudKind.GCP):
        script = traits_for(kind).boot_script(SPEC)
        assert f"\n{boot.agent_install_command(SPEC)}\n" in script
        assert f"--target {boot.AGENT_INSTALL_DIR} " in script
        assert f"--index-url {SPEC.agent_index_url} raydeck-agent" in script
        assert "export RAYDECK_URL=https://raydeck.example.com\n" in script
        assert f"export RAYDECK_NODE_DIR={boot.NODE_DIR}\n" in script
        assert "'ray[default]==2.40.0'" in script
        assert script.endswith("exec python3 -m raydeck_agent\n")
        # No image: no container engine, no pull, no Prometheus (a worker).
        for words in ("$engine", "podman", " pull ", "prometheus"):
            assert words not in script


def test_the_local_driver_hands_out_one_port_per_agent_port_name() -> None:
    assert boot.AGENT_PORT_NAMES == PORT_NAMES
    assert len(PORT_NAMES) == PORT_COUNT


class _Aws(AwsTraits):
    """AWS's traits with a default image that is missing, as an SSM parameter can be."""

    def default_image(self) -> str:
        raise PermanentCloudError("No parameter.", kind=PermanentErrorKind.INVALID_IMAGE)


def test_machine_image_is_the_images_own_else_the_default_else_says_what_to_set(
    tmp_path: Path,
) -> None:
    local = LocalProvider(cloud_id=uuid.uuid4(), root=tmp_path)
    assert local.machine_image(image=PYTHON_ENV, region="") == "/opt/py/bin/python3"
    assert local.machine_image(image=ImageSpec(name="x"), region="") == sys.executable

    own = ImageSpec(name="acme", image_uri="acme/ray", aws_amis={"eu-west-1": "ami-0123"})
    assert _Aws().machine_image(image=own, region="eu-west-1") == "ami-0123"
    with pytest.raises(PermanentCloudError) as caught:
        _Aws().machine_image(image=own, region="us-east-1")
    message = caught.value.user_message
    assert caught.value.kind == PermanentErrorKind.INVALID_IMAGE
    assert message.startswith("The image acme has no AMI for us-east-1 and the default")
    assert "No parameter." in message and "RAYDECK_AWS_AMI_PARAMETER" in message


def test_clouds_imports_nothing_of_the_apps_above_it() -> None:
    """clusters builds on clouds; the reverse goes through plain values and callbacks."""
    root = Path(__file__).resolve().parents[2] / "clouds"
    above = ("clusters", "workloads")
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in above]
    assert found == []


def test_each_kind_says_how_a_workspace_head_gets_an_sshd_and_the_advice_can_be_followed() -> None:
    """The workspace page's advice for a head without sshd: a container kind's image
    must bring it, and the spec it names builds (apt-get installs openssh-server); the
    local cloud's heads use this machine's."""
    from clouds.providers.builds import containerfile_for
    from clusters.image_specs import normalize_spec

    assert "apt-get install openssh-server" in traits_for(CloudKind.LOCAL).sshd_advice()
    spec = normalize_spec({"base": "ray", "debian_packages": ["openssh-server"]})
    for kind in (CloudKind.AWS, CloudKind.GCP):
        traits = traits_for(kind)
        assert "debian_packages: [openssh-server]" in traits.sshd_advice()
        assert traits.build_spec_errors(spec, cloud_name="c") == {}
    built = containerfile_for(spec, ray_base="rayproject/ray:2.40.0-py311", spec_hash="h")
    assert "apt-get install -y --no-install-recommends openssh-server" in built
