"""A slow, obviously correct reference for the engine's stage semantics.

It keeps every event and evaluates every rule from the raw event list at
every millisecond, with none of the engine's trackers, caps, windows kept in
state, wake-up times or partial re-evaluation. Only the plan model and the
property predicates (`PropertyTest.holds`) are shared. Windowed sums, minima
and maxima use the documented buckets: an event at ``t`` counts while
``(t // b + 1) * b + window > now``, with ``b = max(1, window // 16)``.
"""

from __future__ import annotations

from consumer.conditions import (
    Aggregate,
    AllOf,
    AnyOf,
    Condition,
    Count,
    InStage,
    Not,
    NotPerformed,
    Performed,
    Reached,
    Where,
    is_number,
)
from consumer.events import Event
from consumer.plan import Plan, Rule

Move = tuple[str, str | None, str, str, int, str | None]


class Oracle:
    """Replays one contact's events and returns every move."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.events: list[Event] = []
        self.position = {lc.name: -1 for lc in plan.lifecycles}
        #: per lifecycle: (time, stage position) of every move, in order
        self.moves: dict[str, list[tuple[int, int]]] = {
            lc.name: [] for lc in plan.lifecycles
        }
        self.out: list[Move] = []

    def stages(self) -> dict[str, str | None]:
        return {
            lc.name: lc.stage_names[self.position[lc.name]]
            if self.position[lc.name] >= 0
            else None
            for lc in self.plan.lifecycles
        }

    def run(self, events: list[Event], now_ms: int) -> list[Move]:
        """Apply events (times must not decrease) and step to ``now_ms``."""
        if not events:
            return []
        start = events[0].occurred_at_ms
        pending = list(events)
        for now in range(start, max(now_ms, events[-1].occurred_at_ms) + 1):
            if now > start:
                self.evaluate(now, None)
            while pending and pending[0].occurred_at_ms == now:
                item = pending.pop(0)
                if any(seen.event_id == item.event_id for seen in self.events):
                    continue
                self.events.append(item)
                self.evaluate(now, item.event_id)
        return self.out

    def evaluate(self, now: int, event_id: str | None) -> None:
        visited = {(name, stage) for name, stage in self.position.items()}
        moved = True
        while moved:
            moved = False
            for lifecycle in self.plan.lifecycles:
                current = self.position[lifecycle.name]
                for index, rule in self.candidates(lifecycle.name, current):
                    if (lifecycle.name, index) in visited:
                        continue
                    if self.holds(rule.when, now):
                        visited.add((lifecycle.name, index))
                        self.move(lifecycle.name, current, index, rule, now, event_id)
                        moved = True
                        break

    def candidates(self, name: str, current: int) -> list[tuple[int, Rule]]:
        lifecycle = self.plan.lifecycle(name)
        here = None if current < 0 else lifecycle.stage_names[current]
        rules = [
            (index, rule)
            for index, stage in enumerate(lifecycle.stages)
            for rule in stage.rules
            if here in rule.sources
        ]
        forward = [(i, r) for i, r in rules if not r.regression and i > current]
        forward.sort(key=lambda pair: -pair[0])
        backward = [(i, r) for i, r in rules if r.regression and i < current]
        return forward + backward

    def move(
        self,
        name: str,
        source: int,
        target: int,
        rule: Rule,
        now: int,
        event_id: str | None,
    ) -> None:
        lifecycle = self.plan.lifecycle(name)
        self.position[name] = target
        self.moves[name].append((now, target))
        before = lifecycle.stage_names[source] if source >= 0 else None
        self.out.append(
            (name, before, lifecycle.stage_names[target], rule.rule_id, now, event_id)
        )

    def matching(self, event: str, where: Where) -> list[Event]:
        return [
            e
            for e in self.events
            if e.name == event and all(test.holds(e.properties) for test in where)
        ]

    def holds(self, condition: Condition, now: int) -> bool:
        if isinstance(condition, AllOf):
            return all(self.holds(c, now) for c in condition.conditions)
        if isinstance(condition, AnyOf):
            return any(self.holds(c, now) for c in condition.conditions)
        if isinstance(condition, Not):
            return not self.holds(condition.condition, now)
        if isinstance(condition, Reached):
            lifecycle = self.plan.lifecycle(condition.lifecycle)
            return self.position[condition.lifecycle] >= lifecycle.index(
                condition.stage
            )
        if isinstance(condition, InStage):
            return self.in_stage(condition, now)
        if isinstance(condition, NotPerformed):
            recent = [
                e
                for e in self.matching(condition.event, condition.where)
                if now - condition.within_ms < e.occurred_at_ms
            ]
            age = now - self.events[0].occurred_at_ms
            return not recent and (not condition.guard or age >= condition.within_ms)
        if isinstance(condition, Aggregate):
            return self.aggregate(condition, now)
        found = self.matching(condition.event, condition.where)
        if condition.within_ms is not None:
            found = [e for e in found if now - condition.within_ms < e.occurred_at_ms]
        if isinstance(condition, Performed):
            return bool(found)
        assert isinstance(condition, Count)
        return all(t.holds(len(found)) for t in condition.thresholds)

    def aggregate(self, condition: Aggregate, now: int) -> bool:
        found = self.matching(condition.event, condition.where)
        if condition.within_ms is not None:
            width = max(1, condition.within_ms // 16)
            found = [
                e
                for e in found
                if (e.occurred_at_ms // width + 1) * width + condition.within_ms > now
            ]
        values = [e.properties.get(condition.prop) for e in found]
        numbers = [v for v in values if isinstance(v, int | float) and is_number(v)]
        total: float | None
        if condition.function == "sum":
            total = sum(numbers)
        elif not numbers:
            total = None
        else:
            total = min(numbers) if condition.function == "min" else max(numbers)
        return total is not None and all(t.holds(total) for t in condition.thresholds)

    def in_stage(self, condition: InStage, now: int) -> bool:
        lifecycle = self.plan.lifecycle(condition.lifecycle)
        wanted = lifecycle.index(condition.stage)
        since = None
        for at, position in self.moves[condition.lifecycle]:
            inside = position >= wanted if condition.or_beyond else position == wanted
            if inside and since is None:
                since = at
            elif not inside:
                since = None
            elif not condition.or_beyond:
                since = at
        return since is not None and now - since >= condition.for_ms
