"""A sweep visits every row that may need work. One row's failure (a bug its data trips,
a cloud that errs for one account) must not keep the sweep from the rows after it: the
failure is logged with the row's id and the next pass tries that row again. A dependency
that is down fails every row alike, so it ends the pass at once and reaches the task's
retry and the logs as it is."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from .outages import dependency_down

logger = logging.getLogger(__name__)


def each(ids: Iterable[int], work: Callable[[int], object], *, what: str) -> list[int]:
    """Run `work(id)` for every id, each apart from the others; returns the ids that
    failed."""
    failed = []
    for pk in ids:
        try:
            work(pk)
        except Exception as exc:
            if dependency_down(exc):
                raise
            logger.exception("%s %s failed; the next sweep tries it again", what, pk)
            failed.append(pk)
    return failed
