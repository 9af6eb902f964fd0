"""The producer helper writes events that the consumer's codec reads back."""

from __future__ import annotations

import socket
from collections import defaultdict

import pytest

from consumer.codec import EventCodec
from consumer.errors import KafkaUnavailable
from consumer.events import Event
from consumer.producer import EventProducer
from consumer.registry import RegistryClient
from tests.conftest import MakeTopic
from tests.producer.kafka_reading import read_topic


def sample_events() -> list[Event]:
    """Return events of three contacts, interleaved, in time order."""
    events = []
    for step in range(30):
        contact = f"contact-{step % 3}"
        events.append(
            Event(
                event_id=f"evt-{step}",
                contact_id=contact,
                name="Page:Viewed" if step % 2 else "Order:Completed",
                occurred_at_ms=1_700_000_000_000 + step * 1000,
                email=f"{contact}@example.org" if step % 5 == 0 else None,
                properties={"step": step, "amount": step * 1.5, "page": "home"},
            )
        )
    return events


def test_events_reach_the_topic_keyed_by_contact(
    kafka_bootstrap: str, make_topic: MakeTopic, registry_url: str | None
) -> None:
    """Emitted events decode back equal, keyed by contact id, in order.

    Runs in local-schema mode, and through the registry when one runs.
    """
    for registry in [None, registry_url] if registry_url else [None]:
        topic = make_topic(partitions=3)
        events = sample_events()
        with EventProducer(kafka_bootstrap, topic, registry) as producer:
            for event in events:
                producer.emit(event)
        assert producer.delivered == len(events)
        messages = read_topic(kafka_bootstrap, topic, len(events))
        codec = EventCodec(RegistryClient(registry) if registry else None)
        partitions: dict[str, set[int]] = defaultdict(set)
        by_contact: dict[str, list[Event]] = defaultdict(list)
        for message in messages:
            event = codec.decode(message.value())
            assert message.key() == event.contact_id.encode("utf-8")
            partitions[event.contact_id].add(message.partition() or 0)
            by_contact[event.contact_id].append(event)
        assert all(len(found) == 1 for found in partitions.values())
        for contact, received in by_contact.items():
            assert received == [e for e in events if e.contact_id == contact]


def test_invalid_event_is_refused_before_sending(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """An event with an empty contact id raises ValueError and is not sent."""
    with EventProducer(kafka_bootstrap, topic_name) as producer:
        with pytest.raises(ValueError, match="contact_id is empty"):
            producer.emit(Event("e", "", "Page:Viewed", 0))
        producer.emit(sample_events()[0])
    assert producer.delivered == 1
    assert len(read_topic(kafka_bootstrap, topic_name, 1)) == 1


def test_oversized_event_is_refused(kafka_bootstrap: str, topic_name: str) -> None:
    """An event over the producer's size limit is a ValueError, not a retry."""
    big = Event("e", "c", "Page:Viewed", 0, None, {"blob": "x" * 5000})
    with (
        EventProducer(
            kafka_bootstrap, topic_name, None, **{"message.max.bytes": 2000}
        ) as producer,
        pytest.raises(ValueError, match="too large"),
    ):
        producer.emit(big)


def test_undeliverable_events_raise_on_flush() -> None:
    """Events that cannot be delivered make flush raise KafkaUnavailable.

    The bootstrap is a loopback port this test holds without listening, so
    every connection is refused.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{held.getsockname()[1]}"
        producer = EventProducer(
            bootstrap, "lifecycle.events", None, **{"message.timeout.ms": 500}
        )
        producer.emit(sample_events()[0])
        with pytest.raises(KafkaUnavailable, match=r"delivery to \S+ failed"):
            producer.flush(timeout_s=10)
        producer.close()


def test_events_emitted_before_an_error_are_still_delivered(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """Leaving the block by an exception still flushes what was emitted."""
    with (
        pytest.raises(RuntimeError, match="caller failed"),
        EventProducer(kafka_bootstrap, topic_name) as producer,
    ):
        producer.emit(sample_events()[0])
        raise RuntimeError("caller failed")
    assert producer.delivered == 1
    assert len(read_topic(kafka_bootstrap, topic_name, 1)) == 1
