"""`python -m raydeck_agent` / `raydeck-agent`: configured by RAYDECK_* variables only.

Exit codes: 0 stopped (told to, by a signal, or the node was removed), 2 bad environment,
3 control plane unreachable for the whole registration window, 70 the agent crashed
(after stopping Ray), 77 registration refused (token invalid, spent or expired; node
gone). 2 and 77 are permanent (config.PERMANENT_EXITS): a node's unit stops there.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from . import __version__
from .agent import Agent
from .config import EXIT_CONFIG, Config, ConfigError
from .logs import LogBuffer, setup_logging

EXIT_CRASH = 70

logger = logging.getLogger("raydeck_agent")


USAGE = """usage: raydeck-agent [--help | --version]

Registers this node with the Raydeck control plane, runs Ray on it and reports its
health until told to stop. Configured by the environment the node's boot script sets:
  RAYDECK_URL              the control plane's base URL (required)
  RAYDECK_BOOTSTRAP_TOKEN  the one-time registration token (required)
  RAYDECK_NODE_ID          this node's UUID (required)
  RAYDECK_NODE_DIR         the node's folder for logs and state (default: cwd)
  RAYDECK_PYTHON           the Python that has Ray (default: this one)
See the package README for the rest."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        print(f"raydeck-agent {__version__}")
        return 0
    if args in (["--help"], ["-h"]):
        print(USAGE)
        return 0
    if args:
        print(USAGE, file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"raydeck-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    buffer = LogBuffer()
    setup_logging(config.node_dir, buffer, os.environ.get("RAYDECK_LOG_LEVEL", "INFO"))
    logger.info(
        "raydeck-agent %s starting: node %s, pid %d, control plane %s",
        __version__,
        config.node_id,
        os.getpid(),
        config.url,
    )
    agent = Agent(config, buffer=buffer)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return agent.run()
    except Exception:
        logger.exception("the agent crashed")
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
