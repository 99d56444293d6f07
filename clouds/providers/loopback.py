"""Loopback ports for what the local cloud runs on this machine: Ray nodes and services'
HAProxy endpoints.

They come from STABLE_PORTS, below the agents' worker port ranges (20000+) and the
kernel's ephemeral range (32768+). A port chosen there stays free until its process
binds it, and a service's endpoint can bind its port again after a restart: one from
the ephemeral range could meanwhile become some outgoing connection's own port, and the
Ray agent, raylet or HAProxy would die on the conflict (or the stable URL would).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection

LOOPBACK = "127.0.0.1"
STABLE_PORTS = (10000, 20000)


def free_ports(count: int, *, skip: Collection[int] = ()) -> list[int]:
    """`count` distinct ports of STABLE_PORTS that nothing listens on now, none in `skip`
    (ports recorded for things that are not running yet). Each candidate stays bound
    until all are chosen, so none is returned twice."""
    low, high = STABLE_PORTS
    candidates = [p for p in range(low, high) if p not in skip]
    # A random order: another installation's local cloud on this machine (or a test's)
    # choosing at the same moment is unlikely to pick the same ones.
    random.shuffle(candidates)
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        for port in candidates[: count * 50]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            ports.append(port)
            if len(ports) == count:
                return ports
        raise OSError(0, "no free ports left after skipping those in use")
    finally:
        for sock in sockets:
            sock.close()
