"""The `raydeck` command, built on raydeck.Client.

Results go to stdout in the chosen --output format; progress, hints and errors go to
stderr, so `-o json` output can always be piped. Exit codes (stable, for scripts):

    0  success
    1  the API refused or failed the request (validation, conflict, server error, ...)
    2  usage: bad arguments, an unreadable file, no server configured
    3  authentication: not signed in, the token was refused, or not allowed
    4  not found (also: another organization's object)
    5  timed out waiting
    6  the cluster failed (or was terminated) while waiting for it
    7  the server could not be reached
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shlex
import sys
import uuid
import webbrowser
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import (
    __version__,
    builds,
    clouds,
    config,
    jobs,
    login,
    output,
    schedules,
    services,
    trust,
    workspaces,
)
from .client import Client
from .errors import (
    ApiError,
    ClusterFailed,
    ConfigError,
    ConnectionFailed,
    LoginFailed,
    NotFound,
    NotSignedIn,
    PermissionDenied,
    RateLimited,
    RaydeckError,
    Unauthenticated,
    ValidationFailed,
    WaitTimeout,
)
from .models import CLUSTER_STATES, ClusterEvent, Resource

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5
EXIT_CLUSTER_FAILED = 6
EXIT_UNREACHABLE = 7
EXIT_INTERRUPTED = 130


class UsageError(RaydeckError):
    """Bad arguments or input file, found after argparse (exit 2)."""


def exit_code_for(error: BaseException) -> int:
    """The one table from exceptions to exit codes."""
    table: list[tuple[type[BaseException], int]] = [
        (NotSignedIn, EXIT_AUTH),
        (Unauthenticated, EXIT_AUTH),
        (PermissionDenied, EXIT_AUTH),
        (LoginFailed, EXIT_AUTH),
        (NotFound, EXIT_NOT_FOUND),
        (WaitTimeout, EXIT_TIMEOUT),
        (ClusterFailed, EXIT_CLUSTER_FAILED),
        (ConnectionFailed, EXIT_UNREACHABLE),
        (ConfigError, EXIT_USAGE),
        (UsageError, EXIT_USAGE),
        (KeyboardInterrupt, EXIT_INTERRUPTED),
    ]
    for cls, code in table:
        if isinstance(error, cls):
            return code
    return EXIT_API_ERROR


def error_message(error: RaydeckError) -> str:
    """What a person reads on stderr: the server's sentence, each invalid field, the
    HTTP status and code, and what to do next where there is something to do."""
    lines = [f"error: {error.message}"]
    if isinstance(error, ValidationFailed):
        lines += [f"  {line}" for line in error.field_messages()]
    if isinstance(error, ApiError) and error.status:  # 0: found out here, not by the server
        lines[0] += f" (HTTP {error.status}, {error.code})"
    if isinstance(error, Unauthenticated):
        lines.append("hint: sign in again with `raydeck login`, or check RAYDECK_TOKEN.")
    elif isinstance(error, RateLimited) and error.retry_after is not None:
        lines.append(f"hint: try again in {error.retry_after:.0f} s.")
    elif isinstance(error, ConnectionFailed):
        lines.append("hint: check the URL (`raydeck login --url`, RAYDECK_URL) and the network.")
    return "\n".join(lines)


# --- helpers -----------------------------------------------------------------------


class Context:
    """What every command gets: parsed arguments, the client (made on first use, so
    `login` and usage errors need no configuration), and where to print."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.args.url, org=self.args.org)
        return self._client

    def show(self, data: Any, kind: str | None = None, *, empty: str = "") -> None:
        fmt = self.args.output
        if fmt == "table" and isinstance(data, list) and not data and empty:
            self.note(empty)
            return
        print(output.render(data, fmt, kind), file=self.out)

    def note(self, message: str) -> None:
        print(message, file=self.err, flush=True)


def load_yaml(path: str) -> dict[str, Any]:
    """A YAML (or JSON) file describing one object, or `-` for stdin."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        data = yaml.safe_load(text)
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path} must describe one object (a mapping of fields).")
    return data


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def cluster_id(ctx: Context, ref: str) -> str:
    """A cluster's id from its id or its name: the live cluster of that name, else the
    newest ended one (names are reused once a cluster is terminated)."""
    if is_uuid(ref):
        return ref
    named = [
        c
        for c in ctx.client.list_clusters(project=getattr(ctx.args, "project_filter", None))
        if c.name == ref
    ]
    if not named:
        raise NotFound(f"No cluster is named {ref!r}.", status=0, code="not_found")
    live = [c for c in named if not c.is_final]
    if len(live) > 1:
        ids = ", ".join(c.id for c in live)
        raise UsageError(f"Several clusters are named {ref!r}; give one of their ids: {ids}")
    return (live or sorted(named, key=lambda c: c.created_at or ""))[-1].id


def cloud_id(ctx: Context, ref: Any) -> str | None:
    """A cloud's id from its id, its name, or its kind (`local`, `aws`, `gcp`) when the
    organization has one cloud of that kind."""
    if ref is None:
        return None
    ref = str(ref)  # YAML reads `cloud: 3` as a number
    clouds = list(ctx.client.list_clouds())
    for cloud in clouds:
        if ref == cloud.id:
            return ref
    by_name = [c for c in clouds if (c.name or "").lower() == ref.lower()]
    by_kind = [c for c in clouds if (c.kind or "").lower() == ref.lower()]
    for matches in (by_name, by_kind):
        if len(matches) == 1:
            return str(matches[0].id)
    names = ", ".join(f"{c.name} ({c.id})" for c in clouds) or "none"
    raise UsageError(f"No single cloud is called {ref!r}. Clouds: {names}")


def print_event(ctx: Context, event: ClusterEvent) -> None:
    at = output.cell(event.at)[-8:]
    took = output.duration(event.duration_ms)
    level = "" if event.level in (None, "info") else f"{(event.level or '').upper()} "
    ctx.note(
        f"{at}  {level}{event.step or ''}: {event.message or ''}" + (f" ({took})" if took else "")
    )


def read_token() -> str:
    """`--token -`: from a pipe as is, from a terminal without echoing it."""
    if sys.stdin.isatty():
        return getpass.getpass("Paste the API token: ").strip()
    return sys.stdin.readline().strip()


def has_display() -> bool:
    """Whether a graphical browser can open: without one, `webbrowser` may start a text
    browser in this very terminal, so the URL is only printed."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# --- commands ----------------------------------------------------------------------


def cmd_login(ctx: Context) -> int:
    args = ctx.args
    file = config.ConfigFile.load()
    raw_url = args.url or os.environ.get("RAYDECK_URL") or file.url
    if not raw_url:
        raise UsageError("Which server? Run `raydeck login --url https://raydeck.example.com`.")
    url = config.normalize_url(raw_url)
    if args.token:
        token = read_token() if args.token == "-" else args.token.strip()  # noqa: S105 - "-": stdin
        if not token:
            raise UsageError("No token was given.")
        org = args.org
    else:
        handoff = login.start_handoff(url)
        ctx.note(f"Open this page to sign in, and check that it shows the code {handoff.code}:")
        ctx.note(f"  {handoff.verify_url}")
        if not args.no_browser and has_display():
            with contextlib.suppress(webbrowser.Error):
                webbrowser.open(handoff.verify_url)
        else:  # nothing opens here: the page may still be opened on another device
            ctx.note("No browser here: open the page on any device where you use the console.")
            ctx.note(login.NO_BROWSER_HINT.format(url=url))
        ctx.note(f"Waiting up to {args.timeout:.0f} s for you to confirm (Ctrl-C to stop)...")
        credentials = login.wait_for_handoff(url, handoff, timeout=args.timeout)
        token, org = credentials.token, credentials.org
    client = Client(url, token, org=org)
    me = client.me()  # proves the token works before it is stored
    token_org = me.organization.slug if me.organization else ""
    if org and token_org and org != token_org:
        raise UsageError(f"This token acts in the organization {token_org!r}, not {org!r}.")
    org = org or token_org  # a token acts in one organization: the API says which
    if not org:
        orgs = list(client.list_orgs())
        if len(orgs) != 1:
            slugs = ", ".join(str(o.slug) for o in orgs) or "none"
            raise UsageError(f"Which organization is this token for? Pass --org ({slugs}).")
        org = str(orgs[0].slug)
    file.remember(url=url, org=org, token=token)
    path = file.save()
    who = (me.user.email or me.user.name) if me.user else "?"
    ctx.note(f"Signed in to {org} on {url} as {who}. The token is kept in {path}.")
    return EXIT_OK


def cmd_logout(ctx: Context) -> int:
    file = config.ConfigFile.load()
    org = ctx.args.org or file.org
    if not org or org not in file.tokens:
        ctx.note("Not signed in; nothing to do.")
        return EXIT_OK
    file.forget(org)
    path = file.save()
    ctx.note(
        f"Removed the token for {org} from {path}. It stays valid until it expires; "
        "revoke it under API tokens in the console if it may have leaked."
    )
    return EXIT_OK


def cmd_whoami(ctx: Context) -> int:
    me = ctx.client.me()
    data = {"organization": ctx.client.org, **me.raw, "url": ctx.client.url}
    ctx.show(data)
    return EXIT_OK


def list_command(
    kind: str, fetch: Callable[[Context], Iterable[Resource]], empty: str
) -> Callable[[Context], int]:
    def command(ctx: Context) -> int:
        ctx.show(list(fetch(ctx)), kind, empty=empty)
        return EXIT_OK

    return command


def limit(ctx: Context) -> int | None:
    value = getattr(ctx.args, "limit", None)
    return int(value) if value else None


def cmd_projects_create(ctx: Context) -> int:
    args = ctx.args
    ctx.show(ctx.client.create_project(args.name, slug=args.slug, description=args.description))
    return EXIT_OK


def cmd_clusters_create(ctx: Context) -> int:
    args = ctx.args
    spec = load_yaml(args.file) if args.file else {}
    for key in ("name", "project", "cloud", "compute_config", "image"):
        value = getattr(args, key, None)
        if value is not None:
            spec[key] = value
    if not spec.get("name"):
        raise UsageError("Give the cluster a name: `raydeck clusters create NAME --project P`.")
    if not spec.get("project"):
        raise UsageError("Which project? Pass --project (see `raydeck projects list`).")
    spec["cloud"] = cloud_id(ctx, spec.get("cloud"))
    compute_config = spec.get("compute_config")
    if isinstance(compute_config, dict):
        # A cluster file may describe its compute config inline: create it first.
        body = {"name": spec["name"], "project": spec["project"], **compute_config}
        body["cloud"] = cloud_id(ctx, body.get("cloud")) or spec["cloud"]
        if not body["cloud"]:
            raise UsageError("The inline compute config needs a cloud (or give the cluster one).")
        config_key = f"{args.idempotency_key}:compute-config" if args.idempotency_key else None
        made = ctx.client.create_compute_config(body, idempotency_key=config_key)
        ctx.note(f"Created compute config {made.name} ({made.id}).")
        spec["compute_config"] = made.id
    cluster = ctx.client.create_cluster(
        str(spec["name"]),
        str(spec["project"]),
        cloud=spec.get("cloud"),
        compute_config=spec.get("compute_config"),
        image=spec.get("image"),
        idempotency_key=args.idempotency_key,
    )
    if args.wait:
        ctx.note(f"Cluster {cluster.name} ({cluster.id}) requested; waiting for it to run...")
        try:
            for event in ctx.client.wait_until_running(cluster.id, timeout=args.timeout):
                print_event(ctx, event)
        except (WaitTimeout, KeyboardInterrupt):
            ctx.note(
                f"Stopped waiting; the cluster is still being started. Follow it with "
                f"`raydeck clusters events {cluster.id} --follow`."
            )
            raise
        cluster = ctx.client.get_cluster(str(cluster.id))
        ctx.note(f"Cluster {cluster.name} is running.")
    elif ctx.args.output == "table":
        ctx.note(
            f"Cluster {cluster.name} requested; follow it with `raydeck clusters events "
            f"{cluster.id} --follow`."
        )
    ctx.show(cluster)
    return EXIT_OK


def cmd_clusters_get(ctx: Context) -> int:
    ctx.show(ctx.client.get_cluster(cluster_id(ctx, ctx.args.cluster)))
    return EXIT_OK


def cmd_clusters_terminate(ctx: Context) -> int:
    ident = cluster_id(ctx, ctx.args.cluster)
    # Only what happens from now on is news to the person waiting, not the history.
    mark = ctx.client.latest_event_id(ident) if ctx.args.wait else None
    cluster = ctx.client.terminate_cluster(ident)
    if ctx.args.wait:
        ctx.note(f"Terminating {cluster.name}...")
        for event in ctx.client.wait_until_terminated(ident, timeout=ctx.args.timeout, after=mark):
            print_event(ctx, event)
        cluster = ctx.client.get_cluster(ident)
        ctx.note(f"Cluster {cluster.name} is terminated.")
    ctx.show(cluster)
    return EXIT_OK


def cmd_clusters_events(ctx: Context) -> int:
    ident = cluster_id(ctx, ctx.args.cluster)
    if not ctx.args.follow:
        ctx.show(list(ctx.client.cluster_events(ident)), "events", empty="No events yet.")
        return EXIT_OK
    events = ctx.client.follow_cluster(
        ident, until=lambda c: c.is_final or c.state == "running", timeout=ctx.args.timeout
    )
    for event in events:
        if ctx.args.output == "table":
            print_event(ctx, event)
        else:  # one JSON object per line, as it happens
            print(json.dumps(event.raw), file=ctx.out, flush=True)
    return EXIT_OK


def cmd_clusters_logs(ctx: Context) -> int:
    ident = cluster_id(ctx, ctx.args.cluster)
    args = ctx.args
    if not args.follow:
        logs = ctx.client.cluster_logs(ident, node=args.node, lines=args.lines)
        if args.output == "table":
            for line in logs.lines or []:
                print(line, file=ctx.out)
        else:
            ctx.show(logs)
        return EXIT_OK
    for line in ctx.client.follow_logs(ident, node=args.node, lines=args.lines):
        print(line, file=ctx.out, flush=True)
    return EXIT_OK


def cmd_clusters_nodes(ctx: Context) -> int:
    ident = cluster_id(ctx, ctx.args.cluster)
    ctx.show(list(ctx.client.cluster_nodes(ident)), "nodes", empty="No nodes.")
    return EXIT_OK


def cmd_clusters_address(ctx: Context) -> int:
    address = ctx.client.cluster_address(cluster_id(ctx, ctx.args.cluster))
    if ctx.args.env:
        # For `eval "$(raydeck clusters address NAME --env)"; ray job submit ...`.
        print(f"export RAY_ADDRESS={shlex.quote(address.job_address or '')}", file=ctx.out)
        headers = json.dumps(address.auth_headers)
        print(f"export RAY_JOB_HEADERS={shlex.quote(headers)}", file=ctx.out)
        # The gateway's certificate comes from the installation's CA (raydeck/trust.py).
        if address.ca_bundle:
            for name, value in trust.ray_env(Path(address.ca_bundle)).items():
                print(f"export {name}={shlex.quote(value)}", file=ctx.out)
        return EXIT_OK
    ctx.show(address)
    return EXIT_OK


def cmd_compute_configs_create(ctx: Context) -> int:
    spec = load_yaml(ctx.args.file)
    for key in ("name", "project", "cloud"):
        value = getattr(ctx.args, key, None)
        if value is not None:
            spec[key] = value
    if not spec.get("cloud"):
        raise UsageError("Which cloud? Put `cloud:` in the file or pass --cloud.")
    spec["cloud"] = cloud_id(ctx, str(spec["cloud"]))
    made = ctx.client.create_compute_config(spec, idempotency_key=ctx.args.idempotency_key)
    ctx.show(made)
    return EXIT_OK


def cmd_compute_configs_get(ctx: Context) -> int:
    ctx.show(ctx.client.get_compute_config(ctx.args.config))
    return EXIT_OK


def cmd_compute_configs_update(ctx: Context) -> int:
    changes = load_yaml(ctx.args.file)
    for fixed in ("name", "project"):  # set when the config is made
        if fixed in changes:
            raise UsageError(f"`{fixed}:` cannot change; leave it out of the file.")
    if changes.get("cloud") is not None:
        changes["cloud"] = cloud_id(ctx, str(changes["cloud"]))
    before = ctx.client.get_compute_config(ctx.args.config)
    after = ctx.client.update_compute_config(ctx.args.config, changes)
    if after.version == before.version:
        ctx.note(f"Nothing changed: still version {after.version}.")
    else:
        ctx.note(f"Saved as version {after.version}; clusters keep the version they started with.")
    ctx.show(after)
    return EXIT_OK


def cmd_images_create(ctx: Context) -> int:
    spec = load_yaml(ctx.args.file)
    if ctx.args.name is not None:
        spec["name"] = ctx.args.name
    ctx.show(ctx.client.create_image(spec, idempotency_key=ctx.args.idempotency_key))
    return EXIT_OK


def cmd_images_get(ctx: Context) -> int:
    ctx.show(ctx.client.get_image(ctx.args.image))
    return EXIT_OK


def cmd_images_update(ctx: Context) -> int:
    ctx.show(ctx.client.update_image(ctx.args.image, load_yaml(ctx.args.file)))
    return EXIT_OK


def cmd_images_delete(ctx: Context) -> int:
    ctx.client.delete_image(ctx.args.image)
    ctx.note(f"Image {ctx.args.image} deleted.")
    return EXIT_OK


# --- the parser --------------------------------------------------------------------


def common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command takes, before or after the command's name. Below the top
    level they default to SUPPRESS, so they only override what was given there."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--url", default=default, help="the Raydeck server (default: RAYDECK_URL, then login)"
    )
    parser.add_argument(
        "--org", default=default, help="organization slug (default: RAYDECK_ORG, then login)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=output.FORMATS,
        default="table" if top else argparse.SUPPRESS,
        help="output format (default: table)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydeck",
        description="Ray clusters on Raydeck, from the terminal.",
        epilog=__doc__.split("scripts):", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"raydeck {__version__}")
    common_options(parser, top=True)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def leaf(
        sub: Any, name: str, handler: Callable[[Context], int], help_text: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        common_options(p, top=False)
        p.set_defaults(handler=handler)
        return p

    p = leaf(groups, "login", cmd_login, "sign in (in the browser, or with --token)")
    p.add_argument("--token", help="an API token (`-` reads it from stdin) instead of the browser")
    p.add_argument("--no-browser", action="store_true", help="print the sign-in URL only")
    p.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for the browser (300)"
    )
    leaf(groups, "logout", cmd_logout, "forget the stored token of the organization")
    leaf(groups, "whoami", cmd_whoami, "who the token belongs to")

    simple_lists: list[tuple[str, str, Callable[[Context], Iterable[Resource]], str]] = [
        ("orgs", "organizations", lambda c: c.client.list_orgs(), "No organizations."),
        ("projects", "projects", lambda c: c.client.list_projects(), "No projects."),
        ("clouds", "clouds", lambda c: c.client.list_clouds(), "No clouds."),
        ("images", "images", lambda c: c.client.list_images(), "No images."),
        ("members", "members", lambda c: c.client.list_members(), "No members."),
        ("tokens", "API tokens", lambda c: c.client.list_tokens(), "No tokens."),
        ("audit-events", "audit events", list_audit_events, "No audit events."),
    ]
    subcommands: dict[str, Any] = {}
    for name, what, fetch, empty in simple_lists:
        scope = "you belong to" if name == "orgs" else "of the organization"
        group = groups.add_parser(name, help=f"{what} {scope}")
        sub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
        p = leaf(sub, "list", list_command(name, fetch, empty), f"list the {what}")
        subcommands[name] = sub
        if name == "audit-events":
            p.add_argument("--action", help="only this action, e.g. cluster.create")
            p.add_argument("--actor", help="only this person's (email)")
            p.add_argument("--limit", type=int, default=50, help="at most this many (50)")

    p = leaf(subcommands["projects"], "create", cmd_projects_create, "create a project")
    p.add_argument("name", help="the project's name")
    p.add_argument("--slug", help="its URL name (default: from the name)")
    p.add_argument("--description")

    group = groups.add_parser("clusters", help="Ray clusters")
    sub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = leaf(sub, "create", cmd_clusters_create, "create a cluster")
    p.add_argument("name", nargs="?", help="the cluster's name (or `name:` in --file)")
    p.add_argument("-f", "--file", help="a YAML file with name, project, cloud, compute_config…")
    p.add_argument("--project", help="project slug")
    p.add_argument("--cloud", help="cloud id, name or kind (default: the console's default)")
    p.add_argument("--compute-config", dest="compute_config", help="compute config id")
    p.add_argument("--image", help="image id")
    p.add_argument("--wait", action="store_true", help="show the lifecycle until it runs")
    p.add_argument("--timeout", type=float, default=900, help="seconds --wait waits (900)")
    p.add_argument("--idempotency-key", help="resend a create safely (default: a new key)")
    p = leaf(sub, "list", list_command("clusters", list_clusters, "No clusters."), "list clusters")
    p.add_argument("--project", help="only this project's")
    p.add_argument("--state", choices=CLUSTER_STATES, help="only clusters in this state")
    p.add_argument("--cloud", help="only this cloud's (id)")
    p.add_argument("--limit", type=int, help="at most this many")
    for name, handler, help_text in [
        ("get", cmd_clusters_get, "show one cluster"),
        ("terminate", cmd_clusters_terminate, "terminate a cluster"),
        ("events", cmd_clusters_events, "the cluster's lifecycle events"),
        ("logs", cmd_clusters_logs, "a node's latest log lines (the head's by default)"),
        ("nodes", cmd_clusters_nodes, "the cluster's nodes"),
        ("address", cmd_clusters_address, "where `ray job submit` reaches the cluster"),
    ]:
        p = leaf(sub, name, handler, help_text)
        p.add_argument("cluster", help="cluster id or name")
        p.add_argument("--project", dest="project_filter", help="look the name up in this project")
        if name in ("terminate", "events"):
            p.add_argument("--timeout", type=float, default=900, help="seconds to wait (900)")
        if name == "terminate":
            p.add_argument("--wait", action="store_true", help="wait until it is terminated")
        if name == "events":
            p.add_argument("--follow", action="store_true", help="until running or ended")
        if name == "logs":
            p.add_argument("--node", help="node id (default: the head)")
            p.add_argument("--lines", type=int, help="how many of the latest lines")
            p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
        if name == "address":
            p.add_argument(
                "--env",
                action="store_true",
                help="print RAY_ADDRESS, RAY_JOB_HEADERS and the CA bundle for Ray's tools",
            )

    group = groups.add_parser("compute-configs", help="compute configs (node shapes)")
    sub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = leaf(sub, "create", cmd_compute_configs_create, "create a compute config from YAML")
    p.add_argument("-f", "--file", required=True, help="YAML file (`-` for stdin)")
    p.add_argument("--name", help="overrides `name:` in the file")
    p.add_argument("--project", help="overrides `project:` in the file")
    p.add_argument("--cloud", help="cloud id or name; overrides `cloud:` in the file")
    p.add_argument("--idempotency-key", help="resend a create safely (default: a new key)")
    p = leaf(
        sub,
        "list",
        list_command(
            "compute-configs",
            lambda c: c.client.list_compute_configs(project=c.args.project),
            "No compute configs.",
        ),
        "list compute configs",
    )
    p.add_argument("--project", help="only this project's")
    p = leaf(sub, "get", cmd_compute_configs_get, "show one compute config")
    p.add_argument("config", help="compute config id")
    p = leaf(
        sub,
        "update",
        cmd_compute_configs_update,
        "save the settings in a YAML file as the config's next version",
    )
    p.add_argument("config", help="compute config id")
    p.add_argument("-f", "--file", required=True, help="YAML with only what changes (`-`: stdin)")

    images = subcommands["images"]
    p = leaf(images, "create", cmd_images_create, "add an image of the organization from YAML")
    p.add_argument("-f", "--file", required=True, help="YAML file (`-` for stdin)")
    p.add_argument("--name", help="overrides `name:` in the file")
    p.add_argument("--idempotency-key", help="resend a create safely (default: a new key)")
    p = leaf(images, "get", cmd_images_get, "show one image")
    p.add_argument("image", help="image id")
    p = leaf(images, "update", cmd_images_update, "change an image (only what the YAML holds)")
    p.add_argument("image", help="image id")
    p.add_argument("-f", "--file", required=True, help="YAML with only what changes (`-`: stdin)")
    p = leaf(images, "delete", cmd_images_delete, "delete an image no live cluster uses")
    p.add_argument("image", help="image id")
    clouds.add_commands(subcommands["clouds"], leaf)
    workspaces.add_commands(groups, leaf)
    jobs.add_commands(groups, leaf)
    schedules.add_commands(groups, leaf)
    services.register(groups, leaf)
    builds.add_commands(images, leaf)
    return parser


def list_audit_events(ctx: Context) -> Iterable[Resource]:
    args = ctx.args
    return ctx.client.list_audit_events(action=args.action, actor=args.actor, max_items=limit(ctx))


def list_clusters(ctx: Context) -> Iterable[Resource]:
    args = ctx.args
    return ctx.client.list_clusters(
        project=args.project, state=args.state, cloud=args.cloud, max_items=limit(ctx)
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = sys.stderr
    args = build_parser().parse_args(argv)
    ctx = Context(args, out, err)
    try:
        return int(args.handler(ctx))
    except RaydeckError as exc:
        print(error_message(exc), file=err)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `raydeck ... | head`: stop quietly, also at exit's flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
