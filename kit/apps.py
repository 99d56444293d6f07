from django.apps import AppConfig


class KitConfig(AppConfig):
    """The shared kit: registered only so its template tags load."""

    name = "kit"
    verbose_name = "Raydeck kit"
