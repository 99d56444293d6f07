"""`raydeck clouds get|create|update|verify|delete|default` (`list` is one of the CLI's
simple lists). Registered by cli.build_parser (`add_commands`); uses the SDK's Clouds
(clouds_sdk.py) and prints through the CLI's Context like every other group."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clouds_sdk import Clouds
from .models import Cloud

if TYPE_CHECKING:
    from .cli import Context

# Flags for the settings people set most; anything else goes in the YAML file (-f).
FLAGS = {
    "region": "region (AWS, GCP)",
    "log_location": "where logs are kept: s3://…, gs://… or a folder",
    "aws_role_arn": "AWS: the role Raydeck assumes (from the setup)",
    "gcp_project_id": "GCP: the project id",
    "launch_access": "`all` projects, or only the `projects` listed with --project",
}


def _sdk(ctx: Context) -> Clouds:
    return Clouds(ctx.client)


def _cloud(ctx: Context, ref: str) -> str:
    from .cli import cloud_id

    return str(cloud_id(ctx, ref))


def _settings(ctx: Context) -> dict[str, Any]:
    """The YAML file's fields, overridden by the flags given."""
    from .cli import load_yaml

    args = ctx.args
    settings = load_yaml(args.file) if args.file else {}
    for name in FLAGS:
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    if args.projects:
        settings["projects"] = args.projects
    return settings


def _report(ctx: Context, cloud: Cloud) -> int:
    """Show the cloud; after a verification, each failed check on stderr and exit 1."""
    ctx.show(cloud)
    if cloud.status != "error":
        return 0
    for check in (cloud.verification or {}).get("checks", []):
        if not check.get("passed"):
            ctx.note(f"failed: {check.get('name')}: {check.get('message')}")
    return 1


def _wait(ctx: Context, cloud: Cloud) -> Cloud:
    if cloud.status != "verifying":
        return cloud
    ctx.note(f"Verifying {cloud.name}...")
    return _sdk(ctx).wait_verified(cloud.id, timeout=ctx.args.timeout)


def cmd_get(ctx: Context) -> int:
    ctx.show(_sdk(ctx).get(_cloud(ctx, ctx.args.cloud)))
    return 0


def cmd_create(ctx: Context) -> int:
    args = ctx.args
    cloud = _sdk(ctx).create(
        args.kind, args.name, idempotency_key=args.idempotency_key, **_settings(ctx)
    )
    if cloud.kind == "aws" and not cloud.identity_configured:
        ctx.note(
            f"Next: create the role in your AWS account trusting Raydeck with ExternalId "
            f"{cloud.aws_external_id}, then `raydeck clouds update {cloud.id} "
            "--aws-role-arn ARN --wait`."
        )
    return _report(ctx, _wait(ctx, cloud) if args.wait else cloud)


def cmd_update(ctx: Context) -> int:
    args = ctx.args
    changes = _settings(ctx)
    if args.name:
        changes["name"] = args.name
    cloud = _sdk(ctx).update(_cloud(ctx, args.cloud), **changes)
    return _report(ctx, _wait(ctx, cloud) if args.wait else cloud)


def cmd_verify(ctx: Context) -> int:
    cloud = _sdk(ctx).verify(_cloud(ctx, ctx.args.cloud))
    return _report(ctx, _wait(ctx, cloud) if ctx.args.wait else cloud)


def cmd_delete(ctx: Context) -> int:
    _sdk(ctx).delete(_cloud(ctx, ctx.args.cloud))
    ctx.note(f"Deleted cloud {ctx.args.cloud}.")
    return 0


def cmd_default(ctx: Context) -> int:
    """Show the preferred default cloud, or set it (a cloud) or remove it (--clear)."""
    args = ctx.args
    sdk = _sdk(ctx)
    if args.clear:
        sdk.set_default(None, project=args.project)
    elif args.cloud:
        sdk.set_default(_cloud(ctx, args.cloud), project=args.project)
    chosen = sdk.default(project=args.project)
    whose = f"project {args.project}" if args.project else "the organization"
    if chosen is None:
        print(f"No preferred default cloud for {whose}.", file=ctx.out)
    else:
        cloud = sdk.get(chosen)
        print(f"Preferred default cloud for {whose}: {cloud.name} ({cloud.id})", file=ctx.out)
    return 0


def add_commands(clouds: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to the `clouds` group's subparsers."""

    def settings_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("-f", "--file", help="YAML with the cloud's settings (`-` for stdin)")
        for name, help_text in FLAGS.items():
            p.add_argument("--" + name.replace("_", "-"), dest=name, help=help_text)
        p.add_argument(
            "--project",
            dest="projects",
            action="append",
            help="a project that may launch here (repeat; with --launch-access projects)",
        )
        p.add_argument("--wait", action="store_true", help="wait for the verification")
        p.add_argument("--timeout", type=float, default=300, help="seconds --wait waits (300)")

    p = leaf(clouds, "get", cmd_get, "show one cloud and its latest verification")
    p.add_argument("cloud", help="cloud id, name or kind")
    p = leaf(clouds, "create", cmd_create, "register a cloud")
    p.add_argument("kind", choices=["aws", "gcp", "local"])
    p.add_argument("name", help="how your team will recognise it")
    p.add_argument("--idempotency-key", help="resend a create safely (default: a new key)")
    settings_options(p)
    p = leaf(clouds, "update", cmd_update, "change a cloud (only what is given)")
    p.add_argument("cloud", help="cloud id, name or kind")
    p.add_argument("--name", help="a new name")
    settings_options(p)
    p = leaf(clouds, "verify", cmd_verify, "run the cloud's checks again")
    p.add_argument("cloud", help="cloud id, name or kind")
    p.add_argument("--wait", action="store_true", help="wait until the checks are done")
    p.add_argument("--timeout", type=float, default=300, help="seconds --wait waits (300)")
    p = leaf(clouds, "delete", cmd_delete, "delete a cloud no live cluster uses")
    p.add_argument("cloud", help="cloud id, name or kind")
    p = leaf(clouds, "default", cmd_default, "show or set the preferred default cloud")
    p.add_argument("cloud", nargs="?", help="make this cloud (id, name or kind) the default")
    p.add_argument("--project", help="the project's own preference (default: the organization's)")
    p.add_argument("--clear", action="store_true", help="remove the preference")
