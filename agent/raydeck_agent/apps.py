"""Web apps the head runs behind its access gateway when the image has them.

JupyterLab: found as `jupyter-lab` next to the node's Python. It listens on loopback
only, under /jupyter/, without a token of its own (the gateway is its authentication).
Its port is chosen before registration and reported with the node's ports, so the
console offers a "Jupyter" link only when it is there.

Prometheus: found as `prometheus` on the PATH (Debian's package on the local cloud and on
an AWS or GCP head without a container image, installed by its boot script), else at
RAYDECK_PROMETHEUS (the boot script's copy of it, for a head that runs a container
image). It listens on loopback under /prometheus/, scrapes every node's Ray metrics port
through the service-discovery file Ray writes on the head (so nodes that join or leave
are followed), keeps a day, and is reached only through the gateway: the
cluster page's charts query it there with the user's own short-lived token.

Grafana: found as `grafana` (run as `grafana server`, Grafana 10 and later) or the older
`grafana-server` on the PATH, with its home folder (conf/defaults.ini), and only beside
Prometheus, its one data source. It listens on loopback, served under /grafana/ (sub-path
serving, so its links work through the gateway), provisioned with the dashboards Ray
writes in its session folder (metrics/grafana/dashboards, followed as Ray rewrites them)
and the head's Prometheus. Everyone the gateway lets in is an anonymous Viewer: the
gateway is the door, so no login, no basic auth and no admin user of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

logger = logging.getLogger("raydeck_agent")

JUPYTER_PORT = 8888  # on a machine of its own; the local cloud picks a free one
JUPYTER_BASE_URL = "/jupyter/"  # gateway.py APP_PREFIXES
PROMETHEUS_PORT = 9090  # on a machine of its own
PROMETHEUS_BASE_URL = "/prometheus/"  # gateway.py APP_PREFIXES
# Ray (re)writes the list of its nodes' metrics ports here, in the head's temp folder.
RAY_SERVICE_DISCOVERY = "prom_metrics_service_discovery.json"
SCRAPE_SECONDS = 10
GRAFANA_PORT = 3000  # on a machine of its own
GRAFANA_BASE_URL = "/grafana/"  # gateway.py APP_PREFIXES
# Where Ray writes its Grafana dashboards when its dashboard starts (Ray's
# metrics_head.py), under the head's temp folder; session_latest follows a restart.
RAY_GRAFANA_DASHBOARDS = Path("session_latest", "metrics", "grafana", "dashboards")
GRAFANA_DATASOURCE = "Prometheus"  # the name Ray's dashboards expect by default


def jupyter_executable(python: str) -> Path | None:
    candidate = Path(python).parent / "jupyter-lab"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def jupyter_answers(port: int) -> bool:
    """JupyterLab serves its API on `port` (it listens on loopback without a token)."""
    url = f"http://127.0.0.1:{port}{JUPYTER_BASE_URL}api/status"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # loopback only
            return bool(response.status == 200)
    except OSError:
        return False


def prometheus_executable() -> Path | None:
    """The image's own Prometheus, else the one the boot script put beside the agent for a
    container that lacks it (RAYDECK_PROMETHEUS)."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    given = os.environ.get("RAYDECK_PROMETHEUS", "")
    return Path(given) if given and os.access(given, os.X_OK) else None


def grafana_home(executable: Path) -> Path | None:
    """Grafana's home folder (conf/defaults.ini, its web assets): $GF_PATHS_HOME, the
    folder above its bin/ (tarballs, Grafana's own image), or Debian's and RPM's."""
    for candidate in (
        os.environ.get("GF_PATHS_HOME"),
        executable.resolve().parent.parent,
        "/usr/share/grafana",
    ):
        if candidate and (Path(candidate) / "conf" / "defaults.ini").is_file():
            return Path(candidate)
    return None


def grafana_command() -> list[str] | None:
    """How this image starts Grafana, without its configuration: `grafana server`, else
    `grafana-server`, with its home; None when the image has neither."""
    for name, subcommand in (("grafana", ["server"]), ("grafana-server", [])):
        found = shutil.which(name)
        home = grafana_home(Path(found)) if found else None
        if found and home is not None:
            return [found, *subcommand, "--homepath", str(home)]
    return None


def grafana_files(folder: Path, port: int, prometheus_port: int, ray_temp_dir: Path) -> None:
    """Grafana's configuration and provisioning in `folder`; JSON is YAML too."""
    provisioning = folder / "provisioning"
    for sub in ("datasources", "dashboards", "plugins", "alerting"):
        (provisioning / sub).mkdir(parents=True, exist_ok=True)
    datasources = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": GRAFANA_DATASOURCE,
                "type": "prometheus",
                "access": "proxy",  # Grafana's server asks, on loopback
                "url": f"http://127.0.0.1:{prometheus_port}{PROMETHEUS_BASE_URL.rstrip('/')}",
                "isDefault": True,
                "editable": False,
            }
        ],
    }
    dashboards = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "Ray",
                "folder": "Ray",
                "type": "file",
                "allowUiUpdates": False,
                # Ray writes them once its dashboard is up, after Grafana started.
                "updateIntervalSeconds": 10,
                "options": {"path": str(ray_temp_dir / RAY_GRAFANA_DASHBOARDS)},
            }
        ],
    }
    (provisioning / "datasources" / "raydeck.yaml").write_text(json.dumps(datasources, indent=2))
    (provisioning / "dashboards" / "raydeck.yaml").write_text(json.dumps(dashboards, indent=2))
    settings = {
        "server": {
            "http_addr": "127.0.0.1",
            "http_port": str(port),
            # The browser reaches it at the gateway's /grafana/; Grafana serves there too.
            "root_url": f"%(protocol)s://%(domain)s:%(http_port)s{GRAFANA_BASE_URL}",
            "serve_from_sub_path": "true",
        },
        "paths": {
            "data": str(folder / "data"),
            "logs": str(folder / "logs"),
            "plugins": str(folder / "plugins"),
            "provisioning": str(provisioning),
        },
        # The gateway let the user in: inside, everyone views; nobody signs in.
        "auth.anonymous": {"enabled": "true", "org_role": "Viewer"},
        "auth": {"disable_login_form": "true"},
        "auth.basic": {"enabled": "false"},
        "security": {"disable_initial_admin_creation": "true", "cookie_secure": "true"},
        "users": {"allow_sign_up": "false"},
        # No calls out of the cluster (it may be air-gapped).
        "analytics": {
            "reporting_enabled": "false",
            "check_for_updates": "false",
            "check_for_plugin_updates": "false",
        },
    }
    (folder / "grafana.ini").write_text(
        "".join(
            f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
            for section, values in settings.items()
        )
    )


def prometheus_config(service_discovery: Path) -> str:
    """Prometheus's configuration (YAML is a superset of JSON): Ray's nodes, found
    through the file Ray keeps up to date on the head."""
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [
            {
                "job_name": "ray",
                "file_sd_configs": [{"files": [str(service_discovery)], "refresh_interval": "15s"}],
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan(python: str, shared_machine: bool) -> dict[str, int]:
    """{app: port} of the apps this node could run, reported when registering."""
    planned: dict[str, int] = {}
    if jupyter_executable(python) is not None:
        planned["jupyter"] = free_port() if shared_machine else JUPYTER_PORT
    if prometheus_executable() is not None:
        planned["prometheus"] = free_port() if shared_machine else PROMETHEUS_PORT
        # Grafana only beside Prometheus: without its data source it shows nothing.
        if grafana_command() is not None:
            planned["grafana"] = free_port() if shared_machine else GRAFANA_PORT
    return planned


class Apps:
    """The app processes of a head node, started once and stopped with the agent."""

    def __init__(
        self,
        python: str,
        ports: dict[str, int],
        work_dir: Path,
        log_dir: Path,
        ray_temp_dir: Path | None = None,
    ) -> None:
        self.python = python
        self.ray_temp_dir = ray_temp_dir
        self.ports = dict(ports)
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.children: list[subprocess.Popen[bytes]] = []

    def _jupyter_env(self, env: dict[str, str]) -> dict[str, str]:
        """Jupyter's and IPython's state (runtime files, settings, layouts, history) in
        this node's folder, not under $HOME: the local cloud's heads share one machine,
        and one JupyterLab must not open with another's layout or files."""
        state = self.log_dir / "jupyter-state"
        return {
            **env,
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            # Its data too (the notebooks' trust database, SQLite): the image's kernels
            # are still found in the environment's own share/jupyter.
            "JUPYTER_DATA_DIR": str(state / "data"),
            "IPYTHONDIR": str(state / "ipython"),
        }

    def start(self, env: dict[str, str]) -> dict[str, int]:
        """Start what is planned; returns {app: port} of those that started."""
        started: dict[str, int] = {}
        executable = jupyter_executable(self.python)
        port = self.ports.get("jupyter")
        if executable is not None and port:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            command = [
                str(executable),
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.base_url={JUPYTER_BASE_URL}",
                f"--ServerApp.root_dir={self.work_dir}",
                # The gateway authenticates every request; Jupyter asks nothing more.
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                # Requests arrive through the gateway with the browser's Host header.
                "--ServerApp.allow_remote_access=True",
            ]
            if os.geteuid() == 0:  # cloud boot scripts run the agent as root
                command.append("--allow-root")
            if self._spawn(
                "JupyterLab", command, self.work_dir, self._jupyter_env(env), "jupyter.log"
            ):
                logger.info("started JupyterLab on 127.0.0.1:%d%s", port, JUPYTER_BASE_URL)
                started["jupyter"] = port
        port = self.ports.get("prometheus")
        prometheus = prometheus_executable()
        if (
            prometheus is not None
            and port
            and self.ray_temp_dir is not None
            and self._start_prometheus(prometheus, port, env, self.ray_temp_dir)
        ):
            started["prometheus"] = port
            grafana_port = self.ports.get("grafana")
            if grafana_port and self._start_grafana(grafana_port, port, env, self.ray_temp_dir):
                started["grafana"] = grafana_port
        return started

    def _start_prometheus(
        self, executable: Path, port: int, env: dict[str, str], ray_temp_dir: Path
    ) -> bool:
        folder = self.log_dir / "prometheus"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        config.write_text(prometheus_config(ray_temp_dir / RAY_SERVICE_DISCOVERY))
        command = [
            str(executable),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{port}",
            # Served under the gateway's prefix, so its links and API paths match.
            f"--web.external-url=http://127.0.0.1:{port}{PROMETHEUS_BASE_URL}",
        ]
        if not self._spawn("Prometheus", command, folder, env, "prometheus.log"):
            return False
        logger.info("started Prometheus on 127.0.0.1:%d%s", port, PROMETHEUS_BASE_URL)
        return True

    def _start_grafana(
        self, port: int, prometheus_port: int, env: dict[str, str], ray_temp_dir: Path
    ) -> bool:
        command = grafana_command()
        if command is None:
            return False
        folder = self.log_dir / "grafana"
        grafana_files(folder, port, prometheus_port, ray_temp_dir)
        command += ["--config", str(folder / "grafana.ini")]
        if not self._spawn("Grafana", command, folder, env, "grafana.log"):
            return False
        logger.info("started Grafana on 127.0.0.1:%d%s", port, GRAFANA_BASE_URL)
        return True

    def _spawn(
        self, name: str, command: list[str], cwd: Path, env: dict[str, str], log_name: str
    ) -> bool:
        """Start one app process, its output appended to `log_name` in the node's folder."""
        try:
            with open(self.log_dir / log_name, "ab") as log:
                self.children.append(
                    subprocess.Popen(  # noqa: S603 - our own argv, no shell
                        command,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        except OSError as exc:
            logger.error("could not start %s: %s", name, exc)
            return False
        return True

    def stop(self, grace: float = 5.0) -> None:
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        self.children = []
