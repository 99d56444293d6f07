"""The agent's life: register, start Ray, heartbeat, stop.

One thread does everything in a loop that wakes at least every TICK seconds. Signal
handlers only set an event, so stopping always happens in the same, ordinary code path.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, apps, state
from .activity import IdleClock, iso
from .api import (
    ApiError,
    ControlPlane,
    NotFound,
    PermanentError,
    Registration,
    TransientError,
    Unauthorized,
    clamp_interval,
    seconds_or_none,
)
from .config import EXIT_REFUSED, PORT_NAMES, Config
from .deadman import DeadMansSwitch
from .logs import (
    HEARTBEAT_LINES,
    RAY_START_LOG,
    LogBuffer,
    LogShipper,
    RayLogWatcher,
    UnsupportedLogLocation,
    node_log_sources,
    sink_for,
)
from .ray_process import READY_CHECK_EVERY, Phase, RayProcess, ray_env
from .tls import NodeTLS
from .usage import UsageSampler

if TYPE_CHECKING:
    from .gateway import Gateway
    from .orders import Orders

logger = logging.getLogger("raydeck_agent")

TICK = 0.5
SHIP_EVERY = 10.0  # seconds between copies of log files to the log location
FINAL_HEARTBEAT_TIMEOUT = 3.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
HEARTBEAT_BACKOFF_MAX = 2  # intervals between heartbeats while they fail

EXIT_OK = 0
EXIT_GAVE_UP = 3  # the control plane could not be reached in time: worth a restart

DEADMAN = "stopped itself"  # the loop's outcome when the dead-man's switch fired


class Agent:
    """Registers the node, then hands over to a Node for the rest of its life."""

    def __init__(
        self,
        config: Config,
        *,
        buffer: LogBuffer | None = None,
        client: ControlPlane | None = None,
    ) -> None:
        self.config = config
        self.client = client or ControlPlane(config.url, ca_bundle=config.ca_bundle)
        self.buffer = buffer or LogBuffer()
        self.stop_requested = threading.Event()
        # Ends the heartbeat loop's wait early: a stop request, or a report to send now.
        self.wake = threading.Event()
        self.app_ports: dict[str, int] = {}
        self.tls = NodeTLS(config.node_dir)

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested.is_set():
            logger.info("stop requested: %s", reason)
        self.stop_requested.set()
        self.wake.set()

    def run(self) -> int:
        registration = self._registration()
        if isinstance(registration, int):
            return registration
        Node(self, registration).run()
        logger.info("agent exiting")
        return EXIT_OK

    # -- registration -------------------------------------------------------------

    def _registration(self) -> Registration | int:
        """The saved registration of this boot, else a new one. The bootstrap token is
        sent until the control plane answers 200 once, and never after that."""
        saved = state.load(self.config.node_dir, self.config.node_id, self.config.bootstrap_token)
        if saved is not None:
            logger.info("resuming as %s node of cluster %s", saved.role, saved.cluster_id)
            return saved
        self.app_ports = apps.plan(self.config.python, self.config.shared_machine)
        body = self._register_body()
        deadline = time.monotonic() + self.config.register_timeout
        delay = BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self.client.register(self.config.bootstrap_token, body)
            except Unauthorized as exc:
                logger.error(
                    "registration refused (%s): the bootstrap token is invalid or was "
                    "already used; not retrying",
                    exc,
                )
                return EXIT_REFUSED
            except TransientError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.error(
                        "giving up registering after %d attempts in %.0f s: %s",
                        attempt,
                        self.config.register_timeout,
                        exc,
                    )
                    return EXIT_GAVE_UP
                wait = delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
                wait = min(max(wait, exc.retry_after or 0.0), left)  # a 503 says how long
                logger.warning("registration failed (%s); retrying in %.1f s", exc, wait)
                if self.stop_requested.wait(wait):
                    return EXIT_OK  # asked to stop before we ever started anything
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            except ApiError as exc:
                logger.error("registration refused: %s; not retrying", exc)
                return EXIT_REFUSED
            try:
                registration = Registration.from_response(
                    answer, num_cpus=self.config.cpus, memory_mb=self.config.memory_mb
                )
            except PermanentError as exc:
                logger.error("%s", exc)
                return EXIT_REFUSED
            registration.app_ports = self.app_ports
            if registration.gateway_certificate and not self.tls.save_certificate(
                registration.gateway_certificate
            ):
                logger.error("the gateway certificate is not for this node's key")
            logger.info(
                "registered as %s node of cluster %s (heartbeat every %g s)",
                registration.role,
                registration.cluster_id,
                registration.heartbeat_interval,
            )
            try:
                state.save(
                    self.config.node_dir,
                    self.config.node_id,
                    self.config.bootstrap_token,
                    registration,
                )
            except OSError as exc:
                logger.warning("could not save the registration: %s", exc)
            return registration

    def _register_body(self) -> dict[str, Any]:
        return {
            # For a head's gateway certificate: only the CSR leaves the node, not its key.
            "csr": self.tls.csr(self.config.address),
            "node_id": self.config.node_id,
            "instance_id": self.config.instance_id,
            "address": self.config.address,
            "hostname": self.config.hostname,
            "agent_version": __version__,
            "ports": {
                **{
                    name: self.config.ports[name]
                    for name in PORT_NAMES
                    if name in self.config.ports
                },
                **self.app_ports,
            },
        }


class Node:
    """A registered node: runs Ray and heartbeats until stopped or removed."""

    def __init__(self, agent: Agent, registration: Registration) -> None:
        self.config = agent.config
        self.client = agent.client
        self.buffer = agent.buffer
        self.stop_requested = agent.stop_requested
        self.wake = agent.wake
        self._report_now = threading.Event()  # a handler's report changed (report_soon)
        self.registration = registration
        self.tls = agent.tls
        self.interval = registration.heartbeat_interval
        self.head_address = registration.head_address
        self.message = "registered"
        temp_dir = Path(registration.temp_dir)
        self.ray = RayProcess(
            self.config, registration, log_path=self.config.node_dir / RAY_START_LOG
        )
        self.usage = UsageSampler()
        self._ray_logs = RayLogWatcher(self.buffer, self.config.node_dir, temp_dir)
        self._shipper = self._make_shipper(registration, temp_dir)
        self._shipped_at = 0.0
        self._sent_seq = -1  # LogBuffer.seq when a heartbeat last delivered the tail
        self._reported: tuple[str, str] | None = None  # (state, message) last heartbeated
        self._unreachable_since: float | None = None
        self._failures = 0  # heartbeats failed in a row
        self._retry_after: float | None = None  # the last failure's Retry-After
        self.gateway: Gateway | None = None
        self.apps = apps.Apps(
            self.config.python,
            registration.app_ports,
            self.config.node_dir / "work",
            self.config.node_dir,
            temp_dir,
        )
        self.idle = IdleClock()
        self.deadman = DeadMansSwitch(
            registration.deadman_seconds
            if registration.deadman_seconds is not None
            else self.config.deadman_seconds
        )
        self.stopped_reason = ""
        self.orders: Orders | None = None  # a head's order handlers, from Ray's spawn on
        self._apps_started = False  # _start_apps ran

    def run(self) -> None:
        outcome = "crashed"
        try:
            # Ray first: its start takes seconds, and nothing below is needed before it.
            # The head's gateway and order handlers (and their imports: aiohttp, PyJWT,
            # half a second of CPU) come up while it does; its apps once it is up.
            self._start_ray()
            if self.ray.is_head:
                # Imported here, not at the top: registration and Ray's start need none.
                from . import gateway
                from . import workspace as _workspace  # noqa: F401 - registers its order handler
                from .orders import HeadContext, Orders

                env = self._app_env()
                # The apps' ports as registered (the console offers what the head planned):
                # until an app listens, the gateway answers that it is not up.
                planned = dict(self.registration.app_ports)
                self.gateway = gateway.start_for(self.config, self.registration, planned, self.tls)
                self.orders = Orders(
                    HeadContext(
                        node_dir=self.config.node_dir,
                        python=self.config.python,
                        ray_env=env,
                        dashboard_url=f"http://127.0.0.1:{self.config.ports['dashboard']}",
                        apps=planned,
                        ports=dict(self.config.ports),
                        report_soon=self.report_soon,
                        serve_app=self._serve_app,
                        shared_machine=self.config.shared_machine,
                        tls=self.tls,
                    )
                )
            outcome = self._loop()
        finally:
            if self.orders is not None:
                self.orders.stop()
            if self.gateway is not None:
                self.gateway.stop()
            self.apps.stop()
            # Whatever happened (stop, removal, a bug), Ray must not outlive the agent.
            if outcome == "stop":
                self.message = "stopping Ray"
                self._heartbeat_final()
            self.ray.stop(self.config.stop_timeout)
            self._ray_logs.poll()
            if outcome == "stop":
                self.message = "Ray stopped; the agent is exiting"
                self._heartbeat_final()
            self._ship_logs(force=True)
        if outcome == DEADMAN:
            self._report_stopped_itself()

    def _start_apps(self) -> None:
        """A head's apps (JupyterLab, Prometheus, Grafana), once, after the heartbeat that
        said Ray is up: JupyterLab's start alone is two seconds of CPU, which Ray's start
        on the same cores would otherwise share. A workspace shows running only once its
        JupyterLab answers (workspace.py)."""
        self._apps_started = True
        if self.ray.is_head:
            self.apps.start(self._app_env())

    def _serve_app(self, app: str, port: int) -> None:
        if self.gateway is not None:
            self.gateway.serve(app, port)

    def _app_env(self) -> dict[str, str]:
        """The apps' environment: Ray's, plus where this cluster is, so that a notebook's
        `ray.init()` joins it."""
        env = ray_env(self.config, os.environ, auth_token=self.registration.ray_auth_token)
        env["RAY_ADDRESS"] = f"{self.config.address}:{self.config.ports['gcs']}"
        return env

    # -- the loop -----------------------------------------------------------------

    def _loop(self) -> str:
        """Runs until stopped; returns "stop" (told to stop, or a signal) or "removed"."""
        next_heartbeat = 0.0
        while not self.stop_requested.is_set():
            self._start_ray()
            self.ray.poll()
            if self.ray.phase == Phase.IDLE:
                self.message = "waiting for the head node's address"
            else:
                self.message = self.ray.message
            self._ray_logs.poll()
            # Regularly, and at once when the state or message changed (e.g. Ray is up) or
            # a handler has news (a job started), unless the control plane is unreachable.
            if (
                time.monotonic() >= next_heartbeat
                or self._reported != (self._state(), self.message)
                or (self._report_now.is_set() and not self._failures)
            ):
                self._report_now.clear()
                outcome = self._heartbeat()
                if outcome is not None:
                    return outcome
                next_heartbeat = time.monotonic() + self._next_wait()
            if self.ray.phase == Phase.READY and not self._apps_started:
                self._start_apps()
            self._ship_logs()
            tick = READY_CHECK_EVERY if self.ray.phase == Phase.STARTING else TICK
            self.wake.wait(max(0.0, min(tick, next_heartbeat - time.monotonic())))
            self.wake.clear()
        return "stop"

    def _start_ray(self) -> None:
        """Starts Ray if it is not started: a head at once, a worker once it knows the
        head's address."""
        if self.ray.phase != Phase.IDLE:
            return
        if self.ray.is_head:
            self.ray.start()
        elif self.head_address:
            self.ray.start(self.head_address)

    def report_soon(self) -> None:
        """A handler's report changed: heartbeat now rather than at the next interval
        (callable from any thread)."""
        self._report_now.set()
        self.wake.set()

    # -- heartbeats ---------------------------------------------------------------

    def _state(self) -> str:
        if self.stop_requested.is_set() or self.ray.phase == Phase.STOPPED:
            return "stopping"
        return {Phase.READY: "ready", Phase.FAILED: "failed"}.get(self.ray.phase, "starting")

    def _body(self, *, with_cluster: bool = True) -> dict[str, Any]:
        ray: dict[str, Any] = {}
        activity = None
        if with_cluster and self.ray.is_head and self.ray.phase == Phase.READY:
            ray = self.ray.dashboard.cluster_info()
            self.idle.observe(ray)
            activity = self.idle.report(ray)
        body: dict[str, Any] = {
            "state": self._state(),
            "message": self.message,
            "ray": ray,
            "usage": self.usage.sample(),
        }
        if activity is not None:
            body["activity"] = activity
        if with_cluster and self.gateway is not None:
            body["certificate_expires"] = self.tls.expires_at()  # renewed in the answer
        if with_cluster and self.orders is not None and (reports := self.orders.reports()):
            body["reports"] = reports
        if self.buffer.seq != self._sent_seq:
            body["log_tail"] = self.buffer.tail(HEARTBEAT_LINES)
        return body

    def _next_wait(self) -> float:
        """The interval; after failed heartbeats, longer (doubling, at least what a 503's
        Retry-After asks), so a struggling control plane is not hammered, but never more
        than HEARTBEAT_BACKOFF_MAX intervals: silence counts against a node from the
        moment the control plane listens again (clusters/live.py), so it must be heard
        well within its grace."""
        if not self._failures:
            return self.interval
        backoff = max(self.interval * 2 ** (self._failures - 1), self._retry_after or 0.0)
        return min(backoff, self.interval * HEARTBEAT_BACKOFF_MAX)

    def _heartbeat(self) -> str | None:
        """One heartbeat; "removed" or "stop" when the agent must stop, else None."""
        seq = self.buffer.seq  # before building the body: lines logged meanwhile go next time
        body = self._body()
        # Set on every attempt, so a change is not resent every tick while unreachable.
        self._reported = (body["state"], body["message"])
        try:
            answer = self.client.heartbeat(self.registration.credential, body)
        except (Unauthorized, NotFound) as exc:
            logger.warning("the control plane no longer knows this node (%s): stopping", exc)
            return "removed"
        except ApiError as exc:
            # The control plane may be down or restarting: Ray keeps running, we retry.
            self._failures += 1
            self._retry_after = exc.retry_after
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
                logger.warning("heartbeat failed (%s); Ray keeps running, retrying", exc)
            else:
                logger.debug("heartbeat failed again: %s", exc)
            return DEADMAN if self._deadman_due() else None
        self._failures, self._retry_after = 0, None
        if self._unreachable_since is not None:
            logger.info(
                "control plane reachable again after %.0f s",
                time.monotonic() - self._unreachable_since,
            )
            self._unreachable_since = None
        if "log_tail" in body:
            self._sent_seq = seq
        logger.debug("heartbeat %s -> %s", body["state"], answer)
        self.interval = clamp_interval(answer.get("heartbeat_interval"), self.interval)
        if self.gateway is not None:
            self.gateway.policy.update(answer.get("access"))
        if self.ray.is_head:
            self._renew_certificate(answer.get("access"))
        deadman_seconds = seconds_or_none(answer.get("deadman_seconds"))
        if deadman_seconds is not None:
            self.deadman.seconds = deadman_seconds
        head_address = answer.get("head_address")
        if isinstance(head_address, str) and head_address and head_address != self.head_address:
            if self.head_address is None:
                logger.info("head address is %s", head_address)
            else:
                logger.warning(
                    "the head address changed from %s to %s; this worker stays with the old one",
                    self.head_address,
                    head_address,
                )
            self.head_address = head_address
        if self.orders is not None and "orders" in answer:
            self.orders.handle(answer["orders"])
        action = answer.get("action", "run")
        if action == "stop":
            logger.info("the control plane asked this node to stop")
            return "stop"
        if action != "run":
            logger.warning("ignoring unknown heartbeat action %r", action)
        return None

    def _renew_certificate(self, access: Any) -> None:
        """Every server speaking TLS with the head's certificate (the gateway, the serve
        gate) serves a renewed one from its next handshake on."""
        renewed = access.get("certificate") if isinstance(access, dict) else None
        if isinstance(renewed, str):
            self.tls.renew(renewed)

    # -- the dead-man's switch ----------------------------------------------------

    def _deadman_due(self) -> bool:
        if self._unreachable_since is None:
            return False
        unreachable_for = time.monotonic() - self._unreachable_since
        if self.ray.is_head:
            idle_for = self.idle.idle_seconds() if self.ray.phase == Phase.READY else 0.0
        else:  # a worker knows only that its own Ray is gone (it lost the head)
            gone = self.ray.phase in (Phase.FAILED, Phase.STOPPED, Phase.IDLE)
            idle_for = unreachable_for if gone else 0.0
        if not self.deadman.due(unreachable_for=unreachable_for, idle_for=idle_for):
            return False
        self.stopped_reason = self.deadman.reason(unreachable_for)
        logger.warning("dead-man's switch: %s; stopping Ray", self.stopped_reason)
        return True

    def _report_stopped_itself(self) -> None:
        """Ray is stopped: say so until the control plane answers, then exit."""
        at = iso(time.time())
        self.message = f"stopped itself: {self.stopped_reason}"
        while not self.stop_requested.is_set():
            body = self._body(with_cluster=False)
            body["state"] = "stopped"
            body["stopped_itself"] = {"reason": self.stopped_reason, "at": at}
            try:
                answer = self.client.heartbeat(self.registration.credential, body)
            except (Unauthorized, NotFound):
                return
            except ApiError:
                self.stop_requested.wait(self.interval)
                continue
            logger.info("the control plane heard that this node stopped itself: %s", answer)
            return

    def _heartbeat_final(self) -> None:
        """Best effort, with a short timeout: the node is going away either way."""
        body = self._body(with_cluster=False)  # the dashboard may be going down already
        body["state"] = "stopping"
        try:
            self.client.heartbeat(
                self.registration.credential, body, timeout=FINAL_HEARTBEAT_TIMEOUT
            )
        except ApiError as exc:
            logger.info("could not send the stopping heartbeat: %s", exc)
        else:
            self._sent_seq = self.buffer.seq

    # -- log shipping -------------------------------------------------------------

    def _make_shipper(self, registration: Registration, temp_dir: Path) -> LogShipper | None:
        if not registration.log_location:
            return None
        try:
            sink = sink_for(
                registration.log_location, registration.cluster_id, registration.node_id
            )
        except UnsupportedLogLocation as exc:
            logger.warning("not copying logs to %s: %s", registration.log_location, exc)
            return None
        logger.info("copying logs to %s", registration.log_location)
        return LogShipper(sink, node_log_sources(self.config.node_dir, temp_dir))

    def _ship_logs(self, force: bool = False) -> None:
        if self._shipper is None:
            return
        now = time.monotonic()
        if force or now - self._shipped_at >= SHIP_EVERY:
            self._shipped_at = now
            self._shipper.ship()
