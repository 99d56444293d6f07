"""`raydeck workspaces …`: create, list, get, update, start, stop, delete and open a workspace,
SSH into it (`ssh`, `ssh-config`, and the hidden `tunnel`, the ProxyCommand they set
up), copy a folder to or from its working directory (`sync`: rsync, or tar, over that
SSH) and submit a job from it (`job`).

Registered by cli.build_parser (`add_commands`); uses the SDK's Workspaces
(workspaces_sdk.py) and prints through the CLI's Context like every other group."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import output
from .errors import ConnectionFailed, NotFound
from .jobs import submitted
from .jobs_sdk import ALWAYS_LEFT_OUT
from .workspaces_sdk import SshAccess, Workspace, Workspaces

if TYPE_CHECKING:
    from .cli import Context

# Every ssh this command runs is bounded, so a head that stops answering ends it with
# ssh's own error instead of a wait without end: reaching the head (the tunnel's token and
# WebSocket, then SSH's handshake) within SSH_CONNECT_SECONDS, and a connection that goes
# silent given up after SSH_ALIVE_MISSES unanswered probes SSH_ALIVE_SECONDS apart.
SSH_CONNECT_SECONDS = 60
SSH_ALIVE_SECONDS = 15
SSH_ALIVE_MISSES = 4
# The probe for the head's rsync: one command, so reaching the head bounds it.
PROBE_SECONDS = SSH_CONNECT_SECONDS + SSH_ALIVE_SECONDS * SSH_ALIVE_MISSES

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
        workspace = _started(ctx, workspace.id)
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


# `--image` names this for Raydeck's workspace image (what a create without --image gets).
WORKSPACE_IMAGE = "workspace"


def cmd_update(ctx: Context) -> int:
    from .cli import UsageError

    args = ctx.args
    changes: dict[str, Any] = {
        k: v for k, v in {"name": args.name, "compute_config": args.compute_config}.items() if v
    }
    if args.image:
        changes["image"] = None if args.image == WORKSPACE_IMAGE else args.image
    if not changes:
        raise UsageError("Give what to change: --name, --compute-config or --image.")
    ctx.show(_sdk(ctx).update(workspace_id(ctx, args.workspace), **changes))
    return 0


def _started(ctx: Context, ident: str) -> Workspace:
    """Start it, and say so when it waits for its image's build first."""
    workspace = _sdk(ctx).start(ident)
    if waiting := (workspace.image_build or {}).get("waiting"):
        ctx.note(waiting)
    return workspace


def cmd_start(ctx: Context) -> int:
    workspace = _started(ctx, workspace_id(ctx, ctx.args.workspace))
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


def ssh_options(ctx: Context, ident: str, access: SshAccess) -> dict[str, str]:
    """What ssh needs to reach the workspace: the tunnel as its ProxyCommand (with the
    server and organization spelled out, so it works from any shell and from VS Code)
    and the account to log in as."""
    tunnel = [sys.executable, "-m", "raydeck", "workspaces", "tunnel", ident]
    tunnel += ["--url", ctx.client.url, "--org", ctx.client.org or ""]
    return {
        "User": access.user,
        "ProxyCommand": " ".join(shlex.quote(part) for part in tunnel),
        # The tunnel's TLS, verified with the installation's CA, authenticates the head,
        # and its sshd listens on the head's loopback only; each start of the workspace
        # makes a new host key, which ssh would otherwise report as an attack.
        "StrictHostKeyChecking": "no",
        "UserKnownHostsFile": "/dev/null",
        "LogLevel": "ERROR",
        "ConnectTimeout": str(SSH_CONNECT_SECONDS),
        "ServerAliveInterval": str(SSH_ALIVE_SECONDS),
        "ServerAliveCountMax": str(SSH_ALIVE_MISSES),
    }


def host_alias(name: str) -> str:
    return f"raydeck-{name}"


def ssh_argv(ctx: Context) -> list[str]:
    """The ssh command (without a remote command) that reaches the workspace. Its SSH
    access is asked for here first: not running, no key, no sshd in the image is said
    before ssh runs. Sessions start in the workspace's working directory."""
    from .cli import UsageError

    ssh = shutil.which("ssh")
    if ssh is None:
        raise UsageError("No ssh command found: install an OpenSSH client.")
    ident = workspace_id(ctx, ctx.args.workspace)
    access = _sdk(ctx).ssh_access(ident)
    options = [f"-o{name}={value}" for name, value in ssh_options(ctx, ident, access).items()]
    if ctx.args.identity:
        options += ["-i", ctx.args.identity, "-oIdentitiesOnly=yes"]
    return [ssh, *options, host_alias(ctx.args.workspace)]


def _after_dashes(words: list[str]) -> list[str]:
    return words[1:] if words[:1] == ["--"] else words


def cmd_ssh(ctx: Context) -> int:
    command = _after_dashes(ctx.args.command)
    return subprocess.call([*ssh_argv(ctx), *command])  # noqa: S603 - the user's own ssh and command


def cmd_sync(ctx: Context) -> int:
    """Copy LOCAL_DIR into the workspace's working directory (--down: the other way).
    rsync when both sides have it (only what changed travels), else tar; nothing is
    deleted on the receiving side."""
    from .cli import UsageError

    local = Path(ctx.args.local_dir).expanduser()
    if not ctx.args.down and not local.is_dir():
        raise UsageError(f"{local} is not a folder.")
    ssh = ssh_argv(ctx)
    local.mkdir(parents=True, exist_ok=True)
    host, ssh = ssh[-1], ssh[:-1]
    excludes = [f"--exclude={p.rstrip('/')}" for p in ALWAYS_LEFT_OUT]
    rsync, tar = shutil.which("rsync"), shutil.which("tar")
    if rsync and _remote_has_rsync([*ssh, host]):
        shell = " ".join(shlex.quote(part) for part in ssh)
        ends = [f"{local}/", f"{host}:./"]
        argv = [rsync, "-az", *excludes, "-e", shell, *(ends[::-1] if ctx.args.down else ends)]
        return subprocess.call(argv)  # noqa: S603 - rsync over the user's own ssh
    if tar is None:
        raise UsageError("Neither rsync nor tar is installed here: install one of them.")
    # The remote end runs the head's tar, in the working directory sessions start in.
    if ctx.args.down:
        reader = [*ssh, host, "tar", "-cf", "-", "."]
        writer = [tar, "-C", str(local), "-xf", "-"]
    else:
        reader = [tar, "-C", str(local), *excludes, "-cf", "-", "."]
        writer = [*ssh, host, "tar", "-xf", "-"]
    sender = subprocess.Popen(reader, stdout=subprocess.PIPE)  # noqa: S603 - tar and the user's ssh
    received = subprocess.call(writer, stdin=sender.stdout)  # noqa: S603
    if sender.stdout is not None:
        sender.stdout.close()
    return sender.wait() or received


def _remote_has_rsync(ssh: list[str]) -> bool:
    """Whether the head has rsync. ssh reads nothing of ours (stdin is not the probe's),
    and a head that does not answer in PROBE_SECONDS is said so, not waited on."""
    try:
        probe = subprocess.run(  # noqa: S603 - the user's own ssh
            [*ssh, "command -v rsync"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=PROBE_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise ConnectionFailed(
            f"The workspace's head did not answer over SSH within {PROBE_SECONDS} s; "
            "try again, or check the workspace's page."
        ) from None
    return probe.returncode == 0 and bool(probe.stdout.strip())


def cmd_job(ctx: Context) -> int:
    from .cli import UsageError

    args = ctx.args
    words = args.entrypoint
    if words[:1] != ["--"] and "--" in words:
        # argparse hands everything after the name to the command: say so, not run it.
        raise UsageError(
            "Put options before the workspace's name: raydeck workspaces job [options] NAME -- CMD"
        )
    entrypoint = " ".join(_after_dashes(words))
    if not entrypoint:
        raise UsageError("Give the command to run after --, e.g. -- python train.py")
    job = _sdk(ctx).create_job(
        workspace_id(ctx, args.workspace),
        entrypoint,
        name=args.name or "",
        max_retries=args.max_retries,
        timeout_seconds=args.timeout,
    )
    return submitted(ctx, job)


def cmd_ssh_config(ctx: Context) -> int:
    ident = workspace_id(ctx, ctx.args.workspace)
    options = ssh_options(ctx, ident, _sdk(ctx).ssh_access(ident))
    print(f"Host {host_alias(ctx.args.workspace)}", file=ctx.out)
    for name, value in options.items():
        print(f"    {name} {value}", file=ctx.out)
    return 0


def cmd_tunnel(ctx: Context) -> int:
    _sdk(ctx).tunnel(workspace_id(ctx, ctx.args.workspace))
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
    p = leaf(sub, "update", cmd_update, "change a stopped workspace (its next start uses it)")
    p.add_argument("workspace", help="workspace id or name")
    p.add_argument("--project", dest="project_filter", help="look the name up in this project")
    p.add_argument("--name", help="a new name (also its SSH host name)")
    p.add_argument("--compute-config", dest="compute_config", help="compute config id")
    p.add_argument("--image", help=f"image id, or {WORKSPACE_IMAGE!r}: Raydeck's workspace image")
    p = leaf(sub, "list", cmd_list, "list workspaces")
    p.add_argument("--project", help="only this project's")
    for name, handler, help_text in [
        ("get", cmd_get, "show one workspace"),
        ("start", cmd_start, "start it: a new cluster, its files restored"),
        ("stop", cmd_stop, "stop it (files saved, cluster terminated), or cancel a waiting start"),
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
    help_text = "submit a job with its files and packages: job [options] NAME -- CMD"
    p = leaf(sub, "job", cmd_job, help_text)
    p.add_argument("workspace", help="workspace name or id (a running one)")
    p.add_argument("--project", dest="project_filter", help="look the name up in this project")
    p.add_argument("--name", help="default: the workspace's name and the command")
    p.add_argument("--max-retries", dest="max_retries", type=int, help="default 1")
    p.add_argument("--timeout", type=int, help="seconds an attempt may run")
    p.add_argument("--wait", action="store_true", help="wait until it ends")
    p.add_argument("--follow", action="store_true", help="print its events until it ends")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- the command to run")
    p = leaf(sub, "ssh", cmd_ssh, "open an SSH session (with your key on your profile)")
    p.add_argument("workspace", help="workspace name or id")
    p.add_argument("--project", dest="project_filter", help="look the name up in this project")
    p.add_argument("-i", "--identity", help="your private key's file (default: ssh's own)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- a command to run instead")
    p = leaf(sub, "sync", cmd_sync, "copy a folder into its working directory (--down: back)")
    p.add_argument("workspace", help="workspace name or id")
    p.add_argument("local_dir", nargs="?", default=".", help="your folder (default: this one)")
    p.add_argument("--down", action="store_true", help="copy the workspace's files here")
    p.add_argument("--project", dest="project_filter", help="look the name up in this project")
    p.add_argument("-i", "--identity", help="your private key's file (default: ssh's own)")
    p = leaf(sub, "ssh-config", cmd_ssh_config, "print a Host entry for ssh and VS Code")
    p.add_argument("workspace", help="workspace name or id")
    p.add_argument("--project", dest="project_filter", help="look the name up in this project")
    help_text = "ssh's ProxyCommand (ssh and ssh-config use it): SSH's bytes on stdin/stdout"
    p = leaf(sub, "tunnel", cmd_tunnel, help_text)
    # Not for people: left out of `raydeck workspaces --help` (only ssh runs it).
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "tunnel"]
    p.add_argument("workspace", help="workspace name or id")
    p.add_argument("--project", dest="project_filter", help="look the name up in this project")
