"""The ``plan check`` and ``plan simulate`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = str(REPO / "plans" / "default.yaml")

LINES = [
    '{"event_id": "1", "contact_id": "a", "name": "Page:Viewed",'
    ' "occurred_at": "2024-01-01T00:00:00Z"}',
    '{"event_id": "2", "contact_id": "a", "name": "Order:Completed",'
    ' "occurred_at": "2024-01-02T00:00:00Z", "properties": {"amount": 12}}',
    "this is not json",
    '{"event_id": "3", "contact_id": "b", "name": "order.completed",'
    ' "occurred_at": 1704153600000, "properties": {"amount": 3}}',
    "",
    '{"event_id": "4", "contact_id": "a", "name": "Order:Completed",'
    ' "occurred_at": "2024-01-10T00:00:00Z", "properties": {"amount": 5}}',
    '{"event_id": "4", "contact_id": "a", "name": "Order:Completed",'
    ' "occurred_at": "2024-01-10T00:00:00Z", "properties": {"amount": 5}}',
    '{"event_id": "5", "contact_id": "c", "name": "Page:Viewed", "occured_at": 1}',
    '{"event_id": "6", "contact_id": "c", "name": "Page:Viewed",'
    ' "occurred_at": "2024-01-03T00:00:00Z", "email": "c@example.com"}',
]


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes("\n".join(LINES).encode() + b"\n\xff\xfe broken bytes\n")
    return path


def test_check_passes_the_shipped_plans(capsys: pytest.CaptureFixture[str]) -> None:
    """The default and churn plans pass ``plan check`` (exit 0)."""
    assert main(["plan", "check", DEFAULT]) == 0
    assert (
        "ok: 17 events, 1 lifecycle, 6 stages, 6 rules; 0 errors"
        in capsys.readouterr().out
    )
    assert main(["plan", "check", str(REPO / "plans" / "churn.yaml")]) == 0


def test_check_fails_on_lint_errors_and_load_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 with ``file:line`` findings, or with the load error."""
    plan = tmp_path / "plan.yaml"
    text = Path(DEFAULT).read_text()
    plan.write_text(text.replace("when: Page:Viewed", "when: Page:Visited"))
    assert main(["plan", "check", str(plan)]) == 1
    out = capsys.readouterr().out
    line = text.splitlines().index("        when: Page:Viewed") + 1
    assert f"{plan}:{line}: error: rule 'visit' uses 'Page:Visited'" in out
    assert "failed" in out
    plan.write_text(text.replace("enforcement: report", "enforcement: reports"))
    assert main(["plan", "check", str(plan)]) == 1
    assert "enforcement must be report or dead_letter" in capsys.readouterr().err


def test_simulate_json_has_the_fixed_shape(
    events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints lifecycles, transitions and rejected; bad lines never crash."""
    assert main(["plan", "simulate", DEFAULT, str(events), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "lifecycles": {
            "customer": {
                "visit": 1,
                "subscriber": 0,
                "qualified_lead": 0,
                "customer": 1,
                "retained_customer": 0,
                "advocate": 0,
            }
        },
        "transitions": {"customer": 1, "visit": 2},
        "rejected": {"bad_line": 3},
    }


def test_simulate_text_names_bad_lines_and_reports(
    events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text report lists bad line numbers, near-misses and duplicates."""
    assert main(["plan", "simulate", DEFAULT, str(events), "--now", "2024-03-01"]) == 0
    out = capsys.readouterr().out
    assert "bad lines: 3, 8, 10" in out
    assert "near_miss" in out
    assert "duplicates dropped: 1" in out
    assert "retained_customer" in out and "(no stage)" in out


def test_simulate_now_fires_timers(
    events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Advancing to --now makes the 30-day retained rule fire."""
    main(["plan", "simulate", DEFAULT, str(events), "--json", "--now", "2024-03-01"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["lifecycles"]["customer"]["retained_customer"] == 1
    assert summary["transitions"]["retained_customer"] == 1


def test_dead_letter_plans_reject_instead_of_report(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under dead_letter a misnamed event is rejected with its reason."""
    plan = tmp_path / "strict.yaml"
    plan.write_text(
        Path(DEFAULT)
        .read_text()
        .replace("enforcement: report", "enforcement: dead_letter")
    )
    main(["plan", "simulate", str(plan), str(events), "--json"])
    assert json.loads(capsys.readouterr().out)["rejected"] == {
        "bad_line": 3,
        "near_miss": 1,
    }


def test_simulate_usage_errors(
    events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file exits 1; a bad --now exits 2; neither is a traceback."""
    assert main(["plan", "simulate", DEFAULT, str(events) + ".missing"]) == 1
    assert "cannot read events file" in capsys.readouterr().err
    assert main(["plan", "simulate", DEFAULT, str(events), "--now", "soon"]) == 2
    assert "--now" in capsys.readouterr().err
