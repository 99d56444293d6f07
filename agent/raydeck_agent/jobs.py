"""The head's side of the "jobs" topic (workloads/jobs/head.py on the server).

Orders (the whole desired state, every heartbeat):
    {"submit": [{"submission_id", "entrypoint", "runtime_env", "metadata",
                 "log_archive"}], "stop": [id]}
Report (next heartbeat):
    {"submissions": {id: {"status", "message", "exit_code", "log_bytes", "log_archived"}}}

When a submission ends, its whole driver log is stored at the order's `log_archive` (an
object URI in the cloud's storage, written with the node's own identity) before the end
is reported, so the control plane releases the cluster only after the log is safe. What
the driver printed goes nowhere else: Ray's status message quotes the driver's last
lines on a failure, and those are cut off before reporting (job_message).

Submissions go to Ray's job REST API on loopback (the dashboard), on a thread of the
handler's own so heartbeats keep their rhythm. Submitting is idempotent: Ray refuses a
second submission with the same id, which counts as submitted, so a restarted agent
or a repeated order never runs an attempt twice. When the cluster uses Ray's token
authentication, the token in the Ray environment is sent with every call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .object_store import put_object
from .orders import HeadContext

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# While a submission is on its way to running, Ray is asked this often: the control
# plane hears of the start within a poll and a heartbeat (report_soon).
STARTING_POLL_SECONDS = 0.25
FINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# A final submission no longer in the orders is still reported this long.
KEEP_REPORTED_SECONDS = 120.0
MAX_SUBMISSIONS = 200
# Storing an ended submission's log is tried this many times (a poll apart) before its end
# is reported without it: a broken bucket must not keep a cluster forever.
ARCHIVE_TRIES = 5
# Where Ray's failure message starts quoting the driver's output.
_QUOTED_LOGS = "last available logs"


def job_message(message: str) -> str:
    """Ray's status message without the driver's output it may quote."""
    cut = message.find(_QUOTED_LOGS)
    if cut >= 0:
        message = message[:cut].rstrip(" ,:")
    return message.split("\n", 1)[0][:500]


def ray_token(ray_env: dict[str, str]) -> str:
    """The cluster's Ray token, when Ray's token authentication is on ("" otherwise)."""
    token = ray_env.get("RAY_AUTH_TOKEN", "").strip()
    path = ray_env.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if not token and path:
        try:
            token = Path(path).read_text().strip()
        except OSError:
            logger.warning("could not read the Ray token at %s", path)
    return token


class RayJobApi:
    """Ray's job REST API on this head (never through a proxy: it is on loopback)."""

    def __init__(self, base: str, token: str = "", timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - a fixed http URL on loopback
            self.base + path, data=data, method=method, headers=self.headers
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null")

    def submit(self, order: dict[str, Any]) -> None:
        body = {
            "entrypoint": order["entrypoint"],
            "submission_id": order["submission_id"],
            "runtime_env": order.get("runtime_env") or {},
            "metadata": order.get("metadata") or {},
        }
        try:
            self.call("POST", "/api/jobs/", body)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            if "already exists" in text:
                # Submitted before: a repeated order, a restarted agent, or an answer
                # lost to a timeout (Ray says so with a 400 or, through its head, a 500).
                return
            raise

    def status(self, submission_id: str) -> dict[str, Any] | None:
        try:
            info = self.call("GET", f"/api/jobs/{quote(submission_id, safe='')}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return info if isinstance(info, dict) else None

    def stop(self, submission_id: str) -> None:
        try:
            self.call("POST", f"/api/jobs/{quote(submission_id, safe='')}/stop")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def logs(self, submission_id: str) -> str:
        info = self.call("GET", f"/api/jobs/{quote(submission_id, safe='')}/logs")
        return str(info.get("logs", "")) if isinstance(info, dict) else ""


class JobsHandler:
    topic = "jobs"

    def __init__(self, context: HeadContext, api: RayJobApi | None = None) -> None:
        self.context = context
        self.api = api or RayJobApi(context.dashboard_url, ray_token(context.ray_env))
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._wanted: dict[str, dict[str, Any]] = {}
        self._stops: set[str] = set()
        self._submitted: set[str] = set()
        self._stopped: set[str] = set()
        self._status: dict[str, dict[str, Any]] = {}
        self._final_at: dict[str, float] = {}
        self._archive_to: dict[str, str] = {}  # submission -> object URI of its log
        self._archive_tries: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="raydeck-jobs", daemon=True)
        self._thread.start()

    # -- OrderHandler --

    def handle(self, orders: Any) -> None:
        if not isinstance(orders, dict):
            return
        wanted = {
            str(o["submission_id"]): o
            for o in orders.get("submit") or []
            if isinstance(o, dict) and o.get("submission_id") and o.get("entrypoint")
        }
        stops = {str(s) for s in orders.get("stop") or [] if isinstance(s, str)}
        with self._lock:
            changed = wanted.keys() != self._wanted.keys() or stops != self._stops
            self._wanted = dict(list(wanted.items())[:MAX_SUBMISSIONS])
            self._stops = set(list(stops)[:MAX_SUBMISSIONS])
            for submission_id, order in self._wanted.items():
                # Kept after the submission leaves the orders (a stop names only its id).
                if isinstance(order.get("log_archive"), str) and order["log_archive"]:
                    self._archive_to[submission_id] = order["log_archive"]
        if changed:
            self._wake.set()

    def report(self) -> Any | None:
        with self._lock:
            if not self._status:
                return None
            return {"submissions": {k: dict(v) for k, v in self._status.items()}}

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)

    # -- the thread --

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:  # a bug here must not end the thread
                logger.exception("jobs: a step failed")
            self._wake.wait(STARTING_POLL_SECONDS if self._starting() else POLL_SECONDS)
            self._wake.clear()

    def _starting(self) -> bool:
        """Whether a submission this head made has not yet been seen running or ended."""
        with self._lock:
            seen = {k for k, v in self._status.items() if v["status"] != "PENDING"}
        return bool(self._submitted - seen)

    def step(self) -> None:
        with self._lock:
            wanted, stops = dict(self._wanted), set(self._stops)
        for submission_id, order in wanted.items():
            if submission_id in self._submitted or submission_id in stops:
                continue
            try:
                self.api.submit(order)
            except (OSError, ValueError) as exc:
                logger.warning("jobs: submitting %s failed (%s); retrying", submission_id, exc)
                continue
            logger.info("jobs: submitted %s", submission_id)
            self._submitted.add(submission_id)
        for submission_id in stops - self._stopped:
            try:
                self.api.stop(submission_id)
            except (OSError, ValueError) as exc:
                logger.warning("jobs: stopping %s failed (%s); retrying", submission_id, exc)
                continue
            self._stopped.add(submission_id)
        self._poll(set(wanted) | stops)

    def _poll(self, active: set[str]) -> None:
        """Ask Ray for the status of every submission the orders name or this head
        submitted; a final one the orders no longer name is dropped after a while."""
        now = time.monotonic()
        statuses: dict[str, dict[str, Any]] = {}
        for submission_id in active | self._submitted:
            known = self._status.get(submission_id)
            if known and known["status"] in FINAL:
                ended = self._final_at.setdefault(submission_id, now)
                if submission_id in active or now - ended < KEEP_REPORTED_SECONDS:
                    statuses[submission_id] = known
                else:
                    self._final_at.pop(submission_id, None)
                    self._archive_to.pop(submission_id, None)
                    self._submitted.discard(submission_id)
                    self._stopped.discard(submission_id)
                continue
            try:
                info = self.api.status(submission_id)
            except (OSError, ValueError):
                if known:
                    statuses[submission_id] = known
                continue
            if info is None:
                continue
            status = {
                "status": str(info.get("status", "")),
                "message": job_message(str(info.get("message") or "")),
                "exit_code": info.get("driver_exit_code"),
                "log_bytes": 0,
                "log_archived": False,
            }
            if status["status"] in FINAL and not self._archive(submission_id, status):
                if known:  # report the end once the log is stored (or given up on)
                    statuses[submission_id] = known
                continue
            statuses[submission_id] = status
        with self._lock:
            changed = statuses != self._status
            self._status = statuses
        if changed:
            self.context.report_soon()

    def _archive(self, submission_id: str, status: dict[str, Any]) -> bool:
        """Store the ended submission's driver log; False: try again at the next poll."""
        uri = self._archive_to.get(submission_id)
        if not uri:
            return True  # nowhere to store it (a cloud without storage): nothing to wait for
        try:
            data = self.api.logs(submission_id).encode()
            put_object(uri, data)
        except (OSError, ValueError) as exc:
            tries = self._archive_tries.get(submission_id, 0) + 1
            self._archive_tries[submission_id] = tries
            logger.warning("jobs: storing the log of %s failed (%s)", submission_id, exc)
            return tries >= ARCHIVE_TRIES
        logger.info("jobs: stored the log of %s (%d bytes)", submission_id, len(data))
        status.update(log_bytes=len(data), log_archived=True)
        self._archive_tries.pop(submission_id, None)
        return True
