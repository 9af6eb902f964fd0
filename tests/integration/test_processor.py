"""The processor against the real Redis: indexes that heal themselves."""

from __future__ import annotations

import redis

from consumer.events import Event
from consumer.plan import load_plan
from consumer.processor import Offset, Processor
from consumer.store import Store
from tests.service.harness import DEFAULT_PLAN

NOW = 1_790_000_000_000


def test_a_due_timer_entry_its_contact_does_not_hold_is_removed(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A crash between the index write and the contact write can leave a
    timer entry behind. Firing it must drop it, or it stays due for ever,
    and run --until-caught-up and replay, which wait for no due timer, would
    never end."""
    store = Store(redis_client, namespace)
    processor = Processor(
        load_plan(DEFAULT_PLAN), store, "events", wall_clock_ms=lambda: NOW
    )
    visit = Event("e-1", "c-1", "Page:Viewed", NOW - 1000)
    processor.process(0, [Offset(0, visit)], lambda _: None)
    key = store.timers_key("events", 0)
    assert store.due_members(key, NOW) == [], "a visitor holds no timer"

    redis_client.zadd(key, {"c-1": NOW - 500})
    processor.fire_timers(0, NOW, lambda _: None)
    assert store.due_members(key, NOW) == []
