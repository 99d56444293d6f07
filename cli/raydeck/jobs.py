"""`raydeck jobs …`: submit (zipping and uploading the working directory once), list,
get, logs [--follow], stop and attempts.

Registered by cli.build_parser (`add_commands`); uses the SDK's Jobs (jobs_sdk.py)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import output
from .errors import NotFound
from .jobs_sdk import Job, Jobs

if TYPE_CHECKING:
    from .cli import Context

output.COLUMNS["jobs"] = [
    output.col("ID"),
    output.col("NAME"),
    output.col("PROJECT"),
    output.col("STATE"),
    output.col("ATTEMPTS"),
    output.Column("CREATED", lambda r: r.get("created_at")),
]
output.COLUMNS["job-attempts"] = [
    output.col("NUMBER"),
    output.col("STATE"),
    output.Column("EXIT", lambda r: r.get("exit_code")),
    output.col("REASON"),
    output.col("CLUSTER"),
]
output.COLUMNS["job-queue"] = [
    output.col("PLACE"),
    output.col("ID"),
    output.col("NAME"),
    output.col("PRIORITY"),
]
EXIT_JOB_FAILED = 8  # --wait / --follow: the job ended other than succeeded


def _sdk(ctx: Context) -> Jobs:
    return Jobs(ctx.client)


def job_id(ctx: Context, ref: str) -> str:
    """A job's id from its id or its name (the newest job of that name)."""
    from .cli import is_uuid

    if is_uuid(ref):
        return ref
    for job in _sdk(ctx).list():
        if job.name == ref:
            return job.id
    raise NotFound(f"No job is named {ref!r}.", status=0, code="not_found")


def _env(pairs: list[str]) -> dict[str, str]:
    from .cli import UsageError

    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"Give --env as NAME=value, not {pair!r}.")
        env[key] = value
    return env


def cmd_submit(ctx: Context) -> int:
    from .cli import UsageError, cloud_id, cluster_id, load_yaml

    args = ctx.args
    spec: dict[str, Any] = load_yaml(args.file) if args.file else {}
    entrypoint = " ".join(a for a in args.entrypoint if a != "--") or spec.get("entrypoint", "")
    if not entrypoint:
        raise UsageError("Give the command to run after --, e.g. -- python train.py")
    project = args.project or spec.get("project")
    if not project:
        raise UsageError("Give --project (or `project:` in the file).")
    pip = list(spec.get("pip") or []) + list(args.pip or [])
    if args.requirements:
        pip += [
            line.strip()
            for line in Path(args.requirements).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    working_dir = args.working_dir or spec.get("working_dir")
    if working_dir:
        ctx.note(f"Uploading {working_dir} (once per content)...")
    job = _sdk(ctx).submit(
        entrypoint,
        project,
        name=args.name or spec.get("name", ""),
        working_dir=working_dir,
        cloud=cloud_id(ctx, args.cloud or spec.get("cloud")),
        compute_config=args.compute_config or spec.get("compute_config"),
        image=args.image or spec.get("image"),
        env_vars={**(spec.get("env_vars") or {}), **_env(args.env or [])},
        pip=pip,
        max_retries=args.max_retries if args.max_retries is not None else spec.get("max_retries"),
        timeout_seconds=args.timeout if args.timeout is not None else spec.get("timeout_seconds"),
        cluster=cluster_id(ctx, queue) if (queue := args.cluster or spec.get("cluster")) else None,
        priority=args.priority if args.priority is not None else spec.get("priority"),
        idempotency_key=args.idempotency_key,
    )
    return submitted(ctx, job)


def submitted(ctx: Context, job: Job) -> int:
    """Say where a new job is, then follow it, wait for it or show it (--follow, --wait)."""
    ctx.note(f"Submitted job {job.name} ({job.id}): {job.url}")
    if ctx.args.follow:
        return _follow(ctx, job)
    if ctx.args.wait:
        job = _sdk(ctx).wait(job.id)
        ctx.show(job)
        return 0 if job.state == "succeeded" else EXIT_JOB_FAILED
    ctx.show(job)
    return 0


def _follow(ctx: Context, job: Job) -> int:
    """Print the job's events as they happen until it ends."""
    seen = 0
    while True:
        events = _sdk(ctx).events(job.id)
        for event in events[seen:]:
            at = output.cell(event.created_at)[-8:]
            print(f"{at}  {event.step}: {event.message}", file=ctx.out, flush=True)
        seen = len(events)
        job = _sdk(ctx).get(job.id)
        if job.is_final:
            return 0 if job.state == "succeeded" else EXIT_JOB_FAILED
        time.sleep(2)


def cmd_list(ctx: Context) -> int:
    args = ctx.args
    rows = list(_sdk(ctx).list(project=args.project, state=args.state, creator=args.creator))
    ctx.show(rows, "jobs", empty="No jobs.")
    return 0


def cmd_get(ctx: Context) -> int:
    ctx.show(_sdk(ctx).get(job_id(ctx, ctx.args.job)))
    return 0


def cmd_stop(ctx: Context) -> int:
    job = _sdk(ctx).stop(job_id(ctx, ctx.args.job))
    ctx.note(f"Stopping job {job.name}.")
    ctx.show(job)
    return 0


def cmd_attempts(ctx: Context) -> int:
    ctx.show(_sdk(ctx).attempts(job_id(ctx, ctx.args.job)), "job-attempts")
    return 0


def cmd_queue(ctx: Context) -> int:
    """Show a shared cluster's job queue, after changing what --order and
    --max-concurrency say."""
    from .cli import cluster_id

    args = ctx.args
    cluster = cluster_id(ctx, args.cluster)
    if args.order is not None or args.max_concurrency is not None:
        queue = _sdk(ctx).set_queue(cluster, order=args.order, max_concurrency=args.max_concurrency)
        ctx.note(f"Queue set: {queue.order}, {queue.max_concurrency} at once.")
    else:
        queue = _sdk(ctx).queue(cluster)
    if args.output != "table":
        ctx.show(queue)
        return 0
    print(f"{queue.order}, {queue.max_concurrency} at once", file=ctx.out)
    rows = [{"place": "running", **job} for job in queue.running or []] + [
        {"place": f"#{job['position']}", **job} for job in queue.waiting or []
    ]
    ctx.show(rows, "job-queue", empty="No job runs or waits on it.")
    return 0


def cmd_logs(ctx: Context) -> int:
    """The driver log of an attempt (the last by default); --follow: live while it runs."""
    job = _sdk(ctx).get(job_id(ctx, ctx.args.job))
    out = getattr(ctx.out, "buffer", None)
    for chunk in _sdk(ctx).log_chunks(job.id, attempt=ctx.args.attempt, follow=ctx.args.follow):
        if out is not None:
            out.write(chunk)
            out.flush()
        else:
            ctx.out.write(chunk.decode("utf-8", "replace"))
    if ctx.args.follow:
        job = _sdk(ctx).get(job.id)
        return 0 if job.state == "succeeded" or not job.is_final else EXIT_JOB_FAILED
    return 0


def cmd_events(ctx: Context) -> int:
    for event in _sdk(ctx).events(job_id(ctx, ctx.args.job)):
        at = output.cell(event.created_at)[-8:]
        print(f"{at}  {event.step}: {event.message}", file=ctx.out)
    return 0


def add_commands(groups: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    group = groups.add_parser("jobs", help="jobs: run a command to completion, with retries")
    sub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = leaf(sub, "submit", cmd_submit, "submit a job: raydeck jobs submit [options] -- CMD")
    p.add_argument("-f", "--file", help="a job.yaml (flags override it)")
    p.add_argument("--name", help="default: the command's name")
    p.add_argument("--project", help="project slug")
    p.add_argument("--working-dir", dest="working_dir", help="a folder to zip and upload")
    p.add_argument("--cloud", help="cloud id, name or kind (default: the project's only one)")
    p.add_argument("--compute-config", dest="compute_config", help="compute config id")
    p.add_argument("--image", help="image id")
    p.add_argument("--env", action="append", metavar="K=V", help="an environment variable")
    p.add_argument("--pip", action="append", help="a pip requirement (repeat)")
    p.add_argument("--requirements", help="a requirements.txt to pip install")
    p.add_argument("--max-retries", dest="max_retries", type=int, help="default 1")
    p.add_argument("--timeout", type=int, help="seconds an attempt may run")
    p.add_argument("--cluster", help="a running cluster's id or name to queue on")
    p.add_argument("--priority", type=int, help="in a priority queue, higher runs first")
    p.add_argument("--wait", action="store_true", help="wait until it ends")
    p.add_argument("--follow", action="store_true", help="print its events until it ends")
    p.add_argument("--idempotency-key", help="resend a submit safely (default: a new key)")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- the command to run")
    p = leaf(sub, "list", cmd_list, "list jobs")
    p.add_argument("--project", help="only this project's")
    p.add_argument("--state", help="only jobs in this state")
    p.add_argument("--creator", help="only jobs submitted by this email")
    p = leaf(sub, "queue", cmd_queue, "show (or set) a shared cluster's job queue")
    p.add_argument("cluster", help="cluster id or name")
    p.add_argument("--order", choices=["fifo", "priority"], help="which waiting job runs next")
    p.add_argument(
        "--max-concurrency", dest="max_concurrency", type=int, help="jobs that run at once"
    )
    for name, handler, help_text in [
        ("get", cmd_get, "show one job"),
        ("stop", cmd_stop, "stop a job: its driver stops, no further attempt"),
        ("attempts", cmd_attempts, "list a job's attempts and why each ended"),
        ("events", cmd_events, "print what happened to a job"),
        ("logs", cmd_logs, "print a job's driver log (--follow: live until it ends)"),
    ]:
        p = leaf(sub, name, handler, help_text)
        p.add_argument("job", help="job id or name")
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="keep printing until it ends")
            p.add_argument("--attempt", type=int, help="this attempt's (default: the last)")
