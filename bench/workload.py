"""The benchmark's events: generated like the shared data sets, produced once.

The mix of event names follows the web-shop clickstream in
``tests/data/ecom_clickstream.csv.gz`` as ``mappings/ecom_clickstream.yaml``
maps it (page views and product views first, then searches, carts and
checkouts), with a few more sign-ups so that the subscriber stage is
reached; order amounts are drawn from the CDNOW purchases in
``tests/data/cdnow_sample.txt``. Event times span about six months before
now and rise with the offset, so each contact's events are in time order.
Activity is skewed as in real traffic: a few contacts have hundreds of
events, most have a handful. About a third of the contacts have an identity:
their sign-ups and orders carry an email.

Values are encoded with `consumer.codec.EventCodec` in local-schema mode and
produced with a batching producer; the message timestamp (CreateTime) is the
produce time.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.codec import EventCodec
from consumer.events import Event

REPO = Path(__file__).resolve().parents[1]
CDNOW = REPO / "tests" / "data" / "cdnow_sample.txt"
DAY_MS = 86_400_000
SPAN_DAYS = 182
KAFKA_TIMEOUT_S = 30.0

#: Relative frequency of each event name, from the clickstream's event
#: counts under the shipped mapping (newsletter sign-ups added).
MIX: dict[str, int] = {
    "Page:Viewed": 13_370,
    "Product:Viewed": 6_851,
    "Search:Performed": 4_011,
    "Cart:Updated": 2_550,
    "Checkout:Started": 1_667,
    "Wishlist:Added": 812,
    "Account:Created": 659,
    "Newsletter:Subscribed": 600,
    "Order:Completed": 900,
    "Support:Contacted": 277,
    "Payment:Failed": 119,
}
#: Events that carry the contact's email when the contact has one.
IDENTIFYING = frozenset({"Account:Created", "Newsletter:Subscribed", "Order:Completed"})
_PAGES = ("home", "catalog", "filter_results", "promo_page", "review_page")
_CHANNELS = ("chat", "email", "phone")


@dataclass
class ProduceStats:
    """What was produced: counts, sizes and how long it took."""

    events: int = 0
    contacts: int = 0
    value_bytes: int = 0
    seconds: float = 0.0
    mix: Counter[str] = field(default_factory=Counter)
    first_produced_ms: int = 0
    last_produced_ms: int = 0


def order_amounts(path: Path = CDNOW) -> list[float]:
    """Return the positive purchase amounts of the CDNOW sample."""
    amounts = []
    for line in path.read_text().splitlines():
        columns = line.split()
        if len(columns) == 5 and float(columns[4]) > 0:
            amounts.append(float(columns[4]))
    return amounts


def generate(
    events: int, contacts: int, *, seed: int = 7, now_ms: int | None = None
) -> Iterator[Event]:
    """Yield ``events`` events for up to ``contacts`` contacts, in time order."""
    rng = random.Random(seed)
    names = list(MIX)
    weights = list(MIX.values())
    amounts = order_amounts()
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    start = now - SPAN_DAYS * DAY_MS
    step_ms = (SPAN_DAYS - 1) * DAY_MS / max(events, 1)
    # Draw names in chunks: choices() is much faster than one call per event.
    chunk: list[str] = []
    for index in range(events):
        if not chunk:
            chunk = rng.choices(names, weights, k=10_000)
        name = chunk.pop()
        # x ** 1.5 skews activity to the low ids; every id stays likely.
        contact = int(contacts * rng.random() ** 1.5)
        occurred = start + int(index * step_ms) + rng.randrange(1000)
        yield Event(
            event_id=f"bench-{seed}-{index}",
            contact_id=f"bench-{contact:06d}",
            name=name,
            occurred_at_ms=occurred,
            email=(
                f"contact-{contact}@bench.invalid"
                if contact % 3 == 0 and name in IDENTIFYING
                else None
            ),
            properties=properties_of(name, rng, amounts),
        )


def properties_of(
    name: str, rng: random.Random, amounts: list[float]
) -> dict[str, Any]:
    """Return plausible planned properties for an event name."""
    if name == "Page:Viewed":
        page = rng.choice(_PAGES)
        return {"url": f"https://shop.invalid/{page}", "referrer": "search"}
    if name in {"Product:Viewed", "Wishlist:Added"}:
        product: dict[str, Any] = {"product_id": f"sku-{rng.randrange(5000):05d}"}
        if name == "Product:Viewed":
            product["price"] = round(rng.uniform(5, 400), 2)
        return product
    if name == "Search:Performed":
        return {"query": f"term {rng.randrange(500)}"}
    if name == "Cart:Updated":
        return {"items": rng.randrange(1, 6), "value": round(rng.uniform(5, 400), 2)}
    if name == "Checkout:Started":
        return {"value": round(rng.uniform(5, 400), 2)}
    if name == "Order:Completed":
        return {"amount": rng.choice(amounts), "quantity": rng.randrange(1, 4)}
    if name == "Account:Created":
        return {"method": "email"}
    if name == "Newsletter:Subscribed":
        return {"list": "weekly"}
    if name == "Support:Contacted":
        return {"channel": rng.choice(_CHANNELS)}
    if name == "Payment:Failed":
        return {"reason": "card_declined"}
    return {}


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Return settings of a batching, idempotent producer."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
    }
    config.update(overrides)
    return config


def produce(bootstrap: str, topic: str, events: Iterator[Event]) -> ProduceStats:
    """Encode and produce every event once; return what was produced."""
    codec = EventCodec(None)
    producer = Producer(producer_config(bootstrap))
    stats = ProduceStats()
    contacts: set[str] = set()
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None and len(failures) < 5:
            failures.append(str(error))

    started = time.perf_counter()
    stats.first_produced_ms = time.time_ns() // 1_000_000
    for event in events:
        value = codec.encode(event)
        key = event.contact_id.encode()
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        stats.events += 1
        stats.value_bytes += len(value)
        stats.mix[event.name] += 1
        contacts.add(event.contact_id)
    if producer.flush(120) or failures:
        raise RuntimeError(f"producing to {topic} failed: {failures}")
    stats.seconds = time.perf_counter() - started
    stats.last_produced_ms = time.time_ns() // 1_000_000
    stats.contacts = len(contacts)
    return stats


def create_topics(admin: AdminClient, names: list[str], partitions: int) -> None:
    """Create topics and wait until each partition has a leader."""
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=partitions, replication_factor=1)
            for name in names
        ],
        operation_timeout=KAFKA_TIMEOUT_S,
    )
    for future in futures.values():
        future.result(timeout=KAFKA_TIMEOUT_S)
    deadline = time.monotonic() + KAFKA_TIMEOUT_S
    for name in names:
        while True:
            topic = admin.list_topics(name, timeout=KAFKA_TIMEOUT_S).topics[name]
            leaders = [p.leader for p in topic.partitions.values()]
            if topic.error is None and len(leaders) == partitions and min(leaders) >= 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {name} has no leader for every partition")
            time.sleep(0.05)


def delete_topics(admin: AdminClient, names: list[str]) -> list[str]:
    """Delete topics; return the errors (a missing topic is not one)."""
    if not names:
        return []
    errors = []
    futures = admin.delete_topics(names, operation_timeout=KAFKA_TIMEOUT_S)
    for name, future in futures.items():
        try:
            future.result(timeout=KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" not in str(exc):
                errors.append(f"{name}: {exc}")
    return errors
