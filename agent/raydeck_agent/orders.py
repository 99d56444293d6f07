"""The head's side of the control plane's orders (see clusters/head_orders.py on the
server): each handler owns one topic, gets that topic's orders from every heartbeat
answer, and puts its report in the next heartbeat body.

Orders are the topic's whole desired state, so `handle` must be idempotent: the same
orders arrive every few seconds until the report shows them done. Handlers run on the
heartbeat thread; anything slow (submitting to Ray, saving files) runs on a thread of
the handler's own so heartbeats keep their rhythm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .serve import serve_handler
from .tls import NodeTLS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadContext:
    """What a handler may use on the head.

    Ray's ports require the cluster's token (RAY_AUTH_MODE=token). `ray_env` carries it
    as RAY_AUTH_TOKEN (with RAY_AUTH_MODE=token), which Ray's own clients (ray.init, the
    job SDK) read when started with that environment; a handler calling the dashboard's
    HTTP API at `dashboard_url` itself sends
    `Authorization: Bearer <ray_env["RAY_AUTH_TOKEN"]>`. Never log it.
    """

    node_dir: Path  # this node's folder (work/, logs)
    python: str  # the Python that runs Ray and the apps
    ray_env: dict[str, str]  # environment for talking to this cluster's Ray
    dashboard_url: str  # Ray's dashboard (job API) on loopback
    apps: dict[str, int] = field(default_factory=dict)  # app -> loopback port (apps.py)
    ports: dict[str, int] = field(default_factory=dict)  # this node's ports by PORT_NAMES
    # Asks for a heartbeat now, when a report changed (from any thread); a handler that
    # calls it on every change makes the control plane hear of it within a tick.
    report_soon: Callable[[], None] = field(default=lambda: None)
    # Puts an app a handler started (the workspace's sshd: "ssh", its loopback port)
    # behind the access gateway.
    serve_app: Callable[[str, int], None] = field(default=lambda app, port: None)
    shared_machine: bool = False  # several nodes on this machine: pick free ports
    # The head's key and certificate (tls.py), for a handler's own TLS server (the serve
    # gate); renewals reach every server started with it.
    tls: NodeTLS | None = None


class OrderHandler(Protocol):
    topic: str

    def handle(self, orders: Any) -> None:
        """Act on the topic's current orders (idempotent; called every heartbeat)."""

    def report(self) -> Any | None:
        """What to tell the control plane in the next heartbeat, or None."""

    def stop(self) -> None:
        """The node is stopping: finish or abandon work (called once)."""


def _jobs(context: HeadContext) -> OrderHandler | None:
    from .jobs import JobsHandler  # imported when a head starts: it imports this module

    return JobsHandler(context)


# Each workload adds its factory here; a factory returns None when it has nothing to do.
HANDLER_FACTORIES: list[Callable[[HeadContext], OrderHandler | None]] = [
    serve_handler,  # Services: the Serve config to deploy (serve.py)
    _jobs,  # Jobs: submissions and stops for Ray's job API (jobs.py)
]


class Orders:
    """The head's handlers, keyed by topic."""

    def __init__(self, context: HeadContext) -> None:
        self.handlers: dict[str, OrderHandler] = {}
        for factory in HANDLER_FACTORIES:
            handler = factory(context)
            if handler is not None:
                self.handlers[handler.topic] = handler

    def handle(self, orders: object) -> None:
        if not isinstance(orders, dict):
            return
        for topic, payload in orders.items():
            handler = self.handlers.get(topic)
            if handler is None:
                logger.debug("no handler for orders on %r", topic)
                continue
            try:
                handler.handle(payload)
            except Exception:  # a handler's bug must not stop heartbeats
                logger.exception("handling %s orders failed", topic)

    def reports(self) -> dict[str, Any]:
        reports: dict[str, Any] = {}
        for topic, handler in self.handlers.items():
            try:
                report = handler.report()
            except Exception:
                logger.exception("building the %s report failed", topic)
                continue
            if report is not None:
                reports[topic] = report
        return reports

    def stop(self) -> None:
        for topic, handler in self.handlers.items():
            try:
                handler.stop()
            except Exception:
                logger.exception("stopping the %s handler failed", topic)
