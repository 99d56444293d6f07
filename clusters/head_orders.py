"""Orders for a cluster's head, carried in its heartbeat (DESIGN.md: the control plane
never opens a connection into the data plane).

Apps above clusters (workloads' jobs, workspaces and services) register a participant at
start-up. Each owns one topic: on a head's heartbeat it may add `orders[topic]` to the
answer (what the head should do now: jobs to submit or stop, JupyterLab to start,
weights to set), and it receives `reports[topic]` from the head's next heartbeat body
(what happened). Orders are the whole desired state for the topic, not a delta, so a lost
answer or a restarted agent converges on the next heartbeat.

A participant also says whether the head should heartbeat promptly (every
RAYDECK_PROMPT_HEARTBEAT_SECONDS rather than RAYDECK_HEARTBEAT_SECONDS): while it has
work in motion that a user waits on, so orders reach the head and its reports come back
within about a second (the head also heartbeats at once when a report changes).

Heads heartbeat every few seconds, on the lean path: a participant answers from the
shared cache or one indexed query, and a cluster with nothing of its kind costs it no
query at all (keep a cheap "this cluster has work of mine" check first).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class HeadParticipant(Protocol):
    topic: str

    def orders(self, cluster_id: int) -> Any | None:
        """The head's orders under this topic (JSON-able), or None for none."""

    def receive(self, cluster_id: int, report: Any) -> None:
        """Take the head's report under this topic; it is untrusted agent input."""

    def prompt(self, cluster_id: int, orders: Any | None) -> bool:
        """Whether the head should heartbeat promptly, given this topic's orders just
        collected for it (cheap: called on every head heartbeat)."""


_participants: dict[str, HeadParticipant] = {}


def register(participant: HeadParticipant) -> None:
    """Called from an AppConfig.ready; registering a topic twice replaces it (reloads)."""
    _participants[participant.topic] = participant


def collect_orders(cluster_id: int) -> dict[str, Any]:
    orders: dict[str, Any] = {}
    for topic, participant in _participants.items():
        payload = participant.orders(cluster_id)
        if payload is not None:
            orders[topic] = payload
    return orders


def heartbeat_seconds(cluster_id: int, orders: dict[str, Any]) -> float:
    """How soon the head should heartbeat again (`orders`: what collect_orders gave)."""
    for topic, participant in _participants.items():
        if participant.prompt(cluster_id, orders.get(topic)):
            return float(settings.RAYDECK_PROMPT_HEARTBEAT_SECONDS)
    return float(settings.RAYDECK_HEARTBEAT_SECONDS)


def deliver_reports(cluster_id: int, reports: object) -> None:
    """Hand each topic's report to its participant; unknown topics are ignored (an agent
    newer than the control plane may report more)."""
    if not isinstance(reports, dict):
        return
    for topic, report in reports.items():
        participant = _participants.get(topic)
        if participant is not None:
            participant.receive(cluster_id, report)
