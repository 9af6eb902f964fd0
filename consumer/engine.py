"""The lifecycle engine: (plan, state, event or clock) -> (state, transitions).

Pure and deterministic: no I/O, no wall clock, and the state passed in is
never changed. A contact's state depends only on its events in the order
they are applied, the plan, and how far its clock has been advanced; how
events were grouped into batches and when the clock was advanced between
them (never past an event not yet applied) make no difference.

How it decides:

- A contact starts in no stage. A rule moves it forward from any stage in
  its sources; the furthest stage whose rule holds wins, and the rules are
  evaluated again after every move until nothing moves (entering customer
  may make advocate true at once). Regression rules are tried only when no
  forward rule holds. Within one instant a lifecycle enters each stage at
  most once and never returns to the stage it started the instant in, so
  rules that contradict each other cannot loop.
- `apply_event` first fires the timers due at or before the event's time,
  each at its exact due time, then records the event and evaluates the rules
  that read it. `advance` fires timers up to a time. `next_due_ms` says when
  the contact next needs `advance`.
- The clock is the latest time seen. A late event (older than the clock) is
  recorded at its own time, so counts and windows see it where it belongs,
  but rules are evaluated at the clock: a move it causes is dated at the
  clock, never in the past, and a timer that is already past fires once, at
  the clock. Times before 1970 count as 0.
- An event whose id is among the last `RECENT_IDS` ids of the contact is a
  duplicate: the state is returned unchanged and the step says so.

The engine compiles each plan once (`consumer.engine_compile`); a state
remembers the layout it was made for. A state made under another plan is
carried over by name the first time it meets a new plan: stages and history
keep their names, counters the new plan shares keep their values, new ones
start at zero, and the rules are then evaluated at the contact's clock.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumer.engine_codec import decode_state, encode_state
from consumer.engine_compile import Compiled, CompiledLifecycle, CompiledRule, compiled
from consumer.engine_state import HISTORY_LIMIT, RECENT_IDS, ContactState, StageVisit
from consumer.events import Event
from consumer.plan import Plan

__all__ = [
    "HISTORY_LIMIT",
    "RECENT_IDS",
    "ContactState",
    "DesiredCrisp",
    "StageVisit",
    "Step",
    "Transition",
    "advance",
    "apply_event",
    "decode_state",
    "desired_crisp",
    "encode_state",
    "layout_id",
    "new_state",
    "next_due_ms",
]


@dataclass(frozen=True, slots=True)
class Transition:
    """A contact moved from one stage to another; see schemas/transition.avsc.

    ``event_id`` is the event that caused the move, None for a timer.
    """

    transition_id: str
    contact_id: str
    lifecycle: str
    from_stage: str | None
    to_stage: str
    rule_id: str
    regression: bool
    occurred_at_ms: int
    event_id: str | None

    def to_record(self) -> dict[str, Any]:
        """Return the Avro record form (``occurred_at`` in epoch ms)."""
        return {
            "transition_id": self.transition_id,
            "contact_id": self.contact_id,
            "lifecycle": self.lifecycle,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "rule_id": self.rule_id,
            "regression": self.regression,
            "occurred_at": self.occurred_at_ms,
            "event_id": self.event_id,
        }


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one `apply_event` or `advance`.

    ``duplicate``: the event id was seen before and ``state`` is the state
    passed in, unchanged.
    """

    state: ContactState
    transitions: tuple[Transition, ...]
    duplicate: bool = False


@dataclass(frozen=True)
class DesiredCrisp:
    """The segments (sorted, unique) and custom data the stages call for."""

    segments: tuple[str, ...]
    data: Mapping[str, str | int | float | bool]


def transition_id(
    contact_id: str,
    lifecycle: str,
    from_stage: str | None,
    to_stage: str,
    rule_id: str,
    occurred_at_ms: int,
    event_id: str | None,
) -> str:
    """Return the deterministic id of a move: 16 bytes of SHA-256, in hex."""
    text = "\x1f".join(
        (
            contact_id,
            lifecycle,
            from_stage or "",
            to_stage,
            rule_id,
            str(occurred_at_ms),
            event_id or "",
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def new_state(contact_id: str) -> ContactState:
    """Return the state of a contact the engine has never seen."""
    return ContactState(contact_id)


def layout_id(plan: Plan) -> str:
    """Return the id (hex) of the state layout the plan's rules need.

    Encoded states carry it. It changes when stages, rules or the counters
    they need change, not when events, Crisp data or sync settings do.
    """
    return compiled(plan).fingerprint.hex()


def event_id_key(event_id: str) -> bytes:
    """Return the 5-byte key under which a state remembers an event id.

    CRC-32 and Adler-32 folded into 40 bits: stable across processes and
    fast. Two of a contact's last `RECENT_IDS` ids collide with a chance of
    about one in 2**37, which would drop the newer event as a duplicate.
    """
    data = event_id.encode()
    key = ((zlib.crc32(data) << 8) ^ zlib.adler32(data)) & 0xFF_FFFF_FFFF
    return key.to_bytes(5, "big")


def _seen(recent: bytes, key: bytes) -> bool:
    position = recent.find(key)
    while position >= 0:
        if position % 5 == 0:
            return True
        position = recent.find(key, position + 1)
    return False


def apply_event(plan: Plan, state: ContactState, event: Event) -> Step:
    """Advance the contact to the event's time, then apply the event."""
    layout = compiled(plan)
    key = event_id_key(event.event_id)
    if state.recent and _seen(state.recent, key):
        return Step(state, (), True)
    out: list[Transition] = []
    st = state.fork() if state.layout is layout else _bound(layout, state, out)
    at = event.occurred_at_ms if event.occurred_at_ms > 0 else 0
    due = st.due_ms
    if due is not None and due <= at:
        _fire_timers(layout, st, at, out)
    now = st.clock_ms if st.clock_ms > at else at
    st.clock_ms = now
    recent = st.recent + key
    st.recent = recent[-5 * RECENT_IDS :] if len(recent) > 5 * RECENT_IDS else recent
    first = st.first_ms
    # A new contact is older than any guard window was: look at every rule.
    whole = first is not None and at < first
    if whole or first is None:
        st.first_ms = at
        whole = whole or layout.blank_moves
    name = event.name
    changed = False
    trackers = layout.updates.get(name)
    if trackers is not None:
        properties = event.properties
        values = st.values = st.values.copy()
        for tracker in trackers:
            accepts = tracker.accepts
            if (accepts is None or accepts(properties)) and tracker.update(
                values, properties, at, now
            ):
                changed = True
    moved = False
    if whole:
        moved = _settle(layout, st, now, event.event_id, out)
    elif changed:
        # Every other rule was false at the last look and reads nothing new.
        started: list[int] | None = None
        for lifecycle in layout.lifecycles:
            rules = lifecycle.by_event[st.stage[lifecycle.index] + 1].get(name)
            if rules is not None:
                for rule in rules:
                    if rule.node.value(st, now):
                        if started is None:
                            started = st.stage.copy()
                        _move(st, lifecycle, rule, now, event.event_id, out)
                        break
        if started is not None:
            moved = True
            _settle(layout, st, now, event.event_id, out, started)
    if whole or moved or first is None or (changed and name in layout.retime):
        st.due_ms = _next_due(layout, st, now)
    return Step(st, tuple(out) if out else (), False)


def advance(plan: Plan, state: ContactState, now_ms: int) -> Step:
    """Fire every timer due at or before ``now_ms``, each at its due time.

    The contact's clock moves to the last timer fired, not to ``now_ms``: a
    check at wall-clock time must not make an event that arrives later, but
    happened before that time, count as late.
    """
    layout = compiled(plan)
    out: list[Transition] = []
    st = state.fork() if state.layout is layout else _bound(layout, state, out)
    _fire_timers(layout, st, now_ms, out)
    return Step(st, tuple(out), False)


def next_due_ms(plan: Plan, state: ContactState) -> int | None:
    """Return when the contact next needs `advance`; None if never."""
    if state.layout is None:
        return None
    if state.layout is not compiled(plan):
        return _bound(compiled(plan), state, []).due_ms
    return state.due_ms


def desired_crisp(plan: Plan, state: ContactState) -> DesiredCrisp:
    """Return the segments and custom data the current stages call for."""
    layout = compiled(plan)
    st = state if state.layout is layout else _bound(layout, state, [])
    segments: set[str] = set()
    data: dict[str, str | int | float | bool] = {}
    for lifecycle in layout.lifecycles:
        stage = st.stage[lifecycle.index]
        if stage < 0:
            continue
        segments.update(lifecycle.segments[stage])
        entered = st.entered[lifecycle.index]
        for key, value in lifecycle.data[stage]:
            data[key] = value(st.values, entered) if callable(value) else value
    return DesiredCrisp(tuple(sorted(segments)), data)


def _bound(
    layout: Compiled, state: ContactState, out: list[Transition]
) -> ContactState:
    """Return a copy of ``state`` laid out for ``layout``."""
    if state.layout is None:
        st = state.fork()
        st.bind(layout)
        return st
    st = state.copy()
    if state.layout is layout:
        return st
    if state.layout.fingerprint == layout.fingerprint:
        st.layout = layout
    else:
        from consumer.engine_migrate import migrate

        st = migrate(st, layout)
        if st.first_ms is not None:
            _settle(layout, st, st.clock_ms, None, out)
            st.due_ms = _next_due(layout, st, st.clock_ms)
    return st


def _fire_timers(
    layout: Compiled, st: ContactState, until: int, out: list[Transition]
) -> None:
    while st.due_ms is not None and st.due_ms <= until:
        now = max(st.due_ms, st.clock_ms)
        st.clock_ms = now
        for tracker in layout.windowed:
            tracker.prune(st.values, now)
        _settle(layout, st, now, None, out)
        st.due_ms = _next_due(layout, st, now)


def _settle(
    layout: Compiled,
    st: ContactState,
    now: int,
    event_id: str | None,
    out: list[Transition],
    started: list[int] | None = None,
) -> bool:
    """Move the contact until no rule holds; return whether it moved.

    Without ``started`` every candidate rule is tried. With it (the stages
    at the start of the instant, before the moves the event's own rules
    made), only the rules that may have turned true since: those that read
    stages, and those that were not candidates at the start. Within the
    instant no stage is entered twice nor left and entered again.
    """
    visited = set(enumerate(st.stage))
    if started is not None:
        visited.update(enumerate(started))
    moved = False
    again = True
    while again:
        again = False
        for lifecycle in layout.lifecycles:
            index = lifecycle.index
            current = st.stage[index] + 1
            if started is None:
                rules = lifecycle.candidates[current]
            else:
                rules = lifecycle.recheck[started[index] + 1][current]
            for rule in rules:
                if (index, rule.to_stage) in visited or not rule.node.value(st, now):
                    continue
                visited.add((index, rule.to_stage))
                _move(st, lifecycle, rule, now, event_id, out)
                moved = again = True
                break
    return moved


def _move(
    st: ContactState,
    lifecycle: CompiledLifecycle,
    rule: CompiledRule,
    now: int,
    event_id: str | None,
    out: list[Transition],
) -> None:
    st.own_stages()
    index = lifecycle.index
    source = st.stage[index]
    target = rule.to_stage
    st.stage[index] = target
    st.entered[index] = now
    history = (*st.history[index], (rule.index, now))
    st.history[index] = history[-HISTORY_LIMIT:]
    if lifecycle.since_stages:
        since = list(st.since[index])
        for slot, stage in enumerate(lifecycle.since_stages):
            if target < stage:
                since[slot] = None
            elif source < stage:
                since[slot] = now
        st.since[index] = tuple(since)
    names = lifecycle.stage_names
    from_stage = names[source] if source >= 0 else None
    to_stage = names[target]
    out.append(
        Transition(
            transition_id=transition_id(
                st.contact_id,
                lifecycle.name,
                from_stage,
                to_stage,
                rule.rule_id,
                now,
                event_id,
            ),
            contact_id=st.contact_id,
            lifecycle=lifecycle.name,
            from_stage=from_stage,
            to_stage=to_stage,
            rule_id=rule.rule_id,
            regression=rule.regression,
            occurred_at_ms=now,
            event_id=event_id,
        )
    )


def _next_due(layout: Compiled, st: ContactState, now: int) -> int | None:
    due: int | None = None
    for lifecycle in layout.lifecycles:
        for rule in lifecycle.timed[st.stage[lifecycle.index] + 1]:
            node = rule.node
            if node.value(st, now):
                continue
            wake = node.wake(st, now, True)
            if wake is not None and (due is None or wake < due):
                due = wake
    return due
