"""Compile a plan once into the tables the engine runs per event.

A `Compiled` plan holds the trackers (`consumer.engine_trackers`), the
condition nodes (`consumer.engine_nodes`) and, per lifecycle and current
stage, the rules worth evaluating: all of them in order of preference, those
that read a given event, and those that depend on time. Its ``fingerprint``
names the layout of a contact's state (stage and rule positions, trackers);
`consumer.engine_codec` writes it into every encoded state and finds the
compiled plan again through `layout_for`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from consumer import conditions as c
from consumer.engine_nodes import (
    All,
    Any_,
    EverCount,
    Inactive,
    InStageFor,
    Node,
    Not_,
    Reached,
    Total,
    WindowCount,
    WindowTotal,
)
from consumer.engine_trackers import (
    BucketTracker,
    CountTracker,
    LastTracker,
    TotalTracker,
    Tracker,
    WindowTracker,
    needed_count,
)
from consumer.events import format_time_ms
from consumer.plan import DataValue, Placeholder, Plan, Template, loaded_plans

#: Version of the state layout; part of every fingerprint.
LAYOUT_FORMAT = 1

#: How many compiled plans stay cached (random plans in tests make many).
CACHED_PLANS = 64

_EVER = (c.Threshold("gte", 1),)

#: A custom data value: a constant, or a function of (values, entered_ms).
Renderer = Callable[[list[Any], int], str | int | float | bool]


class CompiledRule:
    """One rule with its positions resolved."""

    __slots__ = (
        "index",
        "lifecycle",
        "node",
        "reads_stages",
        "regression",
        "rule_id",
        "to_stage",
    )

    def __init__(
        self,
        index: int,
        rule_id: str,
        lifecycle: int,
        to_stage: int,
        regression: bool,
        node: Node,
        reads_stages: bool,
    ) -> None:
        self.index = index
        self.reads_stages = reads_stages
        self.rule_id = rule_id
        self.lifecycle = lifecycle
        self.to_stage = to_stage
        self.regression = regression
        self.node = node


class CompiledLifecycle:
    """A lifecycle's rules, indexed by the stage a contact is in (+1)."""

    __slots__ = (
        "by_event",
        "candidates",
        "data",
        "index",
        "name",
        "recheck",
        "rules",
        "segments",
        "since_stages",
        "stage_names",
        "timed",
    )

    def __init__(self, index: int, name: str, stage_names: tuple[str, ...]) -> None:
        self.index = index
        self.name = name
        self.stage_names = stage_names
        self.rules: list[CompiledRule] = []
        self.candidates: list[tuple[CompiledRule, ...]] = []
        #: [stage at the start of an instant + 1][stage now + 1]: the rules
        #: that may hold after moves although nothing they read by event
        #: changed: those that read stages or were not candidates at first
        self.recheck: list[list[tuple[CompiledRule, ...]]] = []
        self.by_event: list[dict[str, tuple[CompiledRule, ...]]] = []
        #: per current stage (+1): the rules that may turn true with time
        self.timed: list[tuple[CompiledRule, ...]] = []
        #: stages whose "or beyond" entry time the state keeps, in slot order
        self.since_stages: list[int] = []
        self.segments: list[tuple[str, ...]] = []
        self.data: list[
            tuple[tuple[str, Renderer | str | int | float | bool], ...]
        ] = []

    def since_slot(self, stage: int) -> int:
        """Return the slot of a stage's "or beyond" entry time, adding it."""
        if stage not in self.since_stages:
            self.since_stages.append(stage)
        return self.since_stages.index(stage)


class Compiled:
    """A plan ready to run."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.lifecycles: list[CompiledLifecycle] = []
        self.trackers: list[Tracker] = []
        self.updates: dict[str, tuple[Tracker, ...]] = {}
        self.windowed: tuple[Tracker, ...] = ()
        #: events after which the next due time must be computed again
        self.retime: frozenset[str] = frozenset()
        #: whether some rule holds for a contact with nothing recorded
        self.blank_moves = True
        #: tracker values and "or beyond" times of a contact with nothing
        self.blank_values: tuple[Any, ...] = ()
        self.blank_since: tuple[tuple[None, ...], ...] = ()
        self.fingerprint = b""
        self._by_key: dict[tuple[Any, ...], Tracker] = {}

    def lifecycle_index(self, name: str) -> int:
        """Return the position of a lifecycle."""
        for lifecycle in self.lifecycles:
            if lifecycle.name == name:
                return lifecycle.index
        raise KeyError(name)

    def tracker(self, key: tuple[Any, ...], make: Callable[[], Tracker]) -> Tracker:
        """Return the tracker for ``key``, making it on first use."""
        found = self._by_key.get(key)
        if found is None:
            found = make()
            found.slot = len(self.trackers)
            self.trackers.append(found)
            self._by_key[key] = found
        return found


def compile_plan(plan: Plan) -> Compiled:
    """Compile a plan; callers should use `compiled` (cached)."""
    compiled = Compiled(plan)
    for index, lifecycle in enumerate(plan.lifecycles):
        compiled.lifecycles.append(
            CompiledLifecycle(index, lifecycle.name, lifecycle.stage_names)
        )
    for lifecycle, target in zip(plan.lifecycles, compiled.lifecycles, strict=True):
        for to_stage, stage in enumerate(lifecycle.stages):
            for rule in stage.rules:
                node = _node(compiled, rule.when, target.index)
                target.rules.append(
                    CompiledRule(
                        len(target.rules),
                        rule.rule_id,
                        target.index,
                        to_stage,
                        rule.regression,
                        node,
                        any(
                            isinstance(x, c.InStage | c.Reached)
                            for x in c.walk(rule.when)
                        ),
                    )
                )
            target.segments.append(stage.segments)
            target.data.append(
                tuple(
                    (key, _renderer(compiled, value, lifecycle.name, stage.name))
                    for key, value in stage.data.items()
                )
            )
        _index_rules(lifecycle.stage_names, lifecycle, target)
    updates: dict[str, list[Tracker]] = {}
    for tracker in compiled.trackers:
        updates.setdefault(tracker.event, []).append(tracker)
    compiled.updates = {name: tuple(found) for name, found in updates.items()}
    compiled.windowed = tuple(t for t in compiled.trackers if t.expires)
    compiled.retime = frozenset(
        name
        for target in compiled.lifecycles
        for rule in target.rules
        if rule.node.rises
        for name in rule.node.events
    )
    compiled.fingerprint = _fingerprint(compiled)
    compiled.blank_values = tuple(tracker.initial() for tracker in compiled.trackers)
    compiled.blank_since = tuple(
        (None,) * len(target.since_stages) for target in compiled.lifecycles
    )
    compiled.blank_moves = _blank_moves(compiled)
    return compiled


def _blank_moves(compiled: Compiled) -> bool:
    """Tell whether a rule can hold for a contact with nothing recorded.

    If none can (the usual case), a contact's first event only needs the
    rules that read that event.
    """
    from consumer.engine_state import ContactState

    blank = ContactState("")
    blank.bind(compiled)
    blank.first_ms = 0
    return any(
        rule.node.value(blank, 0)
        for lifecycle in compiled.lifecycles
        for rule in lifecycle.candidates[0]
    )


def _index_rules(
    stage_names: tuple[str, ...], lifecycle: Any, target: CompiledLifecycle
) -> None:
    sources: list[frozenset[int]] = []
    for stage in lifecycle.stages:
        for rule in stage.rules:
            sources.append(
                frozenset(
                    -1 if s is None else stage_names.index(s) for s in rule.sources
                )
            )
    for current in range(-1, len(stage_names)):
        forward = sorted(
            (
                rule
                for rule in target.rules
                if not rule.regression
                and current in sources[rule.index]
                and rule.to_stage > current
            ),
            key=lambda rule: (-rule.to_stage, rule.index),
        )
        backward = [
            rule
            for rule in target.rules
            if rule.regression
            and current in sources[rule.index]
            and rule.to_stage < current
        ]
        candidates = tuple(forward + backward)
        target.candidates.append(candidates)
        names = {name for rule in candidates for name in rule.node.events}
        target.by_event.append(
            {
                name: tuple(rule for rule in candidates if name in rule.node.events)
                for name in sorted(names)
            }
        )
        target.timed.append(tuple(rule for rule in candidates if rule.node.rises))
    for start in target.candidates:
        known = {rule.index for rule in start if not rule.reads_stages}
        target.recheck.append(
            [
                tuple(rule for rule in now if rule.index not in known)
                for now in target.candidates
            ]
        )


def _node(compiled: Compiled, condition: c.Condition, lifecycle: int) -> Node:
    if isinstance(condition, c.AllOf | c.AnyOf):
        children = tuple(_node(compiled, x, lifecycle) for x in condition.conditions)
        return All(children) if isinstance(condition, c.AllOf) else Any_(children)
    if isinstance(condition, c.Not):
        return Not_(_node(compiled, condition.condition, lifecycle))
    if isinstance(condition, c.InStage | c.Reached):
        index = compiled.lifecycle_index(condition.lifecycle)
        target = compiled.lifecycles[index]
        stage = target.stage_names.index(condition.stage)
        if isinstance(condition, c.Reached):
            return Reached(index, stage)
        slot = target.since_slot(stage) if condition.or_beyond else -1
        return InStageFor(index, stage, condition.for_ms, condition.or_beyond, slot)
    if isinstance(condition, c.NotPerformed):
        tracker = _last(compiled, condition.event, condition.where)
        return Inactive(
            condition.event, tracker.slot, condition.within_ms, condition.guard
        )
    if isinstance(condition, c.Aggregate):
        return _aggregate(compiled, condition)
    event, where, within_ms = condition.event, condition.where, condition.within_ms
    thresholds = condition.thresholds if isinstance(condition, c.Count) else _EVER
    need = needed_count(thresholds)
    if within_ms is None:
        counter = _count(compiled, event, where)
        assert isinstance(counter, CountTracker)
        if counter.cap is not None:
            counter.cap = max(counter.cap, need)
        return EverCount(event, counter.slot, thresholds)
    window = compiled.tracker(
        ("window", event, where),
        lambda: WindowTracker(("window", event, where), event, where),
    )
    assert isinstance(window, WindowTracker)
    window.keep = max(window.keep, need)
    window.horizon_ms = max(window.horizon_ms, within_ms)
    return WindowCount(event, window.slot, thresholds, within_ms)


def _count(compiled: Compiled, event: str, where: c.Where) -> Tracker:
    key = ("count", event, where)
    return compiled.tracker(key, lambda: CountTracker(key, event, where))


def _last(compiled: Compiled, event: str, where: c.Where) -> Tracker:
    key = ("last", event, where)
    return compiled.tracker(key, lambda: LastTracker(key, event, where))


def _total(
    compiled: Compiled, function: str, event: str, prop: str, where: c.Where
) -> Tracker:
    key = ("total", function, event, prop, where)
    return compiled.tracker(
        key, lambda: TotalTracker(key, event, where, function, prop)
    )


def _aggregate(compiled: Compiled, condition: c.Aggregate) -> Node:
    function, event, prop = condition.function, condition.event, condition.prop
    where, within_ms = condition.where, condition.within_ms
    if within_ms is None:
        tracker = _total(compiled, function, event, prop, where)
        return Total(event, tracker.slot, condition.thresholds)
    key = ("buckets", function, event, prop, where, within_ms)
    buckets = compiled.tracker(
        key, lambda: BucketTracker(key, event, where, function, prop, within_ms)
    )
    assert isinstance(buckets, BucketTracker)
    return WindowTotal(buckets, condition.thresholds)


def _renderer(
    compiled: Compiled, value: DataValue, lifecycle: str, stage: str
) -> Renderer | str | int | float | bool:
    if not isinstance(value, Template):
        return value
    parts: list[str | Renderer] = []
    for part in value.parts:
        if isinstance(part, str):
            parts.append(part)
        else:
            parts.append(_placeholder(compiled, part, lifecycle, stage))
    if len(parts) == 1:
        return parts[0]

    def render(values: list[Any], entered_ms: int) -> str:
        return "".join(
            part if isinstance(part, str) else _text(part(values, entered_ms))
            for part in parts
        )

    return render


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _placeholder(
    compiled: Compiled, part: Placeholder, lifecycle: str, stage: str
) -> str | Renderer:
    if part.kind == "stage":
        return stage
    if part.kind == "lifecycle":
        return lifecycle
    if part.kind == "stage_since":
        return lambda values, entered_ms: format_time_ms(entered_ms)
    if part.kind == "stage_since_ms":
        return lambda values, entered_ms: entered_ms
    assert part.event is not None
    if part.kind == "count":
        counter = _count(compiled, part.event, ())
        assert isinstance(counter, CountTracker)
        counter.cap = None
        slot = counter.slot
    else:
        assert part.prop is not None
        slot = _total(compiled, "sum", part.event, part.prop, ()).slot
    return lambda values, entered_ms: values[slot]


def _fingerprint(compiled: Compiled) -> bytes:
    lines = [f"layout {LAYOUT_FORMAT}"]
    for target in compiled.lifecycles:
        lines.append(f"lifecycle {target.name} {target.stage_names}")
        lines.extend(f"rule {r.rule_id} {r.to_stage}" for r in target.rules)
        lines.append(f"since {target.since_stages}")
    lines.extend(f"{t.kind} {t.describe()}" for t in compiled.trackers)
    return hashlib.sha256("\n".join(lines).encode()).digest()[:4]


_cache: dict[int, tuple[Plan, Compiled]] = {}
_layouts: dict[bytes, Compiled] = {}
_last_plan: list[tuple[Plan, Compiled]] = []


def compiled(plan: Plan) -> Compiled:
    """Return the compiled form of ``plan``, compiling it on first use."""
    if _last_plan and _last_plan[0][0] is plan:
        return _last_plan[0][1]
    entry = _cache.get(id(plan))
    if entry is None or entry[0] is not plan:
        entry = (plan, compile_plan(plan))
        _cache[id(plan)] = entry
        _layouts[entry[1].fingerprint] = entry[1]
        for old in list(_cache)[: max(0, len(_cache) - CACHED_PLANS)]:
            del _cache[old]
        for old_layout in list(_layouts)[: max(0, len(_layouts) - CACHED_PLANS)]:
            del _layouts[old_layout]
    _last_plan[:] = [entry]
    return entry[1]


def layout_for(fingerprint: bytes) -> Compiled | None:
    """Find the compiled plan whose state layout has this fingerprint.

    Looks among plans compiled in this process, then among the plans
    `consumer.plan.load_plan` loaded.
    """
    found = _layouts.get(fingerprint)
    if found is None:
        for plan in reversed(loaded_plans()):
            if compiled(plan).fingerprint == fingerprint:
                return compiled(plan)
    return found
