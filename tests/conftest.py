"""Fixtures that connect tests to the local Kafka, Redis and schema registry.

The services are the ones ``make services-up`` starts on loopback; their
addresses come from ``KAFKA_BOOTSTRAP``, ``REDIS_URL`` and
``SCHEMA_REGISTRY_URL``. Kafka and Redis are required: a test that needs one
of them fails with a message naming the address when it is down. The schema
registry is optional: ``registry_url`` is None without one, and tests then
use the project's local-schema mode. No fixture skips a test.

Every test gets its own topics (``make_topic``, ``topic_name``) and its own
Redis key prefix (``namespace``), both removed afterwards, so tests neither
see each other's data nor depend on their order.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
# The Confluent-compatible API of Apicurio Registry, which deploy/local runs.
SCHEMA_REGISTRY_URL = os.environ.get(
    "SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7"
)

KAFKA_TIMEOUT_S = 30.0
_UNSAFE_TOPIC_CHARS = re.compile(r"[^a-zA-Z0-9._-]+")

MakeTopic = Callable[..., str]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Return the bootstrap address of the test broker."""
    return KAFKA_BOOTSTRAP


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """Return an admin client, failing at once when the broker is down."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        pytest.fail(
            f"no Kafka broker at {kafka_bootstrap} ({exc}); run `make services-up`",
            pytrace=False,
        )
    return admin


def _wait_for_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    """Wait until the broker's metadata shows a leader for every partition.

    Topic creation returns once the controller has recorded the topic; the
    broker may still lack the partitions for a moment, and a consumer that
    subscribes in that moment would be assigned fewer partitions.
    """
    deadline = time.monotonic() + KAFKA_TIMEOUT_S
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics[topic]
        leaders = [p.leader for p in metadata.partitions.values()]
        if metadata.error is None and len(leaders) == partitions and min(leaders) >= 0:
            return
        time.sleep(0.05)
    pytest.fail(f"topic {topic} has no leader for all {partitions} partitions")


@pytest.fixture
def make_topic(
    kafka_admin: AdminClient, request: pytest.FixtureRequest
) -> Iterator[MakeTopic]:
    """Create topics unique to this test; delete them when it ends.

    Call it as ``make_topic(partitions=3, config={...})``; it returns the
    topic's name, which starts with the test's name to ease debugging.
    """
    created: list[str] = []
    stem = _UNSAFE_TOPIC_CHARS.sub("-", request.node.name)[:120]

    def make(partitions: int = 3, config: dict[str, str] | None = None) -> str:
        name = f"test.{stem}.{uuid.uuid4().hex[:10]}"
        new_topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config=config or {},
        )
        futures = kafka_admin.create_topics(
            [new_topic], operation_timeout=KAFKA_TIMEOUT_S
        )
        futures[name].result(timeout=KAFKA_TIMEOUT_S)
        created.append(name)
        _wait_for_leaders(kafka_admin, name, partitions)
        return name

    yield make

    if created:
        futures = kafka_admin.delete_topics(created, operation_timeout=KAFKA_TIMEOUT_S)
        for future in futures.values():
            future.result(timeout=KAFKA_TIMEOUT_S)


@pytest.fixture
def topic_name(make_topic: MakeTopic) -> str:
    """Return a fresh 3-partition topic that is deleted after the test."""
    return make_topic()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """Return a client of the test Redis, failing at once when it is down."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        pytest.fail(
            f"no Redis at {REDIS_URL} ({exc}); run `make services-up`",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """Return a Redis key prefix unique to this test; delete its keys after.

    The clean-up removes every key that contains the prefix anywhere, so it
    also catches keys where the store wraps the prefix in a hash tag.
    """
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"*{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        redis_client.delete(*keys[start : start + 500])


@pytest.fixture(scope="session")
def registry_url() -> str | None:
    """Return the registry's Confluent-compatible base URL, or None if down.

    Tests that get None run in the project's local-schema mode instead.
    """
    try:
        response = httpx.get(f"{SCHEMA_REGISTRY_URL}/subjects", timeout=3.0)
    except httpx.HTTPError:
        return None
    return SCHEMA_REGISTRY_URL if response.status_code == 200 else None
