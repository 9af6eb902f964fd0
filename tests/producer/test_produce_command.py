"""``crisp-lifecycle produce`` checks, orders and produces the rows of a file."""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.codec import EventCodec
from consumer.commands import produce
from consumer.errors import ConfigError
from consumer.events import Event, parse_time_ms
from tests.producer.kafka_reading import read_topic

ROOT = Path(__file__).resolve().parents[2]

MAPPING = """\
format: csv
contact_id: {column: user, prefix: "shop-"}
time: {column: at, format: iso8601}
event:
  column: kind
  map: {view: Page:Viewed, buy: Order:Completed}
properties:
  amount: {column: amount, type: number}
"""

ROWS = """\
user,kind,at,amount
b,buy,2024-01-03T00:00:00Z,5
a,view,2024-01-02T00:00:00Z,
a,buy,2024-01-01T00:00:00Z,7
b,view,2024-01-01T00:00:00Z,
c,view,not a time,
a,view,2024-01-01T00:00:00Z,
"""


def run(*argv: str) -> int:
    """Run the produce command as the CLI would, with only its own parser."""
    parser = argparse.ArgumentParser()
    produce.register(parser.add_subparsers())
    args = parser.parse_args(["produce", *argv])
    status: int = args.handler(args)
    return status


@pytest.fixture
def shop_files(tmp_path: Path) -> tuple[Path, Path]:
    """Return a small CSV file, unordered, with one bad row, and its mapping."""
    (tmp_path / "map.yaml").write_text(MAPPING)
    (tmp_path / "rows.csv").write_text(ROWS)
    return tmp_path / "rows.csv", tmp_path / "map.yaml"


@pytest.fixture
def no_plan_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``consumer.plan`` unimportable, as in a checkout without it."""
    monkeypatch.setitem(sys.modules, "consumer.plan", None)


@dataclass
class Verdict:
    accepted: bool
    problem: str | None
    reason: str


@pytest.fixture
def only_views_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Install a stand-in plan module whose plan accepts only Page:Viewed."""
    module = types.ModuleType("consumer.plan")

    def load_plan(path: Path) -> set[str]:
        return set(path.read_text().split())

    def check_event(plan: set[str], event: Event) -> Verdict:
        if event.name in plan:
            return Verdict(True, None, "")
        return Verdict(False, f"{event.name} is not in the plan", "not_in_plan")

    module.load_plan = load_plan  # type: ignore[attr-defined]
    module.check_event = check_event  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "consumer.plan", module)
    plan = tmp_path / "plan.txt"
    plan.write_text("Page:Viewed\n")
    return plan


def test_dry_run_orders_by_time_and_reports_bad_rows(
    shop_files: tuple[Path, Path],
    no_plan_module: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Events come out sorted by (time, line); the bad row is named; exit 3."""
    rows, mapping = shop_files
    assert run(str(rows), "--mapping", str(mapping), "--dry-run") == 3
    out, err = capsys.readouterr()
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(e["contact_id"], e["name"]) for e in printed] == [
        ("shop-a", "Order:Completed"),
        ("shop-b", "Page:Viewed"),
        ("shop-a", "Page:Viewed"),
        ("shop-a", "Page:Viewed"),
        ("shop-b", "Order:Completed"),
    ]
    times = [parse_time_ms(e["occurred_at"]) for e in printed]
    assert times == sorted(times)
    assert printed[0]["properties"] == {"amount": 7.0}
    assert f"{rows}:6: time 'not a time' does not match iso8601" in err
    assert "read 6 rows; would produce 5 events; skipped 0; bad 1" in err
    assert "warning: consumer.plan is not available" in err


def test_plan_refusals_are_bad_rows(
    shop_files: tuple[Path, Path],
    only_views_plan: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Events the plan refuses are reported with their line, not printed."""
    rows, mapping = shop_files
    argv = [str(rows), "--mapping", str(mapping), "--plan", str(only_views_plan)]
    assert run(*argv, "--dry-run") == 3
    out, err = capsys.readouterr()
    assert {json.loads(line)["name"] for line in out.splitlines()} == {"Page:Viewed"}
    assert f"{rows}:2: refused by the plan: Order:Completed is not in the plan" in err
    assert f"{rows}:4: refused by the plan" in err
    assert "would produce 3 events; skipped 0; bad 3" in err


def test_named_plan_must_exist(
    shop_files: tuple[Path, Path], only_views_plan: Path, tmp_path: Path
) -> None:
    """``--plan`` naming a missing file is a fatal error, not a warning."""
    rows, mapping = shop_files
    with pytest.raises(ConfigError, match="no such plan"):
        run(str(rows), "--mapping", str(mapping), "--plan", str(tmp_path / "nope"))


def test_missing_input_is_fatal(tmp_path: Path) -> None:
    """A file that does not exist stops the command with a ConfigError."""
    with pytest.raises(ConfigError, match="no such file"):
        run(str(tmp_path / "missing.csv"), "--dry-run")


def test_cdnow_is_produced_in_time_order_per_contact(
    kafka_bootstrap: str,
    topic_name: str,
    no_plan_module: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """All 6,919 purchases reach the topic, each contact's in time order."""
    status = run(
        str(ROOT / "tests" / "data" / "cdnow_sample.txt"),
        "--mapping",
        str(ROOT / "mappings" / "cdnow.yaml"),
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--schema-registry",
        "",
    )
    assert status == 0
    assert "read 6919 rows; produced 6919 events" in capsys.readouterr().err
    codec = EventCodec(None)
    times: dict[bytes, list[int]] = defaultdict(list)
    for message in read_topic(kafka_bootstrap, topic_name, 6919):
        event = codec.decode(message.value())
        key = message.key()
        assert key == event.contact_id.encode()
        times[key].append(event.occurred_at_ms)
    assert len(times) == 2357
    assert all(found == sorted(found) for found in times.values())


@pytest.fixture
def reporting_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Install a stand-in plan that reports, not refuses, unplanned events."""
    module = types.ModuleType("consumer.plan")

    def check_event(plan: set[str], event: Event) -> Verdict:
        if event.name in plan:
            return Verdict(True, None, "")
        return Verdict(True, f"{event.name} is not in the plan", "unknown_event")

    module.load_plan = lambda path: set(path.read_text().split())  # type: ignore[attr-defined]
    module.check_event = check_event  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "consumer.plan", module)
    plan = tmp_path / "plan.txt"
    plan.write_text("Page:Viewed\n")
    return plan


def test_reported_plan_problems_are_produced_with_warnings(
    shop_files: tuple[Path, Path],
    reporting_plan: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under report enforcement, unplanned events go out and are counted."""
    rows, mapping = shop_files
    argv = [str(rows), "--mapping", str(mapping), "--plan", str(reporting_plan)]
    assert run(*argv, "--dry-run") == 3
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 5
    assert f"{rows}:2: warning: Order:Completed is not in the plan" in err
    assert "would produce 5 events; skipped 0; bad 1; 2 produced with plan" in err


def test_both_data_sets_fit_the_default_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every event of both mappings is planned, with the planned properties."""
    for data, mapping, produced in [
        ("cdnow_sample.txt", "cdnow.yaml", 6919),
        ("ecom_clickstream.csv.gz", "ecom_clickstream.yaml", 30500),
    ]:
        argv = [str(ROOT / "tests" / "data" / data), "--dry-run"]
        argv += ["--mapping", str(ROOT / "mappings" / mapping)]
        argv += ["--plan", str(ROOT / "plans" / "default.yaml")]
        assert run(*argv) == 0
        err = capsys.readouterr().err
        assert f"would produce {produced} events" in err, err
        assert "bad 0" in err, err
        assert "warning" not in err, err
