"""Celery beat that is harmless when started twice.

Production runs one `celery beat`; a second one started by mistake (two replicas of the
beat Deployment during a rollout, an operator's shell) would send every periodic task
twice. With this scheduler (CELERY_BEAT_SCHEDULER), a beat sends only while it holds a
PostgreSQL advisory lock, on a connection of its own: the other beats stand by and ask
again every few seconds. The lock goes with its session, so when the leading beat dies
(or loses the database), a standby takes over at its next look.

On SQLite (the embedded default runs beat inside its one worker) there is no lock to
take and the beat always sends.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import PersistentScheduler
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

# One key per database: the advisory lock of "the beat that sends" (any fixed bigint).
BEAT_LOCK_KEY = 0x7261796465636B  # "raydeck"
STANDBY_SECONDS = 5.0


class SingleBeatScheduler(PersistentScheduler):
    """A PersistentScheduler that sends only while it holds the beat lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._db: BaseDatabaseWrapper | None = None
        self._leading = False
        self._said: bool | None = None  # what the log last said of leading
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._holds_lock():
            return STANDBY_SECONDS
        return min(super().tick(*args, **kwargs), STANDBY_SECONDS)

    def close(self) -> None:
        self._drop_connection()
        super().close()

    def _holds_lock(self) -> bool:
        try:
            if self._db is None:
                self._db = connections.create_connection("default")
            if self._db.vendor != "postgresql":
                return True
            with self._db.cursor() as cursor:
                if self._leading:
                    cursor.execute("SELECT 1")  # the session, and so the lock, is still ours
                    return True
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [BEAT_LOCK_KEY])
                row = cursor.fetchone()
                self._leading = bool(row and row[0])
        except Exception:  # the database is away: send nothing, ask again later
            logger.warning("beat: cannot reach the database to hold the beat lock", exc_info=True)
            self._drop_connection()
            return False
        if self._said != self._leading:
            self._said = self._leading
            logger.info(
                "beat: leading (holds the beat lock)"
                if self._leading
                else "beat: standing by (another beat holds the beat lock)"
            )
        return self._leading

    def _drop_connection(self) -> None:
        if self._leading:
            logger.warning("beat: no longer leading")
        self._leading = False
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # closing a broken connection may fail too
                logger.debug("beat: closing the lock's connection failed", exc_info=True)
            self._db = None
