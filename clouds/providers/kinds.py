"""What each kind of cloud is, as opposed to talking to one: its default machines, the
images it runs, the image every organization gets for it, how its nodes boot and which
machine image they boot.

Each driver inherits its kind's traits (`AwsProvider(AwsTraits)`, ...), so a driver
answers all of it; `registry.traits_for(kind)` answers the questions that need no
credentials without importing a cloud SDK (pages ask them). Callers never branch on the
kind: what differs between clouds is a method here.
"""

from __future__ import annotations

import re
from typing import ClassVar

from .base import (
    BootSpec,
    BuiltInImage,
    DefaultMachines,
    ImageSpec,
    MachineSize,
    PermanentCloudError,
)
from .boot import (
    ARTIFACT_REGISTRY_LOGIN,
    ECR_LOGIN,
    RegistryLogin,
    local_boot_script,
    registry_host,
    vm_boot_script,
)
from .builds import BASE_RAY, BuildTraits, ContainerBuildTraits, LocalBuildTraits

# The registries whose images a kind's nodes pull with their own identity.
ECR_HOST = re.compile(r"\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
ARTIFACT_REGISTRY_HOST = re.compile(r"[a-z0-9-]+-docker\.pkg\.dev|([a-z]+\.)?gcr\.io")


class CloudTraits(BuildTraits):
    """The part of a cloud provider that is the same for every cloud of its kind."""

    # Nodes run a container image (AWS, GCP), or a Python environment on this machine.
    runs_containers: ClassVar[bool] = True
    # A service's query token is checked by each version's head (its serve orders carry
    # the tokens' hashes) where the load balancer cannot hash one (an ALB, a URL map);
    # the local cloud's HAProxy checks it itself.
    heads_check_service_tokens: ClassVar[bool] = True
    # How long after a weight change the load balancer may still send a version new
    # requests: a drained version's cluster is kept at least this long (rollout.py).
    router_settle_seconds: ClassVar[int] = 0

    @classmethod
    def default_machines(cls) -> DefaultMachines:
        raise NotImplementedError

    @classmethod
    def default_gpu_worker(cls) -> MachineSize | None:
        """The worker of the default GPU compute config, or None where this kind of
        cloud has no GPU machine to offer (the local cloud: this machine as it is)."""
        return None

    @classmethod
    def built_in_image(cls, *, ray_version: str) -> BuiltInImage:
        """The image every organization may choose on this kind of cloud."""
        return BuiltInImage(
            name=f"Ray {ray_version}", image_uri=f"rayproject/ray:{ray_version}-py311"
        )

    @classmethod
    def workspace_image_spec(cls) -> dict[str, object] | None:
        """The image spec of the image a workspace left without one gets on this kind
        (built once per organization and cloud: clusters/services/builds.py), or None
        where the built-in image already has what a workspace's head runs. Ray's image
        has neither: JupyterLab is found as jupyter-lab beside the node's Python, and
        the head's sshd is OpenSSH's (raydeck_agent/apps.py, sshd.py)."""
        return {
            "base": BASE_RAY,
            "requirements": ["jupyterlab"],
            "debian_packages": ["openssh-server"],
        }

    @classmethod
    def sshd_advice(cls) -> str:
        """What gives a workspace's head OpenSSH's server where it had none: a container
        image brings its own (the boot script installs it only for a head running the
        machine's Python, clouds/providers/boot.py)."""
        return (
            "Choose an image that has OpenSSH's server (sshd), or build one: an image "
            "spec with debian_packages: [openssh-server]."
        )

    @classmethod
    def accepts_image(cls, image: ImageSpec) -> bool:
        """Whether nodes of this kind can run `image` (a container image or a Python
        environment)."""
        return bool(image.image_uri) == cls.runs_containers

    @classmethod
    def image_refusal(cls, *, image: ImageSpec, cloud_name: str) -> str | None:
        """Why a cloud of this kind (named `cloud_name`) cannot run `image`, said so the
        user knows what to choose instead; None when it can."""
        if cls.accepts_image(image):
            return None
        if cls.runs_containers:
            return (
                f"{image.name} is a local Python environment; {cloud_name} needs a "
                "container image. Choose one, or leave it blank for the default."
            )
        return (
            f"{cloud_name} runs nodes as local processes, not containers. "
            "Choose a Python environment, or leave it blank for the default."
        )

    @classmethod
    def registry_login(cls, image_uri: str) -> RegistryLogin | None:
        """How this kind's nodes log in to the registry of `image_uri` with their own
        identity; None where they pull without one (a public registry)."""
        return None

    @classmethod
    def boot_script(cls, boot: BootSpec) -> str:
        return vm_boot_script(boot, cls.registry_login(boot.image_uri))

    @classmethod
    def own_machine_image(cls, image: ImageSpec, *, region: str) -> str:
        """What `image` names for this kind of cloud in `region` ("" when nothing)."""
        return ""

    @classmethod
    def no_machine_image_advice(cls, image: ImageSpec, *, region: str) -> tuple[str, str]:
        """What is missing when neither the image nor the default gives a machine image,
        and what to set."""
        return (
            f"The image {image.name} names no machine image",
            "Ask your Raydeck administrator to set a default machine image.",
        )

    def default_image(self) -> str:
        raise NotImplementedError  # each driver asks its cloud

    def ensure_firewall(self) -> None:
        """Nothing to do where nodes need no firewall of ours (the local cloud)."""

    def remove_firewall(self) -> None:
        """Nothing to do where nodes need no firewall of ours (the local cloud)."""

    def remove_builds(self) -> None:
        """Nothing to do where builds leave nothing per cloud (the local cloud's go with
        its folder)."""

    def machine_image(self, *, image: ImageSpec, region: str) -> str:
        chosen = self.own_machine_image(image, region=region)
        if chosen:
            return chosen
        try:
            return self.default_image()
        except PermanentCloudError as exc:
            missing, todo = self.no_machine_image_advice(image, region=region)
            raise PermanentCloudError(
                f"{missing} and the default could not be used: {exc.user_message} {todo}",
                kind=exc.kind,
                detail=exc.detail,
            ) from exc


class LocalTraits(LocalBuildTraits, CloudTraits):
    """Nodes are process groups on this machine, running a Python environment."""

    runs_containers = False
    heads_check_service_tokens = False

    @classmethod
    def default_machines(cls) -> DefaultMachines:
        return DefaultMachines(
            head=MachineSize(instance_type="local", cpus=1, memory_mb=2048),
            worker=MachineSize(instance_type="local", cpus=1, memory_mb=1024),
        )

    @classmethod
    def built_in_image(cls, *, ray_version: str) -> BuiltInImage:
        return BuiltInImage(name=f"Ray {ray_version} (Raydeck's Python)", image_uri="")

    @classmethod
    def workspace_image_spec(cls) -> dict[str, object] | None:
        # Raydeck's own Python has JupyterLab, and heads use this machine's sshd.
        return None

    @classmethod
    def sshd_advice(cls) -> str:
        # Nodes are processes of this machine: they run the machine's own sshd.
        return (
            "The local cloud's heads run this machine's sshd: install OpenSSH's server "
            "here (apt-get install openssh-server)."
        )

    @classmethod
    def boot_script(cls, boot: BootSpec) -> str:
        return local_boot_script(boot)

    @classmethod
    def own_machine_image(cls, image: ImageSpec, *, region: str) -> str:
        return image.python_executable


class AwsTraits(ContainerBuildTraits, CloudTraits):
    """EC2 instances booting an AMI; images built with CodeBuild into ECR."""

    @classmethod
    def default_machines(cls) -> DefaultMachines:
        return DefaultMachines(
            head=MachineSize(instance_type="m5.large", cpus=2, memory_mb=8192),
            worker=MachineSize(instance_type="m5.xlarge", cpus=4, memory_mb=16384),
        )

    @classmethod
    def default_gpu_worker(cls) -> MachineSize | None:
        return MachineSize(instance_type="g5.xlarge", cpus=4, memory_mb=16384, gpus=1)

    @classmethod
    def registry_login(cls, image_uri: str) -> RegistryLogin | None:
        return ECR_LOGIN if ECR_HOST.fullmatch(registry_host(image_uri)) else None

    @classmethod
    def own_machine_image(cls, image: ImageSpec, *, region: str) -> str:
        amis = image.aws_amis if isinstance(image.aws_amis, dict) else {}
        return str(amis.get(region) or "")

    @classmethod
    def no_machine_image_advice(cls, image: ImageSpec, *, region: str) -> tuple[str, str]:
        return (
            f"The image {image.name} has no AMI for {region}",
            f"Add an AMI id for {region} to the image {image.name}, or ask your Raydeck "
            f"administrator to set RAYDECK_AWS_AMI_PARAMETER to an SSM parameter that "
            f"exists in {region}.",
        )


class GcpTraits(ContainerBuildTraits, CloudTraits):
    """Compute Engine instances booting a GCE image; images built with Cloud Build into
    Artifact Registry."""

    # A URL map change reaches Google's front ends one by one, over minutes (the API
    # answers "done" long before): a front end that has not heard yet still sends the
    # old version requests, so its head must still be there to answer them.
    router_settle_seconds = 300

    @classmethod
    def default_machines(cls) -> DefaultMachines:
        return DefaultMachines(
            head=MachineSize(instance_type="n2-standard-2", cpus=2, memory_mb=8192),
            worker=MachineSize(instance_type="n2-standard-4", cpus=4, memory_mb=16384),
        )

    @classmethod
    def default_gpu_worker(cls) -> MachineSize | None:
        # G2 machine types come with their NVIDIA L4 attached: no accelerator to add.
        return MachineSize(instance_type="g2-standard-4", cpus=4, memory_mb=16384, gpus=1)

    @classmethod
    def registry_login(cls, image_uri: str) -> RegistryLogin | None:
        found = ARTIFACT_REGISTRY_HOST.fullmatch(registry_host(image_uri))
        return ARTIFACT_REGISTRY_LOGIN if found else None

    @classmethod
    def own_machine_image(cls, image: ImageSpec, *, region: str) -> str:
        return image.gcp_image

    @classmethod
    def no_machine_image_advice(cls, image: ImageSpec, *, region: str) -> tuple[str, str]:
        return (
            f"The image {image.name} names no GCP boot image",
            f"Set a GCP boot image (an image or image family URL) on the image "
            f"{image.name}, or ask your Raydeck administrator to set RAYDECK_GCP_IMAGE.",
        )
