"""Read a whole test topic back, for the producer tests."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message


def read_topic(bootstrap: str, topic: str, expected: int) -> list[Message]:
    """Return the first ``expected`` messages of a topic, failing after 30 s."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                messages.append(message)
    finally:
        consumer.close()
    assert len(messages) == expected, f"read {len(messages)} of {expected}"
    return messages
