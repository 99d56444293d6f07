"""`raydeck services …`: deploy a Ray Serve app from a YAML file, watch its rollout, pin a
canary, roll back, terminate.

    # service.yaml
    name: echo
    project: ml
    cloud: local                  # id, name or kind (a new service only)
    serve_config:                 # one application, or `applications: [...]`
      import_path: echo_app:build
      args: {version: v1}
      runtime_env: {env_vars: {PYTHONPATH: /srv/apps}}
    canary_steps: [10, 50, 100]   # optional
    step_seconds: 60              # optional
    max_error_rate: 0.05          # optional: a new version failing more is rolled back
    max_latency_ratio: 3          # optional: ... or with a p99 this many times the old one's

`raydeck services deploy -f service.yaml` again with a changed config rolls out a new
version of the same service.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any

from . import output
from .output import Column, col

DEPLOY_KEYS = (
    "name",
    "project",
    "serve_config",
    "cloud",
    "compute_config",
    "image",
    "canary_steps",
    "step_seconds",
    "max_error_rate",
    "max_latency_ratio",
)


def _weights(raw: dict[str, Any]) -> str:
    rollout = raw.get("rollout")
    if not rollout:
        return f"v{raw['current_version']} 100%" if raw.get("current_version") else ""
    new = rollout["weight"]
    return f"v{rollout['from_version']} {100 - new}% / v{rollout['version']} {new}%"


output.COLUMNS.update(
    {
        "services": [
            col("ID"),
            col("NAME"),
            col("PROJECT"),
            col("STATE"),
            Column("TRAFFIC", _weights),
            col("ENDPOINT", "endpoint_url"),
        ],
        "service-versions": [
            col("VERSION", "number"),
            col("STATE"),
            col("WEIGHT"),
            Column(
                "APPLICATIONS",
                lambda r: ", ".join(
                    f"{name} {app.get('status', '')}"
                    for name, app in (r.get("applications") or {}).items()
                ),
            ),
            col("REASON", "state_reason"),
        ],
    }
)


def cmd_deploy(ctx: Any) -> int:
    from .cli import EXIT_OK, UsageError, cloud_id, load_yaml

    args = ctx.args
    spec = load_yaml(args.file)
    unknown = sorted(set(spec) - set(DEPLOY_KEYS))
    if unknown:
        raise UsageError(f"{args.file}: unknown keys {', '.join(unknown)}.")
    if args.project:
        spec["project"] = args.project
    for key in ("name", "project", "serve_config"):
        if not spec.get(key):
            raise UsageError(f"{args.file} needs `{key}:`.")
    spec["cloud"] = cloud_id(ctx, spec.get("cloud"))
    for key in ("compute_config", "image"):
        if spec.get(key) is not None:
            spec[key] = str(spec[key])
    deployed = ctx.client.services.deploy(
        str(spec.pop("name")), idempotency_key=args.idempotency_key, **spec
    )
    service = deployed.service
    if deployed.token:
        ctx.note(f"Query token (shown once, keep it): {deployed.token}")
    ctx.note(f"Deployed v{deployed.version.number} of {service.name}.")
    if args.wait:
        ctx.note("Waiting for the rollout...")
        service = ctx.client.services.wait_for_rollout(service.id, timeout=args.timeout)
        ctx.note(f"{service.name}: {service.state}, v{service.current_version} serves.")
    _how_to_call(ctx, service, deployed.token)
    ctx.show(service)
    return EXIT_OK


def _how_to_call(ctx: Any, service: Any, token: str | None) -> None:
    """Where the service answers and, over HTTPS, the CA to trust: AWS's and GCP's
    endpoints have a certificate from this installation's CA, not a public one."""
    bearer = f"Authorization: Bearer {token or '<token>'}"
    url = service.endpoint_url
    if not url:
        ctx.note(
            f"Endpoint: not made yet (`raydeck services get {service.name}` shows it once "
            f"the first version serves).\n  curl -H '{bearer}' <endpoint>/"
        )
        return
    ctx.note(f"Endpoint: {url}")
    if url.startswith("https://"):
        ca = shlex.quote(str(ctx.client.installation_ca()))
        ctx.note(f"  Trust this Raydeck's CA for it: curl --cacert {ca} -H '{bearer}' {url}/")
    else:
        ctx.note(f"  curl -H '{bearer}' {url}/")


def cmd_get(ctx: Any) -> int:
    from .cli import EXIT_OK

    ctx.show(ctx.client.services.get(ctx.args.service))
    return EXIT_OK


def cmd_versions(ctx: Any) -> int:
    from .cli import EXIT_OK

    ctx.show(ctx.client.services.versions(ctx.args.service), "service-versions")
    return EXIT_OK


def cmd_rollback(ctx: Any) -> int:
    from .cli import EXIT_OK

    ctx.show(ctx.client.services.rollback(ctx.args.service))
    return EXIT_OK


def cmd_set_traffic(ctx: Any) -> int:
    from .cli import EXIT_OK, UsageError

    args = ctx.args
    if args.canary is None and not args.unpin:
        raise UsageError("Give --canary PERCENT, or --unpin to let the rollout go on.")
    canary = None if args.unpin else args.canary
    ctx.show(ctx.client.services.set_traffic(args.service, canary=canary))
    return EXIT_OK


def cmd_terminate(ctx: Any) -> int:
    from .cli import EXIT_OK

    ctx.show(ctx.client.services.terminate(ctx.args.service))
    return EXIT_OK


def cmd_list(ctx: Any) -> int:
    from .cli import EXIT_OK

    services = list(ctx.client.services.list(project=ctx.args.project, include_ended=ctx.args.all))
    ctx.show(services, "services", empty="No services. Deploy one: raydeck services deploy -f FILE")
    return EXIT_OK


def register(groups: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """The `services` command group (called from cli.build_parser)."""
    group = groups.add_parser("services", help="Ray Serve services behind a stable endpoint")
    sub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = leaf(sub, "deploy", cmd_deploy, "deploy a service, or a new version of it, from YAML")
    p.add_argument("-f", "--file", required=True, help="YAML file (`-` for stdin)")
    p.add_argument("--project", help="overrides `project:` in the file")
    p.add_argument("--wait", action="store_true", help="wait until the rollout is over")
    p.add_argument("--timeout", type=float, default=1800, help="seconds --wait waits (1800)")
    p.add_argument("--idempotency-key", help="resend a deploy safely (default: a new key)")
    p = leaf(sub, "list", cmd_list, "list services")
    p.add_argument("--project", help="only this project's")
    p.add_argument("--all", action="store_true", help="also terminated and failed ones")
    for name, handler, help_text in [
        ("get", cmd_get, "show one service (endpoint, state, rollout)"),
        ("versions", cmd_versions, "the service's versions, weights and health"),
        ("rollback", cmd_rollback, "stop the rollout, or go back to the previous version"),
        ("terminate", cmd_terminate, "stop every version and remove the endpoint"),
        ("set-traffic", cmd_set_traffic, "pin the new version's share (manual canary)"),
    ]:
        p = leaf(sub, name, handler, help_text)
        p.add_argument("service", help="service id or name")
        if name == "set-traffic":
            p.add_argument("--canary", type=int, help="percent of the traffic (0-100)")
            p.add_argument("--unpin", action="store_true", help="let the rollout go on")
