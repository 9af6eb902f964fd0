"""The event: one fact about one contact, as every module sees it.

This is the decoded form of the Avro envelope in ``schemas/event.avsc`` and
of its JSON twin (one object per line) that the command-line tools read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

PropertyValue = None | bool | int | float | str

#: Two PascalCase words joined by one colon: ``Order:Completed``.
EVENT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*:[A-Z][A-Za-z0-9]*$")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Times a datetime can hold: from year 1 to the end of year 9999.
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class Event:
    """One event about one contact; times in epoch milliseconds (UTC)."""

    event_id: str
    contact_id: str
    name: str
    occurred_at_ms: int
    email: str | None = None
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """Return the Avro record form of the event."""
        return {
            "event_id": self.event_id,
            "contact_id": self.contact_id,
            "name": self.name,
            "occurred_at": self.occurred_at_ms,
            "email": self.email,
            "properties": dict(self.properties),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        """Build an event from its decoded Avro record.

        fastavro decodes ``timestamp-millis`` to an aware datetime; both that
        and plain integers are accepted.
        """
        occurred = record["occurred_at"]
        if isinstance(occurred, datetime):
            occurred_ms = to_epoch_ms(occurred)
        else:
            occurred_ms = int(occurred)
        return cls(
            event_id=record["event_id"],
            contact_id=record["contact_id"],
            name=record["name"],
            occurred_at_ms=occurred_ms,
            email=record.get("email"),
            properties=dict(record.get("properties") or {}),
        )


def to_epoch_ms(moment: datetime) -> int:
    """Return epoch milliseconds of a datetime; naive ones are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Whole-number arithmetic: float timestamps lose a millisecond at times.
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def parse_time_ms(value: object) -> int:
    """Parse ISO-8601 text or epoch milliseconds into epoch milliseconds.

    Raise `ValueError` with the offending value when it is neither.
    """
    epoch_ms: int | None = None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        epoch_ms = value
    elif isinstance(value, float) and value.is_integer():
        epoch_ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            epoch_ms = int(text)
        else:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
                epoch_ms = to_epoch_ms(moment)
            except ValueError:
                pass
    if epoch_ms is None:
        raise ValueError(f"not an ISO-8601 time or epoch milliseconds: {value!r}")
    if not MIN_TIME_MS <= epoch_ms <= MAX_TIME_MS:
        raise ValueError(f"time out of range (years 1 to 9999): {value!r}")
    return epoch_ms


def wall_clock_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def format_time_ms(epoch_ms: int) -> str:
    """Return ISO-8601 UTC text for epoch milliseconds."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
