"""Turn Kafka values into events and back: Avro in the Confluent wire format.

Every value on the events and transitions topics is framed the same way::

    byte  0      magic byte, always 0
    bytes 1-4    schema id, unsigned 32-bit big-endian
    bytes 5-     one record in Avro binary encoding, no container header

With a schema registry the id is the registry's id of the writer schema: the
decoder fetches it once per id (`RegistryClient` caches it) and the encoder
registers the shipped schema under ``<topic>-value`` and uses the id it gets.

Without a registry (local-schema mode) the frame is identical, but the id is
derived from the writer schema itself: the first four bytes of the SHA-256 of
its Parsing Canonical Form, read big-endian, top bit cleared (`local_schema_id`).
The decoder knows the schemas shipped next to the reader schema (``schemas/``)
and older versions kept in ``schemas/history/``; any other id is
`UnknownSchemaError`. The canonical form drops docs, defaults and logical
types, so files that differ only there share an id, which is right for a
writer schema: they encode the same bytes. The two kinds of id are never
mixed: a codec with a registry treats a local id as unknown and vice versa.

Decoding resolves the writer schema to the reader schema shipped in
``schemas/`` (old writers lack new fields, which take the reader's default;
new writers' extra fields are dropped). Logical types are ignored while
decoding, so ``occurred_at`` comes out as the exact epoch milliseconds that
were written. Schemas are read, adjusted and parsed once, on first use; the
constructors do no I/O.

Errors carry the raw value in ``raw``; the ``reason`` attribute of each is the
tag the dead-letter topic records.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from consumer.errors import (
    BadContactId,
    ConfigError,
    DecodeError,
    RecordTooLarge,
    TombstoneRecord,
    UnknownSchemaError,
)
from consumer.events import MAX_TIME_MS, Event
from consumer.registry import RegistryClient, value_subject
from consumer.settings import ENVIRONMENT

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
EVENT_SCHEMA = SCHEMAS_DIR / "event.avsc"
TRANSITION_SCHEMA = SCHEMAS_DIR / "transition.avsc"
HISTORY_DIR_NAME = "history"

MAGIC_BYTE = 0
HEADER_BYTES = 5
#: Kafka's default largest message; larger values are `RecordTooLarge`.
DEFAULT_MAX_VALUE_BYTES = 1_048_576
#: Longest contact id, event id or event name accepted, in characters.
MAX_FIELD_CHARS = 256
_INT64 = 2**63


def local_schema_id(schema: Any) -> int:
    """Return the local-mode id of a schema (JSON data or parsed)."""
    canonical = to_parsing_canonical_form(schema)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def frame(schema_id: int, body: bytes) -> bytes:
    """Return the Confluent frame of an Avro body written with a schema id."""
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big") + body


def without_logical_types(schema: Any) -> Any:
    """Return a copy of schema JSON data with every ``logicalType`` removed.

    The binary encoding does not depend on logical types, so decoding with
    this copy reads the same bytes and yields the underlying values.
    """
    if isinstance(schema, dict):
        return {
            key: without_logical_types(value)
            for key, value in schema.items()
            if key != "logicalType"
        }
    if isinstance(schema, list):
        return [without_logical_types(item) for item in schema]
    return schema


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """How to read bodies of one writer schema id."""

    writer: Any
    #: None when the writer equals the reader: fastavro then skips resolution.
    reader: Any


class _AvroCodec:
    """Framing, the schema tables and the registry, for one reader schema."""

    def __init__(
        self,
        registry: RegistryClient | None,
        reader_schema_path: Path,
        subject: str,
        max_value_bytes: int,
    ) -> None:
        self._registry = registry
        self._reader_schema_path = reader_schema_path
        self._subject = subject
        self._max_value_bytes = max_value_bytes
        self._plans: dict[int, _ReadPlan] = {}
        self._loaded = False
        self._reader_json: Any = None
        self._reader: Any = None
        self._reader_canonical = ""
        self._local: dict[int, Any] = {}
        self._write_id: int | None = None

    @property
    def subject(self) -> str:
        """The registry subject that the encoder registers its schema under."""
        return self._subject

    def _load(self) -> None:
        """Read and parse the reader schema and the local table, once."""
        self._reader_json = _read_schema_file(self._reader_schema_path)
        self._reader = parse_schema(without_logical_types(self._reader_json))
        self._reader_canonical = to_parsing_canonical_form(self._reader_json)
        directory = self._reader_schema_path.parent
        paths = [
            self._reader_schema_path,
            *sorted(directory.glob("*.avsc")),
            *sorted((directory / HISTORY_DIR_NAME).glob("*.avsc")),
        ]
        local: dict[int, Any] = {}
        canonical_of: dict[int, str] = {}
        for path in paths:
            schema = _read_schema_file(path)
            schema_id = local_schema_id(schema)
            canonical = to_parsing_canonical_form(schema)
            if canonical_of.setdefault(schema_id, canonical) != canonical:
                raise ConfigError(
                    f"{path}: local schema id {schema_id} collides with "
                    "another schema; rename a field or the record"
                )
            local.setdefault(schema_id, schema)
        self._local = local
        self._loaded = True

    def _read_plan(self, schema_id: int, value: bytes) -> _ReadPlan:
        """Find the writer schema of an id and cache how to read it."""
        if not self._loaded:
            self._load()
        if self._registry is None:
            writer_json = self._local.get(schema_id)
            if writer_json is None:
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not a local schema "
                    f"(known: {sorted(self._local)})",
                    raw=value,
                )
        else:
            try:
                writer_json = self._registry.get_schema(schema_id)
            except UnknownSchemaError as exc:
                raise UnknownSchemaError(str(exc), raw=value) from exc
        try:
            writer = parse_schema(without_logical_types(writer_json))
            same = to_parsing_canonical_form(writer_json) == self._reader_canonical
        except Exception as exc:  # fastavro raises many types for bad schemas
            raise DecodeError(
                f"writer schema id {schema_id} does not parse: {exc}", raw=value
            ) from exc
        plan = _ReadPlan(writer=writer, reader=None if same else self._reader)
        self._plans[schema_id] = plan
        return plan

    def _decode_record(self, value: bytes | None) -> dict[str, Any]:
        """Unframe and decode one value into the reader schema's record."""
        if value is None:
            raise TombstoneRecord("tombstone: the message has no value")
        size = len(value)
        if size > self._max_value_bytes:
            raise RecordTooLarge(
                f"value of {size} bytes is over the limit of {self._max_value_bytes}",
                raw=value,
            )
        if size < HEADER_BYTES:
            raise DecodeError(
                f"value of {size} bytes is too short for the 5-byte header",
                raw=value,
            )
        if value[0] != MAGIC_BYTE:
            raise DecodeError(
                f"magic byte is {value[0]}, not {MAGIC_BYTE}: not the "
                "Confluent wire format",
                raw=value,
            )
        schema_id = int.from_bytes(value[1:HEADER_BYTES], "big")
        plan = self._plans.get(schema_id) or self._read_plan(schema_id, value)
        buffer = io.BytesIO(value)
        buffer.seek(HEADER_BYTES)
        try:
            record = schemaless_reader(buffer, plan.writer, plan.reader)
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError...
            raise DecodeError(
                f"Avro body does not decode with schema id {schema_id}: "
                f"{type(exc).__name__}: {exc}",
                raw=value,
            ) from exc
        if not isinstance(record, dict):
            raise DecodeError(
                f"schema id {schema_id} is not a record schema", raw=value
            )
        if buffer.tell() != size:
            raise DecodeError(
                f"{size - buffer.tell()} bytes left after the record of "
                f"schema id {schema_id}",
                raw=value,
            )
        return record

    def _encode_record(self, record: dict[str, Any], *, checked: bool) -> bytes:
        """Frame one record of the shipped schema.

        Unless the caller has ``checked`` the record's types already, it is
        validated with fastavro first; that costs more than the encoding.
        """
        if not self._loaded:
            self._load()
        if not checked:
            try:
                validate(record, self._reader, raise_errors=True)
            except ValidationError as exc:
                raise ValueError(f"record does not fit the schema: {exc}") from exc
        if self._write_id is None:
            if self._registry is None:
                self._write_id = local_schema_id(self._reader_json)
            else:
                self._write_id = self._registry.register(
                    self._subject, self._reader_json
                )
        buffer = io.BytesIO()
        buffer.write(frame(self._write_id, b""))
        schemaless_writer(buffer, self._reader, record)
        return buffer.getvalue()


class EventCodec(_AvroCodec):
    """Decode Kafka values into events and encode events into values."""

    def __init__(
        self,
        registry: RegistryClient | None,
        reader_schema_path: Path = EVENT_SCHEMA,
        *,
        subject: str | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        """Prepare a codec; nothing is read until the first record.

        ``subject`` defaults to that of the default events topic; a producer
        to another topic passes ``value_subject(topic)``.
        """
        super().__init__(
            registry,
            reader_schema_path,
            subject or value_subject(ENVIRONMENT["topic"][1]),
            max_value_bytes,
        )

    def decode(self, value: bytes | None) -> Event:
        """Return the event in a value, or raise the reason it is not one.

        Raise `TombstoneRecord`, `RecordTooLarge`, `DecodeError`,
        `BadContactId` or `UnknownSchemaError` (all with ``raw``) for a value
        to set aside, and `RegistryUnavailable` when the registry cannot be
        asked: retry that one, never skip.
        """
        record = self._decode_record(value)
        event = Event(
            event_id=record["event_id"],
            contact_id=record["contact_id"],
            name=record["name"],
            occurred_at_ms=record["occurred_at"],
            email=record["email"],
            properties=record["properties"],
        )
        problem = event_problem(event)
        if problem is not None:
            field_name, message = problem
            error = BadContactId if field_name == "contact_id" else DecodeError
            raise error(message, raw=value)
        return event

    def encode(self, event: Event) -> bytes:
        """Return the framed Avro value of an event.

        Raise `ValueError` naming the field when the event is not valid, and
        `RegistryUnavailable` when the registry cannot register the schema.
        """
        problem = event_problem(event) or _type_problem(event)
        if problem is not None:
            raise ValueError(problem[1])
        return self._encode_record(event.to_record(), checked=True)


class TransitionCodec(_AvroCodec):
    """Encode transition records (``schemas/transition.avsc``) and back."""

    def __init__(
        self,
        registry: RegistryClient | None,
        reader_schema_path: Path = TRANSITION_SCHEMA,
        *,
        subject: str | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        """Prepare a codec; ``subject`` defaults to the transitions topic's."""
        super().__init__(
            registry,
            reader_schema_path,
            subject or value_subject(ENVIRONMENT["transitions_topic"][1]),
            max_value_bytes,
        )

    def encode(self, record: dict[str, Any], *, checked: bool = False) -> bytes:
        """Return the framed Avro value of a transition record.

        ``occurred_at`` is epoch milliseconds. Raise `ValueError` when the
        record does not fit the schema; a record built by
        `Transition.to_record` is typed already and may skip that check.
        """
        return self._encode_record(record, checked=checked)

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """Return the transition record in a value (``occurred_at`` in ms)."""
        return self._decode_record(value)


def event_problem(event: Event) -> tuple[str, str] | None:
    """Return ``(field, message)`` for the first invalid value, or None.

    Event id, contact id and name must be non-empty and at most
    `MAX_FIELD_CHARS` characters; the time must fall in the years 1970 to
    9999 (the engine's clock starts at the epoch, and a later time cannot be
    written as a date); a number must be finite.
    """
    for field_name in ("contact_id", "event_id", "name"):
        text = getattr(event, field_name)
        if not isinstance(text, str) or not text:
            return field_name, f"{field_name} is empty"
        if len(text) > MAX_FIELD_CHARS:
            return field_name, (
                f"{field_name} has {len(text)} characters, more than {MAX_FIELD_CHARS}"
            )
    moment = event.occurred_at_ms
    if isinstance(moment, int) and not 0 <= moment <= MAX_TIME_MS:
        return "occurred_at", (
            f"occurred_at {moment} is outside the years 1970 to 9999"
        )
    for key, item in event.properties.items():
        if isinstance(item, float) and not math.isfinite(item):
            return "properties", f"property {key} is {item}, not a finite number"
    return None


def _type_problem(event: Event) -> tuple[str, str] | None:
    """Return ``(field, message)`` for a value the event schema cannot hold.

    The same checks as fastavro's validation for this one schema, at a
    fraction of its cost.
    """
    if event.email is not None and not isinstance(event.email, str):
        return "email", "email must be text or None"
    moment = event.occurred_at_ms
    if isinstance(moment, bool) or not isinstance(moment, int):
        return "occurred_at", "occurred_at must be integer milliseconds"
    if not -_INT64 <= moment < _INT64:
        return "occurred_at", f"occurred_at {moment} does not fit 64 bits"
    for key, item in event.properties.items():
        if not isinstance(key, str):
            return "properties", f"property name {key!r} is not text"
        if item is None or isinstance(item, bool | float | str):
            continue
        if not isinstance(item, int):
            return "properties", (
                f"property {key}: {type(item).__name__} is not null, boolean, "
                "integer, number or text"
            )
        # The union would take an int beyond 64 bits as a double, and the
        # reader would get another value back: refuse it instead.
        if not -_INT64 <= item < _INT64:
            return "properties", f"property {key}: {item} does not fit 64 bits"
    return None


def _read_schema_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Avro schema {path}: {exc}") from exc
