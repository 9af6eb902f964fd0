"""``crisp-lifecycle contact show``: one contact's stages, history and outbox."""

from __future__ import annotations

import argparse
import json
from typing import Any

from consumer.commands._common import (
    active_store,
    add_service_flags,
    settings_from,
)
from consumer.engine import decode_state
from consumer.events import format_time_ms
from consumer.plan import load_plan
from consumer.report import describe_state


def register(subparsers: Any) -> None:
    """Add the ``contact`` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "contact", help="inspect one contact's state"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser(
        "show", help="print a contact's stages, history and pending update"
    )
    show.add_argument("contact_id")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    add_service_flags(show, "--redis-url", "--namespace", "--plan")
    show.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace) -> int:
    """Print the contact; exit 1 when it is unknown."""
    settings = settings_from(args)
    plan = load_plan(settings.plan)
    store = active_store(settings)
    record = store.load_contact(args.contact_id)
    if record.revision == 0:
        print(
            f"contact {args.contact_id!r} is unknown in namespace {store.namespace!r}"
        )
        return 1
    # A contact without a state was left out of a replay: in no stage now.
    stages = (
        describe_state(decode_state(record.state, plan))
        if record.state is not None
        else {"stages": {}, "history": {}, "clock": None}
    )
    view: dict[str, Any] = {
        "contact_id": record.contact_id,
        "namespace": store.namespace,
        "partition": record.partition,
        "last_offset": record.offset,
        "has_email": record.email is not None,
        "crisp_people_id": record.people_id,
        **stages,
        "pending_update": json.loads(record.pending) if record.pending else None,
        "pending_since": format_time_ms(record.pending_first_ms)
        if record.pending_first_ms
        else None,
        "parked": record.parked,
        "last_sent": json.loads(record.last_sent) if record.last_sent else None,
        "last_sent_dry_run": json.loads(record.last_sent_dry_run)
        if record.last_sent_dry_run
        else None,
    }
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True))
        return 0
    for key, value in view.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, sort_keys=True)
        print(f"{key:18} {value}")
    return 0
