"""``crisp-lifecycle run``: the long-lived consumer, with its Crisp relay."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from consumer.commands._common import add_service_flags, settings_from
from consumer.plan import load_plan
from consumer.service import Service


def register(subparsers: Any) -> None:
    """Add the ``run`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="consume events, keep stages in Redis, sync Crisp",
        description="Consume the events topic in a consumer group, apply the "
        "tracking plan, keep state in Redis and send Crisp updates from the "
        "outbox. SIGTERM or SIGINT drains: finish the batch, commit, exit 0.",
    )
    add_service_flags(parser)
    parser.add_argument(
        "--until-caught-up",
        action="store_true",
        help="exit 0 once every partition reached the high watermark taken at "
        "start and no timer or Crisp update is due",
    )
    parser.add_argument(
        "--no-relay",
        action="store_true",
        help="do not send Crisp updates from this process (run `sync` instead)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="port of /healthz and /metrics (0 picks a free one)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the service until stopped."""
    settings = settings_from(args)
    if args.health_port is not None:
        settings = dataclasses.replace(settings, health_port=args.health_port)
    plan = load_plan(settings.plan)
    service = Service(
        settings,
        plan,
        until_caught_up=args.until_caught_up,
        relay=not args.no_relay,
    )
    return service.run()
