"""Replay (issue 7): rebuild from the topic, equal to live, then switch."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis

from consumer.engine import decode_state, desired_crisp
from consumer.events import Event, format_time_ms
from consumer.outbox import NOTHING, encode_desired
from consumer.plan import load_plan
from consumer.sandbox import Sandbox
from consumer.store import Namespaces, Store
from tests.service.conftest import MakeEnv
from tests.service.harness import (
    DAY_MS,
    DEFAULT_PLAN,
    REPO,
    ServiceEnv,
    assert_same_states,
    expected_snapshot,
    high_watermarks,
    kill_hard,
    produce,
    snapshot,
    synthetic_events,
    wait_for_offsets,
)

OLD = int(time.time() * 1000) - 60 * DAY_MS


def replay(env: ServiceEnv, *args: str, timeout_s: float = 240) -> str:
    """Run ``crisp-lifecycle replay`` to the end; return what it printed."""
    return env.cli("replay", *args, timeout_s=timeout_s)


def crisp_settings(sandbox: Sandbox) -> dict[str, str]:
    """Settings that point the service at the sandbox, without limits."""
    return {
        "CRISP_BASE_URL": sandbox.url,
        "CRISP_WEBSITE_ID": sandbox.website_id,
        "CRISP_IDENTIFIER": "sandbox",
        "CRISP_KEY": "sandbox-key",
        "CRISP_MAX_RPS": "500",
        "CRISP_DAILY_BUDGET": "10000000",
    }


def test_replay_equals_live_including_timers(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """The rebuilt namespace equals the live one, timers included, and
    becomes the active namespace."""
    env = make_env()
    events = synthetic_events(200, 2000, seed=17, now_ms=OLD)
    produce(env.bootstrap, env.topic, events)
    env.run_until_caught_up()
    live = snapshot(redis_client, env.namespace)
    assert any(c["stages"]["customer"] == "retained_customer" for c in live.values()), (
        "the data must exercise the 30-day timer"
    )

    out = replay(env)
    new = Namespaces(redis_client, env.namespace).active()
    assert new != env.namespace and f"switched to {new}" in out
    assert_same_states(live, expected_snapshot(events))
    assert_same_states(snapshot(redis_client, new), live)
    assert "0 would change stage" in out


def test_replay_of_a_changed_plan_queues_exactly_the_crisp_removals(
    make_env: MakeEnv, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Under a stricter plan some customers no longer qualify: they move back,
    and only their profiles get a Crisp update, which removes the segment."""
    stricter = tmp_path / "strict.yaml"
    stricter.write_text(
        DEFAULT_PLAN.read_text().replace(
            "where: {amount: {gt: 0}}", "where: {amount: {gt: 60}}"
        )
    )
    with Sandbox(daily_quota=None) as sandbox:
        crisp = crisp_settings(sandbox)
        env = make_env(extra=crisp)
        events = synthetic_events(120, 1200, seed=29, now_ms=OLD)
        produce(env.bootstrap, env.topic, events)
        env.run_until_caught_up()
        before = snapshot(redis_client, env.namespace)
        writes_before = sandbox.count("PATCH /people/profile/{id}")

        # The live consumers run the default plan (LIFECYCLE_PLAN); the
        # replay builds under the stricter one, then they move to it.
        out = replay(env, "--plan", str(stricter))
        stricter_env = make_env(plan=stricter, extra=crisp)
        new = Namespaces(redis_client, env.namespace).active()
        after = snapshot(redis_client, new, stricter)
        assert_same_states(after, expected_snapshot(events, stricter))
        changed = {c for c in after if after[c]["stages"] != before[c]["stages"]}
        assert changed, "the stricter plan must move some contacts"
        emails = {e.contact_id: e.email for e in events if e.email}
        strict_plan = load_plan(stricter)
        live_store = Store(redis_client, env.namespace)
        new_store = Store(redis_client, new)
        differing = set()
        for contact_id in emails:
            sent = live_store.load_contact(contact_id).last_sent
            state = new_store.load_contact(contact_id).state
            assert state is not None
            desired = encode_desired(
                desired_crisp(strict_plan, decode_state(state, strict_plan))
            )
            if desired != (sent or NOTHING):
                differing.add(contact_id)
        assert {c for c in changed if c in emails} <= differing
        queued = int(out.split("; ")[-1].split()[0])
        assert queued == len(differing), "exactly the identified contacts whose "
        "desired Crisp state changed are queued"

        stricter_env.run_until_caught_up()
        writes = sandbox.count("PATCH /people/profile/{id}") - writes_before
        segment_moves = {c for c in changed if c in emails}
        assert writes == len(segment_moves)
        for contact_id in emails:
            profile = sandbox.profile(emails[contact_id])
            stage = after[contact_id]["stages"]["customer"]
            if stage is None:
                assert profile is None or profile["segments"] == [], contact_id
                continue
            assert profile is not None, contact_id
            assert profile["segments"] == [f"lifecycle:{stage}"], contact_id


def test_replay_killed_halfway_resumes_to_the_same_result(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """kill -9 during a replay; the same command resumes and ends equal."""
    env = make_env(extra={"LIFECYCLE_BATCH_SIZE": "50"})
    events = synthetic_events(300, 4000, seed=41, now_ms=OLD)
    produce(env.bootstrap, env.topic, events)
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer", "replay"],
        env=env.environ(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = Namespaces(redis_client, env.namespace)
    deadline = time.monotonic() + 60
    recorded: dict[str, str] = {}
    while time.monotonic() < deadline and not recorded:
        recorded = names.replay_in_progress()
        time.sleep(0.05)
    assert recorded.get("namespace"), "a replay records itself before it starts"
    totals = high_watermarks(env.bootstrap, env.topic)
    wait_for_offsets(redis_client, recorded["namespace"], env.topic, totals, part=0.2)
    kill_hard(process)
    assert names.replay_in_progress() == recorded, "killed halfway, not after"

    out = replay(env)
    new = Namespaces(redis_client, env.namespace).active()
    assert new == recorded["namespace"], out
    assert_same_states(snapshot(redis_client, new), expected_snapshot(events))
    assert names.replay_in_progress() == {}, "a finished replay forgets itself"


def test_replay_from_a_time_retires_the_contacts_it_no_longer_explains(
    make_env: MakeEnv, redis_client: redis.Redis
) -> None:
    """A contact whose every message is older than ``--from`` is in no stage
    after the replay: its managed segment leaves Crisp and its foreign one
    stays, while a contact the replay rebuilt as it was costs no request."""

    def order(contact: str, at_ms: int) -> Event:
        return Event(
            event_id=f"{contact}-order",
            contact_id=contact,
            name="Order:Completed",
            occurred_at_ms=at_ms,
            email=f"{contact}@example.com",
            properties={"amount": 25.0},
        )

    with Sandbox(daily_quota=None) as sandbox:
        sandbox.seed_profile("c-old@example.com", segments=["vip"])
        env = make_env(extra=crisp_settings(sandbox))
        # --from compares message timestamps, the time each was produced.
        produce(env.bootstrap, env.topic, [order("c-old", OLD - 15 * DAY_MS)])
        time.sleep(1)
        cut = int(time.time() * 1000)
        time.sleep(1)
        produce(env.bootstrap, env.topic, [order("c-new", OLD - 9 * DAY_MS)])
        env.run_until_caught_up()
        live = snapshot(redis_client, env.namespace)
        stage = live["c-old"]["stages"]["customer"]
        assert stage is not None
        assert sandbox.profile("c-old@example.com")["segments"] == [
            "vip",
            f"lifecycle:{stage}",
        ]
        writes_before = sandbox.count("PATCH /people/profile/{id}")

        out = replay(env, "--from", format_time_ms(cut))
        assert "1 live contacts have no events in the replayed range" in out, out
        assert out.rstrip().endswith("; 1 Crisp updates queued"), out
        new = Namespaces(redis_client, env.namespace).active()
        retired = Store(redis_client, new).load_contact("c-old")
        assert retired.state is None and retired.pending == NOTHING

        env.run_until_caught_up()
        assert sandbox.profile("c-old@example.com")["segments"] == ["vip"]
        assert sandbox.count("PATCH /people/profile/{id}") == writes_before + 1
        assert sandbox.profile("c-new@example.com")["segments"] == [
            f"lifecycle:{live['c-new']['stages']['customer']}"
        ]
        retired = Store(redis_client, new).load_contact("c-old")
        assert retired.pending is None and retired.last_sent == NOTHING

    # The commands read the namespace the base now points to.
    shown = json.loads(env.cli("contact", "show", "c-old", "--json"))
    assert shown["namespace"] == new and shown["stages"] == {}
    assert json.loads(env.cli("report", "--json"))["contacts"] == 1
