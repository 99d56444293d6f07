"""The local cloud: every "instance" is a process group on this machine.

Each node lives in its own folder `root/<node_id>/`:

    instance.json  what was launched: ids, tags, sizes, pid/pgid and the pid's start time,
                   ports, state. Written atomically (temp file + os.replace).
    boot.sh        the boot script, run as `/bin/bash boot.sh` in a new session, so the
                   node is one process group (pgid == pid) that can be killed on its own.
    boot.log       the script's stdout and stderr (the agent logs there too).
    .lock          flock that serializes launch/terminate of this node across workers.

Terminate stops the node, then cleans up: boot.log is appended to the cloud's log folder
(`log_dir/<cluster_id>/<node_id>/boot.log`, where the agent also ships its and Ray's
logs), and the node's folder and its Ray temp folder are removed. A terminated node is
then unknown here (describe: None), as a terminated VM eventually is to its cloud. Until
its folder is gone a node is never reported `terminated`: a node whose agent stopped on
its own is `stopped`, one whose terminate did not finish is `stopping`, so the
reconciler and the orphan sweep terminate it (again) and its folder, Ray temp folder and
ports are released.

Nothing that matters is held in memory: a new LocalProvider (after a Raydeck restart)
rediscovers every node from the folders and /proc. A pid is only taken to be our node
when its start time (field 22 of /proc/<pid>/stat) matches the recorded one, so a pid
the kernel recycled for another program is never signalled. Linux only (reads /proc).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .base import (
    TAG_CLOUD,
    CheckResult,
    Instance,
    InstanceState,
    NodeSpec,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
    instance_tags,
    ray_temp_dir,
)
from .boot import AGENT_PORT_NAMES
from .haproxy import HaproxyRouter
from .kinds import LocalTraits
from .local_builds import LocalBuilder
from .local_storage import STORAGE_DIR, LocalObjectStore
from .loopback import LOOPBACK, free_ports

logger = logging.getLogger(__name__)

INSTANCE_PREFIX = "local-"
PORT_COUNT = len(AGENT_PORT_NAMES)  # one loopback port per agent port, in that order
RECORD_FILE = "instance.json"
ROUTERS_FOLDER = "routers"  # services' HAProxy endpoints (haproxy.py), beside the nodes
BOOT_SCRIPT_FILE = "boot.sh"
BOOT_LOG_FILE = "boot.log"
LOCK_FILE = ".lock"
TRASH_PREFIX = ".trash-"  # a node folder being removed (renamed first: one atomic step)
GIB = 1 << 30
MIN_FREE_BYTES = GIB
_BASH = "/bin/bash"

# Only these reach node processes. The rest of the control plane's environment (database
# URL, secret key, cloud credentials) must not: boot scripts and Ray jobs run user code.
_ENV_PASSTHROUGH = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")

# Popen objects of nodes this process started, polled so exited nodes are reaped (no
# zombies, no ResourceWarning). Never the source of truth: state always comes from /proc.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def instance_id_for(node_id: uuid.UUID) -> str:
    """Deterministic, so a relaunch after a crash finds the instance already started."""
    return f"{INSTANCE_PREFIX}{node_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def _reap_children() -> None:
    with _children_lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


# --- /proc -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    pid: int
    state: str
    pgid: int
    start_time: int  # clock ticks since boot: with the pid, unique for the machine's uptime

    @property
    def alive(self) -> bool:
        # A zombie has exited; it only waits for its parent (or init) to reap it.
        return self.state not in ("Z", "X", "x")


def _read_proc(pid: int) -> _Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        # Field 2 (comm) may hold spaces and ")": the rest starts after the last ")".
        rest = raw[raw.rindex(b")") + 2 :].split()
        # rest[0] is field 3 (state), rest[2] field 5 (pgrp), rest[19] field 22 (starttime).
        return _Proc(pid=pid, state=rest[0].decode(), pgid=int(rest[2]), start_time=int(rest[19]))
    except (OSError, ValueError, IndexError):
        return None


def _all_procs() -> Iterator[_Proc]:
    for name in os.listdir("/proc"):
        if name.isdigit() and (proc := _read_proc(int(name))) is not None:
            yield proc


def _has_marker(pid: int, instance_id: str) -> bool:
    """Whether the process carries our RAYDECK_INSTANCE_ID (inherited by everything a
    node starts), the fallback proof of ownership when its group leader is gone."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"RAYDECK_INSTANCE_ID={instance_id}".encode() in environ.split(b"\0")


class _Snapshot:
    """One pass over /proc, shared by every node looked at in one call."""

    def __init__(self) -> None:
        self._by_pgid: dict[int, list[_Proc]] | None = None

    def members(self, pgid: int) -> list[_Proc]:
        if self._by_pgid is None:
            by_pgid: dict[int, list[_Proc]] = {}
            for proc in _all_procs():
                if proc.alive:
                    by_pgid.setdefault(proc.pgid, []).append(proc)
            self._by_pgid = by_pgid
        return self._by_pgid.get(pgid, [])


# --- instance.json ---------------------------------------------------------------------


@dataclass
class _Record:
    instance_id: str
    node_id: str
    cluster_id: str
    cloud_id: str
    name: str
    instance_type: str
    image: str
    cpus: float
    memory_mb: int
    idempotency_key: str
    created_at: str
    state: str = InstanceState.PENDING.value
    tags: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    pid: int | None = None
    pgid: int | None = None
    start_time: int | None = None
    terminated_at: str | None = None
    error: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Record:
        known = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def started(self) -> bool:
        return self.pid is not None and self.pgid is not None and self.start_time is not None


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Readers (another worker, a restarted Raydeck) see the old file or the new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _filesystem_errors(path: Path) -> Iterator[None]:
    """Turn an OSError left over (full disk, permissions changed under us) into an error
    the user can act on, never a bare exception."""
    try:
        yield
    except OSError as exc:
        raise _invalid(
            f"Raydeck could not read or write {path} ({exc.strerror or exc}). Check that the "
            "local cloud's root folder is a writable folder on a disk that is not full, then "
            "verify the cloud again.",
            exc,
        ) from exc


def _invalid(message: str, exc: BaseException | None = None) -> PermanentCloudError:
    return PermanentCloudError(
        message, kind=PermanentErrorKind.INVALID_REQUEST, detail=repr(exc) if exc else ""
    )


# --- the driver ------------------------------------------------------------------------


class LocalProvider(LocalBuilder, LocalTraits, LocalObjectStore):
    """Runs nodes as process groups under `root` (this cloud's own folder); its object
    storage is the folder `root/storage`, served by the control plane at `storage_url`
    through URLs signed with `storage_secret` (local_storage.py); it builds images with
    Buildah (local_builds.py)."""

    public_addresses = False  # nodes listen on loopback

    def __init__(
        self,
        *,
        cloud_id: uuid.UUID,
        root: Path | str,
        log_dir: Path | str | None = None,
        stop_timeout: float = 12.0,
        min_free_bytes: int = MIN_FREE_BYTES,
        storage_url: str = "http://127.0.0.1:8000",
        storage_secret: bytes = b"",
    ) -> None:
        self.cloud_id = cloud_id
        self.root = Path(root)
        self.storage_dir = self.root / STORAGE_DIR
        self.storage_url = storage_url
        self.storage_secret = storage_secret
        self.log_dir = Path(log_dir) if log_dir else self.root / "logs"
        self.stop_timeout = stop_timeout  # SIGTERM grace before SIGKILL
        self.min_free_bytes = min_free_bytes

    # -- CloudProvider --------------------------------------------------------------

    def launch(self, *, node: NodeSpec, boot_script: str, idempotency_key: str) -> Instance:
        _reap_children()
        node_dir = self._node_dir(node.node_id)
        with _filesystem_errors(node_dir):
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            node_dir.mkdir(exist_ok=True, mode=0o700)
            with self._node_lock(node_dir):
                record = self._read(node_dir)
                if record is not None and not record.started:
                    # Raydeck died between spawning and recording the pid: adopt the process.
                    self._adopt(record, node_dir)
                if record is not None and record.started:
                    leader, members = self._group(record, _Snapshot())
                    if leader is not None or members:
                        return self._instance(record, leader, members)  # never two per node
                    if record.idempotency_key == idempotency_key:
                        # A replay of a launch that did start: report what became of it.
                        # Only a new attempt (previous one known gone) starts it again.
                        return self._instance(record, None, [])
                return self._spawn(node, boot_script, idempotency_key, node_dir)

    def terminate(self, *, instance_id: str) -> None:
        _reap_children()
        node_dir = self._node_dir(self._parse_instance_id(instance_id))
        if not node_dir.is_dir():
            return  # never launched, or the folder was cleaned up: nothing to stop
        with _filesystem_errors(node_dir), self._node_lock(node_dir):
            record = self._read(node_dir)
            if record is None:
                # It never got as far as spawning (the record is written first): only
                # the folder is left. Removed under its lock, so no launch is under way.
                shutil.rmtree(node_dir, ignore_errors=True)
                return
            if not record.started:
                self._adopt(record, node_dir)
            if record.started:
                self._stop_group(record)
                _reap_children()  # the leader, if we started it, exited after the last poll
            record.state = InstanceState.TERMINATED.value
            record.terminated_at = record.terminated_at or _now().isoformat()
            self._write(node_dir, record)  # so a crash during the cleanup leaves it final
            try:
                self._clean_up(record, node_dir)
            except OSError as exc:  # the node is stopped: that is what terminate promises
                logger.warning("Could not clean up %s: %s", node_dir, exc)

    def _clean_up(self, record: _Record, node_dir: Path) -> None:
        """Keep the boot log with the node's other logs; remove the node's folders."""
        boot_log = node_dir / BOOT_LOG_FILE
        if boot_log.is_file():
            kept = self.log_dir / record.cluster_id / record.node_id / BOOT_LOG_FILE
            kept.parent.mkdir(parents=True, exist_ok=True)
            with open(boot_log, "rb") as source, open(kept, "ab") as target:
                shutil.copyfileobj(source, target)
        temp_dir = Path(ray_temp_dir(uuid.UUID(record.node_id)))
        with contextlib.suppress(OSError):
            if (
                not temp_dir.is_symlink()
                and temp_dir.is_dir()
                and (temp_dir.stat().st_uid == os.getuid())
            ):
                shutil.rmtree(temp_dir, ignore_errors=True)
        trash = self.root / f"{TRASH_PREFIX}{record.node_id}"
        shutil.rmtree(trash, ignore_errors=True)  # left by a crash half-way through
        os.replace(node_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def list_instances(self, *, cluster_id: uuid.UUID | None = None) -> list[Instance]:
        _reap_children()
        try:
            entries = sorted(self.root.iterdir()) if self.root.exists() else []
        except OSError as exc:
            raise _invalid(
                f"Raydeck could not read the local cloud's root folder {self.root} "
                f"({exc.strerror}). Verify the cloud to see what to fix.",
                exc,
            ) from exc
        snapshot = _Snapshot()
        instances = []
        for entry in entries:
            node_id = self._node_id_from_folder(entry.name)
            if node_id is None or not entry.is_dir():
                continue  # temp files, locks, anything that is not a node folder
            record = self._read(entry)
            if record is None:
                if cluster_id is None:  # its cluster is unknown: only in the unfiltered list
                    instances.append(self._unknown(node_id))
                continue
            if record.tags.get(TAG_CLOUD, str(self.cloud_id)) != str(self.cloud_id):
                continue
            if cluster_id is not None and record.cluster_id != str(cluster_id):
                continue
            instances.append(self._describe_record(record, entry, snapshot))
        return instances

    def describe(self, *, instance_id: str) -> Instance | None:
        _reap_children()
        try:
            node_id = self._parse_instance_id(instance_id)
        except PermanentCloudError:
            return None  # not a local instance id: this cloud does not know it
        node_dir = self._node_dir(node_id)
        if not node_dir.is_dir():
            return None
        record = self._read(node_dir)
        if record is None:
            return self._unknown(node_id)
        return self._describe_record(record, node_dir, _Snapshot())

    def verify(self) -> list[CheckResult]:
        return [self._check_root(), self._check_ray(), self._check_disk()]

    def default_image(self) -> str:
        return sys.executable  # Raydeck's own Python, which has Ray

    def router(self) -> HaproxyRouter:
        return HaproxyRouter(root=self.root / ROUTERS_FOLDER)

    # -- launch ---------------------------------------------------------------------

    def _spawn(
        self, node: NodeSpec, boot_script: str, idempotency_key: str, node_dir: Path
    ) -> Instance:
        instance_id = instance_id_for(node.node_id)
        try:
            ports = self._allocate_ports()
        except OSError as exc:
            raise TransientCloudError(
                f"Raydeck could not reserve {PORT_COUNT} free loopback ports for the node "
                f"({exc.strerror}). Try again in a moment.",
                detail=repr(exc),
            ) from exc
        record = _Record(
            instance_id=instance_id,
            node_id=str(node.node_id),
            cluster_id=str(node.cluster_id),
            cloud_id=str(self.cloud_id),
            name=node.name,
            instance_type=node.instance_type,
            image=node.image,
            cpus=node.cpus,
            memory_mb=node.memory_mb,
            idempotency_key=idempotency_key,
            created_at=_now().isoformat(),
            tags=instance_tags(cloud_id=self.cloud_id, node=node),
            ports=ports,
        )
        _write_atomic(node_dir / BOOT_SCRIPT_FILE, boot_script.encode(), mode=0o700)
        # Recorded before the spawn, so a crash right after it is found by _adopt.
        self._write(node_dir, record)
        # Append: an earlier attempt's output stays for post-mortem.
        log = open(node_dir / BOOT_LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
        try:
            with log:
                log.write(f"=== raydeck: launching {instance_id} at {record.created_at}\n".encode())
                log.flush()
                proc = subprocess.Popen(  # noqa: S603 - fixed argv; the script is the payload
                    [_BASH, BOOT_SCRIPT_FILE],
                    cwd=node_dir,
                    env=self._node_env(node, record, node_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own session and process group: pgid == pid
                )
        except OSError as exc:
            record.state = InstanceState.TERMINATED.value
            record.terminated_at = _now().isoformat()
            record.error = f"Could not start the boot script: {exc}"
            with contextlib.suppress(OSError):
                self._write(node_dir, record)
            raise _invalid(
                f"Raydeck could not start the node's boot script with {_BASH} in {node_dir} "
                f"({exc.strerror}). Check that {_BASH} exists and the folder is accessible.",
                exc,
            ) from exc
        with _children_lock:
            _children[proc.pid] = proc
        # Our unreaped child, so /proc/<pid> exists even if it already exited.
        stat = _read_proc(proc.pid)
        record.pid = proc.pid
        record.pgid = stat.pgid if stat else proc.pid
        record.start_time = stat.start_time if stat else None
        record.state = InstanceState.RUNNING.value
        try:
            self._write(node_dir, record)
        except OSError:
            # Unrecorded, the node would run with nobody able to find it: stop it now.
            self._stop_group(record)
            raise
        leader, members = self._group(record, _Snapshot())
        return self._instance(record, leader, members)

    def _node_env(self, node: NodeSpec, record: _Record, node_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _ENV_PASSTHROUGH or k.startswith("LC_")}
        python = node.image or sys.executable
        # So `python` and `ray` in the boot script are the ones next to the node's Python.
        env["PATH"] = os.pathsep.join(
            p for p in (os.path.dirname(python), env.get("PATH", os.defpath)) if p
        )
        env.update(
            RAYDECK_CLOUD_ID=str(self.cloud_id),
            RAYDECK_CLUSTER_ID=record.cluster_id,
            RAYDECK_NODE_ID=record.node_id,
            RAYDECK_INSTANCE_ID=record.instance_id,
            RAYDECK_NODE_DIR=str(node_dir),
            RAYDECK_PYTHON=python,
            RAYDECK_CPUS=f"{node.cpus:g}",
            RAYDECK_MEMORY_MB=str(node.memory_mb),
            RAYDECK_PORTS=",".join(map(str, record.ports)),
        )
        env.update({f"RAYDECK_PORT_{i}": str(port) for i, port in enumerate(record.ports)})
        return env

    def _allocate_ports(self) -> list[int]:
        """Free loopback ports, skipping those recorded for other nodes here (several Ray
        nodes on one machine must not collide, also before they have bound them)."""
        return free_ports(PORT_COUNT, skip=self._ports_in_use())

    def _ports_in_use(self) -> set[int]:
        ports: set[int] = set()
        with contextlib.suppress(OSError):
            for entry in self.root.iterdir():
                record = self._read(entry) if entry.is_dir() else None
                if record is not None and record.state != InstanceState.TERMINATED:
                    ports.update(record.ports)
        return ports

    def _adopt(self, record: _Record, node_dir: Path) -> None:
        """Find the session leader of a node whose pid was never recorded (Raydeck died
        right after spawning) by the instance id every node process carries."""
        for proc in _all_procs():
            if proc.alive and proc.pid == proc.pgid and _has_marker(proc.pid, record.instance_id):
                record.pid, record.pgid, record.start_time = proc.pid, proc.pgid, proc.start_time
                record.state = InstanceState.RUNNING.value
                self._write(node_dir, record)
                return

    # -- process groups -------------------------------------------------------------

    def _group(self, record: _Record, snapshot: _Snapshot) -> tuple[_Proc | None, list[_Proc]]:
        """The node's leader (None unless alive and ours) and the live processes of its
        group. Empty when the recorded pid now belongs to some other program."""
        if record.pid is None or record.pgid is None or record.start_time is None:
            return None, []
        leader = _read_proc(record.pid)
        if leader is not None and (
            leader.start_time != record.start_time or leader.pgid != record.pgid
        ):
            # The pid was recycled. The kernel keeps a pid number reserved while any process
            # uses it as its pgid, so our group has no survivors either.
            return None, []
        members = snapshot.members(record.pgid)
        if leader is not None and leader.alive:
            return leader, members
        # The leader exited; processes it left in the group (daemons `ray start` forks)
        # are still the node. The marker guards against the pgid having been reused.
        return None, [p for p in members if _has_marker(p.pid, record.instance_id)]

    @staticmethod
    def _strays(record: _Record) -> list[_Proc]:
        """Processes of this node outside its group: Ray 2.60 moves task, actor and job
        workers into groups (and sessions) of their own. They inherit the node's
        environment, so the instance id marker finds them."""
        return [
            p
            for p in _all_procs()
            if p.alive and p.pgid != record.pgid and _has_marker(p.pid, record.instance_id)
        ]

    def _alive(self, record: _Record) -> bool:
        return bool(self._group(record, _Snapshot())[1] or self._strays(record))

    def _stop_group(self, record: _Record) -> None:
        """SIGTERM the node's process group (and its strays), wait, then SIGKILL. Only
        ever signals the recorded pgid after checking it is still ours, and processes
        that carry this node's marker."""
        if record.pgid is None:
            return
        for sig, timeout in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 2.0)):
            _, members = self._group(record, _Snapshot())
            strays = self._strays(record)
            if not members and not strays:
                return
            for stray in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stray.pid, sig)
            try:
                if members:
                    os.killpg(record.pgid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                raise PermanentCloudError(
                    f"Raydeck is not allowed to stop process group {record.pgid} of "
                    f"{record.instance_id}. Stop it by hand (kill -TERM -{record.pgid}).",
                    kind=PermanentErrorKind.PERMISSION,
                    detail=repr(exc),
                ) from exc
            deadline = time.monotonic() + timeout
            delay = 0.01
            while time.monotonic() < deadline:
                _reap_children()  # our own child would otherwise linger as a zombie
                if not self._alive(record):
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        if self._alive(record):
            raise TransientCloudError(
                f"Process group {record.pgid} of {record.instance_id} survived SIGKILL "
                "(a process stuck in the kernel?). Raydeck will try again.",
            )

    # -- state ----------------------------------------------------------------------

    def _describe_record(self, record: _Record, node_dir: Path, snapshot: _Snapshot) -> Instance:
        if not record.started and record.state != InstanceState.TERMINATED:
            # No pid yet: a launch is under way if someone holds the node's lock.
            state = InstanceState.PENDING if self._lock_held(node_dir) else InstanceState.STOPPED
            return self._instance(record, None, [], state=state)
        leader, members = self._group(record, snapshot)
        return self._instance(record, leader, members)

    def _instance(
        self,
        record: _Record,
        leader: _Proc | None,
        members: list[_Proc],
        *,
        state: InstanceState | None = None,
    ) -> Instance:
        if state is None:
            terminated = record.state == InstanceState.TERMINATED
            if leader is not None or members or terminated:
                # Marked terminated and still listed: its folder is still here, so a
                # terminate did not finish (killing it, or cleaning up). Not gone yet.
                state = InstanceState.STOPPING if terminated else InstanceState.RUNNING
            else:
                state = InstanceState.STOPPED
        return Instance(
            instance_id=record.instance_id,
            state=state,
            node_id=uuid.UUID(record.node_id),
            cluster_id=uuid.UUID(record.cluster_id),
            instance_type=record.instance_type,
            private_address=LOOPBACK,
            public_address=None,
            launched_at=datetime.fromisoformat(record.created_at),
        )

    def _unknown(self, node_id: uuid.UUID) -> Instance:
        # A folder whose instance.json is missing or unreadable: show it, do not guess.
        # Its age is the folder's, so the orphan sweep leaves a launch under way alone.
        try:
            made = datetime.fromtimestamp(self._node_dir(node_id).stat().st_mtime, tz=UTC)
        except OSError:
            made = None
        return Instance(
            instance_id=instance_id_for(node_id),
            state=InstanceState.UNKNOWN,
            node_id=node_id,
            cluster_id=None,
            launched_at=made,
        )

    # -- files ----------------------------------------------------------------------

    def _node_dir(self, node_id: uuid.UUID) -> Path:
        return self.root / str(node_id)

    @staticmethod
    def _node_id_from_folder(name: str) -> uuid.UUID | None:
        try:
            node_id = uuid.UUID(name)
        except ValueError:
            return None
        return node_id if str(node_id) == name else None

    def _parse_instance_id(self, instance_id: str) -> uuid.UUID:
        """The node id inside one of our instance ids. Anything else (another cloud's id,
        a path) is refused, so terminate can never reach outside this root."""
        node_id = None
        if instance_id.startswith(INSTANCE_PREFIX):
            node_id = self._node_id_from_folder(instance_id.removeprefix(INSTANCE_PREFIX))
        if node_id is None:
            raise _invalid(
                f"{instance_id!r} is not an instance of this local cloud (its ids look like "
                f"{INSTANCE_PREFIX}<node uuid>)."
            )
        return node_id

    @staticmethod
    def _read(node_dir: Path) -> _Record | None:
        try:
            data = json.loads((node_dir / RECORD_FILE).read_bytes())
            return _Record.from_json(data)
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def _write(node_dir: Path, record: _Record) -> None:
        _write_atomic(node_dir / RECORD_FILE, json.dumps(asdict(record), indent=2).encode())

    @contextlib.contextmanager
    def _node_lock(self, node_dir: Path) -> Iterator[None]:
        # flock, not a lock in memory: Celery workers are separate processes. The fd is
        # close-on-exec, so a node process never inherits (and holds) the lock.
        fd = os.open(node_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _lock_held(node_dir: Path) -> bool:
        try:
            fd = os.open(node_dir / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # -- verify ---------------------------------------------------------------------

    def _check_root(self) -> CheckResult:
        name = "Root folder"
        if self.root.exists() and not self.root.is_dir():
            return CheckResult(
                name,
                False,
                f"{self.root} exists but is not a folder. Remove or rename it, or set the "
                "cloud's local root to a folder Raydeck can write to.",
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".raydeck-verify-"):
                pass  # created and deleted again
        except OSError as exc:
            return CheckResult(
                name,
                False,
                f"Raydeck cannot create or write to {self.root} ({exc.strerror}). Create "
                f"the folder and give the user running Raydeck write access to it, or set "
                "the cloud's local root to a writable folder.",
            )
        return CheckResult(name, True, f"Raydeck can write to {self.root}.")

    def _check_ray(self) -> CheckResult:
        name = "Ray installed"
        try:
            found = importlib.util.find_spec("ray") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return CheckResult(
                name,
                False,
                f"Ray is not installed in this Python environment ({sys.executable}): "
                "pip install 'ray[default]'",
            )
        return CheckResult(name, True, f"Ray is installed in {sys.executable}.")

    def _check_disk(self) -> CheckResult:
        name = "Free disk"
        # The root may not exist yet (or be a file): measure the disk it would be on.
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            free = shutil.disk_usage(path).free
        except OSError as exc:
            return CheckResult(name, False, f"Raydeck cannot measure free disk at {path}: {exc}")
        figure = f"{free / GIB:.1f} GiB free at {path}"
        if free < self.min_free_bytes:
            return CheckResult(
                name,
                False,
                f"Only {figure}; Ray nodes need at least {self.min_free_bytes / GIB:.1f} GiB "
                "for logs and spilled objects. Free up space or choose a root on a larger disk.",
            )
        return CheckResult(name, True, f"{figure}.")
