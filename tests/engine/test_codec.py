"""Encoded contact states: round trips, size, damage and unknown plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.engine import (
    apply_event,
    decode_state,
    desired_crisp,
    encode_state,
    layout_id,
    new_state,
    next_due_ms,
)
from consumer.errors import PlanError
from consumer.plan import Plan, load_plan
from tests.engine.helpers import DAY, T0, event, plan_with, run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default() -> Plan:
    return load_plan(REPO / "plans" / "default.yaml")


def typical(plan: Plan) -> list:  # type: ignore[type-arg]
    """A contact with a typical path: browse, subscribe, look, buy twice."""
    contact = "user_0042"
    names = ["Page:Viewed", "Page:Viewed", "Newsletter:Subscribed", "Search:Performed"]
    names += ["Product:Viewed"] * 3 + ["Cart:Updated", "Checkout:Started"]
    events = [
        event(name, T0 + i * 3_600_000, contact_id=contact, url="/p")
        for i, name in enumerate(names)
    ]
    events.append(
        event("Order:Completed", T0 + 2 * DAY, contact_id=contact, amount=42.5)
    )
    events.append(
        event("Order:Completed", T0 + 9 * DAY, contact_id=contact, amount=19.99)
    )
    return events


def test_round_trip_keeps_everything(default: Plan) -> None:
    """decode(encode(state)) equals the state and behaves the same."""
    state, _ = run(default, typical(default), state=new_state("user_0042"))
    data = encode_state(state)
    again = decode_state(data)
    assert again == state
    assert again.stages == {"customer": "customer"}
    assert again.history_by_lifecycle == state.history_by_lifecycle
    assert next_due_ms(default, again) == next_due_ms(default, state) == T0 + 32 * DAY
    assert desired_crisp(default, again) == desired_crisp(default, state)
    later = event("Review:Posted", T0 + 40 * DAY, contact_id="user_0042")
    one = apply_event(default, state, later)
    two = apply_event(default, again, later)
    assert encode_state(one.state) == encode_state(two.state)
    assert one.transitions == two.transitions


def test_a_typical_contact_fits_in_120_bytes(default: Plan) -> None:
    """A few stages and counters, eight remembered ids: at most 120 bytes."""
    state, moves = run(default, typical(default), state=new_state("user_0042"))
    assert len(moves) == 4
    assert len(encode_state(state)) <= 120


def test_fresh_and_unbound_states_round_trip(default: Plan) -> None:
    """A state the engine has not used yet also encodes and decodes."""
    fresh = new_state("x")
    assert decode_state(encode_state(fresh)) == fresh
    quiet, _ = run(
        default, [event("Search:Performed", T0, contact_id="x")], state=fresh
    )
    assert decode_state(encode_state(quiet)) == quiet


def test_floats_ints_and_windows_survive(tmp_path: Path) -> None:
    """Sums of ints stay ints, fractional sums exact, windows and buckets kept."""
    crisp = 'crisp:\n  data:\n    spent: "{sum:Order:Completed:amount}"\n'
    stages = """\
    - name: big
      when:
        any:
          - {sum: Order:Completed, of: amount, gte: 1000, within: 30d}
          - {min: Order:Completed, of: amount, lt: -1e300}
          - {count: Page:Viewed, gte: 5, within: 2h}
          - {not_performed: Referral:Sent, within: 400d}
    """
    plan = plan_with(tmp_path, stages, crisp=crisp)
    events = [event("Page:Viewed", T0 + i * 60_000) for i in range(4)]
    for amount in (3, 0.1, 0.2, 1e17, -2.5e-12, 7):
        events.append(event("Order:Completed", T0 + DAY, amount=amount))
    state, _ = run(plan, events)
    again = decode_state(encode_state(state), plan)
    assert again == state
    assert desired_crisp(plan, again) == desired_crisp(plan, state)
    views = [event("Page:Viewed", T0 + i) for i in range(5)]
    ints, _ = run(plan, [*views, event("Order:Completed", T0, amount=3)])
    value = desired_crisp(plan, decode_state(encode_state(ints))).data["spent"]
    assert value == 3 and isinstance(value, int)


def test_damaged_bytes_raise_value_error(default: Plan) -> None:
    """Truncated, trailing or wrong-version data is refused, not misread."""
    data = encode_state(run(default, typical(default))[0])
    with pytest.raises(ValueError, match="truncated"):
        decode_state(data[:-3])
    with pytest.raises(ValueError, match="trailing"):
        decode_state(data + b"\x00")
    with pytest.raises(ValueError, match="version"):
        decode_state(b"\x09" + data[1:])


def test_a_state_from_an_unknown_plan_names_its_layout(default: Plan) -> None:
    """Decoding needs the plan that wrote the state; the error says which."""
    data = bytearray(encode_state(run(default, typical(default))[0]))
    data[1:5] = b"\xde\xad\xbe\xef"
    with pytest.raises(PlanError, match="plan layout deadbeef"):
        decode_state(bytes(data))


def test_layout_ignores_crisp_and_events_but_not_rules(tmp_path: Path) -> None:
    """Changing Crisp data keeps the layout id; changing a rule changes it."""
    stages = "- name: a\n  when: {count: Page:Viewed, gte: 2}\n"
    base = plan_with(tmp_path, stages)
    crisp = plan_with(tmp_path, stages, crisp="crisp:\n  segments: [x]\n")
    assert layout_id(base) == layout_id(crisp)
    assert layout_id(base) != layout_id(plan_with(tmp_path, stages.replace("2", "3")))


def test_a_state_meets_an_edited_plan(tmp_path: Path) -> None:
    """A state made under one plan carries over to an edited one by name."""
    stages = """\
    - name: a
      when: Page:Viewed
    - name: b
      when: {count: Order:Completed, gte: 3}
    """
    old = plan_with(tmp_path, stages)
    state, _ = run(
        old,
        [event("Page:Viewed", T0)] + [event("Order:Completed", T0 + i) for i in (1, 2)],
    )
    new = plan_with(tmp_path, stages.replace("gte: 3", "gte: 2"))
    assert layout_id(old) != layout_id(new)
    step = apply_event(
        new, decode_state(encode_state(state)), event("Referral:Sent", T0 + 5)
    )
    assert [(t.from_stage, t.to_stage) for t in step.transitions] == [("a", "b")]
    assert step.state.stages == {"main": "b"}
