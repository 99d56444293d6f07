"""A stand-in cloud driver for scale tests and benchmarks: it answers like a real cloud
(instances with ids, tags, states, idempotent launches keyed like EC2's ClientToken) with
latency injected into every call, and keeps its instances in Redis, so every web and
worker process of a test sees the same cloud. Real Ray on the local cloud is too heavy
for hundreds of clusters on one machine.

Selected by the test setting RAYDECK_TEST_CLOUD_DRIVER ("tests.standin_cloud.driver_for",
read from the environment by console/settings/test.py only), it stands in for every cloud.
Its Redis is RAYDECK_STANDIN_REDIS_URL (else the test settings' REDIS_URL), its latency
RAYDECK_STANDIN_LATENCY_MS (default 20) per call.

Besides the instances it keeps, per cloud, what a test asserts:
- `created:{node}`: how many instances a node got (a launch replayed with the same key
  returns the first one; a second would be a node launched twice);
- `overlaps`: clusters for which two calls were in flight at once (two reconciles acting
  on one cluster together: a pass makes its calls one after another);
- `calls`: every call, as "<epoch seconds> <call> <cluster uuid>" (lag measurements).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings

from clouds.providers.base import CheckResult, Instance, InstanceState, NodeSpec
from clouds.providers.kinds import LocalTraits

DEFAULT_LATENCY_MS = 20.0


def redis_url() -> str:
    return os.environ.get("RAYDECK_STANDIN_REDIS_URL") or settings.REDIS_URL


_clients: dict[str, redis.Redis] = {}


def client(url: str | None = None) -> redis.Redis:
    url = url or redis_url()
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, decode_responses=True)
    return _clients[url]


class StandInProvider(LocalTraits):
    """A cloud of instances in Redis. Nodes boot nothing: they stay `running` until
    terminated, like a VM whose agent never calls home."""

    public_addresses = False

    def __init__(self, *, cloud_id: uuid.UUID, url: str | None = None, latency_ms: float) -> None:
        self.cloud_id = cloud_id
        self.redis = client(url)
        self.latency = latency_ms / 1000
        self.prefix = f"standin:{cloud_id}:"

    # -- CloudProvider ------------------------------------------------------------------

    def launch(self, *, node: NodeSpec, boot_script: str, idempotency_key: str) -> Instance:
        with self._call("launch", str(node.cluster_id)):
            instance_id = f"si-{uuid.uuid4().hex[:17]}"
            if self.redis.set(self.prefix + f"key:{idempotency_key}", instance_id, nx=True):
                now = datetime.now(tz=UTC).isoformat()
                pipe = self.redis.pipeline()
                pipe.hset(
                    self.prefix + f"i:{instance_id}",
                    mapping={
                        "node": str(node.node_id),
                        "cluster": str(node.cluster_id),
                        "state": InstanceState.RUNNING.value,
                        "type": node.instance_type,
                        "launched_at": now,
                    },
                )
                pipe.sadd(self.prefix + f"cluster:{node.cluster_id}", instance_id)
                pipe.sadd(self.prefix + "all", instance_id)
                pipe.incr(self.prefix + f"created:{node.node_id}")
                pipe.execute()
            else:
                instance_id = str(self.redis.get(self.prefix + f"key:{idempotency_key}"))
            found = self._read([instance_id])
            return found[0]

    def terminate(self, *, instance_id: str) -> None:
        cluster = self.redis.hget(self.prefix + f"i:{instance_id}", "cluster") or ""
        with self._call("terminate", cluster):
            if cluster:
                self.redis.hset(
                    self.prefix + f"i:{instance_id}", "state", InstanceState.TERMINATED.value
                )

    def list_instances(self, *, cluster_id: uuid.UUID | None = None) -> list[Instance]:
        with self._call("list_instances", str(cluster_id or "")):
            key = f"cluster:{cluster_id}" if cluster_id else "all"
            return self._read(sorted(self.redis.smembers(self.prefix + key)))

    def describe(self, *, instance_id: str) -> Instance | None:
        with self._call("describe", ""):
            found = self._read([instance_id])
            return found[0] if found else None

    def verify(self) -> list[CheckResult]:
        return [CheckResult("stand-in", True, "The stand-in cloud answers.")]

    def default_image(self) -> str:
        return "standin-image"

    # -- the stand-in's own ---------------------------------------------------------------

    @contextmanager
    def _call(self, name: str, cluster: str) -> Iterator[None]:
        flight = self.prefix + f"flight:{cluster}"
        if cluster and self.redis.incr(flight) > 1:
            self.redis.sadd(self.prefix + "overlaps", cluster)
        try:
            self.redis.rpush(self.prefix + "calls", f"{time.time():.6f} {name} {cluster}")
            time.sleep(self.latency)
            yield
        finally:
            if cluster:
                self.redis.decr(flight)

    def _read(self, instance_ids: list[str]) -> list[Instance]:
        pipe = self.redis.pipeline()
        for instance_id in instance_ids:
            pipe.hgetall(self.prefix + f"i:{instance_id}")
        return [
            _instance(instance_id, fields)
            for instance_id, fields in zip(instance_ids, pipe.execute(), strict=True)
            if fields
        ]

    def seed(self, nodes: list[tuple[uuid.UUID, uuid.UUID]]) -> dict[uuid.UUID, str]:
        """Running instances for (node, cluster) pairs, as if launched long ago (benchmarks
        start from a cloud already full); {node: instance id}."""
        now = datetime.now(tz=UTC).isoformat()
        found = {}
        pipe = self.redis.pipeline(transaction=False)
        for node, cluster in nodes:
            instance_id = f"si-{uuid.uuid4().hex[:17]}"
            found[node] = instance_id
            pipe.hset(
                self.prefix + f"i:{instance_id}",
                mapping={
                    "node": str(node),
                    "cluster": str(cluster),
                    "state": "running",
                    "type": "standin",
                    "launched_at": now,
                },
            )
            pipe.sadd(self.prefix + f"cluster:{cluster}", instance_id)
            pipe.sadd(self.prefix + "all", instance_id)
            pipe.set(self.prefix + f"created:{node}", 1)
        pipe.execute()
        return found

    def created(self) -> dict[str, int]:
        """{node uuid: instances it got}."""
        keys = list(self.redis.scan_iter(self.prefix + "created:*", count=1000))
        values = self.redis.mget(keys) if keys else []
        return {k.rsplit(":", 1)[1]: int(v) for k, v in zip(keys, values, strict=True)}

    def overlaps(self) -> set[str]:
        return set(self.redis.smembers(self.prefix + "overlaps"))

    def calls(self) -> list[tuple[float, str, str]]:
        found = []
        for line in self.redis.lrange(self.prefix + "calls", 0, -1):
            at, name, cluster = [*line.split(" "), ""][:3]
            found.append((float(at), name, cluster))
        return found

    def forget(self) -> None:
        """Remove everything this cloud kept."""
        keys = list(self.redis.scan_iter(self.prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])


def _instance(instance_id: str, fields: dict[str, Any]) -> Instance:
    return Instance(
        instance_id=instance_id,
        state=InstanceState(fields["state"]),
        node_id=uuid.UUID(fields["node"]),
        cluster_id=uuid.UUID(fields["cluster"]),
        instance_type=fields.get("type", ""),
        private_address="127.0.0.1",
        launched_at=datetime.fromisoformat(fields["launched_at"]),
    )


def driver_for(cloud: Any) -> StandInProvider:
    """The RAYDECK_TEST_CLOUD_DRIVER factory: a stand-in for any Cloud row."""
    latency = float(os.environ.get("RAYDECK_STANDIN_LATENCY_MS", DEFAULT_LATENCY_MS))
    return StandInProvider(cloud_id=cloud.uuid, latency_ms=latency)
