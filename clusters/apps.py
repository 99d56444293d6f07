from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "clusters"

    def ready(self) -> None:
        from clouds.services import register_dependent

        from .services.clouds import CLUSTERS_ON_CLOUDS

        register_dependent(CLUSTERS_ON_CLOUDS)
