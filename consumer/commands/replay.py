"""``crisp-lifecycle replay``: rebuild every stage from the topic."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.commands._common import add_service_flags, settings_from
from consumer.errors import ConfigError
from consumer.events import parse_time_ms
from consumer.plan import load_plan
from consumer.replay import Replay
from consumer.settings import Settings


def register(subparsers: Any) -> None:
    """Add the ``replay`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="rebuild every stage from the topic into a new namespace, then switch",
        description="Consume the events topic from the start (or --from) into "
        "a fresh namespace with a group of its own while the live consumers "
        "go on; then queue each contact's Crisp update once if it changed and "
        "switch the active namespace. Run it again to resume after a crash.",
    )
    add_service_flags(
        parser,
        "--bootstrap",
        "--topic",
        "--group",
        "--redis-url",
        "--plan",
        "--schema-registry",
        "--kafka-option",
    )
    parser.add_argument(
        "--from",
        dest="from_time",
        default="earliest",
        help="earliest (default) or an ISO-8601 time to start from",
    )
    parser.add_argument(
        "--namespace",
        dest="into",
        default=None,
        help="the NEW namespace to build (default: $LIFECYCLE_NAMESPACE.<UTC "
        "time>); the live one is what $LIFECYCLE_NAMESPACE points to",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build, print how stages would change, then discard; send nothing",
    )
    parser.add_argument(
        "--drop-old",
        action="store_true",
        help="delete the old namespace's keys after the switch",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Replay; exit 0 when switched (or compared), 3 when stopped early."""
    settings = settings_from(args)
    plan = load_plan(settings.plan)
    live_plan = Settings.from_env().plan
    if live_plan != settings.plan:
        # Live states were written under the live plan; load it to read them.
        load_plan(live_plan)
    from_ms = None
    if args.from_time != "earliest":
        try:
            from_ms = parse_time_ms(args.from_time)
        except ValueError as exc:
            raise ConfigError(f"--from: {exc}") from exc
    replay = Replay(settings, plan, namespace=args.into, from_ms=from_ms)
    print(f"replaying {settings.topic} into {replay.namespace} (live: {replay.live})")
    if not replay.build():
        print(f"stopped; run the same command to resume {replay.namespace}")
        return 3
    changes = replay.compare()
    for line in changes.lines():
        print(line)
    if args.dry_run:
        replay.discard()
        print("dry run: nothing sent, nothing switched")
        return 0
    queued = replay.finish(drop_old=args.drop_old)
    print(f"switched to {replay.namespace}; {queued} Crisp updates queued")
    return 0
