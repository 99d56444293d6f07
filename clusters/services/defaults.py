"""What a new user gets without writing anything: a default image and compute config
per cloud kind (the cloud's provider says what they hold)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from django.db import transaction

from accounts.models import Organization, User
from clouds.models import Cloud
from clouds.providers.registry import traits_for

from ..models import ComputeConfig, ComputeConfigVersion, ContainerImage
from .configs import clean_worker_groups


def ray_version() -> str:
    try:
        return version("ray")
    except PackageNotFoundError:
        return "2.60.0"


@transaction.atomic
def default_image(cloud: Cloud) -> ContainerImage:
    """The built-in image for this kind of cloud (shared by every organization)."""
    ray = ray_version()
    built_in = traits_for(cloud.kind).built_in_image(ray_version=ray)
    image, _ = ContainerImage.objects.get_or_create(
        organization=None,
        name=built_in.name,
        defaults={"image_uri": built_in.image_uri, "ray_version": ray},
    )
    return image


@transaction.atomic
def default_compute_config(
    *, cloud: Cloud, organization: Organization, actor: User | None
) -> ComputeConfigVersion:
    """The organization's default config for this cloud, made on first use."""
    machines = traits_for(cloud.kind).default_machines()
    config, created = ComputeConfig.objects.get_or_create(
        organization=organization,
        name=f"Default for {cloud.name}"[:100],
        defaults={"created_by": actor},
    )
    if not created and config.versions.exists():
        return config.latest
    head, worker = machines.head, machines.worker
    return ComputeConfigVersion.objects.create(
        organization=organization,
        config=config,
        number=1,
        cloud=cloud,
        region=cloud.region,
        zone=(cloud.zones or [""])[0],
        head_instance_type=head.instance_type,
        head_cpus=head.cpus,
        head_memory_mb=head.memory_mb,
        worker_groups=clean_worker_groups(
            [
                {
                    "name": "workers",
                    "min": 0,
                    "max": 2,
                    "spot": False,
                    "instance_type": worker.instance_type,
                    "cpus": worker.cpus,
                    "memory_mb": worker.memory_mb,
                }
            ]
        ),
        idle_timeout_minutes=60,
        created_by=actor,
    )
