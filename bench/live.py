"""Latency of a live service: produce time to state written, and to Crisp.

Both runs start the service (``crisp-lifecycle run``, not until caught up)
on a fresh topic, wait until it consumes every partition (one warm-up event
per partition is written), produce at a steady rate while it runs, then
stop it with SIGTERM.

*State written*: for every ``sample_every``-th event the delivery report
gives its offset; the contact's hash in Redis holds the offset it last
applied (``o``), so the event's state is written once ``o`` is at least
that offset. Pending samples are checked with one pipelined ``HGET`` every
`CHECK_EVERY_S`; the latency is the time of that check minus the time just
before ``produce()``, so it includes the producer, the broker, the poll
loop, the batch and the Redis write, plus at most the check interval.

*Crisp*: a sandbox (`consumer.sandbox.Sandbox`) runs in this process with
no daily quota, and the service's relay points at it. Each contact gets a
short burst of events that ends in an order; its latency is the sandbox's
``updated_at`` of the profile once it shows the final stage, minus the
produce time of the contact's last event. The plan's debounce (5 s in the
default plan) is a floor under it by design.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer

from bench.child import Child, ChildRun
from bench.runs import Deployment, throughput
from bench.workload import REPO, producer_config
from consumer.codec import EventCodec
from consumer.events import Event
from consumer.sandbox import Sandbox

CHECK_EVERY_S = 0.005
WARM_UP_TIMEOUT_S = 90.0
SETTLE_TIMEOUT_S = 60.0
FINAL_STAGE = "customer"


@dataclass
class _Sample:
    contact_id: str
    sent_s: float
    offset: int | None = None
    seen_s: float | None = None


def now_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile of ``values`` (share in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(int(share * len(ordered) + 0.999999) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def measure_latency(
    deployment: Deployment,
    client: redis.Redis,
    workdir: Path,
    *,
    events: int,
    rate_per_s: float,
    contacts: int,
    partitions: int,
    sample_every: int = 2,
) -> dict[str, Any]:
    """Produce at a steady rate to a running service; time each state write."""
    child = _start(deployment, "latency", workdir)
    codec = EventCodec(None)
    producer = Producer(producer_config(deployment.bootstrap, **{"linger.ms": 0}))
    try:
        _warm_up(producer, codec, deployment, client, partitions, child)
        samples = _steady(
            producer,
            codec,
            deployment,
            client,
            events=events,
            rate_per_s=rate_per_s,
            contacts=contacts,
            sample_every=sample_every,
        )
    finally:
        run = child.stop()
    latencies = [(s.seen_s - s.sent_s) * 1000 for s in samples if s.seen_s is not None]
    return {
        "events": events,
        "rate_per_s": rate_per_s,
        "samples": len(samples),
        "seen": len(latencies),
        "p50_ms": _rounded(percentile(latencies, 0.50)),
        "p99_ms": _rounded(percentile(latencies, 0.99)),
        "max_ms": _rounded(max(latencies, default=None)),
        "check_every_ms": CHECK_EVERY_S * 1000,
        "service": _costs(run),
    }


def measure_crisp(
    deployment: Deployment,
    client: redis.Redis,
    workdir: Path,
    *,
    contacts: int,
    rate_per_s: float,
    partitions: int,
    website_id: str,
) -> dict[str, Any]:
    """Sync contacts to an in-process sandbox; time last event to profile."""
    sandbox = Sandbox(daily_quota=None, website_id=website_id).start()
    crisp = {
        "CRISP_BASE_URL": sandbox.url,
        "CRISP_WEBSITE_ID": sandbox.website_id,
        "CRISP_IDENTIFIER": sandbox.identifier,
        "CRISP_KEY": sandbox.key,
        "CRISP_MAX_RPS": "1000",
        "CRISP_DAILY_BUDGET": "1000000",
    }
    deployment = dataclasses.replace(deployment, extra={**deployment.extra, **crisp})
    child = _start(deployment, "crisp", workdir)
    codec = EventCodec(None)
    producer = Producer(producer_config(deployment.bootstrap, **{"linger.ms": 0}))
    try:
        _warm_up(producer, codec, deployment, client, partitions, child)
        last_sent_ms = _bursts(producer, codec, deployment, contacts, rate_per_s)
        updated = _wait_for_profiles(sandbox, last_sent_ms, child)
        requests = sandbox.requests()["total"]
    finally:
        run = child.stop()
        sandbox.stop()
    latencies = [
        float(updated[email] - sent)
        for email, sent in last_sent_ms.items()
        if email in updated
    ]
    return {
        "contacts": contacts,
        "rate_per_s": rate_per_s,
        "synced": len(latencies),
        "p50_ms": _rounded(percentile(latencies, 0.50)),
        "p99_ms": _rounded(percentile(latencies, 0.99)),
        "max_ms": _rounded(max(latencies, default=None)),
        "requests_per_contact": round(requests / contacts, 2) if contacts else None,
        "debounce_s": 5.0,
        "service": _costs(run),
    }


def _start(deployment: Deployment, label: str, workdir: Path) -> Child:
    return Child(
        label,
        deployment.command("run"),
        deployment.environ(),
        workdir,
        cwd=REPO,
    ).start()


def _warm_up(
    producer: Producer,
    codec: EventCodec,
    deployment: Deployment,
    client: redis.Redis,
    partitions: int,
    child: Child,
) -> None:
    """Write one event to each partition; wait until the service applied all."""
    contact_ids = [f"warm-up-{partition}" for partition in range(partitions)]
    for partition, contact_id in enumerate(contact_ids):
        event = _event(contact_id, f"{contact_id}-0", "Page:Viewed")
        producer.produce(
            deployment.topic,
            codec.encode(event),
            contact_id.encode(),
            partition=partition,
        )
    producer.flush(30)
    deadline = time.monotonic() + WARM_UP_TIMEOUT_S
    keys = [f"{deployment.namespace}:c:{contact_id}" for contact_id in contact_ids]
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "o")
        if all(value is not None for value in pipe.execute()):
            return
        if child.result.returncode is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(
        f"the {child.label} service did not start consuming:\n{child.log_tail()}"
    )


def _steady(
    producer: Producer,
    codec: EventCodec,
    deployment: Deployment,
    client: redis.Redis,
    *,
    events: int,
    rate_per_s: float,
    contacts: int,
    sample_every: int,
) -> list[_Sample]:
    """Produce ``events`` at ``rate_per_s``; poll Redis for sampled ones."""
    names = ["Page:Viewed", "Product:Viewed", "Page:Viewed", "Search:Performed"]
    samples: list[_Sample] = []
    pending: list[_Sample] = []
    interval_s = 1.0 / rate_per_s
    next_send = time.monotonic()
    next_check = 0.0
    sent = 0
    deadline = None
    while sent < events or pending:
        now = time.monotonic()
        if sent < events and now >= next_send:
            contact_id = f"live-{sent % contacts:05d}"
            event = _event(contact_id, f"live-{sent}", names[sent % len(names)])
            value = codec.encode(event)
            if sent % sample_every == 0:
                sample = _Sample(contact_id, time.time())
                samples.append(sample)
                pending.append(sample)
                report = functools.partial(_delivered, sample)
                producer.produce(
                    deployment.topic, value, contact_id.encode(), on_delivery=report
                )
            else:
                producer.produce(deployment.topic, value, contact_id.encode())
            sent += 1
            next_send += interval_s
            if sent == events:
                deadline = now + SETTLE_TIMEOUT_S
        producer.poll(0)
        if now >= next_check:
            next_check = now + CHECK_EVERY_S
            pending = _check_written(client, deployment.namespace, pending)
        if deadline is not None and now > deadline:
            break
        time.sleep(min(0.001, max(next_send - time.monotonic(), 0)))
    producer.flush(30)
    return samples


def _delivered(sample: _Sample, error: Any, message: Any) -> None:
    if error is None:
        sample.offset = message.offset()


def _check_written(
    client: redis.Redis, namespace: str, pending: list[_Sample]
) -> list[_Sample]:
    ready = [sample for sample in pending if sample.offset is not None]
    if not ready:
        return pending
    pipe = client.pipeline(transaction=False)
    for sample in ready:
        pipe.hget(f"{namespace}:c:{sample.contact_id}", "o")
    stored = pipe.execute()
    seen_s = time.time()
    for sample, offset in zip(ready, stored, strict=True):
        assert sample.offset is not None
        if offset is not None and int(offset) >= sample.offset:
            sample.seen_s = seen_s
    return [sample for sample in pending if sample.seen_s is None]


def _bursts(
    producer: Producer,
    codec: EventCodec,
    deployment: Deployment,
    contacts: int,
    rate_per_s: float,
) -> dict[str, int]:
    """Walk each contact to a customer in one burst; return last-event times."""
    names = ["Page:Viewed", "Newsletter:Subscribed", "Product:Viewed"]
    last_sent_ms: dict[str, int] = {}
    interval_s = 1.0 / rate_per_s
    next_send = time.monotonic()
    for index in range(contacts):
        contact_id = f"crisp-{index:05d}"
        email = f"{contact_id}@bench.invalid"
        burst = [
            _event(contact_id, f"{contact_id}-{n}", name, email=email)
            for n, name in enumerate(names)
        ]
        burst.append(
            _event(
                contact_id,
                f"{contact_id}-order",
                "Order:Completed",
                email=email,
                properties={"amount": 25.0},
            )
        )
        for event in burst:
            producer.produce(deployment.topic, codec.encode(event), contact_id.encode())
        last_sent_ms[email] = now_ms()
        producer.poll(0)
        next_send += interval_s
        time.sleep(max(next_send - time.monotonic(), 0))
    producer.flush(30)
    return last_sent_ms


def _wait_for_profiles(
    sandbox: Sandbox, expected: dict[str, int], child: Child
) -> dict[str, int]:
    """Return each email's ``updated_at`` once its profile shows the final stage."""
    segment = f"lifecycle:{FINAL_STAGE}"
    updated: dict[str, int] = {}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while len(updated) < len(expected) and time.monotonic() < deadline:
        for profile in sandbox.profiles():
            email = profile.get("email")
            if email not in expected or email in updated:
                continue
            stage = profile["data"].get("lifecycle_stage")
            if segment in profile["segments"] and stage == FINAL_STAGE:
                updated[email] = int(profile["updated_at"])
        if child.result.returncode is not None:
            break
        time.sleep(0.1)
    return updated


def _event(
    contact_id: str,
    event_id: str,
    name: str,
    *,
    email: str | None = None,
    properties: dict[str, Any] | None = None,
) -> Event:
    return Event(
        event_id=event_id,
        contact_id=contact_id,
        name=name,
        occurred_at_ms=now_ms(),
        email=email,
        properties=properties or {},
    )


def _costs(run: ChildRun) -> dict[str, Any]:
    costs = throughput(run, 0)
    return {key: costs[key] for key in ("wall_s", "cpu_s", "peak_rss_mb", "returncode")}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
