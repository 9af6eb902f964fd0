"""Property tests of the engine over random plans and random event streams.

Times are small integers (milliseconds) so that windows, durations and
event gaps collide often: the corner cases are where the bugs live.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.conditions import (
    THRESHOLD_OPS,
    Aggregate,
    AllOf,
    AnyOf,
    Condition,
    Count,
    InStage,
    Not,
    NotPerformed,
    Performed,
    PropertyTest,
    Reached,
    Threshold,
)
from consumer.engine import (
    RECENT_IDS,
    ContactState,
    Transition,
    advance,
    apply_event,
    decode_state,
    encode_state,
    new_state,
)
from consumer.events import Event
from consumer.plan import (
    EventSpec,
    Lifecycle,
    Placeholder,
    Plan,
    PropertySpec,
    Rule,
    Stage,
    SyncSettings,
    Template,
    default_sources,
)
from tests.engine.oracle import Oracle

NAMES = ("A:Done", "B:Done", "C:Done")
BASE_MS = 1_000_000
WINDOWS = st.sampled_from([1, 2, 3, 5, 8, 13, 20, 33, 40])
PROPERTIES = st.sampled_from(
    [{}, {"v": 0}, {"v": 1}, {"v": 2.5}, {"v": 3}, {"v": None}, {"v": "x"}]
)
#: ~300 examples per property keeps the whole file near 20 s on 2 cores.
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Shape = dict[str, tuple[str, ...]]


def where() -> st.SearchStrategy[tuple[PropertyTest, ...]]:
    test = st.one_of(
        st.builds(
            PropertyTest,
            st.just("v"),
            st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
            st.sampled_from([0, 1, 2.5, 3]),
        ),
        st.builds(PropertyTest, st.just("v"), st.just("exists"), st.booleans()),
        st.builds(PropertyTest, st.just("v"), st.just("in"), st.just((1, 3))),
    )
    return st.one_of(st.just(()), st.tuples(test))


def thresholds(count: bool) -> st.SearchStrategy[tuple[Threshold, ...]]:
    value = st.integers(0, 3) if count else st.sampled_from([0, 1, 2.5, 4, 6])
    one = st.builds(Threshold, st.sampled_from(THRESHOLD_OPS), value)
    return st.lists(one, min_size=1, max_size=2).map(tuple)


def leaves(shape: Shape) -> st.SearchStrategy[Condition]:
    event = st.sampled_from(NAMES)
    window = st.one_of(st.none(), WINDOWS)
    stages = st.sampled_from([(lc, s) for lc, names in shape.items() for s in names])
    return st.one_of(
        st.builds(Performed, event, where(), window),
        st.builds(Count, event, thresholds(True), where(), window),
        st.builds(
            Aggregate,
            st.sampled_from(["sum", "min", "max"]),
            event,
            st.just("v"),
            thresholds(False),
            where(),
            window,
        ),
        st.builds(NotPerformed, event, WINDOWS, where(), st.booleans()),
        stages.flatmap(
            lambda p: st.builds(
                InStage,
                st.just(p[0]),
                st.just(p[1]),
                st.sampled_from([0, 3, 10]),
                st.booleans(),
            )
        ),
        stages.map(lambda p: Reached(p[0], p[1])),
    )


@functools.cache
def conditions(
    frozen_shape: tuple[tuple[str, tuple[str, ...]], ...],
) -> st.SearchStrategy[Condition]:
    """Conditions over a plan's lifecycles; cached, as building one is slow."""
    shape = dict(frozen_shape)
    return st.recursive(
        leaves(shape),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: AllOf(tuple(xs))),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: AnyOf(tuple(xs))),
            inner.map(Not),
        ),
        max_leaves=4,
    )


@st.composite
def plans(draw: Any, regressions: bool) -> Plan:
    """A random plan of one or two lifecycles of two to four stages."""
    shape: Shape = {
        f"l{i}": tuple(f"s{j}" for j in range(draw(st.integers(2, 4))))
        for i in range(draw(st.integers(1, 2)))
    }
    lifecycles = []
    for lc, names in shape.items():
        stages = []
        for index, name in enumerate(names):
            rules = []
            for k in range(draw(st.integers(1, 2))):
                sources = default_sources(names, index, regression=False)
                if draw(st.integers(0, 4)) == 0:
                    sources = frozenset(
                        draw(
                            st.lists(
                                st.sampled_from(sorted(sources, key=str)),
                                min_size=1,
                                unique=True,
                            )
                        )
                    )
                when = draw(conditions(tuple(shape.items())))
                rules.append(Rule(f"{lc}.{name}.{k}", name, sources, when))
            if regressions and index < len(names) - 1 and draw(st.booleans()):
                sources = default_sources(names, index, regression=True)
                when = draw(conditions(tuple(shape.items())))
                rules.append(Rule(f"{lc}.{name}.back", name, sources, when, True))
            data = {
                f"{lc}_a": Template("{count:A:Done}", (Placeholder("count", "A:Done"),))
            }
            stages.append(Stage(name, tuple(rules), (f"{lc}:{name}",), data))
        lifecycles.append(Lifecycle(lc, tuple(stages)))
    events = {
        name: EventSpec(name, {"v": PropertySpec("v", "number")}) for name in NAMES
    }
    return Plan("<random>", events, "report", tuple(lifecycles), SyncSettings())


@st.composite
def streams(draw: Any, late: bool) -> list[Event]:
    """Events of one contact; times rise, some late ones when ``late``."""
    events = []
    clock = BASE_MS
    for number in range(draw(st.integers(0, 22))):
        clock += draw(st.integers(0, 9))
        at = clock
        if late and draw(st.integers(0, 5)) == 0:
            at -= draw(st.integers(1, 30))
        events.append(
            Event(
                f"e{number}",
                "c",
                draw(st.sampled_from(NAMES)),
                at,
                None,
                draw(PROPERTIES),
            )
        )
    return events


def records(moves: list[Transition]) -> list[dict[str, Any]]:
    return [move.to_record() for move in moves]


def straight(
    plan: Plan, events: list[Event], now_ms: int
) -> tuple[ContactState, list[Transition]]:
    """Apply every event in one go, then advance once."""
    state = new_state("c")
    moves: list[Transition] = []
    for item in events:
        step = apply_event(plan, state, item)
        state = step.state
        moves += step.transitions
    step = advance(plan, state, now_ms)
    return step.state, moves + list(step.transitions)


@SETTINGS
@given(plan=plans(regressions=True), events=streams(late=True), data=st.data())
def test_batches_restarts_and_clock_do_not_change_the_result(
    plan: Plan, events: list[Event], data: st.DataObject
) -> None:
    """Same final state and same moves whatever the batch split, however the
    clock is advanced between events (never past an unapplied one), and with
    the state encoded and decoded between batches, as the store does."""
    now_ms = max((e.occurred_at_ms for e in events), default=BASE_MS) + data.draw(
        st.integers(0, 60)
    )
    expected_state, expected_moves = straight(plan, events, now_ms)
    state = new_state("c")
    moves: list[Transition] = []
    position = 0
    while position < len(events):
        size = data.draw(st.integers(1, 6))
        state = decode_state(encode_state(state), plan)
        for index in range(position, min(position + size, len(events))):
            limit = min(e.occurred_at_ms for e in events[index:])
            if limit > state.clock_ms and data.draw(st.booleans()):
                step = advance(
                    plan, state, data.draw(st.integers(state.clock_ms, limit))
                )
                state, moves = step.state, moves + list(step.transitions)
            step = apply_event(plan, state, events[index])
            state, moves = step.state, moves + list(step.transitions)
        position += size
    for _ in range(data.draw(st.integers(0, 3))):
        if now_ms > state.clock_ms:
            step = advance(plan, state, data.draw(st.integers(state.clock_ms, now_ms)))
            state, moves = step.state, moves + list(step.transitions)
    step = advance(plan, decode_state(encode_state(state)), now_ms)
    state, moves = step.state, moves + list(step.transitions)
    assert records(moves) == records(expected_moves)
    assert state == expected_state
    assert encode_state(state) == encode_state(expected_state)


@SETTINGS
@given(plan=plans(regressions=True), events=streams(late=True), data=st.data())
def test_duplicates_count_once(
    plan: Plan, events: list[Event], data: st.DataObject
) -> None:
    """Resending recent events (producer retries) changes neither the final
    state nor the moves, and each resend is reported as a duplicate."""
    stream: list[Event] = []
    resent = 0
    for index, item in enumerate(events):
        stream.append(item)
        if data.draw(st.integers(0, 3)) == 0:
            back = data.draw(st.integers(0, min(index, RECENT_IDS - 1)))
            stream.append(events[index - back])
            resent += 1
    now_ms = max((e.occurred_at_ms for e in events), default=BASE_MS) + 30
    expected_state, expected_moves = straight(plan, events, now_ms)
    state = new_state("c")
    moves: list[Transition] = []
    duplicates = 0
    for item in stream:
        step = apply_event(plan, state, item)
        duplicates += step.duplicate
        state, moves = step.state, moves + list(step.transitions)
    step = advance(plan, state, now_ms)
    assert duplicates == resent
    assert records(moves + list(step.transitions)) == records(expected_moves)
    assert step.state == expected_state


@SETTINGS
@given(plan=plans(regressions=False), events=streams(late=False), data=st.data())
def test_engine_agrees_with_a_brute_force_reference(
    plan: Plan, events: list[Event], data: st.DataObject
) -> None:
    """On forward-only plans, the engine's moves (stage, rule, exact time,
    event) equal those of a reference that keeps every event and evaluates
    every rule from scratch at every millisecond."""
    now_ms = max((e.occurred_at_ms for e in events), default=BASE_MS) + data.draw(
        st.integers(0, 60)
    )
    state, moves = straight(plan, events, now_ms)
    oracle = Oracle(plan)
    expected = oracle.run(events, now_ms)
    assert [
        (m.lifecycle, m.from_stage, m.to_stage, m.rule_id, m.occurred_at_ms, m.event_id)
        for m in moves
    ] == expected
    assert state.stages == oracle.stages()
