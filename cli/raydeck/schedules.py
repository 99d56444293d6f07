"""`raydeck schedules …`: create (a job definition and a cron expression), list, get,
pause, resume and delete job schedules. `raydeck jobs queue CLUSTER` (in jobs.py)
shows and sets a shared cluster's queue.

Registered by cli.build_parser (`add_commands`); uses the SDK's Schedules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import output
from .errors import NotFound
from .schedules_sdk import Schedules

if TYPE_CHECKING:
    from .cli import Context

output.COLUMNS["schedules"] = [
    output.col("ID"),
    output.col("NAME"),
    output.col("PROJECT"),
    output.col("CRON"),
    output.col("TIMEZONE"),
    output.Column("PAUSED", lambda r: "yes" if r.get("paused") else "no"),
    output.Column("NEXT RUN", lambda r: r.get("next_run_at")),
    output.Column("LAST RUN", lambda r: r.get("last_run_at")),
]


def _sdk(ctx: Context) -> Schedules:
    return Schedules(ctx.client)


def schedule_id(ctx: Context, ref: str) -> str:
    """A schedule's id from its id or its name."""
    from .cli import is_uuid

    if is_uuid(ref):
        return ref
    for schedule in _sdk(ctx).list():
        if schedule.name == ref:
            return schedule.id
    raise NotFound(f"No schedule is named {ref!r}.", status=0, code="not_found")


def cmd_create(ctx: Context) -> int:
    from .cli import UsageError, cloud_id, cluster_id
    from .jobs import _env

    args = ctx.args
    entrypoint = " ".join(a for a in args.entrypoint if a != "--")
    if not entrypoint:
        raise UsageError("Give the command to run after --, e.g. -- python train.py")
    schedule = _sdk(ctx).create(
        entrypoint,
        args.project,
        name=args.name,
        cron=args.cron,
        timezone=args.timezone,
        cloud=cloud_id(ctx, args.cloud),
        compute_config=args.compute_config,
        image=args.image,
        env_vars=_env(args.env or []),
        pip=args.pip or [],
        max_retries=args.max_retries,
        timeout_seconds=args.timeout,
        cluster=cluster_id(ctx, args.cluster) if args.cluster else None,
        priority=args.priority,
    )
    ctx.note(f"Created schedule {schedule.name} ({schedule.id}); next run {schedule.next_run_at}.")
    ctx.show(schedule)
    return 0


def cmd_list(ctx: Context) -> int:
    ctx.show(list(_sdk(ctx).list(project=ctx.args.project)), "schedules", empty="No schedules.")
    return 0


def cmd_get(ctx: Context) -> int:
    ctx.show(_sdk(ctx).get(schedule_id(ctx, ctx.args.schedule)))
    return 0


def cmd_pause(ctx: Context) -> int:
    schedule = _sdk(ctx).pause(schedule_id(ctx, ctx.args.schedule))
    ctx.note(f"Paused {schedule.name}: no run until it is resumed.")
    ctx.show(schedule)
    return 0


def cmd_resume(ctx: Context) -> int:
    schedule = _sdk(ctx).resume(schedule_id(ctx, ctx.args.schedule))
    ctx.note(f"Resumed {schedule.name}: next run {schedule.next_run_at}.")
    ctx.show(schedule)
    return 0


def cmd_delete(ctx: Context) -> int:
    ref = schedule_id(ctx, ctx.args.schedule)
    _sdk(ctx).delete(ref)
    ctx.note(f"Deleted schedule {ctx.args.schedule}; the jobs it submitted stay.")
    return 0


def add_commands(groups: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    group = groups.add_parser("schedules", help="schedules: submit a job at cron times")
    sub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = leaf(sub, "create", cmd_create, "create a schedule: raydeck schedules create … -- CMD")
    p.add_argument("--name", required=True, help="the schedule's (and its jobs') name")
    p.add_argument("--cron", required=True, help='five fields, e.g. "0 3 * * *" (03:00 daily)')
    p.add_argument("--timezone", default="UTC", help="an IANA time zone (default UTC)")
    p.add_argument("--project", required=True, help="project slug")
    p.add_argument("--cloud", help="cloud id, name or kind (default: the project's only one)")
    p.add_argument("--compute-config", dest="compute_config", help="compute config id")
    p.add_argument("--image", help="image id")
    p.add_argument("--env", action="append", metavar="K=V", help="an environment variable")
    p.add_argument("--pip", action="append", help="a pip requirement (repeat)")
    p.add_argument("--max-retries", dest="max_retries", type=int, help="default 1")
    p.add_argument("--timeout", type=int, help="seconds an attempt may run")
    p.add_argument("--cluster", help="a running cluster (id or name) whose queue its jobs join")
    p.add_argument("--priority", type=int, help="in a priority queue, higher runs first")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- the command to run")
    p = leaf(sub, "list", cmd_list, "list schedules with their next and last run")
    p.add_argument("--project", help="only this project's")
    for name, handler, help_text in [
        ("get", cmd_get, "show one schedule"),
        ("pause", cmd_pause, "pause a schedule: no run until resumed"),
        ("resume", cmd_resume, "resume a schedule from its next time"),
        ("delete", cmd_delete, "delete a schedule (its jobs stay)"),
    ]:
        p = leaf(sub, name, handler, help_text)
        p.add_argument("schedule", help="schedule id or name")
