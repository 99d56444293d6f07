"""One image build on the local cloud, run as its own process (`python3 <this file>
<build folder>`), so it outlives the Celery worker that started it, as a CodeBuild build
outlives the call that started it. Standard library only: it imports nothing of Raydeck.

The build folder holds `job.json` (what to build, written by the local driver) and gets
`build.log` (every step's output) and `status.json` (the state, the current or failed
step, the result), written atomically so the driver's poll never reads half a file.

Steps, each named in the log and in the status:
1. base image: Raydeck's local base, made once from this machine (`buildah from scratch`
   plus a minimal root: a shell, a few tools, and the Python that runs Raydeck's nodes,
   without its site-packages), because no registry of base images is reachable here.
2. environment: the requirements, pip-installed into a content-addressed virtualenv
   under the cloud's root, on top of the nodes' Python (a .pth adds its site-packages,
   so Ray is there). Identical requirements share one environment, built once.
3. image: the base plus that environment (same path), the spec's environment variables.
4. one step per post-build command, run in the image with `buildah run` (chroot
   isolation, no daemon).
5. push: the image is committed and pushed to the registry on loopback; the result is
   its reference by digest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
JOB_FILE = "job.json"
LOG_FILE = "build.log"
ENV_DONE = ".complete"  # written last: an environment without it is rebuilt
# Tools the base image carries besides the shell, so post-build commands can do simple
# file work; each is copied with the libraries it links.
BASE_TOOLS = (
    *("env", "cat", "ls", "mkdir", "cp", "mv", "rm", "ln", "chmod", "touch", "echo", "true"),
    *("false", "test", "sleep", "head", "tail", "grep", "sed", "tr", "wc", "sort", "date"),
)
# Parts of the standard library no build needs (tests, IDLE, Tk, the static library).
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "config-")


class Cancelled(Exception):
    """SIGTERM: the driver's cancel_build stops the build's whole process group."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Cancelled


class StepFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Build:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.job: dict[str, Any] = json.loads((folder / JOB_FILE).read_text())
        self.log = open(folder / LOG_FILE, "ab", buffering=0)  # noqa: SIM115 - lives with the build
        self.status: dict[str, Any] = {"state": "building", "step": "", "steps": []}
        self.buildah = [
            "buildah",
            "--root",
            self.job["buildah_root"],
            "--runroot",
            self.job["buildah_runroot"],
            "--storage-driver",
            "vfs",
        ]

    # -- status and log ----------------------------------------------------------

    def write_status(self, **changes: Any) -> None:
        self.status.update(changes)
        path = self.folder / STATUS_FILE
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".status.")
        with os.fdopen(fd, "w") as f:
            json.dump(self.status, f)
        os.replace(tmp, path)

    def say(self, line: str) -> None:
        self.log.write(f"{line}\n".encode())

    def step(self, name: str) -> None:
        self.say(f"==> {name}")
        self.write_status(step=name, steps=[*self.status["steps"], name])

    def run(self, command: list[str], *, env: dict[str, str] | None = None) -> str:
        """Run a command, its output into the log; a non-zero exit fails the step."""
        result = subprocess.run(  # noqa: S603 - our own argument lists
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
        self.log.write(result.stdout)
        if result.returncode != 0:
            raise StepFailed(f"{Path(command[0]).name} exited with code {result.returncode}")
        return result.stdout.decode(errors="replace")

    # -- steps ----------------------------------------------------------------------

    def base_image(self) -> str:
        name = self.job["base_image"]
        with _flock(Path(self.job["buildah_root"]).parent / "base.lock"):
            probe = subprocess.run(  # noqa: S603
                [*self.buildah, "inspect", "--type", "image", name],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                self.say(f"{name} is already here")
                return name
            container = self.run([*self.buildah, "from", "scratch"]).strip().splitlines()[-1]
            try:
                mount = self.run([*self.buildah, "mount", container]).strip().splitlines()[-1]
                copy_minimal_root(Path(mount), Path(self.job["base_python"]))
                self.run([*self.buildah, "config", "--env", f"PATH={BASE_PATH}", container])
                self.run([*self.buildah, "commit", "--quiet", container, name])
            finally:
                subprocess.run([*self.buildah, "rm", container], capture_output=True, check=False)  # noqa: S603
        return name

    def environment(self) -> None:
        env_dir = Path(self.job["env_dir"])
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        with _flock(env_dir.with_name(env_dir.name + ".lock")):
            if (env_dir / ENV_DONE).exists():
                self.say(f"{env_dir} is already built (same requirements)")
                return
            shutil.rmtree(env_dir, ignore_errors=True)  # left half-built by a crash
            self.run([self.job["base_python"], "-m", "venv", "--without-pip", str(env_dir)])
            site = Path(
                self.run(
                    [
                        str(env_dir / "bin" / "python"),
                        "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    ]
                ).strip()
            )
            # The nodes' own packages (Ray, the agent) after the environment's own.
            (site / "_raydeck_node.pth").write_text(
                f"import site; site.addsitedir({self.job['node_site']!r})\n"
            )
            requirements = self.job["spec"].get("requirements") or []
            if requirements:
                listing = env_dir / "requirements.txt"
                listing.write_text("\n".join(requirements) + "\n")
                self.run(
                    [
                        self.job["node_python"],
                        "-m",
                        "pip",
                        "--python",
                        str(env_dir / "bin" / "python"),
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "-r",
                        str(listing),
                    ]
                )
            self.run([str(env_dir / "bin" / "python"), "-c", "import ray"])
            (env_dir / ENV_DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))

    def image(self, base: str) -> str:
        spec = self.job["spec"]
        env_dir = self.job["env_dir"]
        name = self.job["container_name"]
        self.container = name
        subprocess.run([*self.buildah, "rm", name], capture_output=True, check=False)  # noqa: S603 - a rerun's leftover
        container = self.run([*self.buildah, "from", "--pull-never", "--name", name, base])
        container = container.strip().splitlines()[-1]
        self.run([*self.buildah, "copy", "--quiet", container, env_dir, env_dir])
        config = ["--env", f"PATH={env_dir}/bin:{BASE_PATH}", "--env", f"VIRTUAL_ENV={env_dir}"]
        for key, value in sorted((spec.get("env") or {}).items()):
            config += ["--env", f"{key}={value}"]
        self.run([*self.buildah, "config", *config, container])
        return container

    def post_build(self, container: str, command: str) -> None:
        self.run(
            [
                *self.buildah,
                "run",
                "--isolation",
                "chroot",
                container,
                "--",
                "/bin/sh",
                "-ec",
                command,
            ]
        )

    def push(self, container: str) -> str:
        registry, repository = self.job["registry"], self.job["repository"]
        local_name = f"localhost/{repository}:{self.job['tag']}"
        self.run([*self.buildah, "commit", "--quiet", container, local_name])
        digest_file = self.folder / "digest"
        self.run(
            [
                *self.buildah,
                "push",
                "--tls-verify=false",
                "--digestfile",
                str(digest_file),
                local_name,
                f"docker://{registry}/{repository}:{self.job['tag']}",
            ]
        )
        digest = digest_file.read_text().strip()
        return f"{registry}/{repository}@{digest}"

    # -- the whole build ------------------------------------------------------------

    def main(self) -> int:
        self.container = ""
        signal.signal(signal.SIGTERM, _on_sigterm)
        self.write_status(started_at=time.time(), pid=os.getpid())
        try:
            self.step("base image")
            base = self.base_image()
            self.step("environment: pip install")
            self.environment()
            self.step("image")
            container = self.image(base)
            for command in self.job["spec"].get("post_build") or []:
                self.step(f"post-build: {command}")
                self.post_build(container, command)
            self.step("push")
            reference = self.push(container)
        except Cancelled:
            self.say(f"!! cancelled at {self.status['step']}")
            self.finish(state="cancelled")
            return 1
        except StepFailed as exc:
            self.say(f"!! {self.status['step']} failed: {exc.message}")
            self.finish(state="failed", error=f"{self.status['step']} failed: {exc.message}")
            return 1
        except Exception as exc:
            self.say(f"!! {self.status['step']} failed: {exc!r}")
            self.finish(state="failed", error=f"{self.status['step']} failed: {exc}")
            return 1
        self.say(f"==> built {reference}")
        self.finish(
            state="succeeded",
            image_uri=reference,
            python_executable=str(Path(self.job["env_dir"]) / "bin" / "python"),
        )
        return 0

    def finish(self, **result: Any) -> None:
        if self.container:
            subprocess.run([*self.buildah, "rm", self.container], capture_output=True, check=False)  # noqa: S603
        keep = self.job.get("log_copy")
        if keep:  # the log stays in the cloud's log folder after the build folder goes
            with contextlib.suppress(OSError):
                Path(keep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.folder / LOG_FILE, keep)
        self.write_status(finished_at=time.time(), **result)


BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@contextlib.contextmanager
def _flock(path: Path):  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _libraries(binary: Path) -> set[Path]:
    """The shared libraries `binary` links (ldd), with the loader."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)  # noqa: S603, S607
    found = set()
    for line in result.stdout.splitlines():
        for part in line.split():
            if part.startswith("/"):
                found.add(Path(part))
    return found


def _copy_into(root: Path, source: Path) -> None:
    target = root / source.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)


def copy_minimal_root(root: Path, python: Path) -> None:
    """A shell, a few tools and `python` (its binary, libraries and standard library,
    at the same paths, so a virtualenv made on this machine runs in the image)."""
    python = python.resolve()
    prefix = python.parent.parent
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binaries = [Path("/bin/sh").resolve(), python]
    binaries += [Path(found) for tool in BASE_TOOLS if (found := shutil.which(tool))]
    stdlib = prefix / "lib" / version
    binaries += list((stdlib / "lib-dynload").glob("*.so"))
    libraries: set[Path] = set()
    for binary in binaries:
        libraries |= _libraries(binary)
    for library in libraries:
        _copy_into(root, library)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2(Path("/bin/sh").resolve(), root / "bin" / "sh")
    for tool in BASE_TOOLS:
        found = shutil.which(tool)
        if found:
            _copy_into(root, Path(found))
    _copy_into(root, python)
    for name in (f"python{sys.version_info.major}", "python"):
        link = python.parent / name
        target = root / link.relative_to("/")
        if not target.exists():
            target.symlink_to(python.name)
    for library in prefix.glob("lib/libpython*.so*"):
        _copy_into(root, library)

    def skip(folder: str, names: list[str]) -> list[str]:
        at_top = Path(folder) == stdlib
        return [
            n
            for n in names
            if n == "__pycache__"
            or (at_top and (n == "site-packages" or n.startswith(STDLIB_SKIP)))
        ]

    shutil.copytree(stdlib, root / stdlib.relative_to("/"), ignore=skip, symlinks=True)
    (root / stdlib.relative_to("/") / "site-packages").mkdir(exist_ok=True)
    for folder in ("tmp", "etc", "root"):
        (root / folder).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)


if __name__ == "__main__":
    sys.exit(Build(Path(sys.argv[1])).main())
