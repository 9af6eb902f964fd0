"""``crisp-lifecycle outbox``: list and requeue pending Crisp updates."""

from __future__ import annotations

import argparse
import json
from typing import Any

from consumer.commands._common import (
    active_store,
    add_service_flags,
    settings_from,
)
from consumer.events import format_time_ms, wall_clock_ms


def register(subparsers: Any) -> None:
    """Add the ``outbox`` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "outbox", help="inspect and requeue Crisp updates"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list parked updates")
    listing.add_argument(
        "--parked",
        action="store_true",
        required=True,
        help="list updates set aside after Crisp refused them",
    )
    listing.add_argument("--json", action="store_true")
    add_service_flags(listing, "--redis-url", "--namespace")
    listing.set_defaults(handler=run_list)
    retry = actions.add_parser("retry", help="requeue every parked update now")
    add_service_flags(retry, "--redis-url", "--namespace", "--topic")
    retry.set_defaults(handler=run_retry)


def run_list(args: argparse.Namespace) -> int:
    """Print parked updates with their reasons."""
    settings = settings_from(args)
    store = active_store(settings)
    rows = [
        {
            "contact_id": record.contact_id,
            "reason": record.parked,
            "pending": json.loads(record.pending) if record.pending else None,
            "pending_since": format_time_ms(record.pending_first_ms)
            if record.pending_first_ms
            else None,
        }
        for record in store.parked()
    ]
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        for row in rows:
            print(f"{row['contact_id']}\t{row['pending_since']}\t{row['reason']}")
        print(f"{len(rows)} parked")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    """Requeue parked updates for an immediate retry."""
    settings = settings_from(args)
    store = active_store(settings)
    now_ms = wall_clock_ms()
    records = store.parked()
    for record in records:
        store.unpark(record, settings.topic, now_ms)
    print(f"{len(records)} requeued")
    return 0
