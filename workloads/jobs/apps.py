from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "workloads.jobs"
    label = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from clusters import head_orders
        from clusters import views as cluster_views
        from clusters.services import idle

        from .head import JobsParticipant
        from .selectors import jobs_keeping_busy

        head_orders.register(JobsParticipant())
        from .views import queue_section

        idle.register_in_use_reasons(jobs_keeping_busy)
        cluster_views.register_cluster_section(queue_section)
