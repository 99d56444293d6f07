"""The roof. The Celery app (console/celery.py) is not loaded here: a web process loads it
when it first sends a task (console/apps.py), `celery -A console` finds it by name."""
