"""Property 1 and 2 under faults: kills, rebalances and Redis outages.

Each test runs the real consumer against real Kafka and Redis, breaks
something mid-stream, and compares the final state with a clean run of the
same events in a namespace of its own.
"""

from __future__ import annotations

import random
import time

import redis

from consumer.store import Store
from tests.service.conftest import MakeEnv, PrivateRedis
from tests.service.harness import (
    DAY_MS,
    expected_snapshot,
    kill_hard,
    produce,
    snapshot,
    stage_counts,
    synthetic_events,
)

# Events end 60 days ago, so every 30-day timer is due before the run and
# the final state does not depend on when the run happens.
OLD = int(time.time() * 1000) - 60 * DAY_MS


def wait_for_offsets(
    client: redis.Redis,
    env_namespace: str,
    topic: str,
    totals: dict[int, int],
    timeout_s: float = 120,
) -> None:
    """Wait until Redis holds the end offset of every partition."""
    store = Store(client, env_namespace)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(
            (store.stored_offset(topic, p) or 0) >= end for p, end in totals.items()
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"offsets did not reach {totals}")


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hw-probe"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def test_kill_9_at_random_points_gives_the_clean_state(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """kill -9 mid-batch, many times: the final state equals a clean run's."""
    clean = make_env("clean")
    events = synthetic_events(400, 4000, seed=7, now_ms=OLD)
    produce(clean.bootstrap, clean.topic, events)
    clean.run_until_caught_up()
    expected = snapshot(redis_client, clean.namespace)
    assert expected == expected_snapshot(events)
    assert len(expected) == 400

    faulty = make_env("killed", extra={"LIFECYCLE_BATCH_SIZE": "50"})
    rng = random.Random(11)
    for _ in range(8):
        process = faulty.start()
        time.sleep(rng.uniform(1.0, 3.0))
        kill_hard(process)
    faulty.run_until_caught_up()
    assert snapshot(redis_client, faulty.namespace) == expected


def test_three_consumers_one_killed_one_added_match_one_consumer(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """Rebalances mid-stream (kill one of three, add a fourth) change nothing."""
    group = make_env("group", extra={"LIFECYCLE_BATCH_SIZE": "50"})
    events = synthetic_events(300, 3000, seed=21, now_ms=OLD)
    produce(group.bootstrap, group.topic, events[:1500])
    processes = [group.start() for _ in range(3)]
    time.sleep(3)
    produce(group.bootstrap, group.topic, events[1500:])
    kill_hard(processes.pop(1))
    processes.append(group.start())
    wait_for_offsets(
        redis_client,
        group.namespace,
        group.topic,
        high_watermarks(group.bootstrap, group.topic),
    )
    time.sleep(3)  # a tick or two for timers of the caught-up partitions
    for process in processes:
        process.terminate()
    for process in processes:
        assert process.wait(60) == 0, "SIGTERM must drain and exit 0"

    expected = expected_snapshot(events)
    assert len(stage_counts(expected)) > 3
    assert snapshot(redis_client, group.namespace) == expected


def test_redis_down_mid_stream_waits_and_resumes(
    make_env: MakeEnv, private_redis: PrivateRedis, redis_client: redis.Redis
) -> None:
    """With Redis stopped for a while, nothing is skipped and nothing doubled."""
    faulty = make_env("outage", redis_url=private_redis.url)
    events = synthetic_events(200, 2000, seed=5, now_ms=OLD)
    produce(faulty.bootstrap, faulty.topic, events[:1000])
    process = faulty.start()
    try:
        wait_for_offsets(
            private_redis.client(),
            faulty.namespace,
            faulty.topic,
            high_watermarks(faulty.bootstrap, faulty.topic),
        )
        private_redis.stop()
        produce(faulty.bootstrap, faulty.topic, events[1000:])
        time.sleep(6)
        assert process.poll() is None, "the consumer must wait, not exit"
        private_redis.start()
        wait_for_offsets(
            private_redis.client(),
            faulty.namespace,
            faulty.topic,
            high_watermarks(faulty.bootstrap, faulty.topic),
        )
        time.sleep(3)
    finally:
        process.terminate()
        process.wait(60)

    assert snapshot(private_redis.client(), faulty.namespace) == expected_snapshot(
        events
    )
