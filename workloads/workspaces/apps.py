from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workloads.workspaces"
    label = "workspaces"
    verbose_name = "Workspaces"

    def ready(self) -> None:
        from clusters import head_orders
        from clusters.services import idle

        from .head import WorkspaceParticipant
        from .services import stop_for_idle

        head_orders.register(WorkspaceParticipant())
        idle.register_idle_stopper(stop_for_idle)
