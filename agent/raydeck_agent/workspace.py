"""The head's side of a workspace (orders under the "workspace" topic, see
workloads/workspaces/head.py on the server): restore the working directory once, save it
every few minutes and at once when the workspace stops, tell the control plane when,
note Jupyter kernel and terminal use as activity (activity.py) so a workspace in use is
never idle, and run its sshd (sshd.py) with the keys the orders carry.

Saving is incremental and content-addressed: a file's bytes are stored once under their
SHA-256 (`objects/<hash>`), and a manifest (`manifest.json`, replaced whole and last)
lists every kept path with its hash, so a save interrupted half-way leaves the previous
manifest intact and a rerun uploads only what is missing. Only files that changed since
the last save (size or modification time) are read again.

"Create job from this workspace" asks for a snapshot (orders' `snapshot`): the head saves
now, zips exactly what that save kept (the same bytes the next start restores) the way
the CLI zips a working directory (sorted, dated alike: the same tree, the same digest),
stores it in the cloud's storage under its SHA-256 and reports the digest, the size and
the packages added, which the control plane turns into the job's working dir and pip list.

All slow work runs on this handler's own thread; `handle` and `report` only swap state.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from . import activity, apps
from .object_store import BINARY, NotFound, ObjectClient
from .orders import HANDLER_FACTORIES, HeadContext
from .sshd import Sshd, login_user

logger = logging.getLogger("raydeck_agent")

TOPIC = "workspace"
MANIFEST = "manifest.json"
ACTIVITY_EVERY = 10.0  # seconds between looks at Jupyter's kernels and terminals
JUPYTER_START_SECONDS = 60.0  # a workspace waits this long for its JupyterLab to answer
JUPYTER_LOOK_EVERY = 0.2  # seconds between looks while it starts
STOP_SAVE_SECONDS = 60.0  # the node is going away: the last save gets this long


class UnsupportedLocation(ValueError):
    """This agent cannot keep files at that location."""


class FolderStore:
    """Files kept in a folder this machine can write (the local cloud)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _blob(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self._blob(digest).is_file()

    def put(self, digest: str, source: Path) -> None:
        target = self._blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{digest}.{os.getpid()}.part")
        shutil.copyfile(source, partial)
        os.replace(partial, target)

    def get(self, digest: str, target: Path) -> None:
        shutil.copyfile(self._blob(digest), target)

    def read(self, digest: str) -> bytes:
        return self._blob(digest).read_bytes()

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.root / MANIFEST).read_text()))
        except FileNotFoundError:
            return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{MANIFEST}.{os.getpid()}.part"
        partial.write_text(json.dumps(manifest, sort_keys=True))
        os.replace(partial, self.root / MANIFEST)


class BucketStore:
    """Files kept in the cloud's bucket (`s3://` or `gs://<bucket>/raydeck-files/<id>`),
    written and read with the node's own identity (object_store.py). Which blobs exist
    it learns from the manifest it read and what it stored since, so an unchanged file
    costs no request (and no listing permission); a blob stored twice is the same bytes."""

    def __init__(self, location: str, client: ObjectClient | None = None) -> None:
        self.location = location.rstrip("/")
        self.client = client or ObjectClient()
        self._known: set[str] = set()

    def _blob(self, digest: str) -> str:
        return f"{self.location}/objects/{digest[:2]}/{digest}"

    def has(self, digest: str) -> bool:
        return digest in self._known

    def put(self, digest: str, source: Path) -> None:
        self.client.put(self._blob(digest), source.read_bytes(), content_type=BINARY)
        self._known.add(digest)

    def get(self, digest: str, target: Path) -> None:
        target.write_bytes(self.read(digest))

    def read(self, digest: str) -> bytes:
        return self.client.get(self._blob(digest))

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            manifest = dict(json.loads(self.client.get(f"{self.location}/{MANIFEST}")))
        except NotFound:
            return None
        self._known.update(
            str(entry["sha256"])
            for entry in manifest.get("files", {}).values()
            if isinstance(entry, dict) and "sha256" in entry
        )
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, sort_keys=True).encode()
        self.client.put(f"{self.location}/{MANIFEST}", data, content_type=BINARY)


Store = FolderStore | BucketStore


def store_for(location: str) -> Store:
    """A folder on the local cloud; the cloud's bucket on AWS and GCP."""
    if location.startswith("/"):
        return FolderStore(Path(location))
    if location.startswith(("s3://", "gs://")):
        return BucketStore(location)
    raise UnsupportedLocation(f"this agent cannot keep files at {location!r}")


@dataclass(frozen=True)
class Rules:
    excludes: tuple[str, ...] = ()
    max_file_bytes: int = 100 << 20
    max_total_bytes: int = 2 << 30

    def excluded(self, relative: PurePosixPath) -> bool:
        return any(
            fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in self.excludes
        )


@dataclass
class SaveResult:
    at: float
    files: int
    bytes: int
    skipped: list[list[str]] = field(default_factory=list)


class Files:
    """A working directory and where it is kept."""

    def __init__(self, work_dir: Path, store: Store) -> None:
        self.work_dir = work_dir
        self.store = store
        self._hashes: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha)

    def restore(self) -> int:
        """Put the kept files back; returns how many (0 for a new workspace)."""
        manifest = self.store.read_manifest()
        if not manifest:
            return 0
        count = 0
        for relative, entry in manifest.get("files", {}).items():
            path = self.work_dir / PurePosixPath(relative)
            if PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts:
                continue  # never write outside the working directory
            path.parent.mkdir(parents=True, exist_ok=True)
            self.store.get(entry["sha256"], path)
            os.chmod(path, int(entry.get("mode", 0o644)) & 0o777)
            stat = path.stat()
            self._hashes[relative] = (stat.st_size, stat.st_mtime_ns, entry["sha256"])
            count += 1
        return count

    def _digest(self, relative: str, path: Path, size: int, mtime_ns: int) -> str:
        known = self._hashes.get(relative)
        if known and known[0] == size and known[1] == mtime_ns:
            return known[2]
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        digest = sha.hexdigest()
        self._hashes[relative] = (size, mtime_ns, digest)
        return digest

    def save(self, rules: Rules) -> SaveResult:
        started = time.time()
        files: dict[str, dict[str, Any]] = {}
        skipped: list[list[str]] = []
        total = 0
        for directory, dirs, names in os.walk(self.work_dir):
            base = Path(directory)
            dirs[:] = sorted(
                d
                for d in dirs
                if not rules.excluded(
                    PurePosixPath((base / d).relative_to(self.work_dir).as_posix())
                )
            )
            for name in sorted(names):
                path = base / name
                relative = PurePosixPath(path.relative_to(self.work_dir).as_posix())
                if rules.excluded(relative) or path.is_symlink() or not path.is_file():
                    continue
                try:
                    stat = path.stat()
                    if stat.st_size > rules.max_file_bytes:
                        skipped.append([str(relative), "larger than the size limit for one file"])
                        continue
                    if total + stat.st_size > rules.max_total_bytes:
                        skipped.append([str(relative), "over the workspace's total size limit"])
                        continue
                    digest = self._digest(str(relative), path, stat.st_size, stat.st_mtime_ns)
                    if not self.store.has(digest):
                        self.store.put(digest, path)
                except OSError as exc:  # deleted or unreadable meanwhile
                    skipped.append([str(relative), f"could not be read ({exc.strerror})"])
                    continue
                total += stat.st_size
                files[str(relative)] = {
                    "sha256": digest,
                    "size": stat.st_size,
                    "mode": stat.st_mode & 0o777,
                }
        self.store.write_manifest({"saved_at": started, "files": files})
        return SaveResult(at=started, files=len(files), bytes=total, skipped=skipped)


class TooLarge(ValueError):
    """The snapshot is over the working directory's size limit."""


def pack(store: Store, limit: int) -> bytes:
    """The files of the store's manifest as a zip (a job's working directory)."""
    manifest = store.read_manifest() or {}
    files = manifest.get("files", {})
    total = sum(int(entry.get("size", 0)) for entry in files.values())
    if total > limit:
        raise TooLarge(f"the files hold {total} bytes; a job's working directory may hold {limit}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in sorted(files):
            entry = files[relative]
            info = zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (int(entry.get("mode", 0o644)) & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, store.read(entry["sha256"]))
    return buffer.getvalue()


def pip_freeze(python: str) -> list[str]:
    try:
        out = subprocess.run(  # noqa: S603 - our own argv
            [python, "-m", "pip", "freeze", "--disable-pip-version-check"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(
        line.strip() for line in out.splitlines() if line.strip() and not line.startswith("-e ")
    )


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def jupyter_activity(port: int, now: float) -> dict[str, float]:
    """{"kernel": t, "terminal": t}: when Jupyter's kernels and terminals were last used
    (a busy kernel counts as now). Jupyter listens on loopback without a token."""
    found: dict[str, float] = {}
    for kind, path in (("kernel", "kernels"), ("terminal", "terminals")):
        url = f"http://127.0.0.1:{port}/jupyter/api/{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:  # loopback only
                items = json.load(response)
        except (OSError, ValueError):
            continue
        for item in items if isinstance(items, list) else []:
            at = now if item.get("execution_state") == "busy" else _epoch(item.get("last_activity"))
            if at is not None:
                found[kind] = max(found.get(kind, 0.0), min(at, now))
    return found


class WorkspaceHandler:
    topic = TOPIC

    def __init__(self, context: HeadContext) -> None:
        self.context = context
        self.work_dir = context.node_dir / "work"
        self._lock = threading.Lock()
        self._orders: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._report: dict[str, Any] = {}
        self._files: Files | None = None
        self._saved_for: str | None = None
        self._packed_for: str | None = None
        self._baseline: list[str] | None = None
        self._sshd = Sshd(
            context.node_dir / "ssh",
            shared_machine=context.shared_machine,
            env=context.ray_env,
            work_dir=self.work_dir,
        )
        self._ssh_keys: list[str] | None = None  # what the keys file holds now

    # -- the heartbeat thread ------------------------------------------------------------

    def handle(self, orders: Any) -> None:
        if not isinstance(orders, dict) or not isinstance(orders.get("files"), str):
            return
        with self._lock:
            self._orders = orders
        if orders.get("save_for") and orders["save_for"] != self._saved_for:
            self._wake.set()
        if _snapshot_for(orders) not in (None, self._packed_for):
            self._wake.set()
        if _ssh_keys(orders) != self._ssh_keys:
            self._wake.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raydeck-workspace", daemon=True)
            self._thread.start()

    def report(self) -> Any | None:
        with self._lock:
            return dict(self._report) if self._report else None

    def stop(self) -> None:
        """The node is stopping: save one last time (a workspace stopped as such has
        saved already; this keeps the files of a cluster terminated any other way)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_SAVE_SECONDS)
        self._sshd.stop()

    # -- this handler's thread --------------------------------------------------------------

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._report.update(values)

    def _run(self) -> None:
        with self._lock:
            orders = dict(self._orders or {})
        try:
            self._files = Files(self.work_dir, store_for(orders["files"]))
            self.work_dir.mkdir(parents=True, exist_ok=True)
            count = self._files.restore()
        except (OSError, ValueError, KeyError) as exc:
            logger.error("could not restore the workspace's files: %s", exc)
            self._set(error=f"restoring the files failed: {exc}")
            return
        logger.info("restored %d files of workspace %s", count, orders.get("id"))
        restored_at = time.time()
        self._tend_ssh(_ssh_keys(orders))  # not held back by JupyterLab's start
        self._await_jupyter()
        self._set(restored_at=restored_at, restored_files=count)
        self._baseline = pip_freeze(self.context.python)
        last_save = time.monotonic()
        last_look = 0.0
        while True:
            with self._lock:
                orders = dict(self._orders or {})
            save_for = orders.get("save_for")
            every = float(orders.get("save_every") or 180)
            due = (
                save_for and save_for != self._saved_for
            ) or time.monotonic() - last_save >= every
            if self._stopping.is_set():
                self._save(orders, save_for)
                return
            snapshot_for = _snapshot_for(orders)
            if due or snapshot_for not in (None, self._packed_for):
                self._save(orders, save_for)
                last_save = time.monotonic()
            if snapshot_for not in (None, self._packed_for):
                self._snapshot(orders)
            self._tend_ssh(_ssh_keys(orders))
            if time.monotonic() - last_look >= ACTIVITY_EVERY:
                last_look = time.monotonic()
                self._note_activity()
            self._wake.wait(min(ACTIVITY_EVERY, every))
            self._wake.clear()

    def _await_jupyter(self) -> None:
        """The console shows the workspace running once its files are back (the report
        of restored_at) and then its JupyterLab, which starts after Ray is up, must
        answer too. A JupyterLab that never answers does not hold the workspace back:
        Ray and SSH still serve, and its log says why."""
        port = self.context.apps.get("jupyter")
        if not port:
            return
        started = time.monotonic()
        while not apps.jupyter_answers(port):
            if time.monotonic() - started >= JUPYTER_START_SECONDS:
                logger.warning(
                    "JupyterLab did not answer within %.0f s (see jupyter.log)",
                    JUPYTER_START_SECONDS,
                )
                return
            if self._stopping.wait(JUPYTER_LOOK_EVERY):
                return
        logger.info("JupyterLab answers (waited %.1f s)", time.monotonic() - started)

    def _save(self, orders: dict[str, Any], save_for: str | None) -> None:
        if self._files is None:
            return
        rules = Rules(
            excludes=tuple(str(p) for p in orders.get("excludes") or ()),
            max_file_bytes=int(orders.get("max_file_bytes") or Rules.max_file_bytes),
            max_total_bytes=int(orders.get("max_total_bytes") or Rules.max_total_bytes),
        )
        try:
            result = self._files.save(rules)
        except OSError as exc:
            logger.error("saving the workspace's files failed: %s", exc)
            self._set(error=f"saving the files failed: {exc}")
            return
        self._saved_for = save_for
        saved = {
            "at": result.at,
            "for": save_for,
            "files": result.files,
            "bytes": result.bytes,
            "skipped": result.skipped,
        }
        packages = None
        if self._baseline is not None and not self._stopping.is_set():
            baseline = set(self._baseline)
            packages = [p for p in pip_freeze(self.context.python) if p not in baseline]
        logger.info("saved %d files (%d bytes) of the workspace", result.files, result.bytes)
        with self._lock:
            self._report.update(saved=saved, error="")
            if packages is not None:
                self._report["packages_added"] = packages

    def _snapshot(self, orders: dict[str, Any]) -> None:
        """Pack what the save just kept into the job's working dir (see the docstring)."""
        asked = orders["snapshot"]
        token = str(asked["for"])
        self._packed_for = token  # tried once per ask; a new ask comes with a new token
        result: dict[str, Any] = {"for": token}
        try:
            with self._lock:
                failed = self._report.get("error")
            if self._files is None or failed:
                raise ValueError(failed or "the files were never restored")
            data = pack(self._files.store, int(asked.get("max_bytes") or 0))
            digest = hashlib.sha256(data).hexdigest()
            ObjectClient().put(
                f"{str(asked['to']).rstrip('/')}/{digest}.zip", data, content_type="application/zip"
            )
            with self._lock:
                packages = self._report.get("packages_added", [])
            result.update(sha256=digest, size=len(data), packages=packages)
            logger.info("packed the workspace's files for a job (%d bytes)", len(data))
        except (OSError, ValueError, KeyError) as exc:
            logger.error("packing the workspace's files for a job failed: %s", exc)
            result["error"] = str(exc)[:300]
        self._set(snapshot=result)
        self.context.report_soon()

    def _tend_ssh(self, keys: list[str] | None) -> None:
        """sshd runs once the orders carry keys (none: no SSH), accepting those keys."""
        if keys is None or keys == self._ssh_keys:
            return
        self._ssh_keys = keys  # tried once per change of keys, not on every look
        try:
            self._sshd.set_keys(keys)
            port = self._sshd.start()
        except OSError as exc:
            logger.error("could not run the workspace's sshd: %s", exc)
            self._sshd.stop()
            self._set(ssh={"unavailable": str(exc)[:200]})
            return
        self.context.serve_app("ssh", port)
        logger.info("sshd accepts %d keys of the workspace's members", len(keys))
        self._set(ssh={"user": login_user()})
        self.context.report_soon()

    def _note_activity(self) -> None:
        port = self.context.apps.get("jupyter")
        if not port:
            return
        for kind, at in jupyter_activity(port, time.time()).items():
            if kind == "kernel":
                activity.ACTIVITY.note_kernel_activity(at)
            else:
                activity.ACTIVITY.note_activity(kind, at)


def _snapshot_for(orders: dict[str, Any]) -> str | None:
    asked = orders.get("snapshot")
    return str(asked["for"]) if isinstance(asked, dict) and asked.get("for") else None


def _ssh_keys(orders: dict[str, Any]) -> list[str] | None:
    ssh = orders.get("ssh")
    keys = ssh.get("keys") if isinstance(ssh, dict) else None
    return [str(k) for k in keys] if isinstance(keys, list) else None


def factory(context: HeadContext) -> WorkspaceHandler:
    return WorkspaceHandler(context)


HANDLER_FACTORIES.append(factory)
