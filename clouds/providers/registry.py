"""Build the driver for a Cloud row. The only bridge between models and drivers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from ..choices import CloudKind
from .base import CloudProvider
from .kinds import AwsTraits, CloudTraits, GcpTraits, LocalTraits

if TYPE_CHECKING:
    from ..models import Cloud


def local_root(cloud: Cloud) -> Path:
    return Path(cloud.local_root or settings.RAYDECK_LOCAL_CLOUD_ROOT) / str(cloud.uuid)


def log_location_for(cloud: Cloud) -> str:
    """Where the cloud's nodes keep their logs: the cloud's log location, or on the local
    cloud a `logs` folder beside its nodes' folders (which go when the nodes do)."""
    if cloud.log_location or cloud.kind != CloudKind.LOCAL:
        return cloud.log_location
    return str(local_root(cloud) / "logs")


TRAITS: dict[str, type[CloudTraits]] = {
    CloudKind.AWS: AwsTraits,
    CloudKind.GCP: GcpTraits,
    CloudKind.LOCAL: LocalTraits,
}


def traits_for(kind: str) -> type[CloudTraits]:
    """What a kind of cloud is (default machines, images it runs, how nodes boot), without
    building a driver or importing its SDK."""
    try:
        return TRAITS[kind]
    except KeyError:
        raise ValueError(f"Unknown cloud kind {kind!r}") from None


def provider_for(cloud: Cloud) -> CloudProvider:
    if cloud.kind == CloudKind.AWS:
        from .aws import AwsProvider

        return AwsProvider(
            cloud_id=cloud.uuid,
            region=cloud.region,
            role_arn=cloud.aws_role_arn,
            external_id=cloud.aws_external_id,
            log_location=cloud.log_location,
            ami_parameter=settings.RAYDECK_AWS_AMI_PARAMETER,
            instance_profile=cloud.node_identity,
        )
    if cloud.kind == CloudKind.GCP:
        from .gcp import GcpProvider, federated_credentials

        return GcpProvider(
            cloud_id=cloud.uuid,
            project_id=cloud.gcp_project_id,
            zones=list(cloud.zones) or [f"{cloud.region}-a"],
            log_location=cloud.log_location,
            image=settings.RAYDECK_GCP_IMAGE,
            node_service_account=cloud.node_identity,
            credentials=federated_credentials(
                workload_identity_provider=cloud.gcp_workload_identity_provider,
                service_account=cloud.gcp_service_account,
            ),
        )
    if cloud.kind == CloudKind.LOCAL:
        from .local import LocalProvider

        return LocalProvider(
            cloud_id=cloud.uuid, root=local_root(cloud), log_dir=log_location_for(cloud)
        )
    raise ValueError(f"Unknown cloud kind {cloud.kind!r}")
