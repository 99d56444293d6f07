from typing import Any

from django.apps import AppConfig
from django.core import checks


class ClustersConfig(AppConfig):
    name = "clusters"

    def ready(self) -> None:
        from clouds.services import register_dependent

        from .services.clouds import CLUSTERS_ON_CLOUDS

        register_dependent(CLUSTERS_ON_CLOUDS)
        checks.register(check_node_lost_margin)


def check_node_lost_margin(**kwargs: Any) -> list[checks.CheckMessage]:
    """A grace too short for an unnoticed gap in listening would take healthy nodes for
    lost after a brief web tier outage (clusters/live.py)."""
    from . import live

    if live.listening_margin() >= live.LOST_MARGIN_SECONDS:
        return []
    return [
        checks.Error(
            f"RAYDECK_NODE_LOST_AFTER_SECONDS is too short: it must be at least "
            f"{live.LOST_MARGIN_SECONDS:g} s more than RAYDECK_HEARTBEAT_SECONDS plus a "
            "third of itself, so that a brief web tier outage never makes a node lost.",
            id="raydeck.E001",
        )
    ]
