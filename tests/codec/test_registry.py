"""The codec and the registry client with a schema registry.

Each test runs against the fake registry of `tests.codec.fake_registry` and,
when ``make services-up`` started one, against the real registry too.
"""

from __future__ import annotations

import io
import socket
import uuid
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from consumer.codec import EventCodec, frame
from consumer.errors import ConfigError, RegistryUnavailable, UnknownSchemaError
from consumer.events import Event
from consumer.registry import RegistryClient, value_subject
from tests.codec.conftest import (
    current_event_schema,
    newer_event_schema,
    older_event_schema,
)
from tests.codec.fake_registry import FakeRegistry

EVENT = Event(
    event_id="evt-7",
    contact_id="contact-7",
    name="Account:Created",
    occurred_at_ms=1_700_000_000_001,
    email="grace@example.org",
    properties={"plan": "pro", "seats": 3},
)


def fresh_subject() -> str:
    """Return a subject no other test or run uses."""
    return value_subject(f"test.codec.{uuid.uuid4().hex[:12]}")


def write_with(registry: RegistryClient, schema: Any, record: dict[str, Any]) -> bytes:
    """Register a writer schema under a fresh subject and frame a record."""
    schema_id = registry.register(fresh_subject(), schema)
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), record)
    return frame(schema_id, buffer.getvalue())


def test_round_trip_uses_the_registered_id(registry_urls: list[str]) -> None:
    """Encoding registers under the subject; a fresh decoder fetches by id."""
    for url in registry_urls:
        subject = fresh_subject()
        with RegistryClient(url) as producer_side, RegistryClient(url) as reader:
            value = EventCodec(producer_side, subject=subject).encode(EVENT)
            schema_id = int.from_bytes(value[1:5], "big")
            assert schema_id == producer_side.register(
                subject, current_event_schema()
            ), url
            assert EventCodec(reader).decode(value) == EVENT, url


def test_old_writer_through_the_registry(registry_urls: list[str]) -> None:
    """A registered schema without ``email`` is read by the current reader."""
    for url in registry_urls:
        with RegistryClient(url) as registry:
            record = {k: v for k, v in EVENT.to_record().items() if k != "email"}
            value = write_with(registry, older_event_schema(), record)
            decoded = EventCodec(registry).decode(value)
        assert decoded.email is None, url
        assert decoded.properties == EVENT.properties, url
        assert decoded.occurred_at_ms == EVENT.occurred_at_ms, url


def test_new_writer_through_the_registry(registry_urls: list[str]) -> None:
    """A registered schema with an extra defaulted field reads as today's."""
    for url in registry_urls:
        with RegistryClient(url) as registry:
            record = {**EVENT.to_record(), "channel": "app"}
            value = write_with(registry, newer_event_schema(), record)
            assert EventCodec(registry).decode(value) == EVENT, url


def test_unknown_id_is_unknown_schema_with_raw_bytes(
    registry_urls: list[str],
) -> None:
    """An id the registry does not have is set aside as unknown_schema_id."""
    for url in registry_urls:
        value = frame(2_000_000_000, EventCodec(None).encode(EVENT)[5:])
        with (
            RegistryClient(url) as registry,
            pytest.raises(UnknownSchemaError) as caught,
        ):
            EventCodec(registry).decode(value)
        assert caught.value.raw == value, url
        assert caught.value.reason == "unknown_schema_id", url


def test_schema_is_fetched_once_per_id(fake_registry: FakeRegistry) -> None:
    """Many records of one writer schema cost one registry request."""
    schema_id = fake_registry.add("events-value", current_event_schema())
    value = frame(schema_id, EventCodec(None).encode(EVENT)[5:])
    with RegistryClient(fake_registry.url) as registry:
        codec = EventCodec(registry)
        for _ in range(50):
            assert codec.decode(value) == EVENT
        assert EventCodec(registry).decode(value) == EVENT
    gets = [path for method, path in fake_registry.requests if method == "GET"]
    assert gets == [f"/schemas/ids/{schema_id}"]


def test_registry_errors_are_retryable_and_not_cached(
    fake_registry: FakeRegistry,
) -> None:
    """A 503 is RegistryUnavailable; once the registry is back, it decodes."""
    schema_id = fake_registry.add("events-value", current_event_schema())
    value = frame(schema_id, EventCodec(None).encode(EVENT)[5:])
    with RegistryClient(fake_registry.url) as registry:
        codec = EventCodec(registry)
        fake_registry.fail_status = 503
        with pytest.raises(RegistryUnavailable, match="HTTP 503"):
            codec.decode(value)
        fake_registry.fail_status = None
        assert codec.decode(value) == EVENT


def test_registry_that_does_not_answer_is_unavailable() -> None:
    """A refused connection is RegistryUnavailable, for decode and encode."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with RegistryClient(f"http://127.0.0.1:{port}", timeout_s=1) as registry:
        value = frame(1, EventCodec(None).encode(EVENT)[5:])
        with pytest.raises(RegistryUnavailable):
            EventCodec(registry).decode(value)
        with pytest.raises(RegistryUnavailable):
            EventCodec(registry).encode(EVENT)


def test_refused_registration_is_a_config_error(fake_registry: FakeRegistry) -> None:
    """A 409 (incompatible schema) stops the producer: it will not pass later."""
    fake_registry.fail_status = 409
    with (
        RegistryClient(fake_registry.url) as registry,
        pytest.raises(ConfigError, match="HTTP 409"),
    ):
        registry.register("events-value", current_event_schema())


def test_registering_twice_gives_the_same_id(registry_urls: list[str]) -> None:
    """Registration is idempotent, from this client or another one."""
    for url in registry_urls:
        subject = fresh_subject()
        with RegistryClient(url) as first, RegistryClient(url) as second:
            schema_id = first.register(subject, current_event_schema())
            assert second.register(subject, current_event_schema()) == schema_id
            assert second.get_schema(schema_id)["name"] == "Event"
