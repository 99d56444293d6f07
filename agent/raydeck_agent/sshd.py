"""A workspace's SSH server on the head (`raydeck workspaces ssh`, VS Code's Remote-SSH):
the image's own OpenSSH sshd, started when the workspace's orders carry keys
(workspace.py), listening on loopback only. The access gateway's /ssh route
(gateway.py) is the only way in: a WebSocket, opened with the user's Raydeck token,
whose bytes it pipes to this port.

Everything sshd needs lives in the node's folder (`ssh/`): its configuration, its own
host key (made here, never the machine's), its pid file and the authorized keys, which
the orders' keys replace whole on every change (sshd reads the file at each login, so
a removed key or member is refused from the next connection on). Only public keys are
accepted, and only for the user the agent runs as; root may log in with a key only
when the agent itself runs as root (the local cloud's heads in CI).

Sessions start in the workspace's working directory, not $HOME (sshd always starts in
the account's home): every session runs `session.sh` (ForceCommand), which changes
there and runs what was asked, or a login shell. sftp then needs the sftp-server
program (internal-sftp cannot run from a script); without one, sessions stay in $HOME.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .apps import free_port

logger = logging.getLogger("raydeck_agent")

SSHD_PORT = 2222  # on a machine of its own; the local cloud picks a free one
SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")  # often not on a user's PATH
SFTP_SERVER_PATHS = (
    "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/lib/ssh/sftp-server",  # Arch, Alpine
)
PRIVSEP_DIR = Path("/run/sshd")  # root's sshd wants it; a package's service makes it
START_SECONDS = 10.0
ATTEMPTS = 3  # a free port can be taken between choosing and binding it: choose again
NOT_INSTALLED = "sshd is not installed"


def sshd_executable() -> Path | None:
    found = shutil.which("sshd") or next((p for p in SSHD_PATHS if os.access(p, os.X_OK)), None)
    return Path(found) if found else None


def sftp_server() -> str | None:
    return next((p for p in SFTP_SERVER_PATHS if os.access(p, os.X_OK)), None)


def session_script(work_dir: Path) -> str:
    """ForceCommand's script: sshd passes what the client asked in SSH_ORIGINAL_COMMAND
    (the sftp subsystem's program too); nothing asked is an interactive login."""
    return (
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(work_dir))} || exit 1\n"
        'if [ -z "$SSH_ORIGINAL_COMMAND" ]; then exec "${SHELL:-/bin/sh}" -l; fi\n'
        'exec "${SHELL:-/bin/sh}" -c "$SSH_ORIGINAL_COMMAND"\n'
    )


def login_user() -> str:
    """The one account sshd lets in: the agent's own (sshd not running as root can
    log in no one else)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def authorized_keys(keys: list[str]) -> str:
    """One line per valid-looking key; `restrict` minus a terminal and port forwarding,
    which an editor's remote session needs (no agent or X11 forwarding)."""
    lines = [
        f"restrict,pty,port-forwarding {key.strip()}"
        for key in keys
        if isinstance(key, str) and key.strip() and "\n" not in key.strip()
    ]
    return "".join(line + "\n" for line in lines)


class Sshd:
    """One sshd process of the head, started once and stopped with the node."""

    def __init__(
        self,
        folder: Path,
        *,
        shared_machine: bool,
        env: dict[str, str],
        work_dir: Path | None = None,
    ) -> None:
        self.folder = folder
        self.work_dir = work_dir
        self.shared_machine = shared_machine
        self.env = env  # the sessions' environment: Ray's, so `ray` finds the cluster
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.keys_file = folder / "authorized_keys"

    def set_keys(self, keys: list[str]) -> None:
        """Replace the accepted keys (atomically: a login never reads half a file)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.keys_file.with_name(".authorized_keys.part")
        partial.write_text(authorized_keys(keys))
        partial.chmod(0o600)
        os.replace(partial, self.keys_file)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> int:
        """Start sshd (once) and return its port; OSError with the reason if it cannot."""
        if self.running() and self.port is not None:
            return self.port
        executable = sshd_executable()
        if executable is None:
            raise OSError(NOT_INSTALLED)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        host_key = self._host_key()
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        if not self.keys_file.exists():
            self.set_keys([])
        last_line = "no output"
        for _ in range(ATTEMPTS):
            port = free_port() if self.shared_machine else SSHD_PORT
            config = self.folder / "sshd_config"
            config.write_text(self._config(port, host_key))
            config.chmod(0o600)  # it holds the sessions' Ray token
            log = self.folder / "sshd.log"
            with open(log, "ab") as output:
                self.process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                    # -D: stay in the foreground (its child); -e: log to the file.
                    [str(executable), "-D", "-e", "-f", str(config)],
                    cwd=self.folder,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its connections' processes go with it
                )
            if self._listening(port):
                self.port = port
                logger.info("started sshd on 127.0.0.1:%d", port)
                return port
            self.stop()
            last_line = next(iter(log.read_text(errors="replace").splitlines()[-1:]), last_line)
        raise OSError(f"sshd did not start: {last_line}")

    def _listening(self, port: int) -> bool:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self.running():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            time.sleep(0.1)
        return False

    def _host_key(self) -> Path:
        """This head's own host key, made once (never the machine's: a workspace's
        sessions should not learn what other tenants of a shared machine use)."""
        path = self.folder / "ssh_host_ed25519_key"
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        return path

    def _config(self, port: int, host_key: Path) -> str:
        as_root = os.geteuid() == 0
        session_env = " ".join(
            f'"{name}={self.env[name]}"'
            for name in ("PATH", "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
            if name in self.env and '"' not in self.env[name]
        )
        lines = [
            f"Port {port}",
            "ListenAddress 127.0.0.1",  # the gateway is the only way in
            f"HostKey {host_key}",
            f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.keys_file}",
            f"AllowUsers {login_user()}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"PermitRootLogin {'prohibit-password' if as_root else 'no'}",
            # The keys file is the agent's own, in the node's folder; sshd's checks of
            # every parent folder would refuse a node folder under /tmp.
            "StrictModes no",
            "UsePAM no",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
        ]
        sftp = sftp_server()
        if self.work_dir is not None and sftp is not None:
            script = self.folder / "session.sh"
            script.write_text(session_script(self.work_dir))
            script.chmod(0o755)
            lines += [f"ForceCommand {script}", f"Subsystem sftp {sftp}"]
        else:
            lines.append("Subsystem sftp internal-sftp")  # scp and editors copy files with it
        if session_env:
            lines.append(f"SetEnv {session_env}")
        return "\n".join(lines) + "\n"

    def stop(self, grace: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
