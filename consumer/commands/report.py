"""``crisp-lifecycle report``: the funnel of a namespace, from Redis."""

from __future__ import annotations

import argparse
import json
from typing import Any

from consumer.commands._common import (
    active_store,
    add_service_flags,
    settings_from,
)
from consumer.plan import load_plan
from consumer.report import funnel


def register(subparsers: Any) -> None:
    """Add the ``report`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="contacts per stage, conversion, time to stage, pending updates",
    )
    add_service_flags(parser, "--redis-url", "--namespace", "--plan")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the report."""
    settings = settings_from(args)
    plan = load_plan(settings.plan)
    store = active_store(settings)
    result = funnel(plan, store.scan_contacts()).as_dict()
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"namespace {store.namespace}: {result['contacts']} contacts")
    for name, detail in result["funnel"].items():
        print(f"\nlifecycle {name}")
        print(f"  {'stage':22} {'now':>8} {'reached':>8} {'median days':>12}")
        medians = detail["median_days_to_reach"]
        for stage, count in detail["contacts"].items():
            median = medians.get(stage)
            shown = "-" if median is None else f"{median:.1f}"
            print(f"  {stage:22} {count:>8} {detail['reached'][stage]:>8} {shown:>12}")
        for step, rate in detail["conversion"].items():
            shown = "-" if rate is None else f"{rate:.1%}"
            print(f"  conversion {step:32} {shown:>8}")
    outbox = result["outbox"]
    print(
        f"\nCrisp updates: {outbox['pending']} pending "
        f"({outbox['waiting_for_identity']} waiting for an email), "
        f"{outbox['parked']} parked"
    )
    return 0
