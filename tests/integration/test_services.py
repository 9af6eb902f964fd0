"""The local services work as the other tests assume.

These tests exercise the broker, the Redis server and the fixtures that hand
them out, not the consumer: when one of them fails, fix the local setup
(``deploy/local``, ``tests/conftest.py``) before reading other failures.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable
from typing import Any

import fastavro
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

# Small on purpose: the project's event schemas belong to the codec's tests.
PROBE_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Probe",
        "namespace": "crisp_lifecycle.test",
        "fields": [
            {"name": "probe_id", "type": "string"},
            {
                "name": "sent_at",
                "type": {"type": "long", "logicalType": "timestamp-millis"},
            },
            {"name": "count", "type": "long"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
)


def _encode(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, PROBE_SCHEMA, record)
    return buffer.getvalue()


def _decode(payload: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(payload), PROBE_SCHEMA, PROBE_SCHEMA)


def test_avro_record_survives_a_round_trip_through_kafka(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """An Avro record produced to a fresh topic is consumed back unchanged.

    Proves that the broker accepts writes and serves reads on a topic the
    fixture created, that a new consumer group starting at the earliest offset
    sees the record, and that the key and the Avro body come back intact.
    """
    record = {
        "probe_id": uuid.uuid4().hex,
        "sent_at": int(time.time() * 1000),
        "count": 42,
        "note": "héllo",
    }
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    producer.produce(topic_name, key=b"contact-1", value=_encode(record))
    assert producer.flush(30) == 0, "the record was not acknowledged in 30s"

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic_name])
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            if polled is not None:
                assert polled.error() is None, polled.error()
                message = polled
    finally:
        consumer.close()

    assert message is not None, "no record consumed within 30s"
    assert message.key() == b"contact-1"
    decoded = _decode(message.value())
    # fastavro hands timestamp-millis back as an aware datetime.
    assert int(decoded.pop("sent_at").timestamp() * 1000) == record["sent_at"]
    assert decoded == {k: v for k, v in record.items() if k != "sent_at"}


def test_make_topic_creates_the_partitions_asked_for(
    kafka_admin: AdminClient, make_topic: Callable[..., str]
) -> None:
    """A topic made by the fixture exists with the requested partition count.

    Tests of rebalancing and partition ordering rely on this count.
    """
    name = make_topic(partitions=5)

    metadata = kafka_admin.list_topics(name, timeout=10).topics[name]

    assert metadata.error is None
    assert sorted(metadata.partitions) == [0, 1, 2, 3, 4]


def test_redis_value_under_the_namespace_is_read_back(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A string and a hash written under the test's namespace read back equal.

    Proves that the Redis server answers reads and writes and that keys under
    the prefix are visible to a scan, which the namespace clean-up uses.
    """
    redis_client.set(f"{namespace}:greeting", "hello")
    redis_client.hset(f"{namespace}:contact:1", mapping={"stage": "Visit", "n": 3})

    assert redis_client.get(f"{namespace}:greeting") == b"hello"
    assert redis_client.hgetall(f"{namespace}:contact:1") == {
        b"stage": b"Visit",
        b"n": b"3",
    }
    assert sorted(redis_client.scan_iter(match=f"{namespace}*")) == [
        f"{namespace}:contact:1".encode(),
        f"{namespace}:greeting".encode(),
    ]
