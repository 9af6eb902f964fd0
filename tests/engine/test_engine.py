"""The engine on the shipped plans: direction, timers, duplicates, Crisp."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from consumer.engine import (
    HISTORY_LIMIT,
    RECENT_IDS,
    DesiredCrisp,
    advance,
    apply_event,
    desired_crisp,
    encode_state,
    new_state,
    next_due_ms,
)
from consumer.plan import Plan, load_plan
from tests.engine.helpers import DAY, T0, event, path, plan_with, run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default() -> Plan:
    return load_plan(REPO / "plans" / "default.yaml")


@pytest.fixture(scope="module")
def churn() -> Plan:
    return load_plan(REPO / "plans" / "churn.yaml")


def stage_of(plan: Plan, events: list, now_ms: int | None = None) -> str | None:  # type: ignore[type-arg]
    state, _ = run(plan, events, now_ms)
    return state.stages["customer"]


def test_a_contact_starts_in_no_stage(default: Plan) -> None:
    """An event that no first rule reads leaves the contact in no stage."""
    assert stage_of(default, [event("Search:Performed", T0)]) is None
    assert new_state("c1").stages == {}


def test_stages_can_be_skipped(default: Plan) -> None:
    """An order moves a contact with no stage straight to customer."""
    _, moves = run(default, [event("Order:Completed", T0, amount=20)])
    assert path(moves) == [(None, "customer", T0)]
    assert moves[0].rule_id == "customer" and moves[0].event_id is not None


def test_the_furthest_stage_wins_and_moves_cascade(default: Plan) -> None:
    """Entering customer makes advocate true at once: two moves, one instant."""
    events = [event("Page:Viewed", T0), event("Review:Posted", T0 + 1)]
    events.append(event("Subscription:Started", T0 + 2))
    _state, moves = run(default, events)
    assert path(moves) == [
        (None, "visit", T0),
        ("visit", "customer", T0 + 2),
        ("customer", "advocate", T0 + 2),
    ]
    assert moves[1].event_id == moves[2].event_id == events[2].event_id


def test_forward_only_without_a_regression_rule(default: Plan) -> None:
    """A later event of an earlier stage never moves a contact back."""
    events = [event("Order:Completed", T0, amount=5), event("Page:Viewed", T0 + 1)]
    events.append(event("Newsletter:Subscribed", T0 + 2))
    assert stage_of(default, events) == "customer"


def test_amount_zero_is_not_a_customer(default: Plan) -> None:
    """Order:Completed counts for customer only with amount > 0."""
    assert stage_of(default, [event("Order:Completed", T0, amount=0)]) is None


def test_qualified_lead_needs_three_views_in_14_days(default: Plan) -> None:
    """Two views are not enough; the third within 14 days is."""
    views = [event("Product:Viewed", T0 + d * DAY) for d in (0, 5)]
    assert stage_of(default, views) is None
    views.append(event("Product:Viewed", T0 + 13 * DAY))
    assert stage_of(default, views) == "qualified_lead"


def test_retained_fires_at_its_exact_due_time(default: Plan) -> None:
    """Retained: 30 days in customer and two orders; the move is dated at the
    due time however late the clock is advanced."""
    state, _ = run(
        default,
        [
            event("Order:Completed", T0, amount=5),
            event("Order:Completed", T0 + 3 * DAY, amount=5),
        ],
    )
    due = T0 + 30 * DAY
    assert next_due_ms(default, state) == due
    before = advance(default, state, due - 1)
    assert before.transitions == ()
    assert before.state.stages["customer"] == "customer"
    step = advance(default, before.state, due + 400 * DAY)
    assert path(step.transitions) == [("customer", "retained_customer", due)]
    assert step.transitions[0].event_id is None
    assert next_due_ms(default, step.state) is None
    # The clock stands at the timer fired, not at the time of the check, so
    # an event from before the check but after the timer is not late.
    assert step.state.clock_ms == due


def test_a_wall_clock_check_does_not_make_older_events_late(default: Plan) -> None:
    """A timer check at wall time, then an event from before that time but
    after the timer: the event's move keeps its own time, as in a replay."""
    state, _ = run(
        default,
        [
            event("Order:Completed", T0, amount=5),
            event("Order:Completed", T0 + 3 * DAY, amount=5),
        ],
    )
    checked = advance(default, state, T0 + 400 * DAY).state
    referral = event("Referral:Sent", T0 + 40 * DAY)
    step = apply_event(default, checked, referral)
    assert path(step.transitions) == [("retained_customer", "advocate", T0 + 40 * DAY)]


def test_an_event_after_a_due_time_fires_the_timer_first(default: Plan) -> None:
    """apply_event advances to the event time before applying the event."""
    events = [event("Order:Completed", T0 + d * DAY, amount=5) for d in (0, 1)]
    review = event("Review:Posted", T0 + 45 * DAY)
    _, moves = run(default, [*events, review])
    assert path(moves)[-2:] == [
        ("customer", "retained_customer", T0 + 30 * DAY),
        ("retained_customer", "advocate", T0 + 45 * DAY),
    ]
    assert moves[-2].event_id is None and moves[-1].event_id == review.event_id


def test_subscription_renewal_also_retains(default: Plan) -> None:
    """The or-branch: Subscription:Renewed instead of a second order."""
    events = [
        event("Subscription:Started", T0),
        event("Subscription:Renewed", T0 + DAY),
    ]
    assert stage_of(default, events, now_ms=T0 + 31 * DAY) == "retained_customer"
    assert stage_of(default, events[:1], now_ms=T0 + 300 * DAY) == "customer"


def test_churn_regression_and_win_back(churn: Plan) -> None:
    """60 days without an order is a regression to at_risk; an order wins back."""
    events = [event("Order:Completed", T0, amount=5)]
    events.append(event("Order:Completed", T0 + 10 * DAY, amount=5))
    state, moves = run(churn, events, now_ms=T0 + 100 * DAY)
    assert path(moves)[-2:] == [
        ("customer", "retained_customer", T0 + 30 * DAY),
        ("retained_customer", "at_risk", T0 + 70 * DAY),
    ]
    assert moves[-1].regression and moves[-1].rule_id == "at_risk"
    back = event("Order:Completed", T0 + 120 * DAY, amount=5)
    state, moves = run(churn, [back], state=state)
    assert path(moves) == [("at_risk", "customer", T0 + 120 * DAY)]
    assert moves[0].rule_id == "customer.win_back" and not moves[0].regression


def test_duplicates_count_once(default: Plan) -> None:
    """The same event id again is a duplicate and changes nothing."""
    first = event("Order:Completed", T0, amount=5)
    state = apply_event(default, new_state("c1"), first).state
    again = apply_event(default, state, first)
    assert again.duplicate and again.state is state and again.transitions == ()
    retry = event("Order:Completed", T0 + DAY, event_id=first.event_id, amount=5)
    assert apply_event(default, state, retry).duplicate


def test_duplicate_window_is_bounded(default: Plan) -> None:
    """Only the last RECENT_IDS event ids are remembered."""
    first = event("Page:Viewed", T0)
    state, _ = run(default, [first])
    state, _ = run(
        default,
        [event("Page:Viewed", T0 + i) for i in range(RECENT_IDS - 1)],
        state=state,
    )
    assert apply_event(default, state, first).duplicate
    state, _ = run(default, [event("Page:Viewed", T0 + 99)], state=state)
    assert not apply_event(default, state, first).duplicate


def test_the_engine_never_changes_its_input(default: Plan) -> None:
    """apply_event and advance return new states; the old one is untouched."""
    state, _ = run(default, [event("Order:Completed", T0, amount=5)])
    snapshot = encode_state(state)
    apply_event(default, state, event("Order:Completed", T0 + DAY, amount=9))
    apply_event(default, state, event("Review:Posted", T0 + DAY))
    advance(default, state, T0 + 90 * DAY)
    assert encode_state(state) == snapshot


def test_late_events_count_at_their_time_but_move_at_the_clock(default: Plan) -> None:
    """A late event joins windows at its own time; its move is dated now."""
    views = [event("Product:Viewed", T0 + d * DAY) for d in (10, 11)]
    late = event("Product:Viewed", T0 + 9 * DAY)
    _, moves = run(default, [*views, late])
    assert path(moves) == [(None, "qualified_lead", T0 + 11 * DAY)]
    too_old = event("Product:Viewed", T0 - 5 * DAY)
    state, moves = run(default, [*views, too_old])
    assert moves == []
    assert state.clock_ms == T0 + 11 * DAY


def test_late_timers_fire_once_at_the_clock(default: Plan) -> None:
    """A late first order whose 30 days are already over moves once, now."""
    state, _ = run(default, [event("Page:Viewed", T0 + 100 * DAY)])
    events = [event("Order:Completed", T0 + d * DAY, amount=5) for d in (0, 1)]
    state, moves = run(default, events, state=state)
    assert path(moves) == [
        ("visit", "customer", T0 + 100 * DAY),
    ]
    state, moves = run(default, [], now_ms=T0 + 200 * DAY, state=state)
    assert path(moves) == [("customer", "retained_customer", T0 + 130 * DAY)]


def test_transitions_have_deterministic_ids_and_records(default: Plan) -> None:
    """Same move, same id; the record matches schemas/transition.avsc."""
    order = event("Order:Completed", T0, amount=5)
    _, first = run(default, [order])
    _, second = run(default, [order])
    assert first[0].transition_id == second[0].transition_id
    assert len(first[0].transition_id) == 32
    record = first[0].to_record()
    assert record == {
        "transition_id": first[0].transition_id,
        "contact_id": "c1",
        "lifecycle": "customer",
        "from_stage": None,
        "to_stage": "customer",
        "rule_id": "customer",
        "regression": False,
        "occurred_at": T0,
        "event_id": order.event_id,
    }
    other = event("Order:Completed", T0 + 1, amount=5)
    assert run(default, [other])[1][0].transition_id != first[0].transition_id


def test_desired_crisp_follows_the_stage(default: Plan) -> None:
    """Segments and custom data for the current stage only."""
    assert desired_crisp(default, new_state("c1")) == DesiredCrisp((), {})
    state, _ = run(default, [event("Order:Completed", T0, amount=5)])
    assert desired_crisp(default, state) == DesiredCrisp(
        ("lifecycle:customer",),
        {
            "lifecycle_stage": "customer",
            "lifecycle_stage_since": "2023-11-14T22:13:20.000Z",
        },
    )


def test_templates_render_counts_and_sums(tmp_path: Path) -> None:
    """count and sum placeholders keep their type when alone, else join text."""
    crisp = """\
    crisp:
      segments: ["{lifecycle}-{stage}"]
      data:
        orders: "{count:Order:Completed}"
        spent: "{sum:Order:Completed:amount}"
        label: "{stage} since {stage_since_ms}"
        flag: true
    """
    plan = plan_with(
        tmp_path,
        "- name: buyer\n  when: {count: Order:Completed, gte: 2}\n",
        crisp=crisp,
    )
    orders = [
        event("Order:Completed", T0 + i, amount=a) for i, a in enumerate((2, 3.5, 4))
    ]
    state, _ = run(plan, orders)
    desired = desired_crisp(plan, state)
    assert desired.segments == ("main-buyer",)
    assert desired.data == {
        "orders": 3,
        "spent": 9.5,
        "label": f"buyer since {T0 + 1}",
        "flag": True,
    }


def test_history_keeps_entries_exits_and_is_bounded(churn: Plan) -> None:
    """The history names rule and times; it keeps the last HISTORY_LIMIT moves."""
    events = []
    for cycle in range(12):
        events.append(event("Order:Completed", T0 + cycle * 100 * DAY, amount=5))
    state, moves = run(churn, events)
    assert len(moves) > HISTORY_LIMIT
    visits = state.history_by_lifecycle["customer"]
    assert len(visits) == HISTORY_LIMIT
    assert visits[-1].exited_ms is None
    assert all(a.exited_ms == b.entered_ms for a, b in itertools.pairwise(visits))
    tail = moves[-HISTORY_LIMIT:]
    assert [(v.stage, v.rule_id, v.entered_ms) for v in visits] == [
        (m.to_stage, m.rule_id, m.occurred_at_ms) for m in tail
    ]
