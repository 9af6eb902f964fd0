"""Timers at wall time, and the grace that leaves room for late events."""

from __future__ import annotations

import time

import redis

from consumer.events import Event, format_time_ms
from tests.service.conftest import MakeEnv
from tests.service.harness import DAY_MS, produce, snapshot

HOUR_MS = 3_600_000


def test_a_timer_waits_out_the_grace_before_it_fires(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """The 30-day timer of this customer fell due an hour ago: with a grace
    of two hours it has not fired yet, with the default of two seconds it
    has, dated at its due time."""
    start = int(time.time() * 1000) - 30 * DAY_MS - HOUR_MS
    orders = [
        Event(f"late-{n}", "c-late", "Order:Completed", start + n, None, {"amount": 5})
        for n in range(2)
    ]
    patient = make_env("patient", extra={"LIFECYCLE_TIMER_GRACE_S": "7200"})
    produce(patient.bootstrap, patient.topic, orders)
    patient.run_until_caught_up()
    waiting = snapshot(redis_client, patient.namespace)["c-late"]
    assert waiting["stages"] == {"customer": "customer"}

    prompt = make_env("prompt")
    prompt.run_until_caught_up()
    fired = snapshot(redis_client, prompt.namespace)["c-late"]
    assert fired["stages"] == {"customer": "retained_customer"}
    retained = fired["history"]["customer"][-1]
    assert retained["stage"] == "retained_customer"
    assert retained["entered"] == format_time_ms(start + 30 * DAY_MS)
