"""What the clusters app keeps on a cloud, as the cloud's services see it (registered in
`ClustersConfig.ready`): the count that holds a cloud's deletion back, and the rows
that go with the cloud."""

from __future__ import annotations

from typing import Any

from clouds.models import Cloud
from clouds.services import CloudDependent

from ..models import Cluster, ComputeConfig, ComputeConfigVersion
from .defaults import default_compute_configs


def live_clusters_on(cloud: Cloud) -> int:
    """Clusters on the cloud that are not terminated or failed."""
    return Cluster.objects.filter(cloud=cloud).live().count()


def cloud_rows_delete(cloud: Cloud) -> dict[str, list[Any]]:
    """Ended clusters and the config versions for the cloud go with it (a config left
    without versions too); the audit log keeps their history. Runs inside cloud_delete's
    transaction, after it found no live cluster."""
    ended = Cluster.objects.filter(cloud=cloud)
    changes: dict[str, list[Any]] = {"ended_clusters_removed": [ended.count(), 0]}
    ended.delete()
    ComputeConfigVersion.objects.filter(cloud=cloud).delete()
    ComputeConfig.objects.filter(organization=cloud.organization, versions=None).delete()
    return changes


CLUSTERS_ON_CLOUDS = CloudDependent(
    live_clusters=live_clusters_on, remove=cloud_rows_delete, created=default_compute_configs
)
