"""`python -m console.worker <options>`: the embedded default's Celery worker, as
`celery --quiet -A console worker <options>` starts it (the same click command, options
and app), without Celery's umbrella command around it. That command imports every one
of its subcommands before it parses a word, and its `amqp` shell brings prompt_toolkit
and pygments: 12 MB the worker never used (benchmarks/README.md, "idle memory").
Production's workers run `celery` itself (deploy/entrypoint.sh)."""

from __future__ import annotations

import sys

from celery.bin.base import CLIContext
from celery.bin.worker import worker

from console.celery import app


def main(argv: list[str]) -> None:

    worker.params.extend(app.user_options["worker"])  # --beat-thread
    worker.main(
        args=argv,
        prog_name="celery worker",
        obj=CLIContext(app=app, no_color=None, workdir=None, quiet=True),
        # The environment variables `celery worker` reads its options from.
        auto_envvar_prefix="CELERY_WORKER",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
