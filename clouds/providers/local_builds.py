"""Image builds on the local cloud (mixed into LocalProvider): each build is a process of
its own (local_build_runner.py, Buildah without a daemon) in a folder under the cloud's
root, so it outlives the worker that started it; polls read its status file and check
its process is still there.

    root/builds/<build uuid>/   job.json, status.json, build.log, process.json
    root/envs/<hash>/           content-addressed Python environments (by requirements)
    root/buildah/               Buildah's storage (vfs), this cloud's own
    root/registry/              the registry on loopback (local_registry.py)
    log_dir/builds/<uuid>.log   each build's log, kept after the build
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from .base import PermanentCloudError, PermanentErrorKind
from .builds import BuildRequest, BuildState, BuildStatus
from .local_build_runner import BASE_TOOLS, JOB_FILE, LOG_FILE, STATUS_FILE
from .local_registry import ensure_registry, process_start_time

RUNNER = Path(__file__).with_name("local_build_runner.py")
PROCESS_FILE = "process.json"
TAIL_LINES = 40
CANCEL_GRACE = 5.0
# What the build's process inherits: pip's settings and proxies, never the control
# plane's secrets.
_ENV_PASSTHROUGH = ("PATH", "HOME", "LANG", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_ENV_PREFIXES = (
    "PIP_",
    "LC_",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# A new set of base tools makes a new base image (the old one stays in storage).
BASE_TAG = _short_hash(repr(BASE_TOOLS))


def node_python() -> tuple[str, str, str]:
    """The Python the local cloud's nodes run (Raydeck's own, which has Ray): the
    interpreter to run, the real one under it, and its site-packages."""
    base = getattr(sys, "_base_executable", sys.executable)
    return sys.executable, str(Path(base).resolve()), sysconfig.get_paths()["purelib"]


class LocalBuilder:
    """Builds for LocalProvider (which gives `root` and `log_dir`)."""

    root: Path
    log_dir: Path

    def _build_dir(self, external_id: str) -> Path:
        if not external_id.isalnum():
            raise PermanentCloudError(
                f"{external_id!r} is not a build of this cloud.",
                kind=PermanentErrorKind.NOT_FOUND,
            )
        return self.root / "builds" / external_id

    def start_build(self, *, build: BuildRequest) -> str:
        external_id = build.build_id.hex
        folder = self._build_dir(external_id)
        if (folder / PROCESS_FILE).exists():
            return external_id  # started already: one build per id
        if shutil.which("buildah") is None:
            raise PermanentCloudError(
                "The local cloud builds images with Buildah, which is not installed on this "
                "machine: apt-get install buildah",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        registry = ensure_registry(self.root)
        python, base_python, node_site = node_python()
        requirements = build.spec.get("requirements") or []
        env_key = hashlib.sha256(
            json.dumps([requirements, base_python, node_site]).encode()
        ).hexdigest()[:32]
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        job: dict[str, Any] = {
            "spec": build.spec,
            "env_dir": str(self.root / "envs" / env_key),
            "node_python": python,
            "base_python": base_python,
            "node_site": node_site,
            "buildah_root": str(self.root / "buildah" / "storage"),
            "buildah_runroot": str(self.root / "buildah" / "run"),
            "base_image": f"localhost/raydeck-local-base:{BASE_TAG}-{_short_hash(base_python)}",
            "container_name": f"raydeck-build-{external_id}",
            "registry": registry,
            "repository": build.repository,
            "tag": f"build-{external_id[:12]}",
            "log_copy": str(self.log_dir / "builds" / f"{build.build_id}.log"),
        }
        (folder / JOB_FILE).write_text(json.dumps(job, indent=2))
        env = {
            k: v
            for k, v in os.environ.items()
            if k in _ENV_PASSTHROUGH or k.startswith(_ENV_PREFIXES)
        }
        with open(folder / LOG_FILE, "ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own runner
                [python, str(RUNNER), str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: cancel stops all of it
                env=env,
                cwd=folder,
            )
        (folder / PROCESS_FILE).write_text(
            json.dumps({"pid": process.pid, "start_time": process_start_time(process.pid)})
        )
        return external_id

    def _process(self, folder: Path) -> dict[str, Any] | None:
        """The build's process record, if that process still runs."""
        try:
            record = json.loads((folder / PROCESS_FILE).read_text())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(record["pid"], os.WNOHANG)  # reap it if we started it
        if process_start_time(record["pid"]) != record.get("start_time"):
            return None
        return dict(record)

    def poll_build(self, *, external_id: str) -> BuildStatus:
        folder = self._build_dir(external_id)
        if not folder.is_dir():
            raise PermanentCloudError(
                "The build's folder is gone from the local cloud.",
                kind=PermanentErrorKind.NOT_FOUND,
            )
        running = self._process(folder) is not None
        try:
            status = json.loads((folder / STATUS_FILE).read_text())
        except (OSError, ValueError):
            status = {"state": BuildState.BUILDING.value, "step": ""}
        job = json.loads((folder / JOB_FILE).read_text())
        state = BuildState(status.get("state", BuildState.BUILDING.value))
        error = status.get("error", "")
        if state == BuildState.BUILDING and not running:
            # Killed (the machine restarted, someone ran kill -9): it will never finish.
            state = BuildState.FAILED
            at = f" at {status['step']}" if status.get("step") else ""
            error = f"The build process stopped{at} without finishing. Build again."
        return BuildStatus(
            state=state,
            step=status.get("step", ""),
            steps=list(status.get("steps", [])),
            error=error,
            log_tail=_tail(folder / LOG_FILE),
            log_location=job.get("log_copy", ""),
            image_uri=status.get("image_uri", ""),
            python_executable=status.get("python_executable", ""),
        )

    def build_log(self, *, external_id: str) -> str:
        try:
            return (self._build_dir(external_id) / LOG_FILE).read_text(errors="replace")
        except OSError:
            return ""

    def cancel_build(self, *, external_id: str) -> None:
        folder = self._build_dir(external_id)
        record = self._process(folder)
        for sig, wait in ((signal.SIGTERM, CANCEL_GRACE), (signal.SIGKILL, 2.0)):
            if record is None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record["pid"], sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self._process(folder) is None:
                    break
                time.sleep(0.1)
            else:
                continue
            break
        with contextlib.suppress(OSError, ValueError):
            status = json.loads((folder / STATUS_FILE).read_text())
            if status.get("state") != BuildState.SUCCEEDED:  # a step killed by the stop
                status.update(state=BuildState.CANCELLED.value, finished_at=time.time())
                (folder / STATUS_FILE).write_text(json.dumps(status))
        with contextlib.suppress(OSError, ValueError):
            job = json.loads((folder / JOB_FILE).read_text())
            buildah = shutil.which("buildah") or "buildah"
            subprocess.run(  # noqa: S603 - remove the working container it left
                [
                    buildah,
                    "--root",
                    job["buildah_root"],
                    "--runroot",
                    job["buildah_runroot"],
                    "--storage-driver",
                    "vfs",
                    "rm",
                    job["container_name"],
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )
