"""What a new user gets without writing anything: a default image and compute config
per cloud kind."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from django.db import transaction

from accounts.models import Organization, User
from clouds.choices import CloudKind
from clouds.models import Cloud

from ..models import ComputeConfig, ComputeConfigVersion, ContainerImage
from .configs import clean_worker_groups

# Per kind: head instance type and one worker group that scales from zero.
DEFAULT_MACHINES: dict[str, dict] = {
    CloudKind.LOCAL: {"head_instance_type": "local", "head_cpus": 1, "head_memory_mb": 2048,
                      "worker": {"instance_type": "local", "cpus": 1, "memory_mb": 1024}},
    CloudKind.AWS: {"head_instance_type": "m5.large", "head_cpus": 2, "head_memory_mb": 8192,
                    "worker": {"instance_type": "m5.xlarge", "cpus": 4, "memory_mb": 16384}},
    CloudKind.GCP: {"head_instance_type": "n2-standard-2", "head_cpus": 2,
                    "head_memory_mb": 8192,
                    "worker": {"instance_type": "n2-standard-4", "cpus": 4,
                               "memory_mb": 16384}},
}  # fmt: skip


def ray_version() -> str:
    try:
        return version("ray")
    except PackageNotFoundError:
        return "2.60.0"


@transaction.atomic
def default_image(cloud: Cloud) -> ContainerImage:
    """The built-in image for this kind of cloud (shared by every organization)."""
    ray = ray_version()
    if cloud.kind == CloudKind.LOCAL:
        name, uri = f"Ray {ray} (Raydeck's Python)", ""
    else:
        name, uri = f"Ray {ray}", f"rayproject/ray:{ray}-py311"
    image, _ = ContainerImage.objects.get_or_create(
        organization=None, name=name, defaults={"image_uri": uri, "ray_version": ray}
    )
    return image


@transaction.atomic
def default_compute_config(
    *, cloud: Cloud, organization: Organization, actor: User | None
) -> ComputeConfigVersion:
    """The organization's default config for this cloud, made on first use."""
    machines = DEFAULT_MACHINES[cloud.kind]
    config, created = ComputeConfig.objects.get_or_create(
        organization=organization,
        name=f"Default for {cloud.name}"[:100],
        defaults={"created_by": actor},
    )
    if not created and config.versions.exists():
        return config.latest
    worker = machines["worker"]
    return ComputeConfigVersion.objects.create(
        organization=organization,
        config=config,
        number=1,
        cloud=cloud,
        region=cloud.region,
        zone=(cloud.zones or [""])[0],
        head_instance_type=machines["head_instance_type"],
        head_cpus=machines["head_cpus"],
        head_memory_mb=machines["head_memory_mb"],
        worker_groups=clean_worker_groups(
            [{"name": "workers", "min": 0, "max": 2, "spot": False, **worker}]
        ),
        idle_timeout_minutes=60,
        created_by=actor,
    )
