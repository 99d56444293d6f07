"""Signing the CLI in: the browser hand-off, or a token the person pastes.

The hand-off (accounts/views/cli_handoff.py on the server): `POST /cli/handoff` answers a one-time
`code`, a `poll_token` only this process knows and the `verify_url` page where the
person, signed in to the console, checks the code and picks the organization. The CLI
polls `POST /cli/handoff/poll` until the server hands the new token over, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ApiError, LoginFailed, WaitTimeout
from .transport import Transport


@dataclass(frozen=True)
class Handoff:
    code: str
    poll_token: str
    verify_url: str  # absolute
    expires_in: float
    interval: float


@dataclass(frozen=True)
class Credentials:
    token: str
    org: str


def start_handoff(url: str) -> Handoff:
    answer = Transport(url).request("POST", "/cli/handoff")
    return Handoff(
        code=answer["code"],
        poll_token=answer["poll_token"],
        verify_url=url + answer["verify_url"],
        expires_in=float(answer.get("expires_in") or 600),
        interval=max(1.0, float(answer.get("interval") or 2)),
    )


NO_BROWSER_HINT = (
    "No browser at hand (an SSH session, CI)? Create a token in the console (API tokens) "
    "and run `raydeck login --url {url} --token -` with the token on stdin."
)


def wait_for_handoff(
    url: str,
    handoff: Handoff,
    *,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Credentials:
    """Poll until the person confirms in the browser; LoginFailed if they deny it or
    it expires, WaitTimeout (with the token route as a hint) after `timeout` seconds or
    once the server's own deadline has passed."""
    transport = Transport(url)
    limit = handoff.expires_in + 30 if timeout is None else min(timeout, handoff.expires_in + 30)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            answer = transport.request(
                "POST", "/cli/handoff/poll", body={"poll_token": handoff.poll_token}
            )
        except ApiError as exc:
            if exc.status in (404, 410):
                raise LoginFailed(exc.message) from exc
            raise
        if answer and answer.get("token"):
            return Credentials(token=answer["token"], org=answer["organization"])
        sleep(handoff.interval)
    raise WaitTimeout(
        f"Nobody confirmed the sign-in within {limit:.0f} s; run `raydeck login` again. "
        + NO_BROWSER_HINT.format(url=url)
    )
