"""Emit valid events from another Python service.

    from consumer.events import Event
    from consumer.producer import EventProducer

    with EventProducer("127.0.0.1:9092", "lifecycle.events") as producer:
        producer.emit(Event(event_id=..., contact_id="42", name="Order:Completed",
                            occurred_at_ms=..., properties={"amount": 30.0}))

Each event is Avro in the Confluent wire format (`consumer.codec`), keyed by
its contact id in UTF-8 so that all events of a contact share a partition and
keep their order. With ``registry_url`` the schema is registered under
``<topic>-value`` on the first emit; without it the local-schema framing is
used. The Kafka producer is idempotent with ``acks=all``: its retries neither
duplicate nor reorder messages. The message timestamp is the time of sending,
not the event's time, so old events are not deleted at once by time-based
retention; the event time travels in the value.

Messages are sent in the background. `flush` (and leaving the ``with`` block,
even by an exception) waits for every one and raises `KafkaUnavailable` if any
was not delivered; the first delivery error is kept and raised by the next
`emit` or `flush`. `close` alone drops what is still queued.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.codec import EventCodec
from consumer.errors import KafkaUnavailable
from consumer.events import Event
from consumer.registry import RegistryClient, value_subject

#: Settings a caller cannot override: they are what make delivery safe.
SAFE_PRODUCER_CONFIG = {"enable.idempotence": True, "acks": "all"}
DEFAULT_FLUSH_TIMEOUT_S = 30.0


class EventProducer:
    """Produce events to one topic; no network I/O until the first `emit`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        registry_url: str | None = None,
        **kafka_config: Any,
    ) -> None:
        """Prepare a producer; ``kafka_config`` holds librdkafka settings.

        Pass dotted names as a dict: ``**{"linger.ms": 20}``.
        """
        self.topic = topic
        self._config: dict[str, Any] = {"bootstrap.servers": bootstrap}
        self._config.update(kafka_config)
        self._config.update(SAFE_PRODUCER_CONFIG)
        self._registry = RegistryClient(registry_url) if registry_url else None
        self._codec = EventCodec(self._registry, subject=value_subject(topic))
        self._producer: Producer | None = None
        self._delivery_error: str | None = None
        self.delivered = 0

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.flush()
        except KafkaUnavailable as flush_error:
            if exc is None:
                raise
            # Keep the error that ended the block; say what was lost too.
            exc.add_note(f"and on leaving the producer: {flush_error}")
        finally:
            self.close()

    def emit(self, event: Event) -> None:
        """Queue one event for sending.

        Raise `ValueError` for an invalid event (nothing is sent),
        `RegistryUnavailable` when the schema cannot be registered, and
        `KafkaUnavailable` when an earlier message failed.
        """
        self._raise_delivery_error()
        value = self._codec.encode(event)
        producer = self._open()
        key = event.contact_id.encode("utf-8")
        while True:
            try:
                producer.produce(
                    self.topic, value=value, key=key, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports to drain it.
                producer.poll(0.5)
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise ValueError(
                        f"event {event.event_id} is too large: {len(value)} bytes"
                    ) from exc
                raise KafkaUnavailable(
                    f"cannot produce to {self.topic}: {exc}"
                ) from exc
        producer.poll(0)

    def flush(self, timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Wait until every queued event is delivered, or raise."""
        if self._producer is not None:
            remaining = self._producer.flush(timeout_s)
            if remaining:
                raise KafkaUnavailable(
                    f"{remaining} events to {self.topic} not delivered "
                    f"within {timeout_s} s"
                )
        self._raise_delivery_error()

    def close(self) -> None:
        """Release the registry client; queued events are not waited for."""
        if self._registry is not None:
            self._registry.close()
        self._producer = None

    def _open(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._config)
        return self._producer

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
        elif self._delivery_error is None:
            self._delivery_error = (
                f"delivery to {message.topic()} failed: {error.str()}"
            )

    def _raise_delivery_error(self) -> None:
        if self._delivery_error is not None:
            error, self._delivery_error = self._delivery_error, None
            raise KafkaUnavailable(error)
