"""The ``crisp-lifecycle`` command line.

Each module of `consumer.commands` owns one command (or group of commands)
and exposes ``register(subparsers)``; this module only collects them, sets up
logging once, and turns errors into exit codes: 0 done, 1 a check failed or a
fatal error, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import KafkaException

from consumer import commands
from consumer.errors import FatalError, LifecycleError
from consumer.logs import configure_logging

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every command of `consumer.commands`."""
    parser = argparse.ArgumentParser(
        prog="crisp-lifecycle",
        description="Kafka events to customer lifecycle stages in Crisp.",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="default: info",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_info in sorted(pkgutil.iter_modules(commands.__path__)):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    handler: Handler = args.handler
    try:
        return handler(args)
    except LifecycleError as exc:
        # One line on standard error: readable on a terminal, JSON elsewhere.
        kind = "fatal" if isinstance(exc, FatalError) else type(exc).__name__
        structlog.get_logger().error("command_failed", kind=kind, error=str(exc))
        return 1
    except KafkaException as exc:
        error = f"Kafka: {exc.args[0]}"
        structlog.get_logger().error("command_failed", kind="kafka", error=error)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``report | head``): stop quietly, as cat does,
        # and keep Python from complaining again when it flushes on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
