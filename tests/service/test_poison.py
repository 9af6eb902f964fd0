"""Property 3: every message is applied, a recorded duplicate, or dead-lettered.

Poison messages of every kind sit between good events on one partition; each
must land on the dead-letter topic with its reason and its original bytes,
and the good events around them must be applied.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
import time
from pathlib import Path

import redis
from fastavro import parse_schema, schemaless_writer

from consumer.codec import (
    SCHEMAS_DIR,
    EventCodec,
    TransitionCodec,
    frame,
    local_schema_id,
)
from consumer.events import Event
from consumer.publish import HEADER_REASON, HEADER_SOURCE
from tests.service.conftest import MakeEnv
from tests.service.harness import (
    DEFAULT_PLAN,
    assert_same_states,
    expected_snapshot,
    produce,
    read_topic,
    snapshot,
)

NOW = int(time.time() * 1000)
DAY = 86_400_000
TRACE = [("trace-id", b"t-1")]


def good(index: int, contact: str = "c-good", name: str = "Page:Viewed") -> Event:
    return Event(
        event_id=f"good-{index}",
        contact_id=contact,
        name=name,
        occurred_at_ms=NOW + index,
    )


def raw_event(event: Event) -> bytes:
    """Frame an event without the producer's validation (for bad ones)."""
    schema = json.loads((SCHEMAS_DIR / "event.avsc").read_text())
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(schema), event.to_record())
    return frame(local_schema_id(schema), body.getvalue())


def strict_plan(tmp_path: Path) -> Path:
    """The default plan with enforcement dead_letter."""
    text = DEFAULT_PLAN.read_text().replace(
        "enforcement: report", "enforcement: dead_letter"
    )
    path = tmp_path / "strict.yaml"
    path.write_text(text)
    return path


def test_each_poison_message_is_dead_lettered_with_reason_and_bytes(
    make_env: MakeEnv, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Undecodable, unknown schema id, tombstone, too large, key mismatch,
    empty contact id, an unplanned event, a time beyond the year 9999 and an
    infinite amount: each dead-lettered; good events between them applied."""
    codec = EventCodec(None)
    plan = strict_plan(tmp_path)
    env = make_env(plan=plan, extra={"LIFECYCLE_MAX_EVENT_BYTES": "4096"})
    wrong_key = codec.encode(good(90, contact="c-other"))
    unplanned = codec.encode(good(91, name="Order:Refunded"))
    misspelt = codec.encode(good(92, name="order:completed"))
    empty_id = raw_event(
        Event(event_id="e-93", contact_id="", name="Page:Viewed", occurred_at_ms=NOW)
    )
    # A time no date can show once stopped the consumer on every restart.
    far_future = raw_event(dataclasses.replace(good(95), occurred_at_ms=2**62))
    # Valid as a date, but two days after it was produced: it would pin the
    # contact's clock ahead and fire its timers at once.
    ahead = codec.encode(dataclasses.replace(good(97), occurred_at_ms=NOW + 2 * DAY))
    endless = raw_event(
        Event("e-96", "c-good", "Order:Completed", NOW, None, {"amount": math.inf})
    )
    poison: dict[str, tuple[bytes, bytes | None]] = {
        "undecodable": (b"c-good", b"definitely not avro"),
        "unknown_schema_id": (b"c-good", b"\x00" + struct.pack(">I", 4242) + b"x"),
        "tombstone": (b"c-good", None),
        "too_large": (b"c-good", codec.encode(good(94)) + b"\x00" * 5000),
        "bad_contact_id": (b"c-good", wrong_key),
        "not_in_plan": (b"c-good", unplanned),
        "near_miss": (b"c-good", misspelt),
        "empty_contact_id": (b"", empty_id),
        "far_future": (b"c-good", far_future),
        "infinite_amount": (b"c-good", endless),
        "days_ahead": (b"c-good", ahead),
    }
    goods = [good(i) for i in range(len(poison) + 1)]
    # Interleave: good, poison, good, poison, ... all with the key c-good,
    # so they share a partition and its order.
    for index, (key, value) in enumerate(poison.values()):
        produce(env.bootstrap, env.topic, [goods[index]])
        produce(env.bootstrap, env.topic, [], raw=[(key, value)], headers=TRACE)
    produce(env.bootstrap, env.topic, [goods[-1]])

    env.run_until_caught_up()

    letters = read_topic(env.bootstrap, env.dead_letter_topic, len(poison))
    assert len(letters) == len(poison)
    by_value = {m.value(): dict(m.headers() or []) for m in letters}
    expected_reasons = {
        "undecodable": "undecodable",
        "unknown_schema_id": "unknown_schema_id",
        "tombstone": "tombstone",
        "too_large": "too_large",
        "bad_contact_id": "bad_contact_id",
        "not_in_plan": "not_in_plan",
        "near_miss": "not_in_plan",
        "empty_contact_id": "bad_contact_id",
        "far_future": "undecodable",
        "infinite_amount": "undecodable",
        "days_ahead": "undecodable",
    }
    for kind, (_, value) in poison.items():
        assert value in by_value, f"{kind} was not dead-lettered with its bytes"
        headers = by_value[value]
        assert headers[HEADER_REASON].decode() == expected_reasons[kind], kind
        assert headers[HEADER_SOURCE].decode().startswith(env.topic + "/")
        assert headers["trace-id"] == b"t-1", f"{kind} lost its own headers"
    near_miss = next(m for m in letters if m.value() == misspelt)
    assert b"Order:Completed" in dict(m for m in near_miss.headers())["lifecycle.error"]

    assert_same_states(
        snapshot(redis_client, env.namespace, plan), expected_snapshot(goods, plan)
    )


def test_the_same_event_twice_counts_once(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """A producer retry (same event_id) is a duplicate: two product views and
    a repeat of one do not make a qualified lead (three are needed)."""
    env = make_env()
    view = Event("view-1", "c-dup", "Product:Viewed", NOW)
    other = Event("view-2", "c-dup", "Product:Viewed", NOW + 1000)
    produce(env.bootstrap, env.topic, [view, other, view])
    env.run_until_caught_up()
    state = snapshot(redis_client, env.namespace)["c-dup"]
    assert state["stages"]["customer"] is None
    assert state == expected_snapshot([view, other])["c-dup"]

    third = Event("view-3", "c-dup", "Product:Viewed", NOW + 2000)
    produce(env.bootstrap, env.topic, [third])
    env.run_until_caught_up()
    state = snapshot(redis_client, env.namespace)["c-dup"]
    assert state["stages"]["customer"] == "qualified_lead"


def test_transitions_are_announced_with_deterministic_ids(make_env: MakeEnv) -> None:
    """Every move goes to the transitions topic keyed by contact; two runs of
    the same events announce the same ids, so downstream can drop repeats."""
    events = [
        Event("t-1", "c-walk", "Page:Viewed", NOW),
        Event("t-2", "c-walk", "Newsletter:Subscribed", NOW + 1000),
        Event("t-3", "c-walk", "Order:Completed", NOW + 2000, None, {"amount": 9.5}),
    ]
    first = make_env("first")
    produce(first.bootstrap, first.topic, events)
    first.run_until_caught_up()
    second = make_env("second")
    second.run_until_caught_up()

    records = [
        (m.key(), TransitionCodec(None).decode(m.value()))
        for m in read_topic(first.bootstrap, first.transitions_topic, 6)
    ]
    assert all(key == b"c-walk" for key, _ in records)
    moves = [(r["from_stage"], r["to_stage"], r["event_id"]) for _, r in records]
    assert moves[:3] == [
        (None, "visit", "t-1"),
        ("visit", "subscriber", "t-2"),
        ("subscriber", "customer", "t-3"),
    ]
    assert moves[3:] == moves[:3]
    ids = [r["transition_id"] for _, r in records]
    assert ids[:3] == ids[3:] and len(set(ids)) == 3


def test_events_the_plan_reports_are_applied_and_counted(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """Under enforcement report, a misspelt or unplanned event and an order
    without its required amount are processed, not dead-lettered, and the
    consumer goes on (it once crashed on the warning it logs)."""
    env = make_env()
    events = [
        good(0),
        Event("r-1", "c-good", "order completed", NOW + 10),
        Event("r-2", "c-good", "Order:Completed", NOW + 20),
        good(3),
    ]
    produce(env.bootstrap, env.topic, events)
    log = env.run_until_caught_up()
    assert log.count('"event_not_in_plan"') == 2
    assert_same_states(snapshot(redis_client, env.namespace), expected_snapshot(events))
    assert read_topic(env.bootstrap, env.dead_letter_topic, 0, timeout_s=2) == []
