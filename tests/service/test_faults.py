"""Property 1 and 2 under faults: kills, rebalances, Redis and broker outages.

Each test runs the real consumer against real Kafka and Redis, breaks
something mid-stream, and compares the final state with a clean run of the
same events in a namespace of its own.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import redis
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.codec import TransitionCodec
from consumer.events import Event
from consumer.store import Namespaces
from tests.service.conftest import MakeEnv, PrivateKafka, PrivateRedis
from tests.service.harness import (
    DAY_MS,
    ServiceEnv,
    assert_same_states,
    expected_snapshot,
    fold,
    high_watermarks,
    kill_hard,
    log_of,
    produce,
    read_topic,
    snapshot,
    stage_counts,
    synthetic_events,
    wait_for_offsets,
    wait_for_timers,
)

# Events end 60 days ago, so every 30-day timer is due before the run and
# the final state does not depend on when the run happens.
OLD = int(time.time() * 1000) - 60 * DAY_MS


def test_kill_9_at_random_points_gives_the_clean_state(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """kill -9 mid-batch, many times: the final state equals a clean run's."""
    clean = make_env("clean")
    events = synthetic_events(400, 4000, seed=7, now_ms=OLD)
    produce(clean.bootstrap, clean.topic, events)
    clean.run_until_caught_up()
    expected = snapshot(redis_client, clean.namespace)
    assert_same_states(expected, expected_snapshot(events))
    assert len(expected) == 400

    faulty = make_env("killed", extra={"LIFECYCLE_BATCH_SIZE": "50"})
    rng = random.Random(11)
    for _ in range(8):
        process = faulty.start()
        time.sleep(rng.uniform(1.0, 3.0))
        kill_hard(process)
    faulty.run_until_caught_up()
    assert_same_states(snapshot(redis_client, faulty.namespace), expected)


def test_three_consumers_one_killed_one_added_match_one_consumer(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """Rebalances mid-stream (kill one of three, add a fourth) change nothing."""
    group = make_env("group", extra={"LIFECYCLE_BATCH_SIZE": "50"})
    events = synthetic_events(300, 6000, seed=21, now_ms=OLD)
    # Everything is produced first: events that arrive after their contact's
    # timers fired at wall-clock time are late by design (see the README).
    produce(group.bootstrap, group.topic, events)
    totals = high_watermarks(group.bootstrap, group.topic)
    processes = [group.start() for _ in range(3)]
    wait_for_offsets(redis_client, group.namespace, group.topic, totals, part=0.2)
    kill_hard(processes.pop(1))
    processes.append(group.start())
    wait_for_offsets(redis_client, group.namespace, group.topic, totals)
    # Timers due after the last event fire at wall time, once the partition's
    # owner (after the rebalances, perhaps the newest member) has caught up.
    wait_for_timers(redis_client, group.namespace, group.topic, totals)
    for process in processes:
        process.terminate()
    for process in processes:
        assert process.wait(60) == 0, "SIGTERM must drain and exit 0"

    expected = expected_snapshot(events)
    assert len(stage_counts(expected)) > 3
    assert_same_states(snapshot(redis_client, group.namespace), expected)


def outlive_a_redis_fault(
    env: ServiceEnv,
    private_redis: PrivateRedis,
    events: list[Event],
    *,
    strike: Callable[[], None],
    heal: Callable[[], None],
    seconds: float,
) -> str:
    """Run the consumer over ``events``, strike Redis a quarter of the way
    through, heal it ``seconds`` later; return the log once every offset is
    stored and no timer is due."""
    produce(env.bootstrap, env.topic, events)
    totals = high_watermarks(env.bootstrap, env.topic)
    client = private_redis.client()
    process = env.start()
    try:
        wait_for_offsets(client, env.namespace, env.topic, totals, part=0.25)
        strike()
        time.sleep(seconds)
        assert process.poll() is None, "the consumer must wait, not exit"
        heal()
        client = private_redis.client()
        wait_for_offsets(client, env.namespace, env.topic, totals)
        wait_for_timers(client, env.namespace, env.topic, totals)
        return log_of(process)
    finally:
        heal()
        process.terminate()
        process.wait(60)


def test_redis_down_mid_stream_waits_and_resumes(
    make_env: MakeEnv, private_redis: PrivateRedis
) -> None:
    """With Redis stopped for a while, nothing is skipped and nothing doubled."""
    faulty = make_env(
        "outage", redis_url=private_redis.url, extra={"LIFECYCLE_BATCH_SIZE": "50"}
    )
    events = synthetic_events(200, 4000, seed=5, now_ms=OLD)
    log = outlive_a_redis_fault(
        faulty,
        private_redis,
        events,
        strike=private_redis.stop,
        heal=private_redis.start,
        seconds=6,
    )
    assert "transient_failure" in log, "the outage must have been seen"
    assert_same_states(
        snapshot(private_redis.client(), faulty.namespace), expected_snapshot(events)
    )


def test_redis_hanging_past_the_socket_timeout_changes_nothing(
    make_env: MakeEnv, private_redis: PrivateRedis
) -> None:
    """Redis frozen mid-stream for longer than the client's 10 s socket
    timeout: writes in flight end with an unknown outcome and are retried;
    nothing is skipped and nothing doubled."""
    faulty = make_env(
        "hang", redis_url=private_redis.url, extra={"LIFECYCLE_BATCH_SIZE": "50"}
    )
    events = synthetic_events(300, 12000, seed=13, now_ms=OLD)
    log = outlive_a_redis_fault(
        faulty,
        private_redis,
        events,
        strike=private_redis.freeze,
        heal=private_redis.thaw,
        seconds=13,
    )
    assert "Timeout reading from" in log, "the hang must have been seen"
    assert_same_states(
        snapshot(private_redis.client(), faulty.namespace), expected_snapshot(events)
    )


def test_broker_killed_mid_stream_loses_nothing(
    private_kafka: PrivateKafka, make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """kill -9 of the Kafka broker mid-stream, back 8 s later: the consumer
    waits, rejoins, and ends in the state of a pure fold, with every
    transition announced (some perhaps twice, under the same id)."""
    admin = AdminClient({"bootstrap.servers": private_kafka.bootstrap})
    topics = {"events": 3, "transitions": 3, "dead-letters": 1}
    created = admin.create_topics(
        [NewTopic(name, num_partitions=n) for name, n in topics.items()]
    )
    for future in created.values():
        future.result(timeout=30)
    env = make_env(
        "broker",
        bootstrap=private_kafka.bootstrap,
        topic="events",
        transitions_topic="transitions",
        dead_letter_topic="dead-letters",
        extra={"LIFECYCLE_BATCH_SIZE": "50"},
    )
    events = synthetic_events(300, 12000, seed=19, now_ms=OLD)
    produce(env.bootstrap, env.topic, events)
    totals = high_watermarks(env.bootstrap, env.topic)
    process = env.start()
    try:
        wait_for_offsets(redis_client, env.namespace, env.topic, totals, part=0.25)
        private_kafka.kill()
        time.sleep(8)
        assert process.poll() is None, "the consumer must wait, not exit"
        private_kafka.start()
        wait_for_offsets(redis_client, env.namespace, env.topic, totals, 180)
        wait_for_timers(redis_client, env.namespace, env.topic, totals)
        log = log_of(process)
    finally:
        process.terminate()
        process.wait(60)
    assert "transient_failure" in log or "partitions_lost" in log, log[-3000:]
    # librdkafka's own complaints arrive as JSON lines too, never raw text.
    lines = log.splitlines()
    assert all(line.startswith("{") for line in lines), lines[:5]
    assert any(json.loads(line)["event"] == "kafka_client" for line in lines)

    assert_same_states(snapshot(redis_client, env.namespace), expected_snapshot(events))
    _, moves = fold(events)
    announced = sum(high_watermarks(env.bootstrap, env.transitions_topic).values())
    ids = {
        TransitionCodec(None).decode(message.value())["transition_id"]
        for message in read_topic(env.bootstrap, env.transitions_topic, announced)
    }
    assert ids == moves


def test_until_caught_up_waits_for_the_partitions_another_member_holds(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """run --until-caught-up shares its group with a member that holds some
    partitions and does nothing with them (as a killed one does until its
    session times out): it must not call itself done with its own share."""
    env = make_env("held")
    events = synthetic_events(200, 3000, seed=23, now_ms=OLD)
    produce(env.bootstrap, env.topic, events)
    holder = Consumer(
        {
            "bootstrap.servers": env.bootstrap,
            "group.id": env.group,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
        }
    )
    holder.subscribe([env.topic])
    deadline = time.monotonic() + 30
    while not holder.assignment() and time.monotonic() < deadline:
        holder.poll(0.2)
    assert holder.assignment(), "the holding member was never assigned"
    process = env.start("--until-caught-up")
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            holder.poll(0.2)
        held = {tp.partition for tp in holder.assignment()}
        assert held and len(held) < 3, "the group must have split the topic"
        assert process.poll() is None, "done before the held partitions were"
    finally:
        holder.close()
    assert process.wait(120) == 0, log_of(process)[-3000:]
    assert_same_states(snapshot(redis_client, env.namespace), expected_snapshot(events))


def test_state_lost_from_redis_is_rebuilt_from_the_topic(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """Redis loses the namespace (a restart without persistence) while Kafka
    keeps the group's committed offsets: the next run builds the state from
    the start of each partition instead of silently starting at the commit."""
    env = make_env("lost")
    events = synthetic_events(100, 1000, seed=29, now_ms=OLD)
    produce(env.bootstrap, env.topic, events)
    env.run_until_caught_up()
    assert Namespaces(redis_client, env.namespace).drop(env.namespace) > 100

    log = env.run_until_caught_up()
    assert '"no_stored_offset"' in log
    assert_same_states(snapshot(redis_client, env.namespace), expected_snapshot(events))


def test_a_recreated_topic_is_refused_not_silently_skipped(
    make_env: MakeEnv, kafka_admin: AdminClient
) -> None:
    """The topic deleted and created again: its offsets start over below the
    state's, so each new event would be skipped as applied. The consumer
    stops and says why."""
    env = make_env("recreated")
    produce(env.bootstrap, env.topic, synthetic_events(30, 300, seed=31, now_ms=OLD))
    env.run_until_caught_up()

    kafka_admin.delete_topics([env.topic])[env.topic].result(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            kafka_admin.create_topics([NewTopic(env.topic, num_partitions=3)])[
                env.topic
            ].result(timeout=30)
            break
        except KafkaException:  # still being deleted
            time.sleep(0.5)
    produce(env.bootstrap, env.topic, synthetic_events(3, 3, seed=32, now_ms=OLD))
    process = env.start("--until-caught-up")
    assert process.wait(60) == 1
    log = log_of(process)
    assert "the topic was recreated or truncated" in log, log[-2000:]


def test_state_lost_under_a_running_consumer_is_noticed_and_rebuilt(
    make_env: MakeEnv, private_redis: PrivateRedis
) -> None:
    """Redis empties itself (FLUSHALL, as a restart without persistence
    does) under a running consumer, and events keep coming: the consumer
    notices, deletes what it wrote since, and stops; the next start builds
    every partition from the topic and ends in the state of a pure fold."""
    env = make_env("flushed", redis_url=private_redis.url)
    events = synthetic_events(100, 1000, seed=37, now_ms=OLD)
    more = synthetic_events(100, 50, seed=38, now_ms=OLD)
    produce(env.bootstrap, env.topic, events)
    totals = high_watermarks(env.bootstrap, env.topic)
    client = private_redis.client()
    process = env.start()
    try:
        wait_for_offsets(client, env.namespace, env.topic, totals)
        client.flushall()
        produce(env.bootstrap, env.topic, more)
        assert process.wait(30) == 1, "the consumer must stop"
    finally:
        kill_hard(process)
    assert '"state_lost"' in log_of(process)

    env.run_until_caught_up()
    assert_same_states(
        snapshot(client, env.namespace), expected_snapshot(events + more)
    )
