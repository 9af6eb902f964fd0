"""Crisp sync through real Kafka and Redis, against the sandbox (issue 5).

The consumer runs as a subprocess with its relay; the sandbox runs in this
process so that tests can seed profiles, switch faults and count requests.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer.events import Event
from consumer.sandbox import Sandbox
from consumer.store import Store
from tests.service.conftest import MakeEnv
from tests.service.harness import (
    DAY_MS,
    DEFAULT_PLAN,
    ServiceEnv,
    kill_hard,
    log_of,
    produce,
    synthetic_events,
)

NOW = int(time.time() * 1000)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A Crisp sandbox on a free loopback port, with no daily quota."""
    server = Sandbox(daily_quota=None)
    server.start()
    yield server
    server.stop()


def crisp_env(sandbox: Sandbox, **more: str) -> dict[str, str]:
    """Settings that point the service at the sandbox, fast limits."""
    return {
        "CRISP_BASE_URL": sandbox.url,
        "CRISP_WEBSITE_ID": sandbox.website_id,
        "CRISP_IDENTIFIER": "sandbox",
        "CRISP_KEY": "sandbox-key",
        "CRISP_MAX_RPS": "200",
        "CRISP_DAILY_BUDGET": "10000000",
        **more,
    }


def burst(contact: str, email: str | None, count: int, start_ms: int) -> list[Event]:
    """Events that walk one contact up the funnel, one second apart."""
    names = ["Page:Viewed", "Newsletter:Subscribed"] + ["Product:Viewed"] * 3
    events = []
    for index in range(count):
        name = names[index] if index < len(names) else "Page:Viewed"
        properties = {}
        if index == count - 1:
            name, properties = "Order:Completed", {"amount": 25.0}
        events.append(
            Event(
                event_id=f"{contact}-{index}",
                contact_id=contact,
                name=name,
                occurred_at_ms=start_ms + index * 1000,
                email=email,
                properties=properties,
            )
        )
    return events


def desired_segments(client: redis.Redis, env: ServiceEnv) -> dict[str, list[str]]:
    """Return the segments last sent per email, read from Redis."""
    import json

    store = Store(client, env.namespace)
    sent = {}
    for record in store.scan_contacts():
        if record.email and record.last_sent:
            sent[record.email] = json.loads(record.last_sent)["segments"]
    return sent


def test_burst_for_one_contact_costs_one_update_and_keeps_foreign_segments(
    make_env: MakeEnv, sandbox: Sandbox
) -> None:
    """50 events in the debounce window: one read, one segment PATCH, one data
    PATCH; segments set by people stay on the profile."""
    sandbox.seed_profile("ada@example.com", segments=["vip", "from-sales"])
    env = make_env(extra=crisp_env(sandbox))
    produce(env.bootstrap, env.topic, burst("c-ada", "ada@example.com", 50, NOW))
    env.run_until_caught_up()

    profile = sandbox.profile("ada@example.com")
    assert profile is not None
    assert sorted(profile["segments"]) == ["from-sales", "lifecycle:customer", "vip"]
    assert profile["data"]["lifecycle_stage"] == "customer"
    assert sandbox.count("GET /people/profile/{id}") == 1
    assert sandbox.count("PATCH /people/profile/{id}") == 1
    assert sandbox.count("PATCH /people/data/{id}") == 1
    assert sandbox.count("POST /people/profile") == 0


def test_final_profiles_equal_desired_states_after_faults(
    make_env: MakeEnv, sandbox: Sandbox, redis_client: redis.Redis
) -> None:
    """429 bursts, HTML 5xx and a spent quota delay updates but lose none:
    every identified contact's profile ends with exactly its stage segment."""
    sandbox.set_faults(rate_limit_burst=5, html_5xx=5)
    env = make_env(extra=crisp_env(sandbox, CRISP_QUOTA_PAUSE_S="3"))
    events = synthetic_events(60, 400, seed=3, now_ms=NOW - 60 * DAY_MS)
    produce(env.bootstrap, env.topic, events)
    process = env.start()
    try:
        time.sleep(8)
        sandbox.set_faults(quota_exhausted=True)
        time.sleep(4)
        sandbox.set_faults(quota_exhausted=False)
        deadline = time.monotonic() + 120
        store = Store(redis_client, env.namespace)
        while time.monotonic() < deadline:
            depth, _ = store.index_depth(
                store.outbox_key(env.topic, p) for p in range(3)
            )
            if depth == 0 and store.scan_contacts():
                break
            time.sleep(1)
        env_log = log_of(process)
    finally:
        process.terminate()
        assert process.wait(60) == 0

    sent = desired_segments(redis_client, env)
    identified = {e.email for e in events if e.email}
    assert identified - set(sent) == {
        email for email in identified if not sandbox.profile(email)
    }, "an identified contact is synced unless it is in no stage"
    assert len(sent) > 10
    for email, segments in sent.items():
        profile = sandbox.profile(email)
        assert profile is not None, email
        assert sorted(profile["segments"]) == sorted(segments)
        assert len(segments) == 1 and segments[0].startswith("lifecycle:")
    assert "crisp_update_retry" in env_log
    assert "crisp_quota_exhausted" in env_log or "quota" in env_log
    assert "@" not in env_log, "emails must never reach the log"


def test_pending_updates_survive_a_kill(make_env: MakeEnv, sandbox: Sandbox) -> None:
    """Killed with updates pending (debounce not yet due): a restart sends
    them."""
    env = make_env(extra=crisp_env(sandbox))
    produce(env.bootstrap, env.topic, burst("c-bob", "bob@example.com", 5, NOW))
    process = env.start()
    store_wait = time.monotonic() + 30
    while time.monotonic() < store_wait and "batch" not in log_of(process):
        if "stage_changed" in log_of(process):
            break
        time.sleep(0.2)
    kill_hard(process)
    assert sandbox.profile("bob@example.com") is None, "debounce must hold it"
    env.run_until_caught_up()
    profile = sandbox.profile("bob@example.com")
    assert profile is not None
    assert profile["segments"] == ["lifecycle:customer"]


def test_crisp_hanging_longer_than_max_poll_interval_keeps_the_partitions(
    make_env: MakeEnv, sandbox: Sandbox
) -> None:
    """Crisp hangs past max.poll.interval.ms: the poll loop goes on, keeps
    its partitions, and the updates land once Crisp answers again."""
    env = make_env(
        extra=crisp_env(
            sandbox,
            CRISP_TIMEOUT_S="30",
            LIFECYCLE_KAFKA_MAX_POLL_INTERVAL_MS="7000",
        )
    )
    sandbox.set_faults(hang_s=15)
    produce(env.bootstrap, env.topic, burst("c-eve", "eve@example.com", 5, NOW))
    process = env.start()
    try:
        time.sleep(14)
        produce(env.bootstrap, env.topic, burst("c-joe", "joe@example.com", 5, NOW + 9))
        sandbox.set_faults(hang_s=0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sandbox.profile("joe@example.com") and sandbox.profile(
                "eve@example.com"
            ):
                break
            time.sleep(0.5)
        log = log_of(process)
    finally:
        process.terminate()
        process.wait(60)
    assert sandbox.profile("eve@example.com") is not None
    assert sandbox.profile("joe@example.com") is not None
    assert "partitions_lost" not in log
    assert log.count("partitions_revoked") <= 1  # only the final drain


def health_port(log: str) -> int:
    """Return the port a consumer's health server listens on, from its log."""
    for line in log.splitlines():
        if '"health_listening"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError("no health_listening line in the log")


def test_refused_updates_are_parked_listed_and_sent_after_a_retry(
    make_env: MakeEnv, sandbox: Sandbox
) -> None:
    """Crisp refuses the key: the update is parked with its reason, health
    fails, `outbox list --parked` shows it; `outbox retry` and a run with the
    right key send it."""
    refused = make_env(extra=crisp_env(sandbox, CRISP_KEY="not-the-key"))
    produce(refused.bootstrap, refused.topic, burst("c-ann", "ann@example.com", 5, NOW))
    process = refused.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "crisp_update_parked" in log_of(process):
                break
            time.sleep(0.2)
        log = log_of(process)
        assert "crisp_update_parked" in log, log[-3000:]
        base = f"http://127.0.0.1:{health_port(log)}"
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
        assert answer.value.code == 503
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert 'lifecycle_events_total{outcome="applied"} 5.0' in metrics
        assert 'lifecycle_crisp_syncs_total{result="parked"} 1.0' in metrics
        assert 'lifecycle_crisp_requests_total{status="401"}' in metrics
    finally:
        process.terminate()
        assert process.wait(60) == 0
    assert "ann@example.com" not in log and "not-the-key" not in log

    parked = json.loads(refused.cli("outbox", "list", "--parked", "--json"))
    assert [row["contact_id"] for row in parked] == ["c-ann"]
    assert "401" in parked[0]["reason"]
    assert parked[0]["pending"]["segments"] == ["lifecycle:customer"]
    assert sandbox.profile("ann@example.com") is None

    assert refused.cli("outbox", "retry").strip() == "1 requeued"
    fixed = dataclasses.replace(refused, extra=crisp_env(sandbox))
    fixed.run_until_caught_up()
    profile = sandbox.profile("ann@example.com")
    assert profile is not None and profile["segments"] == ["lifecycle:customer"]
    assert json.loads(fixed.cli("outbox", "list", "--parked", "--json")) == []


def test_dry_run_holds_back_contacts_without_identity_as_a_real_run_does(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """Without credentials the relay logs what it would send, but only for
    contacts a real run could address; the others wait for an email."""
    env = make_env()
    produce(
        env.bootstrap,
        env.topic,
        burst("c-known", "known@example.com", 5, NOW) + burst("c-anon", None, 5, NOW),
    )
    log = env.run_until_caught_up()
    store = Store(redis_client, env.namespace)
    known, anon = store.load_contact("c-known"), store.load_contact("c-anon")
    assert known.last_sent_dry_run is not None and known.pending is None
    assert anon.last_sent_dry_run is None and anon.pending is not None
    assert log.count('"crisp_update_dry_run"') == 1

    later = Event(
        "anon-email", "c-anon", "Page:Viewed", NOW + 60_000, "anon@example.com"
    )
    produce(env.bootstrap, env.topic, [later])
    log = env.run_until_caught_up()
    anon = store.load_contact("c-anon")
    assert anon.last_sent_dry_run == known.last_sent_dry_run
    assert anon.pending is None
    assert "@" not in log


def test_an_update_crisp_cannot_take_is_parked_once_not_retried_forever(
    make_env: MakeEnv, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Two valid orders of 1e308 make an infinite sum, which no JSON body can
    carry: the update is parked with the reason after one attempt, instead of
    spending the daily budget in a loop."""
    plan = tmp_path / "totals.yaml"
    plan.write_text(
        DEFAULT_PLAN.read_text().replace(
            '        lifecycle_stage_since: "{stage_since}"\n',
            '        lifecycle_stage_since: "{stage_since}"\n'
            '        spent: "{sum:Order:Completed:amount}"\n',
        )
    )
    env = make_env(plan=plan, extra=crisp_env(sandbox))
    orders = [
        Event(f"big-{n}", "c-big", "Order:Completed", NOW + n, "big@example.com")
        for n in range(2)
    ]
    orders = [dataclasses.replace(o, properties={"amount": 1e308}) for o in orders]
    produce(env.bootstrap, env.topic, orders)
    log = env.run_until_caught_up(timeout_s=90)
    assert log.count('"relay_entry_failed"') == 1
    parked = json.loads(env.cli("outbox", "list", "--parked", "--json"))
    assert [row["contact_id"] for row in parked] == ["c-big"]
    assert "not JSON compliant" in parked[0]["reason"]
    assert "big@example.com" not in log
