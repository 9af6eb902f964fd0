"""Small builders shared by the engine tests."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterable
from pathlib import Path

from consumer.engine import ContactState, Transition, advance, apply_event, new_state
from consumer.events import Event, PropertyValue
from consumer.plan import Plan, load_plan

DAY = 86_400_000
T0 = 1_700_000_000_000

EVENTS = """\
events:
  Page:Viewed:
  Product:Viewed:
  Newsletter:Subscribed:
  Referral:Sent:
  Order:Completed:
    properties:
      amount: number
      sku: string
      gift: boolean
"""

_ids = itertools.count()


def load_text(tmp_path: Path, text: str, name: str = "plan.yaml") -> Plan:
    """Write plan YAML to a file and load it."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_plan(path)


def plan_with(tmp_path: Path, stages: str, *, top: str = "", crisp: str = "") -> Plan:
    """Load a plan whose one lifecycle ``main`` has the given stages YAML."""
    body = (
        EVENTS
        + textwrap.dedent(top)
        + "lifecycles:\n  main:\n"
        + textwrap.indent(textwrap.dedent(crisp), "    ")
        + "    stages:\n"
        + textwrap.indent(textwrap.dedent(stages), "      ")
    )
    return load_text(tmp_path, body)


def event(
    name: str,
    at_ms: int,
    event_id: str | None = None,
    contact_id: str = "c1",
    **properties: PropertyValue,
) -> Event:
    """Return an event; ids are unique unless given."""
    return Event(
        event_id=event_id or f"e{next(_ids)}",
        contact_id=contact_id,
        name=name,
        occurred_at_ms=at_ms,
        properties=properties,
    )


def run(
    plan: Plan,
    events: Iterable[Event],
    now_ms: int | None = None,
    state: ContactState | None = None,
) -> tuple[ContactState, list[Transition]]:
    """Apply events in order, then advance to ``now_ms``; return all moves."""
    state = state or new_state("c1")
    moves: list[Transition] = []
    for item in events:
        step = apply_event(plan, state, item)
        state = step.state
        moves.extend(step.transitions)
    if now_ms is not None:
        step = advance(plan, state, now_ms)
        state = step.state
        moves.extend(step.transitions)
    return state, moves


def stage(state: ContactState, lifecycle: str = "main") -> str | None:
    """Return the current stage of one lifecycle."""
    return state.stages[lifecycle]


def path(moves: Iterable[Transition]) -> list[tuple[str | None, str, int]]:
    """Return (from, to, time) of each move, for short assertions."""
    return [(m.from_stage, m.to_stage, m.occurred_at_ms) for m in moves]
