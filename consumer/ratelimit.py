"""How often and how much the service may call Crisp.

Two small objects, both passed in rather than built where they are used:

- `RetryPolicy` says how long to wait before the next attempt after a
  retryable failure: exponential growth from ``base_s`` by ``multiplier``,
  capped at ``cap_s``, with full jitter (a uniform draw between zero and the
  ceiling) so that many pending updates do not retry in step.
- `RequestBudget` guards the scarce resource, Crisp's daily request quota. It
  counts the requests granted per UTC day against ``daily_limit`` and spaces
  them to at most ``max_rps`` per second. `RequestBudget.acquire` blocks until
  a request may go, raises `CrispUnavailable` when that would take longer than
  the timeout, and `CrispQuotaExceeded` once the day's budget is spent.

Both are thread-safe. The daily count lives in a `DailyCounter`: the default
`MemoryDailyCounter` is per process, so several consumer processes each spend
their own ``daily_limit`` (the operator divides the quota between them) unless
they share a `RedisDailyCounter`, which keeps one count per UTC day in Redis
with ``INCR``. The requests-per-second cap is always per process.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import redis

from consumer.errors import ConfigError, CrispQuotaExceeded, CrispUnavailable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter.

    Attempt 1 (the first retry) waits up to ``base_s``, attempt 2 up to
    ``base_s * multiplier`` and so on, never more than ``cap_s``; the actual
    delay is drawn uniformly below that ceiling. A ``retry_after_s`` that the
    server sent is honoured as a floor, even above the cap: the server knows.
    """

    base_s: float = 1.0
    cap_s: float = 300.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or self.multiplier < 1:
            raise ConfigError(
                "RetryPolicy needs 0 < base_s <= cap_s and multiplier >= 1"
            )

    def ceiling_s(self, attempt: int) -> float:
        """Return the longest delay for ``attempt`` (1 for the first retry)."""
        exponent = max(attempt, 1) - 1
        # Compare logarithms first: a large attempt would overflow the power.
        if exponent * math.log(self.multiplier) >= math.log(self.cap_s / self.base_s):
            return self.cap_s
        return self.base_s * self.multiplier**exponent

    def delay_s(self, attempt: int, *, retry_after_s: float | None = None) -> float:
        """Return how long to wait before ``attempt`` (1 for the first retry)."""
        delay = self.rng.uniform(0.0, self.ceiling_s(attempt))
        if retry_after_s is not None and retry_after_s > delay:
            return retry_after_s
        return delay


class DailyCounter(Protocol):
    """Where the requests of one UTC day are counted."""

    def incr(self, day: str) -> int:
        """Count one request on ``day`` (``YYYY-MM-DD``); return the new total."""
        ...

    def decr(self, day: str) -> None:
        """Take back one request counted on ``day`` but not sent."""
        ...

    def get(self, day: str) -> int:
        """Return the requests counted on ``day``."""
        ...


class MemoryDailyCounter:
    """Count in this process only; keeps today and yesterday at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def incr(self, day: str) -> int:
        with self._lock:
            for old in [key for key in self._counts if key < day]:
                del self._counts[old]
            self._counts[day] = self._counts.get(day, 0) + 1
            return self._counts[day]

    def decr(self, day: str) -> None:
        with self._lock:
            if self._counts.get(day, 0) > 0:
                self._counts[day] -= 1

    def get(self, day: str) -> int:
        with self._lock:
            return self._counts.get(day, 0)


class RedisDailyCounter:
    """Share one daily count between processes: ``INCR`` on a key per day.

    The key is ``{key_prefix}:{day}`` and expires two days after its first
    request, so old days clean themselves up. One key per call, so it works
    unchanged on Redis Cluster. Redis errors surface as `CrispUnavailable`
    (the request is not sent; the update stays pending).
    """

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self._client = client
        self._key_prefix = key_prefix

    def _key(self, day: str) -> str:
        return f"{self._key_prefix}:{day}"

    def incr(self, day: str) -> int:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.incr(self._key(day))
            pipe.expire(self._key(day), 2 * 86_400, nx=True)
            total, _ = pipe.execute()
        except redis.RedisError as exc:
            raise CrispUnavailable(
                "request budget counter unavailable", reason="budget_unavailable"
            ) from exc
        return int(total)

    def decr(self, day: str) -> None:
        try:
            self._client.decr(self._key(day))
        except redis.RedisError as exc:
            raise CrispUnavailable(
                "request budget counter unavailable", reason="budget_unavailable"
            ) from exc

    def get(self, day: str) -> int:
        try:
            raw = self._client.get(self._key(day))
        except redis.RedisError as exc:
            raise CrispUnavailable(
                "request budget counter unavailable", reason="budget_unavailable"
            ) from exc
        return int(raw) if raw is not None else 0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RequestBudget:
    """A daily request limit plus a requests-per-second cap, thread-safe.

    The per-second cap is a token bucket holding ``burst`` tokens (1 by
    default: requests are spaced ``1 / max_rps`` apart). Waiting happens
    outside the lock, and each caller reserves its slot before it sleeps, so
    callers are served in arrival order and never more than the cap.
    """

    def __init__(
        self,
        daily_limit: int,
        max_rps: float,
        *,
        burst: int = 1,
        counter: DailyCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        utc_now: Callable[[], datetime] = _utc_now,
    ) -> None:
        if daily_limit < 0 or max_rps <= 0 or burst < 1:
            raise ConfigError(
                "RequestBudget needs daily_limit >= 0, max_rps > 0, burst >= 1"
            )
        self.daily_limit = daily_limit
        self.max_rps = max_rps
        self._interval_s = 1.0 / max_rps
        self._burst = burst
        self._counter: DailyCounter = counter or MemoryDailyCounter()
        self._clock = clock
        self._sleep = sleep
        self._utc_now = utc_now
        self._lock = threading.Lock()
        # The time at which the bucket would be full again if nobody asked.
        self._full_at = clock()

    @property
    def used_today(self) -> int:
        """Return the requests granted since midnight UTC."""
        return self._counter.get(self._today())

    def _today(self) -> str:
        return self._utc_now().date().isoformat()

    def _seconds_to_midnight(self) -> float:
        now = self._utc_now()
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
        return (midnight.replace(tzinfo=UTC) - now).total_seconds()

    def acquire(self, timeout_s: float | None = None) -> None:
        """Block until one request may go now, and count it against today.

        Raises `CrispUnavailable` (reason ``local_rate_limit``) when the
        per-second cap would make the caller wait longer than ``timeout_s``,
        and `CrispQuotaExceeded` (reason ``daily_budget_spent``, with the
        seconds until midnight UTC as ``retry_after_s``) when today's budget
        is spent. A refused call uses up nothing.
        """
        day = self._today()
        if self._counter.get(day) >= self.daily_limit:
            self._raise_spent()
        wait_s = self._reserve_slot(timeout_s)
        if wait_s > 0:
            self._sleep(wait_s)
        if self._counter.incr(day) > self.daily_limit:
            self._counter.decr(day)
            self._raise_spent()

    def _reserve_slot(self, timeout_s: float | None) -> float:
        with self._lock:
            now = self._clock()
            full_at = max(self._full_at, now)
            # A slot is free once the bucket is at most burst-1 intervals
            # short of full; that is when this caller may send.
            send_at = max(now, full_at - (self._burst - 1) * self._interval_s)
            wait_s = send_at - now
            if timeout_s is not None and wait_s > timeout_s:
                raise CrispUnavailable(
                    "request rate cap reached", reason="local_rate_limit"
                )
            self._full_at = full_at + self._interval_s
            return wait_s

    def _raise_spent(self) -> None:
        raise CrispQuotaExceeded(
            f"daily request budget of {self.daily_limit} spent",
            reason="daily_budget_spent",
            retry_after_s=self._seconds_to_midnight(),
        )
