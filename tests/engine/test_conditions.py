"""Each kind of condition, run through the engine, with exact move times."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.events import Event, PropertyValue
from consumer.plan import Plan
from tests.engine.helpers import DAY, T0, event, path, plan_with, run, stage


def one_stage(tmp_path: Path, condition: str) -> Plan:
    """Return a plan whose stage ``hit`` is entered when ``condition`` holds."""
    indented = condition.replace("\n", "\n    ")
    return plan_with(tmp_path, f"- name: hit\n  when:\n    {indented}\n")


@pytest.mark.parametrize(
    ("where", "properties", "expected"),
    [
        ("{sku: A1}", {"sku": "A1"}, True),
        ("{sku: A1}", {"sku": "A2"}, False),
        ("{amount: 3}", {"amount": 3.0}, True),
        ("{gift: true}", {"gift": 1}, False),
        ("{sku: {ne: A1}}", {"sku": "B"}, True),
        ("{sku: {ne: A1}}", {}, False),
        ("{sku: {in: [A1, B2]}}", {"sku": "B2"}, True),
        ("{sku: {in: [A1, B2]}}", {"sku": "C3"}, False),
        ("{amount: {gt: 0}}", {"amount": 0}, False),
        ("{amount: {gt: 0}}", {"amount": 0.01}, True),
        ("{amount: {gte: 10}}", {"amount": 10}, True),
        ("{amount: {lt: 10}}", {"amount": 10}, False),
        ("{amount: {lte: 10}}", {"amount": 10}, True),
        ("{amount: {gt: 0}}", {"amount": "12"}, False),
        ("{sku: {exists: true}}", {"sku": None}, False),
        ("{sku: {exists: false}}", {"sku": None}, True),
        ("{sku: {exists: false}}", {"sku": "x"}, False),
        ("{sku: {matches: '^A[0-9]+$'}}", {"sku": "A12"}, True),
        ("{sku: {matches: '^A[0-9]+$'}}", {"sku": "XA12"}, False),
        ("{amount: {gt: 1, lt: 5}}", {"amount": 3}, True),
        ("{amount: {gt: 1, lt: 5}}", {"amount": 6}, False),
    ],
)
def test_performed_with_property_predicates(
    tmp_path: Path, where: str, properties: dict[str, PropertyValue], expected: bool
) -> None:
    """Each property operator matches exactly the events it should."""
    plan = one_stage(tmp_path, f"performed: Order:Completed\nwhere: {where}")
    order = Event("e", "c1", "Order:Completed", T0, properties=properties)
    state, _ = run(plan, [order])
    assert (stage(state) == "hit") is expected


def test_performed_within_a_window(tmp_path: Path) -> None:
    """An event leaves a window exactly the window's length after it happened."""
    plan = one_stage(
        tmp_path,
        "all:\n  - {performed: Page:Viewed, within: 1d}\n  - Referral:Sent",
    )
    late, _ = run(plan, [event("Page:Viewed", T0), event("Referral:Sent", T0 + DAY)])
    assert stage(late) is None
    _just, moves = run(
        plan, [event("Page:Viewed", T0), event("Referral:Sent", T0 + DAY - 1)]
    )
    assert path(moves) == [(None, "hit", T0 + DAY - 1)]


def test_count_at_least_within_window(tmp_path: Path) -> None:
    """Three views within 14 days, not three views spread over more."""
    plan = one_stage(tmp_path, "count: Product:Viewed\ngte: 3\nwithin: 14d")
    spread = [event("Product:Viewed", T0 + d * 7 * DAY) for d in range(3)]
    state, _ = run(plan, spread)
    assert stage(state) is None
    close = [event("Product:Viewed", T0 + d * DAY) for d in (0, 10, 13)]
    state, moves = run(plan, close)
    assert path(moves) == [(None, "hit", T0 + 13 * DAY)]


def test_count_at_most_turns_true_when_events_age_out(tmp_path: Path) -> None:
    """lte becomes true by time alone, at the exact moment an event leaves."""
    plan = one_stage(
        tmp_path,
        "all:\n  - Newsletter:Subscribed\n"
        "  - {count: Product:Viewed, lte: 1, within: 10d}",
    )
    events = [event("Product:Viewed", T0 + d * DAY) for d in (0, 1, 2)]
    events.append(event("Newsletter:Subscribed", T0 + 3 * DAY))
    state, moves = run(plan, events)
    assert stage(state) is None
    assert state.due_ms is not None and state.due_ms <= T0 + 11 * DAY
    state, moves = run(plan, [], now_ms=T0 + 30 * DAY, state=state)
    assert path(moves) == [(None, "hit", T0 + 11 * DAY)]


def test_count_equal_and_all_time_counts_saturate(tmp_path: Path) -> None:
    """Counts over all time compare exactly, however many events came."""
    plan = one_stage(tmp_path, "count: Order:Completed\neq: 4")
    orders = [event("Order:Completed", T0 + i) for i in range(6)]
    _, moves = run(plan, orders)
    assert path(moves) == [(None, "hit", T0 + 3)]
    plan = one_stage(
        tmp_path, "all:\n  - Referral:Sent\n  - {count: Order:Completed, lte: 2}"
    )
    state, _ = run(plan, [*orders, event("Referral:Sent", T0 + 10)])
    assert stage(state) is None


@pytest.mark.parametrize(
    ("condition", "amounts", "hit_at"),
    [
        ("sum: Order:Completed\nof: amount\ngte: 100", [60, 30, 10.5], 2),
        ("min: Order:Completed\nof: amount\nlt: 5", [60, 30, 4], 2),
        ("max: Order:Completed\nof: amount\ngte: 50", [10, 55, 1], 1),
        ("sum: Order:Completed\nof: amount\ngte: 100", [60, 30], None),
        ("max: Order:Completed\nof: amount\ngt: 0\nwhere: {sku: x}", [5], None),
    ],
)
def test_aggregates_over_all_time(
    tmp_path: Path, condition: str, amounts: list[float], hit_at: int | None
) -> None:
    """sum, min and max of a numeric property, with thresholds and filters."""
    plan = one_stage(tmp_path, condition)
    orders = [event("Order:Completed", T0 + i, amount=a) for i, a in enumerate(amounts)]
    _, moves = run(plan, orders)
    assert path(moves) == ([] if hit_at is None else [(None, "hit", T0 + hit_at)])


def test_sums_in_a_window_use_buckets(tmp_path: Path) -> None:
    """A windowed sum keeps an event until its bucket (window/16) has left."""
    plan = one_stage(
        tmp_path, "sum: Order:Completed\nof: amount\ngte: 100\nwithin: 16d"
    )
    base = (T0 // DAY) * DAY  # bucket width is one day: align to a bucket
    _, moves = run(
        plan,
        [
            event("Order:Completed", base + DAY // 2, amount=60),
            event("Order:Completed", base + 17 * DAY, amount=50),
        ],
    )
    assert moves == []
    _, moves = run(
        plan,
        [
            event("Order:Completed", base + DAY // 2, amount=60),
            event("Order:Completed", base + 17 * DAY - 1, amount=50),
        ],
    )
    assert path(moves) == [(None, "hit", base + 17 * DAY - 1)]
    _, moves = run(
        plan,
        [
            event("Order:Completed", base, amount=60),
            event("Order:Completed", base + 16 * DAY + DAY // 2, amount=50),
        ],
    )
    assert path(moves) == [(None, "hit", base + 16 * DAY + DAY // 2)]


def test_windowed_sum_at_most_fires_when_a_bucket_leaves(tmp_path: Path) -> None:
    """lte on a windowed sum turns true when the bucket leaves, not before."""
    plan = one_stage(
        tmp_path,
        "all:\n  - Newsletter:Subscribed\n"
        "  - {sum: Order:Completed, of: amount, lte: 10, within: 16d}",
    )
    base = (T0 // DAY) * DAY
    _state, moves = run(
        plan,
        [
            event("Order:Completed", base + 5, amount=30),
            event("Newsletter:Subscribed", base + DAY),
        ],
        now_ms=base + 40 * DAY,
    )
    assert path(moves) == [(None, "hit", base + 17 * DAY)]


def test_in_stage_for_a_duration(tmp_path: Path) -> None:
    """Time in a stage fires at entry + duration; 'or beyond' survives moves."""
    stages = """\
    - name: a
      when: Page:Viewed
    - name: b
      when: Newsletter:Subscribed
    - name: c
      when: {in_stage: a, for: 10d, or_beyond: true}
    """
    plan = plan_with(tmp_path, stages)
    state, moves = run(
        plan,
        [event("Page:Viewed", T0), event("Newsletter:Subscribed", T0 + 2 * DAY)],
        now_ms=T0 + 30 * DAY,
    )
    assert path(moves)[-1] == ("b", "c", T0 + 10 * DAY)
    exact = plan_with(tmp_path, stages.replace(", or_beyond: true", ""))
    state, moves = run(
        exact,
        [event("Page:Viewed", T0), event("Newsletter:Subscribed", T0 + 2 * DAY)],
        now_ms=T0 + 30 * DAY,
    )
    assert stage(state) == "b"
    state, moves = run(exact, [event("Page:Viewed", T0)], now_ms=T0 + 30 * DAY)
    assert path(moves) == [(None, "a", T0), ("a", "c", T0 + 10 * DAY)]


def test_not_performed_with_and_without_the_age_guard(tmp_path: Path) -> None:
    """Inactivity counts from the last event; the guard waits for the age too."""
    stages = """\
    - name: active
      when: Page:Viewed
    - name: gone
      when:
        all:
          - reached: active
          - {not_performed: Page:Viewed, within: 30d}
    """
    plan = plan_with(tmp_path, stages)
    _, moves = run(
        plan,
        [event("Page:Viewed", T0), event("Page:Viewed", T0 + 10 * DAY)],
        now_ms=T0 + 100 * DAY,
    )
    assert path(moves) == [(None, "active", T0), ("active", "gone", T0 + 40 * DAY)]
    never = """\
    - name: active
      when: Page:Viewed
    - name: no_order
      when:
        all:
          - reached: active
          - {not_performed: Order:Completed, within: 30d}
    """
    _, moves = run(
        plan_with(tmp_path, never), [event("Page:Viewed", T0)], T0 + 99 * DAY
    )
    assert path(moves) == [(None, "active", T0), ("active", "no_order", T0 + 30 * DAY)]
    unguarded = plan_with(
        tmp_path, never.replace("within: 30d}", "within: 30d, guard: false}")
    )
    _, moves = run(unguarded, [event("Page:Viewed", T0)])
    assert path(moves) == [(None, "active", T0), ("active", "no_order", T0)]


def test_guard_counts_from_the_first_event(tmp_path: Path) -> None:
    """A contact seen for less than the window is not inactive yet."""
    plan = one_stage(
        tmp_path,
        "all:\n  - Referral:Sent\n  - {not_performed: Order:Completed, within: 5d}",
    )
    _, moves = run(
        plan,
        [event("Page:Viewed", T0), event("Referral:Sent", T0 + DAY)],
        now_ms=T0 + 9 * DAY,
    )
    assert path(moves) == [(None, "hit", T0 + 5 * DAY)]


def test_reached_all_any_not(tmp_path: Path) -> None:
    """Composition: reached + any, and not."""
    stages = """\
    - name: member
      when: Newsletter:Subscribed
    - name: fan
      when:
        all:
          - reached: member
          - any: [Referral:Sent, {count: Page:Viewed, gte: 2}]
          - not: {performed: Order:Completed, where: {amount: {lt: 0}}}
    """
    plan = plan_with(tmp_path, stages)
    _, moves = run(
        plan, [event("Referral:Sent", T0), event("Newsletter:Subscribed", T0 + 1)]
    )
    assert path(moves) == [(None, "member", T0 + 1), ("member", "fan", T0 + 1)]
    state, _ = run(
        plan,
        [
            event("Order:Completed", T0, amount=-5),
            event("Newsletter:Subscribed", T0 + 1),
            event("Page:Viewed", T0 + 2),
            event("Page:Viewed", T0 + 3),
        ],
    )
    assert stage(state) == "member"
