from django.apps import AppConfig


class WorkloadsConfig(AppConfig):
    name = "workloads"

    def ready(self) -> None:
        from clouds.services import register_dependent

        from .clouds import WORKLOADS_ON_CLOUDS

        register_dependent(WORKLOADS_ON_CLOUDS)
