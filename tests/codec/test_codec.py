"""The codec reads and writes events in the Confluent wire format."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.codec import (
    EVENT_SCHEMA,
    TRANSITION_SCHEMA,
    EventCodec,
    TransitionCodec,
    frame,
    local_schema_id,
)
from consumer.errors import (
    BadContactId,
    DecodeError,
    RecordTooLarge,
    TombstoneRecord,
    UnknownSchemaError,
)
from consumer.events import MAX_TIME_MS, Event
from tests.codec.conftest import (
    current_event_schema,
    newer_event_schema,
    older_event_schema,
)

EVENT = Event(
    event_id="evt-1",
    contact_id="contact-42",
    name="Order:Completed",
    occurred_at_ms=1_710_325_274_123,
    email="ada@example.org",
    properties={
        "amount": 29.33,
        "quantity": 2,
        "gift": True,
        "coupon": None,
        "channel": "web",
    },
)


def write_raw(schema: Any, record: dict[str, Any], schema_id: int) -> bytes:
    """Frame a record written with any schema, bypassing the codec's checks."""
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), record)
    return frame(schema_id, buffer.getvalue())


def test_round_trip_keeps_every_field() -> None:
    """An encoded event decodes to an equal event, property types included."""
    codec = EventCodec(None)
    decoded = codec.decode(codec.encode(EVENT))
    assert decoded == EVENT
    assert {k: type(v) for k, v in decoded.properties.items()} == {
        "amount": float,
        "quantity": int,
        "gift": bool,
        "coupon": type(None),
        "channel": str,
    }


def test_local_frame_is_magic_byte_and_hash_of_canonical_form() -> None:
    """Local mode writes byte 0 and the id documented in the module docstring."""
    schema = json.loads(EVENT_SCHEMA.read_text())
    canonical = to_parsing_canonical_form(schema).encode()
    expected = int.from_bytes(hashlib.sha256(canonical).digest()[:4], "big")
    expected &= 0x7FFF_FFFF
    value = EventCodec(None).encode(EVENT)
    assert value[0] == 0
    assert int.from_bytes(value[1:5], "big") == expected == local_schema_id(schema)


def test_local_id_ignores_docs_and_defaults_but_not_fields() -> None:
    """Only what changes the bytes changes the local id."""
    schema = current_event_schema()
    documented = json.loads(json.dumps(schema))
    documented["doc"] = "another text"
    assert local_schema_id(documented) == local_schema_id(schema)
    assert local_schema_id(older_event_schema()) != local_schema_id(schema)


@settings(max_examples=300, deadline=None)
@given(
    event_id=st.text(min_size=1, max_size=256),
    contact_id=st.text(min_size=1, max_size=256),
    occurred_at_ms=st.integers(min_value=0, max_value=MAX_TIME_MS),
    email=st.none() | st.text(max_size=40),
    properties=st.dictionaries(
        st.text(max_size=10),
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        max_size=6,
    ),
)
def test_round_trip_of_any_valid_event(
    event_id: str,
    contact_id: str,
    occurred_at_ms: int,
    email: str | None,
    properties: dict[str, Any],
) -> None:
    """Any valid event survives, the time to the exact millisecond."""
    event = Event(
        event_id, contact_id, "Page:Viewed", occurred_at_ms, email, properties
    )
    codec = EventCodec(None)
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"occurred_at_ms": MAX_TIME_MS + 1}, "outside the years 1970 to 9999"),
        ({"occurred_at_ms": -1}, "outside the years 1970 to 9999"),
        ({"properties": {"amount": math.inf}}, "not a finite number"),
        ({"properties": {"amount": math.nan}}, "not a finite number"),
    ],
)
def test_times_no_date_can_show_and_non_finite_numbers_are_refused(
    change: dict[str, Any], problem: str
) -> None:
    """Both ways: the producer refuses them, and the consumer's decoder
    refuses them in bytes that another producer wrote."""
    event = dataclasses.replace(
        Event("e-1", "c-1", "Order:Completed", 0, None, {}), **change
    )
    codec = EventCodec(None)
    with pytest.raises(ValueError, match=problem):
        codec.encode(event)
    schema = json.loads(EVENT_SCHEMA.read_text())
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(schema), event.to_record())
    raw = frame(local_schema_id(schema), body.getvalue())
    with pytest.raises(DecodeError, match=problem):
        codec.decode(raw)


def test_transition_round_trip() -> None:
    """A transition record encodes and decodes with its own schema and id."""
    record = {
        "transition_id": "t-1",
        "contact_id": "contact-42",
        "lifecycle": "customer",
        "from_stage": "visit",
        "to_stage": "customer",
        "rule_id": "customer.order",
        "regression": False,
        "occurred_at": 1_710_325_274_123,
        "event_id": "evt-1",
    }
    codec = TransitionCodec(None)
    value = codec.encode(record)
    schema = json.loads(TRANSITION_SCHEMA.read_text())
    assert int.from_bytes(value[1:5], "big") == local_schema_id(schema)
    assert codec.decode(value) == record


def test_old_writer_read_by_current_reader_locally(schema_dir: Path) -> None:
    """A record written before ``email`` existed reads with email None."""
    old = older_event_schema()
    record = {k: v for k, v in EVENT.to_record().items() if k != "email"}
    value = write_raw(old, record, local_schema_id(old))
    decoded = EventCodec(None, schema_dir / "event.avsc").decode(value)
    assert decoded == Event(
        EVENT.event_id,
        EVENT.contact_id,
        EVENT.name,
        EVENT.occurred_at_ms,
        None,
        EVENT.properties,
    )


def test_new_writer_read_by_current_reader_locally(schema_dir: Path) -> None:
    """A record with a field the reader lacks reads without that field."""
    new = newer_event_schema()
    record = {**EVENT.to_record(), "channel": "app"}
    value = write_raw(new, record, local_schema_id(new))
    assert EventCodec(None, schema_dir / "event.avsc").decode(value) == EVENT


def test_a_version_outside_the_schema_files_is_unknown_locally() -> None:
    """Local mode knows only the shipped files: a newer id is unknown."""
    new = newer_event_schema()
    value = write_raw(new, {**EVENT.to_record(), "channel": "app"}, 7)
    with pytest.raises(UnknownSchemaError) as caught:
        EventCodec(None).decode(value)
    assert caught.value.reason == "unknown_schema_id"
    assert caught.value.raw == value
    value = write_raw(
        new, {**EVENT.to_record(), "channel": "app"}, local_schema_id(new)
    )
    with pytest.raises(UnknownSchemaError):
        EventCodec(None).decode(value)


def test_tombstone_is_a_decode_error_tagged_tombstone() -> None:
    """A null value is set aside with the reason tombstone."""
    with pytest.raises(TombstoneRecord) as caught:
        EventCodec(None).decode(None)
    assert isinstance(caught.value, DecodeError)
    assert caught.value.reason == "tombstone"
    assert caught.value.raw is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (b"", "too short"),
        (b"\x00\x01\x02", "too short"),
        (b"\x01" + EventCodec(None).encode(EVENT)[1:], "magic byte is 1"),
        (b'{"event_id": "x"}', "magic byte is 123"),
        (EventCodec(None).encode(EVENT)[:-3], "does not decode"),
        (EventCodec(None).encode(EVENT) + b"\x00", "1 bytes left"),
    ],
    ids=["empty", "short", "magic", "json", "truncated", "trailing"],
)
def test_bad_bytes_are_undecodable_with_raw_bytes(value: bytes, words: str) -> None:
    """Bytes that are not a framed event raise DecodeError carrying them."""
    with pytest.raises(DecodeError) as caught:
        EventCodec(None).decode(value)
    assert type(caught.value) is DecodeError
    assert caught.value.reason == "undecodable"
    assert caught.value.raw == value
    assert words in str(caught.value)


def test_unknown_local_id_carries_the_raw_bytes() -> None:
    """An id no local schema has raises UnknownSchemaError, not DecodeError."""
    value = b"\x00\x00\x00\x00\x05" + EventCodec(None).encode(EVENT)[5:]
    with pytest.raises(UnknownSchemaError) as caught:
        EventCodec(None).decode(value)
    assert caught.value.raw == value
    assert "schema id 5" in str(caught.value)


def test_value_over_the_limit_is_too_large() -> None:
    """A value longer than max_value_bytes is set aside as too_large."""
    value = EventCodec(None).encode(EVENT)
    codec = EventCodec(None, max_value_bytes=len(value) - 1)
    with pytest.raises(RecordTooLarge) as caught:
        codec.decode(value)
    assert caught.value.reason == "too_large"
    assert caught.value.raw == value
    assert EventCodec(None, max_value_bytes=len(value)).decode(value) == EVENT


@pytest.mark.parametrize(
    ("field", "text", "error", "reason"),
    [
        ("contact_id", "", BadContactId, "bad_contact_id"),
        ("contact_id", "c" * 257, BadContactId, "bad_contact_id"),
        ("event_id", "", DecodeError, "undecodable"),
        ("name", "N" * 257, DecodeError, "undecodable"),
    ],
)
def test_invalid_ids_and_names_are_set_aside(
    field: str, text: str, error: type[DecodeError], reason: str
) -> None:
    """Empty or over-long ids and names decode to an error naming the field."""
    schema = current_event_schema()
    value = write_raw(
        schema, {**EVENT.to_record(), field: text}, local_schema_id(schema)
    )
    with pytest.raises(error) as caught:
        EventCodec(None).decode(value)
    assert caught.value.reason == reason
    assert caught.value.raw == value
    assert field in str(caught.value)


def test_encode_refuses_invalid_events() -> None:
    """Encoding an invalid event raises ValueError naming what is wrong."""
    codec = EventCodec(None)
    with pytest.raises(ValueError, match="contact_id is empty"):
        codec.encode(Event("e", "", "Page:Viewed", 0))
    with pytest.raises(ValueError, match="property tags: list is not null"):
        codec.encode(Event("e", "c", "Page:Viewed", 0, None, {"tags": ["a"]}))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="occurred_at must be integer"):
        codec.encode(Event("e", "c", "Page:Viewed", 1.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="email must be text"):
        codec.encode(Event("e", "c", "Page:Viewed", 0, 7))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"property n: \d+ does not fit 64 bits"):
        codec.encode(Event("e", "c", "Page:Viewed", 0, None, {"n": 2**63}))


def test_constructor_does_no_io(tmp_path: Path) -> None:
    """A codec can be built for a schema file that does not exist yet."""
    path = tmp_path / "event.avsc"
    codec = EventCodec(None, path)
    path.write_text(EVENT_SCHEMA.read_text())
    assert codec.decode(EventCodec(None).encode(EVENT)) == EVENT


def test_transition_encode_validates_against_the_schema() -> None:
    """A transition record of the wrong shape is a ValueError, not bytes."""
    with pytest.raises(ValueError, match="does not fit the schema"):
        TransitionCodec(None).encode({"transition_id": "t-1"})
