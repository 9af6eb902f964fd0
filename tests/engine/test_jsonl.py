"""Events as JSON lines: parsing and reading with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.events import Event
from consumer.jsonl import parse_event_json, parse_event_line, read_events

GOOD = {
    "event_id": "e1",
    "contact_id": "c1",
    "name": "Order:Completed",
    "occurred_at": "2024-05-01T10:00:00+02:00",
    "email": "a@example.com",
    "properties": {"amount": 12.5, "n": 2, "gift": False, "note": None, "sku": "x"},
}


def test_a_full_line_parses() -> None:
    """Every field lands in the Event; offsets are turned into UTC ms."""
    parsed = parse_event_line(json.dumps(GOOD))
    assert parsed == Event(
        event_id="e1",
        contact_id="c1",
        name="Order:Completed",
        occurred_at_ms=1714550400000,
        email="a@example.com",
        properties=GOOD["properties"],  # type: ignore[arg-type]
    )


def test_optional_fields_and_epoch_times() -> None:
    """email and properties may be left out; times may be epoch ms."""
    minimal = {k: GOOD[k] for k in ("event_id", "contact_id", "name")}
    parsed = parse_event_json({**minimal, "occurred_at": 1714550400000})
    assert (parsed.occurred_at_ms, parsed.email, parsed.properties) == (
        1714550400000,
        None,
        {},
    )
    assert parse_event_json(
        {**minimal, "occurred_at": "1714550400000"}
    ).occurred_at_ms == (1714550400000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"occured_at": 1}, "unknown field 'occured_at'"),
        ({"event_id": None}, "event_id must be non-empty text"),
        ({"contact_id": 42}, "contact_id must be non-empty text"),
        ({"name": " "}, "name must be non-empty text"),
        ({"occurred_at": "yesterday"}, "not an ISO-8601 time"),
        ({"occurred_at": True}, "not a time"),
        ({"email": 5}, "email must be text or null"),
        ({"properties": [1]}, "properties must be an object"),
        ({"properties": {"a": {"b": 1}}}, "property 'a' must be null, a boolean"),
        ({"properties": {"a": 2**64}}, "does not fit in 64 bits"),
    ],
)
def test_bad_events_say_what_is_wrong(change: dict[str, object], message: str) -> None:
    """Each malformed field gives a ValueError that names it."""
    with pytest.raises(ValueError, match=message):
        parse_event_json({**GOOD, **change})


def test_missing_fields_and_non_objects() -> None:
    """A missing required field, or a line that is not an object, is refused."""
    without = {k: v for k, v in GOOD.items() if k != "name"}
    with pytest.raises(ValueError, match="missing field 'name'"):
        parse_event_json(without)
    with pytest.raises(ValueError, match="must be a JSON object, not list"):
        parse_event_line("[1, 2]")
    with pytest.raises(ValueError, match="not JSON"):
        parse_event_line("{")


def test_read_events_numbers_lines_and_keeps_going(tmp_path: Path) -> None:
    """Blank lines are skipped; each bad line yields its error, in place."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        json.dumps(GOOD).encode()
        + b"\n\n   \nnope\n\xff\n"
        + json.dumps({**GOOD, "event_id": "e2"}).encode()
    )
    found = list(read_events(path))
    assert [number for number, _ in found] == [1, 4, 5, 6]
    assert isinstance(found[0][1], Event)
    assert isinstance(found[1][1], ValueError)
    assert "not UTF-8" in str(found[2][1])
    last = found[3][1]
    assert isinstance(last, Event) and last.event_id == "e2"
