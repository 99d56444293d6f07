"""Which hosts Raydeck may fetch an identity provider's documents from: public addresses only."""

from __future__ import annotations

import ipaddress
import socket


def public_host(host: str) -> bool:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, 443)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a).is_global for a in addresses)
