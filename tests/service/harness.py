"""Drive the real service as a person would: produce, run, kill, compare.

The consumer runs as a subprocess (``python -m consumer run``) so that tests
can ``kill -9`` it at any point; its settings come from environment variables
exactly as in production.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.runs import DEFAULT_PLAN, REPO, Deployment
from consumer.codec import EventCodec
from consumer.engine import (
    ContactState,
    advance,
    apply_event,
    decode_state,
    new_state,
)
from consumer.events import Event
from consumer.plan import load_plan
from consumer.report import describe_state
from consumer.settings import ENVIRONMENT
from consumer.store import Store

DAY_MS = 86_400_000
#: the service's default timer grace (LIFECYCLE_TIMER_GRACE_S)
GRACE_MS = int(float(ENVIRONMENT["timer_grace_s"][1]) * 1000)


@dataclass(frozen=True)
class ServiceEnv(Deployment):
    """One consumer deployment under test: the benchmark's, tuned for tests."""

    def environ(self) -> dict[str, str]:
        """Return the deployment's environment with the tests' defaults."""
        env = super().environ()
        env.update(
            LIFECYCLE_BATCH_SIZE="200",
            # A killed member is noticed in seconds, not librdkafka's 45 s.
            LIFECYCLE_KAFKA_SESSION_TIMEOUT_MS="6000",
            LIFECYCLE_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
        )
        env.update(self.extra)
        return env

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``crisp-lifecycle run``; its log goes to a file (`log_of`).

        A pipe nobody reads would fill up and block the consumer's logging.
        """
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for log_of
            prefix="lifecycle-run-", suffix=".log", delete=False
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", *args],
            env=self.environ(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        _LOGS[process.pid] = Path(log.name)
        log.close()
        return process

    def cli(self, *args: str, timeout_s: float = 60) -> str:
        """Run ``crisp-lifecycle ARGS`` to the end, expect exit 0, return
        what it printed."""
        try:
            done = subprocess.run(
                [sys.executable, "-m", "consumer", *args],
                env=self.environ(),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            tail = exc.stderr.decode(errors="replace") if exc.stderr else ""
            raise AssertionError(
                f"{' '.join(args)} still running after {timeout_s:.0f} s; "
                f"its log ends:\n{tail[-4000:]}"
            ) from None
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        return done.stdout

    def run_until_caught_up(self, timeout_s: float = 180) -> str:
        """Run the consumer to the end of the topic; return its log."""
        process = self.start("--until-caught-up")
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                "consumer did not catch up:\n" + log_of(process)[-3000:]
            ) from None
        log = log_of(process)
        assert process.returncode == 0, log[-3000:]
        return log


_LOGS: dict[int, Path] = {}


def log_of(process: subprocess.Popen[bytes]) -> str:
    """Return what a consumer started by `ServiceEnv.start` logged so far."""
    return _LOGS[process.pid].read_text(errors="replace")


def produce(
    bootstrap: str,
    topic: str,
    events: Iterable[Event],
    *,
    raw: Iterable[tuple[bytes | None, bytes | None]] = (),
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce events (Avro, keyed by contact) and raw key/value pairs, the
    raw ones with ``headers``."""
    codec = EventCodec(None)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    for event in events:
        producer.produce(topic, codec.encode(event), event.contact_id.encode())
        producer.poll(0)
    for key, value in raw:
        producer.produce(topic, value, key, headers=headers)
    assert producer.flush(30) == 0


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30
) -> list[Any]:
    """Read ``expected`` messages from the start of a topic."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            messages.append(message)
    # a little longer, to see messages that should not be there
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            messages.append(message)
    consumer.close()
    return messages


def snapshot(
    client: redis.Redis, namespace: str, plan: Path = DEFAULT_PLAN
) -> dict[str, Any]:
    """Return every contact's stages, history and counters, without clock.

    The clock of a state is the wall time its timers were last checked, which
    differs between two runs of the same events by design; everything the
    events and the plan decide is compared.
    """
    loaded = load_plan(plan)
    result: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{namespace}:c:*", count=1000):
        contact_id = key.decode().split(":c:", 1)[1]
        state = client.hget(key, "s")
        assert state is not None, f"contact {contact_id} has no state"
        result[contact_id] = _comparable(decode_state(state, loaded))
    return result


def _comparable(state: ContactState) -> dict[str, Any]:
    view = describe_state(state)
    view.pop("clock", None)
    # Counts and sums; windowed timestamp lists are pruned whenever the clock
    # moves, which differs between runs by design.
    view["totals"] = [v for v in state.values if not isinstance(v, tuple)]
    return view


def expected_snapshot(
    events: Iterable[Event], plan: Path = DEFAULT_PLAN, now_ms: int | None = None
) -> dict[str, Any]:
    """Fold the engine over each contact's events, in order, with no Kafka.

    The oracle for the service: whatever the batches, processes and faults,
    its final state must equal this.
    """
    states, _ = fold(events, plan, now_ms)
    return {contact_id: _comparable(state) for contact_id, state in states.items()}


def fold(
    events: Iterable[Event], plan: Path = DEFAULT_PLAN, now_ms: int | None = None
) -> tuple[dict[str, ContactState], set[str]]:
    """Return each contact's state after its events and the timers due by
    ``now_ms`` (default: now), and the ids of every transition on the way."""
    loaded = load_plan(plan)
    states: dict[str, ContactState] = {}
    moves: set[str] = set()
    for event in events:
        state = states.get(event.contact_id) or new_state(event.contact_id)
        step = apply_event(loaded, state, event)
        states[event.contact_id] = step.state
        moves.update(move.transition_id for move in step.transitions)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    for contact_id, state in states.items():
        step = advance(loaded, state, now)
        states[contact_id] = step.state
        moves.update(move.transition_id for move in step.transitions)
    return states, moves


def synthetic_events(
    contacts: int, events: int, *, seed: int, now_ms: int | None = None
) -> list[Event]:
    """Return events over the last 120 days, in time order, for the default plan.

    The mix follows the shared data sets: mostly page and product views,
    some sign-ups and orders, a few referrals; some contacts carry an email.
    """
    rng = random.Random(seed)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    start = now - 120 * DAY_MS
    names = (
        ["Page:Viewed"] * 40
        + ["Product:Viewed"] * 30
        + ["Newsletter:Subscribed"] * 5
        + ["Account:Created"] * 5
        + ["Order:Completed"] * 15
        + ["Referral:Sent"] * 2
        + ["Trial:Started"] * 3
    )
    times = sorted(rng.randrange(start, now - DAY_MS) for _ in range(events))
    out = []
    for index, occurred in enumerate(times):
        contact = rng.randrange(contacts)
        name = rng.choice(names)
        properties: dict[str, Any] = {}
        if name == "Order:Completed":
            properties = {"amount": round(rng.uniform(0, 120), 2), "quantity": 1}
        email = f"person{contact}@example.com" if contact % 3 == 0 else None
        out.append(
            Event(
                event_id=f"evt-{seed}-{index}",
                contact_id=f"contact-{contact:05d}",
                name=name,
                occurred_at_ms=occurred,
                email=email,
                properties=properties,
            )
        )
    return out


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    """Return each partition's end offset."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hw-probe"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def wait_for_offsets(
    client: redis.Redis,
    namespace: str,
    topic: str,
    totals: dict[int, int],
    timeout_s: float = 120,
    part: float = 1.0,
) -> None:
    """Wait until Redis holds ``part`` of the end offsets (all of each by
    default; with ``part`` below 1, of their sum)."""
    store = Store(client, namespace)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stored = {p: store.stored_offset(topic, p) or 0 for p in totals}
        if part >= 1.0 and all(stored[p] >= end for p, end in totals.items()):
            return
        if part < 1.0 and sum(stored.values()) >= part * sum(totals.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"offsets did not reach {part:.0%} of {totals}")


def wait_for_timers(
    client: redis.Redis,
    namespace: str,
    topic: str,
    partitions: Iterable[int],
    timeout_s: float = 60,
) -> None:
    """Wait until no partition holds a timer that the service should have
    fired by now (it fires them a grace period after they fall due)."""
    store = Store(client, namespace)
    keys = [store.timers_key(topic, p) for p in partitions]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now_ms = int(time.time() * 1000) - GRACE_MS
        if not any(store.due_members(key, now_ms, 1) for key in keys):
            return
        time.sleep(0.2)
    raise AssertionError(f"timers still due after {timeout_s:.0f} s")


def assert_same_states(
    actual: Mapping[str, Any], expected: Mapping[str, Any], limit: int = 5
) -> None:
    """Assert two snapshots are equal; on failure, name the contacts and the
    fields that differ, briefly enough to read at the end of a CI log."""
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    differing = sorted(
        c for c in expected.keys() & actual.keys() if actual[c] != expected[c]
    )
    if not (missing or extra or differing):
        return
    lines = [
        f"{len(differing)} contacts differ, {len(missing)} missing, "
        f"{len(extra)} unexpected (of {len(expected)} expected)"
    ]
    if missing:
        lines.append(f"missing: {', '.join(missing[:limit])}")
    if extra:
        lines.append(f"unexpected: {', '.join(extra[:limit])}")
    for contact in differing[:limit]:
        for field in sorted(expected[contact].keys() | actual[contact].keys()):
            got, want = actual[contact].get(field), expected[contact].get(field)
            if got != want:
                lines.append(f"{contact}.{field}: got {got!r}, expected {want!r}")
    raise AssertionError("\n".join(lines))


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """Send SIGKILL and reap the process."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(30)


def stage_counts(view: Mapping[str, Any]) -> dict[str, int]:
    """Count contacts per stage of every lifecycle in a snapshot."""
    counts: dict[str, int] = {}
    for contact in view.values():
        for lifecycle, stage in contact["stages"].items():
            label = (
                f"{lifecycle}:{stage['stage'] if isinstance(stage, dict) else stage}"
            )
            counts[label] = counts.get(label, 0) + 1
    return counts
