"""Done-when of issue 3: ``plan simulate`` on real CDNOW purchases.

The raw file is turned into events here (one Order:Completed per purchase,
with amount and quantity; contact = customer id; time = the purchase date
at 00:00 UTC; event ids from customer and purchase number), run through the
command, and the customer and retained_customer counts are compared with a
plain computation from the raw rows that shares no code with the engine.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from consumer.cli import main

REPO = Path(__file__).resolve().parents[2]
CDNOW = REPO / "tests" / "data" / "cdnow_sample.txt"


def purchases() -> list[tuple[str, date, int, float]]:
    """Return (customer, date, CDs, dollars) for each line of the raw file."""
    rows = []
    for line in CDNOW.read_text().splitlines():
        if not line.strip():
            continue
        customer, _sample, day, cds, dollars = line.split()
        when = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        rows.append((customer, when, int(cds), float(dollars)))
    return rows


def write_events(path: Path) -> int:
    """Write the purchases as JSON-line events; return how many."""
    numbers: dict[str, int] = defaultdict(int)
    with path.open("w") as handle:
        for customer, when, cds, dollars in purchases():
            numbers[customer] += 1
            record = {
                "event_id": f"cdnow-{customer}-{numbers[customer]}",
                "contact_id": customer,
                "name": "Order:Completed",
                "occurred_at": f"{when.isoformat()}T00:00:00Z",
                "properties": {"amount": dollars, "quantity": cds},
            }
            handle.write(json.dumps(record) + "\n")
    return sum(numbers.values())


def plain_counts(
    until: date | None = None, now: date | None = None
) -> tuple[int, int, int]:
    """Count customers, retained customers and buyers with no stage.

    Only purchases up to ``until`` (default: all) are counted, at the time
    ``now`` (default: the last purchase date). A customer has a purchase
    with amount > 0. Retained: by ``now`` at least 30 days have passed since
    that first paid purchase and the customer bought at least twice (paid or
    not). Nobody in the data refers or reviews, so nobody becomes an
    advocate. Buyers whose every purchase is $0.00 have no stage.
    """
    bought: dict[str, list[tuple[date, float]]] = defaultdict(list)
    for customer, when, _cds, dollars in purchases():
        if until is None or when <= until:
            bought[customer].append((when, dollars))
    end = now or max(when for rows in bought.values() for when, _ in rows)
    customers = retained = unpaid = 0
    for rows in bought.values():
        paid = [when for when, dollars in rows if dollars > 0]
        if not paid:
            unpaid += 1
        elif end - min(paid) >= timedelta(days=30) and len(rows) >= 2:
            retained += 1
        else:
            customers += 1
    return customers, retained, unpaid


def test_simulate_cdnow_matches_a_plain_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stage counts from ``plan simulate --json`` equal the plain computation."""
    events = tmp_path / "cdnow.jsonl"
    assert write_events(events) == 6919
    customers, retained, unpaid = plain_counts()
    assert customers + retained + unpaid == 2357
    assert (customers, retained, unpaid) == (1197, 1152, 8)
    code = main(
        [
            "plan",
            "simulate",
            str(REPO / "plans" / "default.yaml"),
            str(events),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["lifecycles"] == {
        "customer": {
            "visit": 0,
            "subscriber": 0,
            "qualified_lead": 0,
            "customer": customers,
            "retained_customer": retained,
            "advocate": 0,
        }
    }
    assert summary["transitions"] == {
        "customer": customers + retained,
        "retained_customer": retained,
    }
    assert summary["rejected"] == {}


def test_now_moves_every_clock_forward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With January 1997 only, --now one month later lets the 30 days pass
    for more customers; the counts again match the plain computation."""
    events = tmp_path / "january.jsonl"
    write_events(events)
    kept = [line for line in events.read_text().splitlines() if '"1997-01-' in line]
    events.write_text("\n".join(kept) + "\n")
    plan = str(REPO / "plans" / "default.yaml")
    counts = {}
    for now in (None, "1997-03-01T00:00:00Z"):
        extra = [] if now is None else ["--now", now]
        assert main(["plan", "simulate", plan, str(events), "--json", *extra]) == 0
        stages = json.loads(capsys.readouterr().out)["lifecycles"]["customer"]
        counts[now] = (stages["customer"], stages["retained_customer"])
    january = date(1997, 1, 31)
    assert counts[None] == plain_counts(until=january)[:2]
    assert counts["1997-03-01T00:00:00Z"] == plain_counts(january, date(1997, 3, 1))[:2]
    assert counts["1997-03-01T00:00:00Z"][1] > counts[None][1]
