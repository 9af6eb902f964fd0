"""The retry policy and the request budget, on their own."""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from consumer.errors import ConfigError, CrispQuotaExceeded, CrispUnavailable
from consumer.ratelimit import RedisDailyCounter, RequestBudget, RetryPolicy


class FakeTime:
    """A clock that only moves when someone sleeps, for exact spacing checks."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_retry_delays_stay_within_the_growing_capped_ceiling() -> None:
    """Every delay is between 0 and base*multiplier**(n-1), never above cap."""
    policy = RetryPolicy(base_s=0.5, cap_s=30.0, multiplier=2.0, rng=random.Random(7))
    assert [policy.ceiling_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.ceiling_s(7) == 30.0
    assert policy.ceiling_s(10_000) == 30.0  # no overflow on a long outage
    for attempt in range(1, 60):
        for _ in range(50):
            delay = policy.delay_s(attempt)
            assert 0.0 <= delay <= policy.ceiling_s(attempt)


def test_retry_delays_are_jittered() -> None:
    """Full jitter: delays for one attempt spread over the range, not one value."""
    policy = RetryPolicy(base_s=1.0, cap_s=60.0, rng=random.Random(1))
    delays = [policy.delay_s(5) for _ in range(200)]
    assert len(set(delays)) > 150
    assert min(delays) < 4.0 < 12.0 < max(delays)  # the ceiling is 16


def test_retry_after_from_the_server_is_a_floor() -> None:
    """A Retry-After longer than the drawn delay wins, even above the cap."""
    policy = RetryPolicy(base_s=1.0, cap_s=10.0, rng=random.Random(3))
    assert policy.delay_s(1, retry_after_s=42.0) == 42.0
    assert policy.delay_s(1, retry_after_s=0.0) <= 1.0


def test_retry_policy_refuses_nonsense() -> None:
    """A cap below the base or a shrinking multiplier is a configuration error."""
    with pytest.raises(ConfigError):
        RetryPolicy(base_s=5.0, cap_s=1.0)
    with pytest.raises(ConfigError):
        RetryPolicy(multiplier=0.5)


def test_budget_enforces_the_daily_limit_and_resets_at_midnight_utc() -> None:
    """Three a day: the fourth is refused until the UTC date changes."""
    now = [datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)]
    budget = RequestBudget(3, max_rps=1000, utc_now=lambda: now[0])
    for _ in range(3):
        budget.acquire()
    assert budget.used_today == 3

    with pytest.raises(CrispQuotaExceeded) as caught:
        budget.acquire()
    assert caught.value.reason == "daily_budget_spent"
    assert caught.value.retry_after_s == pytest.approx(60.0)
    assert budget.used_today == 3

    now[0] += timedelta(minutes=2)
    assert budget.used_today == 0
    budget.acquire()
    assert budget.used_today == 1


def test_budget_spaces_requests_to_the_rps_cap() -> None:
    """At 4 per second, five requests wait 0, then 0.25 s each."""
    fake = FakeTime()
    budget = RequestBudget(100, max_rps=4, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        budget.acquire()
    assert fake.slept == pytest.approx([0.25, 0.25, 0.25, 0.25])


def test_budget_burst_allows_that_many_at_once() -> None:
    """With burst 3 the first three go at once, then the cap applies."""
    fake = FakeTime()
    budget = RequestBudget(100, max_rps=2, burst=3, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        budget.acquire()
    assert sum(fake.slept) == pytest.approx(1.0)


def test_budget_timeout_refuses_without_spending() -> None:
    """A caller that would wait past its timeout is refused and uses nothing."""
    fake = FakeTime()
    budget = RequestBudget(100, max_rps=1, clock=fake.clock, sleep=fake.sleep)
    budget.acquire()
    with pytest.raises(CrispUnavailable) as caught:
        budget.acquire(timeout_s=0.5)
    assert caught.value.reason == "local_rate_limit"
    assert budget.used_today == 1
    budget.acquire(timeout_s=1.0)  # the refused call reserved no slot
    assert fake.slept == pytest.approx([1.0])


def test_budget_holds_the_cap_across_threads() -> None:
    """Six threads at 25 per second: 18 grants take at least 17 intervals.

    A grant is recorded after its slot, never before, so both bounds below
    hold however late the scheduler runs a thread.
    """
    budget = RequestBudget(1000, max_rps=25)
    granted: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            budget.acquire(timeout_s=5)
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.monotonic() - started

    assert len(granted) == 18 and budget.used_today == 18
    assert elapsed_s >= 17 / 25
    early = sum(at - started < 0.3 for at in granted)
    assert early <= 8  # slots at 0, 40, ... 280 ms


@pytest.fixture
def redis_client(tmp_path: Path) -> Iterator[redis.Redis]:
    """A throwaway redis-server on a unix socket (no TCP port at all)."""
    server = shutil.which("redis-server")
    assert server, "redis-server is needed (Debian package redis-server)"
    socket = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [server, "--port", "0", "--unixsocket", str(socket), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(unix_socket_path=str(socket))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def test_redis_counter_shares_one_daily_budget(redis_client: redis.Redis) -> None:
    """Two processes' budgets on one Redis counter grant the limit in total."""
    first = RequestBudget(3, 1000, counter=RedisDailyCounter(redis_client, "t:b"))
    second = RequestBudget(3, 1000, counter=RedisDailyCounter(redis_client, "t:b"))
    first.acquire()
    second.acquire()
    first.acquire()
    with pytest.raises(CrispQuotaExceeded):
        second.acquire()
    assert first.used_today == second.used_today == 3
    day = datetime.now(UTC).date().isoformat()
    assert 0 < redis_client.ttl(f"t:b:{day}") <= 2 * 86_400
