"""Recording service events: the timeline on the service page."""

from __future__ import annotations

from ..choices import EventLevel
from ..models import Service, ServiceEvent, ServiceVersion


def record_event(
    service: Service,
    step: str,
    message: str,
    *,
    version: ServiceVersion | None = None,
    level: str = EventLevel.INFO,
) -> ServiceEvent:
    return ServiceEvent.objects.create(
        organization_id=service.organization_id,
        service=service,
        version=version,
        level=level,
        step=step[:48],
        message=message[:1000],
    )
