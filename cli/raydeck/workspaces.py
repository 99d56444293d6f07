"""`raydeck workspaces …`: create, list, get, start, stop, delete and open a workspace.

Registered by cli.build_parser (`add_commands`); uses the SDK's Workspaces
(workspaces_sdk.py) and prints through the CLI's Context like every other group."""

from __future__ import annotations

import argparse
import webbrowser
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import output
from .errors import NotFound
from .workspaces_sdk import Workspace, Workspaces

if TYPE_CHECKING:
    from .cli import Context

output.COLUMNS["workspaces"] = [
    output.col("ID"),
    output.col("NAME"),
    output.col("PROJECT"),
    output.col("STATE"),
    output.Column("FILES SAVED", lambda r: (r.get("files") or {}).get("saved_at")),
]


def _sdk(ctx: Context) -> Workspaces:
    return Workspaces(ctx.client)


def workspace_id(ctx: Context, ref: str) -> str:
    """A workspace's id from its id or its name (names are unique in a project)."""
    from .cli import UsageError, is_uuid

    if is_uuid(ref):
        return ref
    project = getattr(ctx.args, "project_filter", None)
    named = [w for w in _sdk(ctx).list(project=project) if w.name == ref]
    if not named:
        raise NotFound(f"No workspace is named {ref!r}.", status=0, code="not_found")
    if len(named) > 1:
        where = ", ".join(f"{w.project} ({w.id})" for w in named)
        raise UsageError(f"Several projects have a workspace {ref!r}: {where}; pass --project.")
    return named[0].id


def _wait(ctx: Context, workspace: Workspace, state: str) -> Workspace:
    ctx.note(f"Waiting for {workspace.name} to be {state}...")
    done = _sdk(ctx).wait(workspace.id, state, timeout=ctx.args.timeout)
    ctx.note(f"Workspace {done.name} is {done.state}.")
    return done


def cmd_create(ctx: Context) -> int:
    from .cli import cloud_id

    args = ctx.args
    workspace = _sdk(ctx).create(
        args.name,
        args.project,
        cloud=cloud_id(ctx, args.cloud),
        compute_config=args.compute_config,
        image=args.image,
        idempotency_key=args.idempotency_key,
    )
    if args.start:
        workspace = _sdk(ctx).start(workspace.id)
        if args.wait:
            workspace = _wait(ctx, workspace, "running")
    ctx.show(workspace)
    return 0


def cmd_list(ctx: Context) -> int:
    rows = list(_sdk(ctx).list(project=ctx.args.project))
    ctx.show(rows, "workspaces", empty="No workspaces.")
    return 0


def cmd_get(ctx: Context) -> int:
    ctx.show(_sdk(ctx).get(workspace_id(ctx, ctx.args.workspace)))
    return 0


def cmd_start(ctx: Context) -> int:
    workspace = _sdk(ctx).start(workspace_id(ctx, ctx.args.workspace))
    if ctx.args.wait:
        workspace = _wait(ctx, workspace, "running")
    ctx.show(workspace)
    return 0


def cmd_stop(ctx: Context) -> int:
    workspace = _sdk(ctx).stop(workspace_id(ctx, ctx.args.workspace))
    if ctx.args.wait:
        workspace = _wait(ctx, workspace, "stopped")
    ctx.show(workspace)
    return 0


def cmd_delete(ctx: Context) -> int:
    ident = workspace_id(ctx, ctx.args.workspace)
    _sdk(ctx).delete(ident)
    ctx.note(
        f"Deleted workspace {ctx.args.workspace}; its saved files stay in the cloud's storage."
    )
    return 0


def cmd_open(ctx: Context) -> int:
    url = _sdk(ctx).jupyter_url(workspace_id(ctx, ctx.args.workspace))
    if ctx.args.no_browser or not webbrowser.open(url):
        print(url, file=ctx.out)
    return 0


def add_commands(groups: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    group = groups.add_parser("workspaces", help="workspaces: JupyterLab on a cluster, files kept")
    sub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = leaf(sub, "create", cmd_create, "create a workspace (stopped unless --start)")
    p.add_argument("name", help="lowercase letters, digits and dashes")
    p.add_argument("--project", required=True, help="project slug")
    p.add_argument("--cloud", help="cloud id, name or kind (default: the project's only one)")
    p.add_argument("--compute-config", dest="compute_config", help="compute config id")
    p.add_argument("--image", help="image id")
    p.add_argument("--start", action="store_true", help="start it at once")
    p.add_argument("--wait", action="store_true", help="with --start: wait until it runs")
    p.add_argument("--timeout", type=float, default=900, help="seconds --wait waits (900)")
    p.add_argument("--idempotency-key", help="resend a create safely (default: a new key)")
    p = leaf(sub, "list", cmd_list, "list workspaces")
    p.add_argument("--project", help="only this project's")
    for name, handler, help_text in [
        ("get", cmd_get, "show one workspace"),
        ("start", cmd_start, "start it: a new cluster, its files restored"),
        ("stop", cmd_stop, "stop it: files saved, then the cluster terminated"),
        ("delete", cmd_delete, "delete a stopped workspace"),
        ("open", cmd_open, "open its JupyterLab in the browser"),
    ]:
        p = leaf(sub, name, handler, help_text)
        p.add_argument("workspace", help="workspace id or name")
        p.add_argument("--project", dest="project_filter", help="look the name up in this project")
        if name in ("start", "stop"):
            p.add_argument("--wait", action="store_true", help="wait until it is done")
            p.add_argument("--timeout", type=float, default=900, help="seconds to wait (900)")
        if name == "open":
            p.add_argument("--no-browser", action="store_true", help="print the link only")
