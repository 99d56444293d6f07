"""What the head's Ray dashboard says about the cluster (best effort, short timeouts).

Endpoints used (checked against Ray 2.60):
  GET /api/version         {"version": "4", "ray_version": "2.60.0", ...}: the dashboard is up.
  GET /api/v0/nodes        state API, {"data": {"result": {"result": [{"state": "ALIVE",
                           "resources_total": {"CPU": 2.0, "memory": ..., ...}}, ...]}}}.
                           Keys are NOT camelCased here, so resource names are exact.
  GET /api/cluster_status  {"data": {"clusterStatus": {"loadMetricsReport": {"usage":
                           {"CPU": [used, total], "objectStoreMemory": [...]}, "resourceDemand":
                           [[{"CPU": 2.0}, 2]], "pgDemand": [[{"bundles": [[{..}, n]],
                           "strategy": "PACK"}, count]]}}}}. The dashboard camelCases dict
                           keys (object_store_memory -> objectStoreMemory) except inside
                           lists of lists, so usage is looked up by the camelCased exact name.
                           Filled in by the autoscaler monitor every few seconds; empty at first.
  GET /api/jobs/           [{"type": "SUBMISSION"|"DRIVER", "status": "RUNNING", ...}]. Drivers
                           of submitted jobs are not listed twice.
  GET /api/v0/tasks?filter_keys=state&filter_predicates=%3D&filter_values=RUNNING
  GET /api/v0/actors?...filter_values=ALIVE
                           state API, {"data": {"result": {"result": [{"node_id": ..}]}}}:
                           which Ray nodes run something. `node_name` in /api/v0/nodes is
                           the Raydeck node id (the agent starts Ray with --node-name).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

DEMAND_LIMIT = 1000  # entries of pending_demand, to bound the heartbeat's size


class Dashboard:
    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 2.0, token: str | None = None
    ) -> None:
        self.base = f"http://{host}:{port}"
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        if token:  # Ray's token authentication (ray_process.ray_env)
            self.headers["Authorization"] = f"Bearer {token}"
        # Never through an HTTP(S)_PROXY from the environment: the dashboard is local.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str, timeout: float | None = None) -> Any:
        """The JSON at path; raises OSError or ValueError on any failure."""
        request = urllib.request.Request(self.base + path, headers=self.headers)  # noqa: S310 - fixed http URL
        with self._opener.open(request, timeout=timeout or self.timeout) as response:
            return json.loads(response.read())

    def version(self, timeout: float | None = None) -> str | None:
        try:
            data = self.get("/api/version", timeout)
        except (OSError, ValueError):
            return None
        return str(data.get("ray_version", "")) if isinstance(data, dict) else None

    def alive_nodes(self, timeout: float | None = None) -> list[dict[str, Any]] | None:
        try:
            data = self.get("/api/v0/nodes?limit=10000&detail=false", timeout)
        except (OSError, ValueError):
            return None
        return alive_nodes(data)

    def cluster_info(self) -> dict[str, Any]:
        """The heartbeat's "ray" object for the head. Each part is left out if its
        endpoint does not answer, so a slow dashboard never blocks a heartbeat for long."""
        info: dict[str, Any] = {}
        nodes = self.alive_nodes()
        if nodes is not None:
            info["nodes"] = len(nodes)
            info["resources_total"] = total_resources(nodes)
        try:
            status = self.get("/api/cluster_status")
        except (OSError, ValueError):
            status = None
        if status is not None:
            if "resources_total" in info:
                used = used_resources(status, info["resources_total"])
                if used is not None:
                    info["resources_used"] = used
            demand = pending_demand(status)
            if demand is not None:
                info["pending_demand"] = demand
        try:
            jobs = self.get("/api/jobs/")
        except (OSError, ValueError):
            jobs = None
        if isinstance(jobs, list):
            info["running_jobs"] = count_jobs(jobs, "SUBMISSION")
            info["running_drivers"] = count_jobs(jobs, "DRIVER")
        if nodes is not None:
            busy = self.busy_node_ids()
            if busy is not None:
                info["node_activity"] = node_activity(nodes, busy)
        return info

    def busy_node_ids(self) -> set[str] | None:
        """Ray node ids that run a task or host a live actor; None if unknown."""
        busy: set[str] = set()
        for kind, state in (("tasks", "RUNNING"), ("actors", "ALIVE")):
            path = (
                f"/api/v0/{kind}?limit=10000&detail=false&filter_keys=state"
                f"&filter_predicates=%3D&filter_values={state}"
            )
            try:
                rows = self.get(path)["data"]["result"]["result"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
            busy.update(str(r["node_id"]) for r in rows if isinstance(r, dict) and r.get("node_id"))
        return busy


def alive_nodes(payload: Any) -> list[dict[str, Any]] | None:
    try:
        rows = payload["data"]["result"]["result"]
    except (KeyError, TypeError):
        return None
    if not isinstance(rows, list):
        return None
    return [r for r in rows if isinstance(r, dict) and r.get("state") == "ALIVE"]


def total_resources(nodes: list[dict[str, Any]]) -> dict[str, float]:
    """Summed over alive nodes; `node:<ip>` markers are not capacity and are left out."""
    totals: dict[str, float] = {"CPU": 0.0, "memory": 0.0, "GPU": 0.0}
    for node in nodes:
        for name, value in (node.get("resources_total") or {}).items():
            if name.startswith("node:") or not isinstance(value, int | float):
                continue
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def camel_case(name: str) -> str:
    """The dashboard's own key conversion (ray.dashboard.utils.to_camel_case)."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _load_report(payload: Any) -> dict[str, Any] | None:
    try:
        report = payload["data"]["clusterStatus"]["loadMetricsReport"]
    except (KeyError, TypeError):
        return None
    return report if isinstance(report, dict) else None


def used_resources(payload: Any, totals: dict[str, float]) -> dict[str, float] | None:
    report = _load_report(payload)
    usage = report.get("usage") if report else None
    if not isinstance(usage, dict):
        return None
    used: dict[str, float] = {}
    for name in totals:
        pair = usage.get(name, usage.get(camel_case(name)))
        if isinstance(pair, list) and pair and isinstance(pair[0], int | float):
            used[name] = float(pair[0])
        else:
            used[name] = 0.0
    return used


def pending_demand(payload: Any) -> list[dict[str, float]] | None:
    """Unmet resource requests, one entry per waiting task/actor or placement group
    bundle: [[{"CPU": 2.0}, 3]] becomes three {"CPU": 2.0}."""
    report = _load_report(payload)
    if report is None:
        return None
    demand: list[dict[str, float]] = []

    def add(shape: Any, count: Any) -> None:
        if isinstance(shape, dict) and isinstance(count, int):
            for _ in range(min(count, DEMAND_LIMIT - len(demand))):
                demand.append({k: float(v) for k, v in shape.items()})

    for entry in report.get("resourceDemand") or []:
        if isinstance(entry, list) and len(entry) == 2:
            add(entry[0], entry[1])
    for entry in report.get("pgDemand") or []:
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], dict):
            for _ in range(entry[1] if isinstance(entry[1], int) else 0):
                if len(demand) >= DEMAND_LIMIT:
                    break
                for bundle in entry[0].get("bundles") or []:
                    if isinstance(bundle, list) and len(bundle) == 2:
                        add(bundle[0], bundle[1])
    return demand


def node_activity(nodes: list[dict[str, Any]], busy: set[str]) -> dict[str, bool]:
    """{node name: runs something}. Names are Raydeck node ids; nodes started without
    one are named after their address and are left out."""
    return {
        str(n["node_name"]): n.get("node_id") in busy
        for n in nodes
        if n.get("node_name") and n.get("node_name") != n.get("node_ip")
    }


def count_jobs(jobs: list[Any], job_type: str) -> int:
    return sum(
        1
        for job in jobs
        if isinstance(job, dict) and job.get("type") == job_type and job.get("status") == "RUNNING"
    )
