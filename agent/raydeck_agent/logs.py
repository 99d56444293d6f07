"""The agent's log, the recent lines of agent + Ray logs kept for heartbeats, and the
copying of log files to the cluster's log location."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .config import AGENT_LOG_SOURCE, RAY_LOG_FILES, RAY_START_SOURCE

AGENT_LOG = "agent.log"
RAY_START_LOG = "ray-start.log"  # stdout+stderr of `ray start --block`
KEEP_LINES = 200
HEARTBEAT_LINES = 50
MAX_LINE_CHARS = 1000
MAX_READ_BYTES = 256 * 1024  # per file per poll: only the tail matters for heartbeats

# The dashboard's access log: our own status polling would show up there on every
# heartbeat and make the tail "change" every time.
_ACCESS_LOG_LINE = re.compile(r"\bweb_log\.py:\d+ -- ")
# Files Ray rewrites in place rather than appends to: not worth copying.
_NOT_SHIPPED = re.compile(r"^debug_state.*\.txt$")
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]+$")

logger = logging.getLogger("raydeck_agent")


class LogBuffer:
    """The last KEEP_LINES lines, labelled by source. `seq` grows with every line, so
    "changed since the last heartbeat" is a comparison of two numbers."""

    def __init__(self, maxlen: int = KEEP_LINES) -> None:
        self._lines: deque[str] = deque(maxlen=maxlen)
        self._lock = threading.Lock()  # logging may call add() from any thread
        self.seq = 0

    def add(self, source: str, text: str) -> None:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            return
        with self._lock:
            for line in lines:
                if len(line) > MAX_LINE_CHARS:
                    line = line[:MAX_LINE_CHARS] + "…"
                self._lines.append(f"[{source}] {line}")
                self.seq += 1

    def tail(self, n: int = HEARTBEAT_LINES) -> list[str]:
        with self._lock:
            return list(self._lines)[-n:]


class BufferHandler(logging.Handler):
    def __init__(self, buffer: LogBuffer) -> None:
        super().__init__()
        self.buffer = buffer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.buffer.add(AGENT_LOG_SOURCE, self.format(record))
        except Exception:  # logging must never raise
            self.handleError(record)


def setup_logging(node_dir: Path, buffer: LogBuffer, level: str = "INFO") -> None:
    """agent.log in the node's folder, stderr (the boot log), and the heartbeat buffer."""
    numeric = logging.getLevelName(level.upper())
    logger.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    logger.addHandler(stderr)
    try:
        node_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(node_dir / AGENT_LOG, encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    except OSError as exc:
        logger.warning("cannot write %s: %s; logging to stderr only", node_dir / AGENT_LOG, exc)
    # Heartbeats carry INFO and above: debug chatter (every heartbeat) would make the
    # tail "change" every time and defeat sending it only when something happened.
    buffered = BufferHandler(buffer)
    buffered.setLevel(logging.INFO)
    buffered.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(buffered)


class FileFollower:
    """Feeds the new complete lines of one file to a LogBuffer, like `tail -F`."""

    def __init__(self, path: Path, label: str, skip: re.Pattern[str] | None = None) -> None:
        self.path = path
        self.label = label
        self.skip = skip  # lines matching it are noise, left out
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""

    def poll(self, buffer: LogBuffer) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            return
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            # New or rotated/truncated file: start over from its beginning.
            self._inode, self._offset, self._partial = stat.st_ino, 0, b""
        if stat.st_size == self._offset:
            return
        start = self._offset
        if stat.st_size - start > MAX_READ_BYTES:
            # A burst: only its end can show up in a 50-line tail anyway.
            start, self._partial = stat.st_size - MAX_READ_BYTES, b""
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                data = f.read(stat.st_size - start)
        except OSError:
            return
        self._offset = start + len(data)
        data = self._partial + data
        complete, _, self._partial = data.rpartition(b"\n")
        if len(self._partial) > MAX_LINE_CHARS * 4:  # a line without end: show it anyway
            complete, self._partial = data, b""
        text = complete.decode("utf-8", "replace")
        if self.skip is not None:
            text = "\n".join(line for line in text.splitlines() if not self.skip.search(line))
        if text:
            buffer.add(self.label, text)


class RayLogWatcher:
    """Follows `ray start`'s output and Ray's own log files as they appear."""

    def __init__(self, buffer: LogBuffer, node_dir: Path, temp_dir: Path) -> None:
        self.buffer = buffer
        self.logs_dir = temp_dir / "session_latest" / "logs"
        self._followers: dict[Path, FileFollower] = {}
        self._follow(node_dir / RAY_START_LOG, RAY_START_SOURCE)

    def poll(self) -> None:
        self._discover()
        for follower in list(self._followers.values()):
            follower.poll(self.buffer)

    def _follow(self, path: Path, label: str, skip: re.Pattern[str] | None = None) -> None:
        if path not in self._followers:
            self._followers[path] = FileFollower(path, label, skip)

    def _discover(self) -> None:
        try:
            names = os.listdir(self.logs_dir)
        except OSError:
            return  # Ray has not created its session yet
        for name in RAY_LOG_FILES:
            if name in names:
                skip = _ACCESS_LOG_LINE if name == "dashboard.log" else None
                self._follow(self.logs_dir / name, name, skip)
        # Only Ray's own files: worker-*.out/err and job-driver-*.log hold what the
        # user's code prints, which stays in the data plane (see SYSTEM_LOG_SOURCES).


# --- shipping log files to the cluster's log location ----------------------------------


class LogSink(Protocol):
    """Where a node's log files are copied. `name` is a relative path such as
    "agent.log" or "ray/raylet.out"; `data` is what was appended since the last call.
    A folder here; S3 and GCS in object_store.py (one object per chunk)."""

    def append(self, name: str, data: bytes) -> None: ...


class LocalFolderSink:
    def __init__(self, root: Path) -> None:
        self.root = root

    def append(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)


class UnsupportedLogLocation(ValueError):
    pass


def sink_for(location: str, cluster_id: str, node_id: str) -> LogSink:
    """The sink for a registration's log_location: `<location>/<cluster_id>/<node_id>/`."""
    for part in (cluster_id, node_id):
        if not _SAFE_COMPONENT.match(part) or part in (".", ".."):
            raise UnsupportedLogLocation(f"unsafe path component {part!r}")
    parts = urlsplit(location)
    scheme = parts.scheme
    if scheme in ("s3", "gs"):
        from .object_store import GcsSink, S3Sink

        if not parts.netloc:
            raise UnsupportedLogLocation(f"{location!r} names no bucket")
        base = "/".join(p for p in (parts.path.strip("/"), cluster_id, node_id) if p)
        return S3Sink(parts.netloc, base) if scheme == "s3" else GcsSink(parts.netloc, base)
    path = parts.path if scheme == "file" else location
    if not path.startswith("/"):
        raise UnsupportedLogLocation(f"{location!r} is not an absolute folder path")
    return LocalFolderSink(Path(path) / cluster_id / node_id)


class LogShipper:
    """Copies what was appended to each source file since the last call to the sink."""

    def __init__(self, sink: LogSink, sources: Callable[[], Iterable[tuple[str, Path]]]) -> None:
        self.sink = sink
        self.sources = sources
        self._offsets: dict[Path, tuple[int, int]] = {}  # path -> (inode, offset)

    def ship(self, max_bytes: int = 8 << 20) -> None:
        for name, path in self.sources():
            try:
                self._ship_one(name, path, max_bytes)
            except OSError as exc:
                logger.debug("could not ship %s: %s", path, exc)

    def _ship_one(self, name: str, path: Path, max_bytes: int) -> None:
        stat = path.stat()
        inode, offset = self._offsets.get(path, (stat.st_ino, 0))
        if inode != stat.st_ino or stat.st_size < offset:
            inode, offset = stat.st_ino, 0  # rotated or truncated: copy the new file too
        if stat.st_size <= offset:
            return
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(min(stat.st_size - offset, max_bytes))
        self.sink.append(name, data)
        self._offsets[path] = (inode, offset + len(data))


def node_log_sources(node_dir: Path, temp_dir: Path) -> Callable[[], list[tuple[str, Path]]]:
    """agent.log, ray-start.log, and every file under Ray's session log folder."""
    logs_dir = temp_dir / "session_latest" / "logs"

    def sources() -> list[tuple[str, Path]]:
        found = [(AGENT_LOG, node_dir / AGENT_LOG), (RAY_START_LOG, node_dir / RAY_START_LOG)]
        found = [(name, path) for name, path in found if path.is_file()]
        if logs_dir.is_dir():
            for path in sorted(logs_dir.rglob("*")):
                if path.is_file() and not path.is_symlink() and not _NOT_SHIPPED.match(path.name):
                    found.append((f"ray/{path.relative_to(logs_dir)}", path))
        return found

    return sources
