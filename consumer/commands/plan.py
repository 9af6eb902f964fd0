"""``crisp-lifecycle plan check`` and ``plan simulate``: preview a plan.

``check`` loads a plan and lints it (`consumer.plan_lint`); it exits 1 when
the plan does not load or has errors. ``simulate`` runs the engine over a
file of JSON-line events (`consumer.jsonl`), applying each contact's events
in file order, advances every contact's clock to ``--now`` (default: the
latest event time) and prints the contacts per stage, the transitions by
rule and the rejected events by reason. Bad lines are counted and named by
line number; they never stop the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from consumer.engine import ContactState, advance, apply_event, new_state
from consumer.events import Event, format_time_ms, parse_time_ms
from consumer.jsonl import read_events
from consumer.plan import Plan, check_event, load_plan
from consumer.plan_lint import lint_plan

#: How many bad line numbers the text report lists.
SHOWN_BAD_LINES = 20

log = structlog.get_logger()


def register(subparsers: Any) -> None:
    """Add the ``plan`` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plan", help="check a tracking plan or simulate it over events"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="load and lint a plan; exit 1 on errors")
    check.add_argument("plan", help="the plan YAML file")
    check.set_defaults(handler=run_check)
    simulate = actions.add_parser(
        "simulate", help="run a plan over JSON-line events and count the stages"
    )
    simulate.add_argument("plan", help="the plan YAML file")
    simulate.add_argument("events", help="JSON-line events, or - for standard input")
    simulate.add_argument(
        "--now", help="advance every contact to this time (ISO-8601 or epoch ms)"
    )
    simulate.add_argument("--json", action="store_true", help="print one JSON object")
    simulate.set_defaults(handler=run_simulate)


def run_check(args: argparse.Namespace) -> int:
    """Print the lint findings; 0 when there is no error."""
    plan = load_plan(args.plan)
    findings = lint_plan(plan)
    for finding in findings:
        print(finding.render(plan.source))
    errors = sum(1 for finding in findings if finding.severity == "error")
    warnings = len(findings) - errors
    stages = sum(len(lifecycle.stages) for lifecycle in plan.lifecycles)
    rules = len(plan.rules())
    verdict = "ok" if not errors else "failed"
    counts = ", ".join(
        _plural(count, noun)
        for count, noun in (
            (len(plan.events), "event"),
            (len(plan.lifecycles), "lifecycle"),
            (stages, "stage"),
            (rules, "rule"),
        )
    )
    print(
        f"{plan.source}: {verdict}: {counts}; "
        f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    )
    return 1 if errors else 0


@dataclass
class Simulation:
    """What a simulation counted."""

    plan: Plan
    states: dict[str, ContactState] = field(default_factory=dict)
    transitions: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    reported: Counter[str] = field(default_factory=Counter)
    bad_lines: list[int] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    now_ms: int | None = None

    def stage_counts(self) -> dict[str, dict[str, int]]:
        """Return contacts per stage of each lifecycle (every stage listed)."""
        counts = {
            lifecycle.name: dict.fromkeys(lifecycle.stage_names, 0)
            for lifecycle in self.plan.lifecycles
        }
        for state in self.states.values():
            for lifecycle, stage in state.stages.items():
                if stage is not None:
                    counts[lifecycle][stage] += 1
        return counts

    def without_stage(self) -> dict[str, int]:
        """Return, per lifecycle, the contacts seen that have no stage."""
        missing = {lifecycle.name: 0 for lifecycle in self.plan.lifecycles}
        for state in self.states.values():
            for lifecycle, stage in state.stages.items():
                if stage is None:
                    missing[lifecycle] += 1
        return missing

    def summary(self) -> dict[str, Any]:
        """Return the ``--json`` object."""
        return {
            "lifecycles": self.stage_counts(),
            "transitions": dict(sorted(self.transitions.items())),
            "rejected": dict(sorted(self.rejected.items())),
        }


def simulate(
    plan: Plan,
    items: Iterable[tuple[int, Event | ValueError]],
    now_ms: int | None = None,
) -> Simulation:
    """Apply events (in order) and advance every contact to ``now_ms``.

    ``now_ms`` defaults to the latest event time seen.
    """
    result = Simulation(plan)
    latest: int | None = None
    for line, item in items:
        if isinstance(item, ValueError):
            result.rejected["bad_line"] += 1
            result.bad_lines.append(line)
            log.warning("event_line_rejected", line=line, error=str(item))
            continue
        verdict = check_event(plan, item)
        if verdict.reason is not None:
            counter = result.reported if verdict.accepted else result.rejected
            counter[verdict.reason] += 1
            if not verdict.accepted:
                continue
        state = result.states.get(item.contact_id) or new_state(item.contact_id)
        step = apply_event(plan, state, item)
        result.states[item.contact_id] = step.state
        if step.duplicate:
            result.duplicates += 1
            continue
        result.applied += 1
        result.transitions.update(t.rule_id for t in step.transitions)
        if latest is None or item.occurred_at_ms > latest:
            latest = item.occurred_at_ms
    result.now_ms = now_ms if now_ms is not None else latest
    if result.now_ms is not None:
        for contact_id, state in result.states.items():
            step = advance(plan, state, result.now_ms)
            result.states[contact_id] = step.state
            result.transitions.update(t.rule_id for t in step.transitions)
    return result


def run_simulate(args: argparse.Namespace) -> int:
    """Print what the plan makes of the events; 1 if the file is unreadable."""
    plan = load_plan(args.plan)
    now_ms = None
    if args.now is not None:
        try:
            now_ms = parse_time_ms(args.now)
        except ValueError as exc:
            print(f"error: --now: {exc}", file=sys.stderr)
            return 2
    # Anything readable will do, a pipe such as <(...) included.
    if args.events != "-" and (
        not Path(args.events).exists() or Path(args.events).is_dir()
    ):
        print(f"error: cannot read events file {args.events!r}", file=sys.stderr)
        return 1
    try:
        result = simulate(plan, read_events(args.events), now_ms)
    except OSError as exc:
        print(f"error: cannot read events: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.summary(), sort_keys=False))
    else:
        print(_report(result, args.events))
    return 0


def _report(result: Simulation, events: str) -> str:
    clock = format_time_ms(result.now_ms) if result.now_ms is not None else "-"
    lines = [
        f"plan {result.plan.source}: {result.applied} events applied from {events}, "
        f"{len(result.states)} contacts, clock {clock}"
    ]
    without = result.without_stage()
    for lifecycle, counts in result.stage_counts().items():
        lines += ["", f"lifecycle {lifecycle}"]
        width = max(len(stage) for stage in [*counts, "(no stage)"])
        lines += [f"  {stage:<{width}}  {count:>8}" for stage, count in counts.items()]
        lines.append(f"  {'(no stage)':<{width}}  {without[lifecycle]:>8}")
    lines += ["", "transitions by rule"]
    lines += _counter_lines(result.transitions)
    lines += ["", "rejected (not applied)"]
    lines += _counter_lines(result.rejected)
    if result.bad_lines:
        shown = ", ".join(str(n) for n in result.bad_lines[:SHOWN_BAD_LINES])
        more = len(result.bad_lines) - SHOWN_BAD_LINES
        lines.append(f"  bad lines: {shown}{f' and {more} more' if more > 0 else ''}")
    if result.reported:
        lines += ["", "reported (applied anyway, enforcement: report)"]
        lines += _counter_lines(result.reported)
    lines += ["", f"duplicates dropped: {result.duplicates}"]
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _counter_lines(counter: Counter[str]) -> list[str]:
    if not counter:
        return ["  none"]
    width = max(len(key) for key in counter)
    return [f"  {key:<{width}}  {count:>8}" for key, count in sorted(counter.items())]
