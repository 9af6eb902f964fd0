"""Produce what the consumer announces: transitions and dead letters.

Both go out *before* the state they come from is written and the offsets
are committed, and `Publisher.flush` waits for every delivery. A crash in
between produces them again on the retry: transitions carry a deterministic
id, so downstream drops the duplicate; a dead letter may appear twice, never
zero times (DESIGN.md property 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from consumer.codec import TransitionCodec
from consumer.engine import Transition
from consumer.errors import KafkaUnavailable

#: Dead-letter header names; values are UTF-8 text.
HEADER_REASON = "lifecycle.reason"
HEADER_ERROR = "lifecycle.error"
HEADER_SOURCE = "lifecycle.source"


class Publisher:
    """One idempotent producer for the transitions and dead-letter topics."""

    def __init__(
        self,
        config: dict[str, Any],
        transitions_topic: str,
        dead_letter_topic: str,
        codec: TransitionCodec,
    ) -> None:
        self.transitions_topic = transitions_topic
        self.dead_letter_topic = dead_letter_topic
        self.codec = codec
        self._config = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            **config,
        }
        self._producer: Producer | None = None
        self._failures: list[str] = []

    @property
    def producer(self) -> Producer:
        """Return the producer, created on first use."""
        if self._producer is None:
            self._producer = Producer(self._config)
        return self._producer

    def transitions(self, transitions: Iterable[Transition]) -> None:
        """Queue transition records, keyed by contact id."""
        for transition in transitions:
            self._produce(
                self.transitions_topic,
                transition.contact_id.encode(),
                self.codec.encode(transition.to_record(), checked=True),
                None,
            )

    def dead_letter(self, message: Message, reason: str, error: str) -> None:
        """Queue the original bytes and headers of a message, with why it
        was set aside and where it came from."""
        source = f"{message.topic()}/{message.partition()}/{message.offset()}"
        headers: list[tuple[str, str | bytes | None]] = [
            *(message.headers() or []),
            (HEADER_REASON, reason.encode()),
            (HEADER_ERROR, error.encode()[:1000]),
            (HEADER_SOURCE, source.encode()),
        ]
        self._produce(self.dead_letter_topic, message.key(), message.value(), headers)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued is delivered, or raise."""
        remaining = self.producer.flush(timeout_s) if self._producer else 0
        failures, self._failures = self._failures, []
        if remaining or failures:
            detail = failures[0] if failures else f"{remaining} not delivered"
            raise KafkaUnavailable(f"producing failed: {detail}")

    def close(self) -> None:
        """Deliver what is queued and release the producer."""
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None,
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value, key, headers=headers, on_delivery=self._delivered
                )
                return
            except BufferError:
                self.producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failures.append(str(error))
