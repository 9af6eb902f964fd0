"""The importer turns both data sets and hand-made files into events."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from consumer.errors import ConfigError
from consumer.events import EVENT_NAME, Event
from consumer.importer import Importer, load_mapping

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
MAPPINGS = ROOT / "mappings"
CDNOW = DATA / "cdnow_sample.txt"
CLICKSTREAM = DATA / "ecom_clickstream.csv.gz"


def read_all(importer: Importer) -> tuple[list[Event], list[tuple[int, str]]]:
    """Return the events and the (line, message) of the bad rows."""
    events: list[Event] = []
    bad: list[tuple[int, str]] = []
    for line, item in importer.events():
        if isinstance(item, str):
            bad.append((line, item))
        else:
            events.append(item)
    return events, bad


def test_cdnow_every_purchase_is_one_order() -> None:
    """6,919 purchases become 6,919 orders with the file's amounts."""
    importer = Importer(CDNOW, load_mapping(MAPPINGS / "cdnow.yaml"))
    events, bad = read_all(importer)
    lines = [line.split() for line in CDNOW.read_text().splitlines() if line.strip()]
    assert importer.rows_read == len(lines) == 6919
    assert bad == []
    assert not importer.skipped
    assert len(events) == 6919
    assert {event.name for event in events} == {"Order:Completed"}
    assert len({event.contact_id for event in events}) == 2357
    assert all(event.email is None for event in events)
    total = sum(float(cells[4]) for cells in lines)
    assert sum(float(e.properties["amount"] or 0) for e in events) == pytest.approx(
        total
    )
    quantities = Counter(int(cells[3]) for cells in lines)
    assert Counter(e.properties["quantity"] for e in events) == quantities
    first = events[0]
    assert first.contact_id == "cdnow-00004"
    assert first.occurred_at_ms == 852_076_800_000  # 1997-01-01T00:00:00Z
    assert first.properties == {"amount": 29.33, "quantity": 2}


def test_clickstream_maps_or_skips_every_row() -> None:
    """Every row is an event or a counted skip; counts match the raw file."""
    importer = Importer(CLICKSTREAM, load_mapping(MAPPINGS / "ecom_clickstream.yaml"))
    events, bad = read_all(importer)
    with gzip.open(CLICKSTREAM, "rt") as stream:
        rows = [line.rstrip("\n").split(",") for line in stream][1:]
    raw = Counter(row[2] for row in rows)
    assert importer.rows_read == len(rows) == 31106
    assert bad == []
    assert len(events) + sum(importer.skipped.values()) == len(rows)
    names = Counter(event.name for event in events)
    pages = ("home", "catalog", "promo_page", "filter_results", "compare")
    assert names["Page:Viewed"] == sum(raw[page] for page in pages) + raw["review_page"]
    assert names["Product:Viewed"] == raw["product_view"]
    assert names["Order:Completed"] == raw["purchase"]
    assert names["Cart:Updated"] == raw["add_to_cart"] + raw["cart"]
    assert names["Payment:Failed"] == raw["payment_error"]
    account_users = {row[0] for row in rows if row[2] == "account_page"}
    assert names["Account:Created"] == len(account_users)
    assert all(EVENT_NAME.match(name) for name in names)
    assert importer.skipped == Counter(
        {
            "error_page: a site error page, not something the visitor did": raw[
                "error_page"
            ],
            "Account:Created: not the first (first_only)": raw["account_page"]
            - len(account_users),
            "checkout_bug: the injected checkout fault; no planned event fits": raw[
                "checkout_bug"
            ],
        }
    )
    orders = [event for event in events if event.name == "Order:Completed"]
    assert all(order.properties["amount"] == 1.0 for order in orders)
    assert all(order.properties["amount_is_placeholder"] is True for order in orders)
    assert all(event.email is None for event in events)
    assert {e.properties["platform"] for e in events} == {"desktop", "mobile", "tablet"}


def test_event_ids_are_deterministic_and_unique() -> None:
    """Importing the same file twice yields the same ids; no id repeats."""
    mapping = load_mapping(MAPPINGS / "cdnow.yaml")
    first, _ = read_all(Importer(CDNOW, mapping))
    second, _ = read_all(Importer(CDNOW, mapping))
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len({e.event_id for e in first}) == len(first)


BAD_MAPPING = """\
format: csv
contact_id: {column: user}
time: {column: at, format: "%Y-%m-%d %H:%M:%S"}
event:
  column: kind
  map:
    buy: Order:Completed
    signup: {name: Account:Created, first_only: true}
  skip: [noise]
properties:
  amount: {column: amount, type: number}
  items: {column: items, type: integer}
"""

BAD_ROWS = """\
user,kind,at,amount,items
u1,buy,2024-01-02 10:00:00,9.5,1
u2,buy,yesterday,9.5,1
,buy,2024-01-02 10:00:00,9.5,1
u3,refund,2024-01-02 10:00:00,9.5,1
u4,buy,2024-01-02 10:00:00,9.5
u5,buy,2024-01-02 10:00:00,lots,1
u6,buy,2024-01-02 10:00:00,1.0,1.5
u7,noise,2024-01-02 10:00:00,,
u1,signup,2024-01-03 10:00:00,,
u1,signup,2024-01-01 10:00:00,,

u8,buy,2024-01-02 10:00:00,,
"""


def test_bad_rows_are_reported_by_line(tmp_path: Path) -> None:
    """Each bad row yields its file line and why; good rows still import."""
    (tmp_path / "map.yaml").write_text(BAD_MAPPING)
    (tmp_path / "rows.csv").write_text(BAD_ROWS)
    importer = Importer(tmp_path / "rows.csv", load_mapping(tmp_path / "map.yaml"))
    events, bad = read_all(importer)
    assert [line for line, _ in bad] == [3, 4, 5, 6, 7, 8]
    messages = dict(bad)
    assert "time 'yesterday' does not match" in messages[3]
    assert "contact id column user is empty" in messages[4]
    assert "'refund' is neither mapped nor skipped" in messages[5]
    assert "4 cells where the header has 5" in messages[6]
    assert "column amount: 'lots' is not a number" in messages[7]
    assert "column items: '1.5' is not an integer" in messages[8]
    assert importer.rows_read == 11  # the blank line is not a row
    assert importer.skipped == Counter(
        {
            "noise: skipped by the mapping": 1,
            "Account:Created: not the first (first_only)": 1,
        }
    )
    by_line = {event.event_id: event for event in events}
    assert len(by_line) == 3
    signups = [event for event in events if event.name == "Account:Created"]
    assert len(signups) == 1
    assert signups[0].occurred_at_ms == 1_704_103_200_000  # the earlier one
    no_amount = [event for event in events if event.contact_id == "u8"]
    assert no_amount[0].properties == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (BAD_MAPPING + "colour: blue\n", ":13: unknown key 'colour' in mapping"),
        (
            BAD_MAPPING.replace("signup: {", "signup: {colour: red, "),
            ":8: unknown key 'colour' in signup",
        ),
        (BAD_MAPPING.replace("Order:Completed", "order completed"), ":7: event name"),
        (BAD_MAPPING.replace("type: integer", "type: int"), ":12: items: type"),
        (BAD_MAPPING + "format: jsonl\n", ":13: duplicate key 'format'"),
        (BAD_MAPPING.replace("skip: [noise]", "skip: [buy]"), "mapped and skipped"),
        (BAD_MAPPING.replace("format: csv", "format: whitespace"), "need columns"),
    ],
    ids=["top", "nested", "name", "type", "duplicate", "both", "columns"],
)
def test_mapping_errors_name_the_line(tmp_path: Path, text: str, words: str) -> None:
    """A wrong mapping is a ConfigError naming the file line and the problem."""
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    assert words in str(caught.value)
    assert str(path) in str(caught.value)


def test_envelope_json_lines(tmp_path: Path) -> None:
    """JSON lines need no mapping; bad lines are reported by number."""
    lines = [
        {
            "event_id": "a",
            "contact_id": "c1",
            "name": "Page:Viewed",
            "occurred_at": "2024-05-01T10:00:00Z",
            "properties": {"page": "home", "n": 2},
        },
        {"contact_id": "c2", "name": "Page:Viewed", "occurred_at": 1714557600000},
        {"contact_id": "c3", "name": "Page:Viewed"},
        {"contact_id": "c4", "name": "Page:Viewed", "occurred_at": 0, "extra": 1},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{oops\n[1]\n"
    path = tmp_path / "events.jsonl"
    path.write_text(text)
    events, bad = read_all(Importer(path))
    assert [line for line, _ in bad] == [3, 4, 5, 6]
    assert "occurred_at is missing" in bad[0][1]
    assert "unknown envelope keys ['extra']" in bad[1][1]
    assert events[0] == Event(
        "a", "c1", "Page:Viewed", 1_714_557_600_000, None, {"page": "home", "n": 2}
    )
    assert events[1].occurred_at_ms == 1_714_557_600_000
    assert len(events[1].event_id) == 32


def test_email_only_when_the_mapping_names_it(tmp_path: Path) -> None:
    """An email comes from the named column or template, never otherwise."""
    rows = tmp_path / "rows.txt"
    rows.write_text("7 ada@example.org 1714557600\n8 - 1714557600\n")
    base = (
        "format: whitespace\ncolumns: [id, mail, at]\n"
        "contact_id: {column: id}\ntime: {column: at, format: epoch_s}\n"
        "event: {name: Newsletter:Subscribed}\n"
    )
    for extra, expected in [
        ("", [None, None]),
        ("email: {column: mail}\n", ["ada@example.org", "-"]),
        ("email: {template: 'user-{contact_id}@example.net'}\n", None),
    ]:
        (tmp_path / "map.yaml").write_text(base + extra)
        events, bad = read_all(Importer(rows, load_mapping(tmp_path / "map.yaml")))
        assert bad == []
        if expected is None:
            expected = ["user-7@example.net", "user-8@example.net"]
        assert [event.email for event in events] == expected
