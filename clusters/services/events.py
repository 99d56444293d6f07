"""Recording cluster events: the timeline on the cluster page."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from ..choices import EventLevel
from ..models import Cluster, ClusterEvent, Node


def record_event(
    cluster: Cluster,
    step: str,
    message: str,
    *,
    node: Node | None = None,
    level: str = EventLevel.INFO,
    since: datetime | None = None,
) -> ClusterEvent:
    """One step of the cluster's life; `since` gives the step's duration."""
    duration = None
    if since is not None:
        duration = max(0, int((timezone.now() - since).total_seconds() * 1000))
    return ClusterEvent.objects.create(
        organization_id=cluster.organization_id,
        cluster=cluster,
        node=node,
        level=level,
        step=step,
        message=message[:1000],
        duration_ms=duration,
    )
