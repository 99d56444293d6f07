from django.apps import AppConfig


class ServeConfig(AppConfig):
    name = "workloads.serve"
    label = "serve"
    verbose_name = "Services"

    def ready(self) -> None:
        from clusters import head_orders

        from .head import ServeParticipant

        head_orders.register(ServeParticipant())
