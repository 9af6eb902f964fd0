"""What reaches a log line: JSON, with no email or secret in it."""

from __future__ import annotations

import json

import pytest
import structlog

from consumer.logs import configure_logging


def test_addresses_are_masked_wherever_they_appear(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", json=True)
    log = structlog.get_logger("test")
    log.warning(
        "event_not_in_plan",
        email="ada@example.com",
        problem="property plan: got 'ada.lovelace@example.com'",
        event_name="Lead:ada@example.co.uk",
        crisp_key="k-123",
        count=3,
    )
    try:
        raise ValueError("cannot send to grace@example.org")
    except ValueError:
        log.exception("relay_entry_failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["email"] == "***" and first["crisp_key"] == "***"
    assert first["problem"] == "property plan: got '***@***'"
    assert first["event_name"] == "Lead:***@***"
    assert first["count"] == 3
    assert "grace" not in second["exception"] and "***@***" in second["exception"]
