"""Stand-ins for the internet in the SSO tests: a fake OpenID Connect IdP (a real HTTP
server on loopback) and a fake DNS server (real UDP on loopback)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .dns_server import FakeDns
from .oidc_idp import FakeOidcIdp


@pytest.fixture
def oidc_idps() -> Iterator[Callable[..., FakeOidcIdp]]:
    """Start as many fake IdPs as a test needs; all stop at its end."""
    started: list[FakeOidcIdp] = []

    def start(**kwargs: Any) -> FakeOidcIdp:
        idp = FakeOidcIdp(**kwargs).start()
        started.append(idp)
        return idp

    yield start
    for idp in started:
        idp.stop()


@pytest.fixture
def fake_dns(settings: Any) -> Iterator[FakeDns]:
    """Domain-claim lookups go to this server instead of public DNS."""
    server = FakeDns().start()
    settings.RAYDECK_DNS_NAMESERVERS = [server.address]
    yield server
    server.stop()
