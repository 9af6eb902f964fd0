"""Read stage state back for people: one contact's view, and the funnel.

Nothing here writes. The funnel scans every contact of a namespace (SCAN in
batches), so it costs one pass over Redis: fine for a report or a demo, not
for a dashboard refreshed every second; use the Prometheus transition
counters for that.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumer.engine import ContactState, decode_state
from consumer.events import format_time_ms
from consumer.plan import Plan
from consumer.store import ContactRecord

DAY_MS = 86_400_000


def describe_state(state: ContactState) -> dict[str, Any]:
    """Return a JSON-able view of a state: stages, history and clock."""
    history = state.history_by_lifecycle
    return {
        "stages": dict(state.stages),
        "history": {
            lifecycle: [
                {
                    "stage": visit.stage,
                    "rule": visit.rule_id,
                    "entered": format_time_ms(visit.entered_ms),
                    "exited": format_time_ms(visit.exited_ms)
                    if visit.exited_ms is not None
                    else None,
                }
                for visit in visits
            ]
            for lifecycle, visits in history.items()
        },
        "clock": format_time_ms(state.clock_ms) if state.clock_ms else None,
    }


@dataclass
class LifecycleFunnel:
    """Counts and timings of one lifecycle over every contact."""

    stages: tuple[str, ...]
    current: dict[str, int] = field(default_factory=dict)
    reached: dict[str, int] = field(default_factory=dict)
    days_to_reach: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return counts, conversions and median days per stage."""
        conversion: dict[str, float | None] = {}
        for before, after in zip(self.stages, self.stages[1:], strict=False):
            base = self.reached.get(before, 0)
            conversion[f"{before}->{after}"] = (
                round(self.reached.get(after, 0) / base, 4) if base else None
            )
        return {
            "contacts": {stage: self.current.get(stage, 0) for stage in self.stages},
            "reached": {stage: self.reached.get(stage, 0) for stage in self.stages},
            "conversion": conversion,
            "median_days_to_reach": {
                stage: round(statistics.median(days), 2) if days else None
                for stage, days in self.days_to_reach.items()
            },
        }


@dataclass
class Funnel:
    """The report of a namespace: every lifecycle, and the outbox."""

    lifecycles: dict[str, LifecycleFunnel]
    contacts: int = 0
    pending: int = 0
    parked: int = 0
    without_identity: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the ``report --json`` object."""
        details = {name: f.as_dict() for name, f in self.lifecycles.items()}
        return {
            "contacts": self.contacts,
            "lifecycles": {name: d["contacts"] for name, d in details.items()},
            "funnel": details,
            "outbox": {
                "pending": self.pending,
                "parked": self.parked,
                "waiting_for_identity": self.without_identity,
            },
        }


def funnel(plan: Plan, records: Iterable[ContactRecord]) -> Funnel:
    """Count contacts per stage, reached stages and time to reach them.

    A stage counts as reached when the contact's kept history entered it or
    a later stage. Time to reach is measured from the contact's first stage
    entry (its first move of that lifecycle).
    """
    result = Funnel(
        {lc.name: LifecycleFunnel(lc.stage_names) for lc in plan.lifecycles}
    )
    for record in records:
        if record.state is None:
            continue
        result.contacts += 1
        if record.parked is not None:
            result.parked += 1
        elif record.pending is not None:
            result.pending += 1
            if record.email is None and record.people_id is None:
                result.without_identity += 1
        state = decode_state(record.state, plan)
        history = state.history_by_lifecycle
        for name, stage in state.stages.items():
            lifecycle = result.lifecycles.get(name)
            if lifecycle is None or stage is None:
                continue
            lifecycle.current[stage] = lifecycle.current.get(stage, 0) + 1
            visits = history.get(name, ())
            furthest = max(
                (lifecycle.stages.index(v.stage) for v in visits),
                default=lifecycle.stages.index(stage),
            )
            for reached in lifecycle.stages[: furthest + 1]:
                lifecycle.reached[reached] = lifecycle.reached.get(reached, 0) + 1
            first_entries: dict[str, int] = {}
            for visit in visits:
                first_entries.setdefault(visit.stage, visit.entered_ms)
            if visits:
                start = visits[0].entered_ms
                for reached, entered_ms in first_entries.items():
                    days = lifecycle.days_to_reach.setdefault(reached, [])
                    days.append((entered_ms - start) / DAY_MS)
    return result
