"""The dead-man's switch: a cluster that lost its control plane must not run forever.

The head stops Ray on itself when the control plane has been unreachable for `seconds`
and the cluster has been idle (activity.IdleClock: the same signals the control plane
uses) for at least as long. Workers lose their head and their Ray exits; a worker whose
Ray is gone while the control plane is unreachable for as long stops too. Afterwards the
agent keeps reporting what it did until the control plane answers, which then records
it and terminates the nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_SECONDS = 3600.0


@dataclass
class DeadMansSwitch:
    seconds: float = DEFAULT_SECONDS  # 0 turns it off

    def due(self, *, unreachable_for: float | None, idle_for: float) -> bool:
        if self.seconds <= 0 or unreachable_for is None:
            return False
        return unreachable_for >= self.seconds and idle_for >= self.seconds

    def reason(self, unreachable_for: float) -> str:
        return f"control plane unreachable for {duration(unreachable_for)} while idle"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{math.floor(seconds)} s"
    return f"{math.floor(seconds / 60)} min"
