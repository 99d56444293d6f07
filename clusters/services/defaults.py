"""What a new user gets without writing anything: a default image per cloud kind, and
per cloud a default compute config for CPU work and (where the kind has GPU machines)
one for GPU work, made with the cloud (the cloud's provider says what they hold)."""

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
    """The built-in image for this kind of cloud (shared by every organization). Safe
    when two first creates race: the built_in_image_name constraint makes the second's
    insert wait for the first and fail, and get_or_create then reads the first's row."""
    ray = ray_version()
    built_in = traits_for(cloud.kind).built_in_image(ray_version=ray)
    image, _ = ContainerImage.objects.get_or_create(
        organization=None,
        name=built_in.name,
        deleted_at=None,
        defaults={"image_uri": built_in.image_uri, "ray_version": ray},
    )
    return image


@transaction.atomic
def default_compute_config(
    *, cloud: Cloud, organization: Organization, actor: User | None
) -> ComputeConfigVersion:
    """The organization's default config for this cloud, made on first use."""
    config, created = ComputeConfig.objects.get_or_create(
        organization=organization,
        name=f"Default for {cloud.name}"[:100],
        defaults={"created_by": actor},
    )
    if not created and config.versions.exists():
        return config.latest
    version = default_machines_preview(cloud)
    version.organization, version.config, version.created_by = organization, config, actor
    version.save()
    return version


def default_machines_preview(cloud: Cloud) -> ComputeConfigVersion:
    """The default config's machines for `cloud`, unsaved: what a cluster created without
    a config gets (the cluster form shows it before the default exists)."""
    machines = traits_for(cloud.kind).default_machines()
    head, worker = machines.head, machines.worker
    return ComputeConfigVersion(
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
    )


def gpu_config_name(cloud: Cloud) -> str:
    return f"GPU default for {cloud.name}"[:100]


def default_compute_configs(cloud: Cloud, actor: User | None) -> None:
    """The cloud's default configs, made when it is created: the CPU one (the cluster
    form's default) and, where the kind of cloud has a GPU machine, a GPU one whose
    workers scale from zero. Safe to run again."""
    default_compute_config(cloud=cloud, organization=cloud.organization, actor=actor)
    gpu = traits_for(cloud.kind).default_gpu_worker()
    if gpu is None:
        return
    config, created = ComputeConfig.objects.get_or_create(
        organization=cloud.organization,
        name=gpu_config_name(cloud),
        defaults={"created_by": actor},
    )
    if not created and config.versions.exists():
        return
    version = default_machines_preview(cloud)
    version.organization, version.config, version.created_by = cloud.organization, config, actor
    version.worker_groups = clean_worker_groups(
        [
            {
                "name": "gpu-workers",
                "min": 0,
                "max": 2,
                "spot": False,
                "instance_type": gpu.instance_type,
                "cpus": gpu.cpus,
                "memory_mb": gpu.memory_mb,
                "gpus": gpu.gpus,
            }
        ]
    )
    version.save()
