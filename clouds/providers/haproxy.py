"""The local cloud's service router: one HAProxy (Debian's package) per service.

HAProxy is started once per endpoint and then only talked to through its runtime API
(the admin socket): backends are re-pointed, re-weighted and drained with `set server`,
query tokens are added and removed with `add acl` / `del acl`. It is never reloaded, so
no connection is dropped by a change. HAProxy checks the token itself: a request whose
bearer token's SHA-256 is not in the token list gets 401 from HAProxy and never reaches
Ray.

Everything HAProxy needs to start again (after a reboot, or when it was killed) is kept
in the endpoint's folder `root/<service uuid>/`:

    router.json   the port, the pid and its start time, the backends and their slots
    haproxy.cfg   written from router.json at each start
    tokens.acl    the SHA-256 (hex) of every live token, one a line

A backend is one of SLOTS pre-declared servers; a version keeps its slot until removed.

Plain HTTP on purpose, both ways: HAProxy binds loopback only and its backends are the
local cloud's heads on this same machine's loopback, so no byte crosses a network (on
AWS and GCP, where the hop to the head does, it is TLS: serve_gate.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from .base import (
    RAY_TEMP_ROOT,
    Backend,
    Endpoint,
    EndpointSigner,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
)
from .loopback import LOOPBACK, free_ports

SLOTS = 8
BACKEND = "versions"
STATE_FILE = "router.json"
CONFIG_FILE = "haproxy.cfg"
TOKENS_FILE = "tokens.acl"
INSTALL_HINT = (
    "HAProxy routes the local cloud's services and is not installed on this machine. "
    "Install it (Debian/Ubuntu: apt-get install haproxy; Fedora: dnf install haproxy; "
    "macOS: brew install haproxy), then deploy again."
)
DENIED = "A valid query token is required: send Authorization: Bearer <token>."


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _start_time(pid: int) -> int | None:
    """The process's start time, or None when it is gone (a zombie counts as gone: where
    nothing reaps orphans, a killed HAProxy stays one)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        fields = raw[raw.rindex(b")") + 2 :].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


class HaproxyRouter:
    """Implements clouds.providers.base.ServiceRouter with HAProxy processes under `root`."""

    def __init__(self, *, root: Path, executable: str | None = None) -> None:
        self.root = Path(root)
        self.executable = executable or shutil.which("haproxy") or ""

    # -- ServiceRouter --------------------------------------------------------------

    def ensure_endpoint(
        self, *, service_id: uuid.UUID, ref: dict[str, Any], sign: EndpointSigner | None = None
    ) -> Endpoint:
        """On loopback, plain HTTP: nothing leaves this machine (`sign` is not needed)."""
        folder = self.root / str(service_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = self._state(folder)
        if not state.get("port"):
            state.update(port=self._free_port(), socket=_socket_path(service_id))
            state.setdefault("backends", {})
            self._save(folder, state)
        tokens = folder / TOKENS_FILE
        if not tokens.exists():
            tokens.write_text("")
        if not self._running(state):
            self._start(folder, state)
        ref = {"service_id": str(service_id)}
        return Endpoint(url=f"http://{LOOPBACK}:{state['port']}", ref=ref)

    def set_backends(self, *, ref: dict[str, Any], backends: list[Backend]) -> None:
        folder, state = self._endpoint(ref)
        slots: dict[str, Any] = state.setdefault("backends", {})
        wanted = {b.name: b for b in backends}
        commands = []
        for name in [n for n in slots if n not in wanted]:
            slot = slots.pop(name)["slot"]
            commands += [
                f"set server {BACKEND}/s{slot} state maint",
                f"set server {BACKEND}/s{slot} weight 0",
            ]
        for backend in backends:
            entry = slots.get(backend.name)
            if entry is None:
                used = {e["slot"] for e in slots.values()}
                free = [s for s in range(SLOTS) if s not in used]
                if not free:
                    raise PermanentCloudError(
                        f"The router holds at most {SLOTS} versions at once.",
                        kind=PermanentErrorKind.INVALID_REQUEST,
                    )
                entry = {"slot": free[0]}
            entry.update(
                address=backend.address,
                port=backend.port,
                weight=max(0, min(100, backend.weight)),
                draining=backend.draining,
            )
            slots[backend.name] = entry
            server = f"{BACKEND}/s{entry['slot']}"
            commands += [
                f"set server {server} addr {backend.address} port {backend.port}",
                f"set server {server} weight {entry['weight']}",
                f"set server {server} state {'drain' if backend.draining else 'ready'}",
            ]
        self._save(folder, state)  # first, so a restart starts from the new state
        self._run(state, commands)

    def set_token_hashes(self, *, ref: dict[str, Any], token_hashes: list[str]) -> None:
        folder, state = self._endpoint(ref)
        path = folder / TOKENS_FILE
        wanted = sorted({h.lower() for h in token_hashes if len(h) == 64})
        _write_atomic(path, "".join(f"{h}\n" for h in wanted))
        listed = self._run(state, [f"show acl {path}"])
        present = {line.split()[-1] for line in listed.splitlines() if line.strip()}
        # Add before deleting, so a rotation never refuses a token that stays valid.
        commands = [f"add acl {path} {h}" for h in wanted if h not in present]
        commands += [f"del acl {path} {h}" for h in sorted(present - set(wanted))]
        if commands:
            self._run(state, commands)

    def in_flight(self, *, ref: dict[str, Any], backend: str) -> int:
        _, state = self._endpoint(ref)
        entry = state.get("backends", {}).get(backend)
        if entry is None:
            return 0
        stats = self._run(state, [f"show stat {BACKEND} 4 -1"])
        for line in stats.splitlines():
            fields = line.split(",")
            if len(fields) > 4 and fields[0] == BACKEND and fields[1] == f"s{entry['slot']}":
                return int(fields[4] or 0)  # scur: sessions in progress
        return 0

    def remove(self, *, ref: dict[str, Any]) -> None:
        folder = self.root / str(ref.get("service_id", ""))
        if not ref.get("service_id") or not folder.is_dir():
            return
        state = self._state(folder)
        if self._running(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(state["pid"]), signal.SIGTERM)
            for _ in range(50):
                if not self._running(state):
                    break
                time.sleep(0.1)
        with contextlib.suppress(OSError):
            os.unlink(state.get("socket", ""))
        shutil.rmtree(folder, ignore_errors=True)

    # -- the process ----------------------------------------------------------------

    def _endpoint(self, ref: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        service_id = uuid.UUID(str(ref.get("service_id")))
        self.ensure_endpoint(service_id=service_id, ref=ref)  # restarts it if it died
        folder = self.root / str(service_id)
        return folder, self._state(folder)

    def _free_port(self) -> int:
        """A stable port (loopback.py) that no other endpoint here has."""
        taken = set()
        with contextlib.suppress(OSError):
            for folder in self.root.iterdir():
                port = self._state(folder).get("port") if folder.is_dir() else None
                if isinstance(port, int):
                    taken.add(port)
        return free_ports(1, skip=taken)[0]

    @staticmethod
    def _state(folder: Path) -> dict[str, Any]:
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    @staticmethod
    def _save(folder: Path, state: dict[str, Any]) -> None:
        _write_atomic(folder / STATE_FILE, json.dumps(state, indent=2))

    @staticmethod
    def _running(state: dict[str, Any]) -> bool:
        pid = state.get("pid")
        return isinstance(pid, int) and _start_time(pid) == state.get("start_time")

    def _start(self, folder: Path, state: dict[str, Any]) -> None:
        if not self.executable:
            raise PermanentCloudError(INSTALL_HINT, kind=PermanentErrorKind.INVALID_REQUEST)
        config = folder / CONFIG_FILE
        _write_atomic(config, self._config(folder, state))
        pidfile = folder / "haproxy.pid"
        with contextlib.suppress(OSError):
            os.unlink(state["socket"])
        Path(state["socket"]).parent.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", os.defpath)}  # none of the control plane's
        result = subprocess.run(  # noqa: S603 - our own executable and files
            [self.executable, "-D", "-f", str(config), "-p", str(pidfile)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise TransientCloudError(
                f"HAProxy did not start for this service: {result.stderr.strip()[-500:]}"
            )
        pid = int(pidfile.read_text().split()[0])
        state.update(pid=pid, start_time=_start_time(pid))
        self._save(folder, state)
        for _ in range(50):  # the admin socket appears once HAProxy is ready
            if Path(state["socket"]).exists():
                return
            time.sleep(0.1)
        raise TransientCloudError("HAProxy started but its admin socket did not appear.")

    @staticmethod
    def _config(folder: Path, state: dict[str, Any]) -> str:
        """The whole configuration, from the saved state (so a restart routes as before)."""
        by_slot = {e["slot"]: e for e in state.get("backends", {}).values()}
        servers = []
        for slot in range(SLOTS):
            entry = by_slot.get(slot)
            if entry is None:
                servers.append(f"    server s{slot} {LOOPBACK}:1 weight 0 disabled check")
            else:
                drain = " weight 0" if entry["draining"] else f" weight {entry['weight']}"
                servers.append(
                    f"    server s{slot} {entry['address']}:{entry['port']}{drain} check"
                )
        return "\n".join(
            [
                "global",
                f"    stats socket {state['socket']} mode 600 level admin",
                "    maxconn 4096",
                "defaults",
                "    mode http",
                "    timeout connect 2s",
                "    timeout client 60s",
                "    timeout server 60s",
                "    timeout http-request 10s",
                # A refused connection or a Serve proxy that is not ready yet (503) is
                # tried again on another version: no failed request during a switch.
                "    retries 3",
                "    option redispatch 1",
                "    retry-on conn-failure empty-response response-timeout 503",
                "frontend service",
                f"    bind {LOOPBACK}:{state['port']}",
                "    http-request set-var(txn.token) "
                'req.hdr(authorization),regsub("^[Bb]earer +","")',
                f"    acl token_ok var(txn.token),sha2(256),hex,lower -f {folder / TOKENS_FILE}",
                f'    http-request deny deny_status 401 content-type text/plain string "{DENIED}"'
                " unless token_ok",
                f"    default_backend {BACKEND}",
                f"backend {BACKEND}",
                "    balance roundrobin",
                "    option httpchk GET /-/healthz",
                "    default-server inter 1s fall 2 rise 1",
                *servers,
                "",
            ]
        )

    @staticmethod
    def _run(state: dict[str, Any], commands: list[str]) -> str:
        if not commands:
            return ""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(state["socket"])
                sock.sendall(("; ".join(commands) + "\n").encode())
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise TransientCloudError(
                f"HAProxy's admin socket did not answer ({exc}).", detail=repr(exc)
            ) from exc
        return b"".join(chunks).decode("utf-8", "replace")


def _socket_path(service_id: uuid.UUID) -> str:
    # Short: a Unix socket's path must fit in 107 bytes, which a deep root may not.
    return f"{RAY_TEMP_ROOT}/haproxy-{service_id.hex[:16]}.sock"
