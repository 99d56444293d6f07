"""A tiny Ray Serve app for the Services tests and benchmark: answers with its version;
built with {"fail": true} it raises on every request (a bad release), with
{"crash": true} it cannot even start (a release that fails health)."""

from __future__ import annotations

from typing import Any

from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Echo:
    def __init__(self, version: str, fail: bool, crash: bool = False) -> None:
        if crash:
            raise RuntimeError(f"{version} cannot start")
        self.version = version
        self.fail = fail

    async def __call__(self, request: Any) -> dict[str, str]:
        if self.fail:
            raise RuntimeError(f"{self.version} is broken")
        return {"version": self.version}


def build(args: dict[str, Any]) -> Any:
    return Echo.bind(
        str(args.get("version", "v1")),
        bool(args.get("fail", False)),
        bool(args.get("crash", False)),
    )
