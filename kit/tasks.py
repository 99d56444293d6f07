"""Celery tasks declared without loading Celery: `@shared_task(...)` takes Celery's
options and gives the task Celery's `shared_task` would, under the same name
(`module.function`), made when Celery first loads in the process.

Celery's modules and kombu's are a fifth of a web process's start (benchmarks/README.md,
"Cold start to /healthz"), and most web processes send no task for minutes. So:

- a worker or beat loads the Celery app (console/celery.py) first; it calls
  `app_loaded()`, which makes every task declared so far, and each tasks module it
  imports afterwards makes its tasks as it declares them: the app registers them all,
  with their options, as Celery's own `shared_task` did;
- a web process declares its tasks when it imports their modules, and makes them (the
  Celery app first, by the loader console/apps.py names) when one is first used:
  `.delay`, `.apply_async`, `.s`, `.apply`, a direct call, anything of a task but its
  `.name`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_declared: list[LazyTask] = []
_app_loaded = False
# What loads the Celery app when a task is first used (console/apps.py sets it).
_load_app: Callable[[], object] | None = None
# Two requests' threads using a task first make it once (RLock: app_loaded() within).
_making = threading.RLock()


class LazyTask:
    """A task as its module declares it; everything else is Celery's task's."""

    def __init__(self, run: Callable[..., Any], options: dict[str, Any]) -> None:
        self._run = run
        self._options = options
        self._task: Any = None
        functools.update_wrapper(self, run)
        self.name = f"{run.__module__}.{run.__name__}"  # Celery's own default name
        _declared.append(self)
        if _app_loaded:
            self.celery_task()

    def celery_task(self) -> Any:
        """Celery's task, made (and the Celery app loaded) on first use."""
        if self._task is None:
            with _making:
                if not _app_loaded and _load_app is not None:
                    _load_app()  # calls app_loaded(), which makes this task too
                if self._task is None:
                    from celery import shared_task

                    self._task = shared_task(name=self.name, **self._options)(self._run)
        return self._task

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.celery_task(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.celery_task()(*args, **kwargs)


def shared_task(**options: Any) -> Callable[[Callable[..., Any]], LazyTask]:
    """Celery's `@shared_task(**options)`, loading Celery only when the task is used."""
    return functools.partial(LazyTask, options=options)


def load_app_with(loader: Callable[[], object]) -> None:
    """Name what loads the Celery app, for the first task a process uses."""
    global _load_app
    _load_app = loader


def app_loaded() -> None:
    """The Celery app is loaded: make every task declared, and each one declared later
    as it is (a worker imports its tasks' modules after its app)."""
    global _app_loaded
    _app_loaded = True
    for task in _declared:
        task.celery_task()
