"""Events as JSON lines: the text twin of ``schemas/event.avsc``.

One object per line::

    {"event_id": "e-1", "contact_id": "c-42", "name": "Order:Completed",
     "occurred_at": "2024-05-01T10:00:00Z", "email": "a@example.com",
     "properties": {"amount": 12.5, "currency": "EUR"}}

``occurred_at`` is ISO-8601 (UTC when it has no offset) or epoch
milliseconds; ``email`` and ``properties`` may be left out. Property values
are null, booleans, integers (64-bit), numbers or text. Unknown fields are
refused so that a misspelt field is not silently dropped. Every problem is a
`ValueError` whose message says what is wrong; readers count and report bad
lines and go on.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from consumer.events import Event, PropertyValue, parse_time_ms

FIELDS = ("event_id", "contact_id", "name", "occurred_at", "email", "properties")
_REQUIRED = ("event_id", "contact_id", "name", "occurred_at")
_LONG = 2**63


def parse_event_json(obj: object) -> Event:
    """Build an event from one decoded JSON object; `ValueError` if invalid."""
    if not isinstance(obj, dict):
        raise ValueError(f"an event must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    for key in _REQUIRED:
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
    texts = {key: _text(obj, key) for key in ("event_id", "contact_id", "name")}
    email = obj.get("email")
    if email is not None and not isinstance(email, str):
        raise ValueError(f"email must be text or null, not {email!r}")
    return Event(
        event_id=texts["event_id"],
        contact_id=texts["contact_id"],
        name=texts["name"],
        occurred_at_ms=parse_time_ms(obj["occurred_at"]),
        email=email or None,
        properties=_properties(obj.get("properties")),
    )


def _text(obj: Mapping[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be non-empty text, not {value!r}")
    return value


def _properties(raw: object) -> dict[str, PropertyValue]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"properties must be an object, not {raw!r}")
    properties: dict[str, PropertyValue] = {}
    for key, value in raw.items():
        if isinstance(value, int) and not isinstance(value, bool):
            if not -_LONG <= value < _LONG:
                raise ValueError(f"property {key!r} does not fit in 64 bits: {value}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"property {key!r} is not a finite number")
        elif value is not None and not isinstance(value, bool | str):
            raise ValueError(
                f"property {key!r} must be null, a boolean, a number or text, "
                f"not {type(value).__name__}"
            )
        properties[key] = value
    return properties


def parse_event_line(line: str) -> Event:
    """Parse one JSON line into an event; `ValueError` says what is wrong."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from exc
    return parse_event_json(obj)


def read_events(path: str | Path) -> Iterator[tuple[int, Event | ValueError]]:
    """Yield (line number, event or the problem) for each non-blank line.

    ``-`` reads standard input. A line that is not UTF-8, not JSON or not a
    valid event yields its `ValueError` instead of stopping the reading.
    """
    if str(path) == "-":
        yield from _read(sys.stdin.buffer)
        return
    with open(path, "rb") as handle:
        yield from _read(handle)


def _read(handle: IO[bytes]) -> Iterator[tuple[int, Event | ValueError]]:
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            yield number, parse_event_line(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield number, ValueError(f"not UTF-8 text: {exc.reason}")
        except ValueError as exc:
            yield number, exc
