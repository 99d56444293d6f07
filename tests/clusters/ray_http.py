"""Ask a local-cloud cluster's Ray dashboard directly, as its agents do: Ray's own ports
take only the cluster's Ray token (users go through the gateway)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from clusters import access
from clusters.models import Cluster


def ray_dashboard(cluster: Cluster, path: str, body: dict | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{cluster.dashboard_port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {access.ray_token(cluster)}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.load(response)
