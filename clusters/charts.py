"""The cluster page's charts: what each asks of Prometheus on the cluster's head (the
browser runs the queries itself, static/console/cluster_metrics.js), in Ray's metric
names (ray/dashboard/modules/reporter/reporter_agent.py), and when the GPU charts show."""

from __future__ import annotations

from dataclasses import dataclass

from .models import Cluster, filled_worker_groups
from .selectors import Usage


@dataclass(frozen=True)
class Chart:
    title: str
    query: str  # PromQL over the last hour


CHARTS = [
    Chart("CPU (%)", "avg(ray_node_cpu_utilization)"),
    Chart("Memory used (GiB)", "sum(ray_node_mem_used) / 1073741824"),
    Chart("Object store (MiB)", "sum(ray_object_store_memory) / 1048576"),
    Chart("Running tasks", 'sum(ray_tasks{State="RUNNING"}) or vector(0)'),
]
GPU_CHARTS = [
    # Per GPU, in percent; the average over the cluster's GPUs.
    Chart("GPU (%)", "avg(ray_node_gpus_utilization)"),
    # Ray reports GPU memory in MiB (its own dashboards multiply by 1024 * 1024).
    Chart("GPU memory used (GiB)", "sum(ray_node_gram_used) / 1024"),
]


def has_gpus(cluster: Cluster, usage: Usage) -> bool:
    """GPUs on its live nodes now, or a worker group with GPUs (an autoscaled group may
    have no node yet: its charts are there when its first node comes)."""
    if usage.gpus:
        return True
    return any(
        group["gpus"] for group in filled_worker_groups(cluster.compute_config.worker_groups)
    )
