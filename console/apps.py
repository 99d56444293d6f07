from importlib import import_module

from django.apps import AppConfig

from kit.tasks import load_app_with


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        # A process that has not loaded console/celery.py (a web process: Celery and its
        # app cost its start) loads it with the first task it uses (kit/tasks.py), so
        # tasks bind to it, not to Celery's own fallback app with its default broker.
        load_app_with(lambda: import_module("console.celery"))
