"""The Crisp REST API client: the one module that knows the Crisp protocol.

`CrispClient.sync_profile` is what the outbox relay calls: it brings one
contact's Crisp profile to the desired segments and custom data with as few
requests as the contract allows, and answers with a `SyncResult` that says
what happened, how many requests it used and the `SentState` to store.

Every failure leaves this module as an error of `consumer.errors`, decided on
the answer's ``reason`` as well as its status:

====================================================  =====================
what Crisp answered                                   raised
====================================================  =====================
423, or reason ``quota_limit_exceeded``               `CrispQuotaExceeded`
401, 403, or reason ``not_allowed``                   `CrispAuthError`
429, 420, 5xx, timeout, connection error,             `CrispUnavailable`
a body that is not a JSON envelope (HTML)
422 without reason ``invalid_data``                   `CrispUnavailable`
400 ``invalid_data`` and any other 4xx                `CrispRejected`
====================================================  =====================

404 ``people_not_found`` and ``people_exists`` are not errors here: the sync
handles them (create the profile, or read it by email).

One client serves many threads: the underlying `httpx.Client` is opened on
first use under a lock, its connection pool is sized for the relay's
concurrency, and per-call state lives on the stack. Emails and the key never
reach a log line or an error message; requests are logged by route template.

Limits, as the contract leaves them: the profile read can be served from a
cache (``Bloom-Status: HIT``) and lag a recent write by someone else, so a
foreign segment added seconds before a sync may be missed by that sync's
merge. A custom data key that leaves the plan stays on the profile: PATCH
merges keys and Crisp takes no null to delete one.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx
import structlog

from consumer import __version__
from consumer.errors import (
    ConfigError,
    CrispAuthError,
    CrispQuotaExceeded,
    CrispRejected,
    CrispUnavailable,
    LifecycleError,
)
from consumer.health import CRISP_CALLS
from consumer.ratelimit import RequestBudget

if TYPE_CHECKING:
    from consumer.settings import Settings

log = structlog.get_logger(__name__)

DataValue = str | int | float | bool

#: How much of an error body travels in `CrispRejected` and `CrispAuthError`.
BODY_LIMIT = 500


class DesiredState(Protocol):
    """What the engine wants on a profile (`consumer.engine.DesiredCrisp`)."""

    @property
    def segments(self) -> tuple[str, ...]: ...

    @property
    def data(self) -> Mapping[str, DataValue]: ...


@dataclass(frozen=True, slots=True)
class ProfileTarget:
    """How to find a contact's profile: its people id, else its email."""

    email: str | None
    people_id: str | None

    @property
    def address(self) -> str | None:
        """Return the path segment that names the profile, percent-encoded."""
        if self.people_id:
            return quote(self.people_id, safe="")
        if self.email:
            return quote(self.email, safe="")
        return None


@dataclass(frozen=True, slots=True, eq=False)
class SentState:
    """The segments and data last written successfully, as stored in Redis.

    Segments are de-duplicated, without empty strings, and sorted, and data
    keys sorted, so two states compare equal exactly when Crisp would hold the
    same thing; a boolean and the number 1 differ, as they do in JSON.
    """

    segments: tuple[str, ...]
    data: Mapping[str, DataValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        normal = tuple(sorted(_clean_segments(self.segments)))
        object.__setattr__(self, "segments", normal)
        object.__setattr__(self, "data", dict(sorted(self.data.items())))

    @classmethod
    def of(cls, desired: DesiredState) -> SentState:
        """Return the normalised state that ``desired`` asks for."""
        return cls(tuple(desired.segments), desired.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SentState):
            return NotImplemented
        return self.segments == other.segments and _typed(self.data) == _typed(
            other.data
        )

    def __hash__(self) -> int:
        return hash((self.segments, frozenset(_typed(self.data).items())))

    def to_json(self) -> str:
        """Return the compact JSON form stored beside the contact."""
        return json.dumps(
            {"segments": list(self.segments), "data": dict(self.data)},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> SentState:
        """Read what `to_json` wrote; raise `ValueError` on anything else."""
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("a sent state is a JSON object")
        segments = value.get("segments", [])
        data = value.get("data", {})
        if not isinstance(segments, list) or not all(
            isinstance(item, str) for item in segments
        ):
            raise ValueError("sent state segments must be a list of strings")
        if not isinstance(data, dict) or not all(
            isinstance(item, str | int | float) for item in data.values()
        ):
            raise ValueError("sent state data must map keys to scalars")
        return cls(tuple(segments), data)


class SyncOutcome(StrEnum):
    """What `CrispClient.sync_profile` did."""

    SKIPPED = "skipped"  # desired equals last sent: no request
    SYNCED = "synced"  # the profile now holds the desired state
    CREATED = "created"  # the profile was created, then written
    WAITING_FOR_IDENTITY = "waiting_for_identity"  # no email, no people id
    NOT_FOUND = "not_found"  # no profile, and none may be created


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The answer of one sync.

    ``sent`` is what to store as the last sent state: the desired state after
    SYNCED or CREATED, otherwise the ``last_sent`` passed in, unchanged.
    ``people_id`` is the profile's id when known (learned from a read or a
    create); store it when it differs from the target's.
    """

    outcome: SyncOutcome
    sent: SentState | None
    people_id: str | None
    requests: int
    segments_written: bool = False
    data_written: bool = False
    detail: str = ""

    @property
    def delivered(self) -> bool:
        """True when the profile holds the desired state (or already did)."""
        return self.outcome in {
            SyncOutcome.SKIPPED,
            SyncOutcome.SYNCED,
            SyncOutcome.CREATED,
        }


@dataclass(frozen=True, slots=True)
class Profile:
    """The part of a people profile the sync needs."""

    people_id: str | None
    segments: tuple[str, ...]
    cache: str | None  # the Bloom-Status header: MISS, HIT, DIRECT, OFFLINE


def merge_segments(
    current: Iterable[str], wanted: Iterable[str], managed: Collection[str]
) -> list[str]:
    """Return the profile's new segment list.

    Foreign segments (not in ``managed``) stay where they are; managed ones
    that are not wanted go; wanted ones missing are appended in the order
    given. Duplicates and empty strings are dropped.
    """
    wanted_list = _clean_segments(wanted)
    wanted_set = set(wanted_list)
    merged: list[str] = []
    for segment in _clean_segments(current):
        if segment in managed and segment not in wanted_set:
            continue
        merged.append(segment)
    seen = set(merged)
    merged.extend(segment for segment in wanted_list if segment not in seen)
    return merged


def _clean_segments(segments: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(segment for segment in segments if segment))


def _typed(data: Mapping[str, DataValue]) -> dict[str, tuple[str, DataValue]]:
    return {key: (type(value).__name__, value) for key, value in data.items()}


def _data_to_write(wanted: SentState, last_sent: SentState | None) -> bool:
    """True when a key of ``wanted`` is new or has a new value.

    A key that merely left the plan is no reason to write: PATCH merges, so
    sending the others again would change nothing.
    """
    before = _typed(last_sent.data) if last_sent is not None else {}
    return any(before.get(key) != value for key, value in _typed(wanted.data).items())


@dataclass(frozen=True, slots=True)
class _Answer:
    """Crisp's JSON envelope: ``{"error": ..., "reason": ..., "data": ...}``."""

    error: bool
    reason: str | None
    data: Any
    headers: httpx.Headers


class CrispClient:
    """A thread-safe client for one Crisp website and token.

    The constructor does no I/O; the HTTP connection pool opens on the first
    request. Use it as a context manager or call `close`. Each request first
    takes a slot from the `RequestBudget`, if one is given, waiting at most
    ``budget_wait_s``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        website_id: str,
        identifier: str,
        key: str,
        tier: str = "plugin",
        timeout_s: float = 10.0,
        budget: RequestBudget | None = None,
        budget_wait_s: float = 30.0,
        max_connections: int = 4,
    ) -> None:
        if not (base_url and website_id and identifier and key):
            raise ConfigError("Crisp needs a base URL, website id, identifier and key")
        if tier not in {"plugin", "website"}:
            raise ConfigError(f"Crisp tier must be plugin or website, not {tier!r}")
        self._website_url = (
            f"{base_url.rstrip('/')}/website/{quote(website_id, safe='')}"
        )
        self._auth = httpx.BasicAuth(identifier, key)
        self._tier = tier
        self._timeout = httpx.Timeout(timeout_s)
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
        )
        self.budget = budget
        self._budget_wait_s = budget_wait_s
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, budget: RequestBudget | None = None
    ) -> CrispClient:
        """Build the client (and, unless given, its budget) from settings."""
        if budget is None:
            budget = RequestBudget(settings.crisp_daily_budget, settings.crisp_max_rps)
        return cls(
            base_url=settings.crisp_base_url,
            website_id=settings.crisp_website_id,
            identifier=settings.crisp_identifier,
            key=settings.crisp_key,
            tier=settings.crisp_tier,
            timeout_s=settings.crisp_timeout_s,
            budget=budget,
            max_connections=settings.crisp_concurrency,
        )

    def __repr__(self) -> str:
        return f"CrispClient({self._website_url!r}, tier={self._tier!r})"

    def __enter__(self) -> CrispClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; a later request opens a new one."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(
                    auth=self._auth,
                    timeout=self._timeout,
                    limits=self._limits,
                    headers={
                        "Accept": "application/json",
                        "User-Agent": f"crisp-lifecycle/{__version__} "
                        f"(lifecycle segment sync; httpx/{httpx.__version__})",
                        "X-Crisp-Tier": self._tier,
                    },
                )
            return self._http

    # -- the high-level operation -------------------------------------------

    def sync_profile(
        self,
        target: ProfileTarget,
        desired: DesiredState,
        last_sent: SentState | None,
        managed_segments: frozenset[str],
        create_profiles: bool,
    ) -> SyncResult:
        """Bring one profile to ``desired``; see the module docstring.

        Spends no request when ``desired`` equals ``last_sent``. A segment
        change costs one read and at most one ``PATCH`` of the whole list;
        custom data costs one ``PATCH`` and only when it changed. A missing
        profile is created (``POST``, with the segments) when the contact has
        an email and ``create_profiles`` allows it. Segments in
        ``managed_segments`` or in ``last_sent`` that are no longer desired
        are removed; every other segment on the profile stays.
        """
        wanted = SentState.of(desired)
        if last_sent is not None and last_sent == wanted:
            return SyncResult(SyncOutcome.SKIPPED, last_sent, target.people_id, 0)
        if target.address is None:
            return SyncResult(
                SyncOutcome.WAITING_FOR_IDENTITY,
                last_sent,
                None,
                0,
                detail="contact has neither email nor people id",
            )
        removable = set(managed_segments)
        if last_sent is not None:
            removable.update(last_sent.segments)
        run = _ProfileSync(
            client=self,
            target=target,
            wanted=wanted,
            wanted_order=_clean_segments(desired.segments),
            removable=frozenset(removable),
            create_profiles=create_profiles,
            people_id=target.people_id,
        )
        return run.run(
            segments_changed=last_sent is None or last_sent.segments != wanted.segments,
            data_changed=_data_to_write(wanted, last_sent),
            last_sent=last_sent,
        )

    # -- one request per method ---------------------------------------------

    def get_profile(self, address: str) -> Profile | None:
        """Read a profile; None when Crisp answers ``people_not_found``."""
        answer = self._request(
            "GET", "profile.read", f"/people/profile/{address}", found=True
        )
        if answer is None:
            return None
        data = answer.data if isinstance(answer.data, dict) else {}
        segments = data.get("segments") or []
        if not isinstance(segments, list):
            raise CrispUnavailable(
                "Crisp profile.read answered segments that are not a list",
                reason="malformed_answer",
            )
        people_id = data.get("people_id")
        return Profile(
            people_id=people_id if isinstance(people_id, str) else None,
            segments=tuple(str(item) for item in segments),
            cache=answer.headers.get("Bloom-Status"),
        )

    def create_profile(
        self, email: str, segments: Sequence[str], nickname: str | None = None
    ) -> str | None:
        """Create a profile; return its people id, None if the email exists."""
        body = {
            "email": email,
            "person": {"nickname": nickname or email.split("@", 1)[0]},
            "segments": list(segments),
        }
        answer = self._request(
            "POST", "profile.create", "/people/profile", body, exists=True
        )
        if answer is None:
            return None
        people_id = (
            answer.data.get("people_id") if isinstance(answer.data, dict) else None
        )
        if not isinstance(people_id, str) or not people_id:
            raise CrispUnavailable(
                "Crisp profile.create answered without a people id",
                reason="malformed_answer",
            )
        return people_id

    def update_segments(self, address: str, segments: Sequence[str]) -> bool:
        """Replace the profile's segment list as given; False if not found."""
        answer = self._request(
            "PATCH",
            "profile.update",
            f"/people/profile/{address}",
            {"segments": list(segments)},
            found=True,
        )
        return answer is not None

    def update_data(self, address: str, data: Mapping[str, DataValue]) -> bool:
        """Merge ``data`` into the profile's custom data; False if not found."""
        answer = self._request(
            "PATCH",
            "data.update",
            f"/people/data/{address}",
            {"data": dict(data)},
            found=True,
        )
        return answer is not None

    def _request(
        self,
        method: str,
        route: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        found: bool = False,
        exists: bool = False,
    ) -> _Answer | None:
        """Send one request; None for a tolerated not-found or exists answer.

        ``route`` names the operation in logs and errors, never the path,
        which may hold an email.
        """
        if self.budget is not None:
            self.budget.acquire(self._budget_wait_s)
        started = time.monotonic()
        try:
            response = self._client().request(
                method, self._website_url + path, json=body
            )
        except httpx.TimeoutException as exc:
            CRISP_CALLS.labels("timeout").inc()
            log.debug("crisp_request_failed", route=route, error="timeout")
            raise CrispUnavailable(
                f"Crisp {route} timed out", reason="timeout"
            ) from exc
        except httpx.TransportError as exc:
            CRISP_CALLS.labels("connection_error").inc()
            log.debug("crisp_request_failed", route=route, error=type(exc).__name__)
            raise CrispUnavailable(
                f"Crisp {route} connection failed: {type(exc).__name__}",
                reason="connection_error",
            ) from exc
        except httpx.HTTPError as exc:
            raise CrispUnavailable(
                f"Crisp {route} failed: {type(exc).__name__}", reason="http_error"
            ) from exc
        answer = _read_answer(response)
        CRISP_CALLS.labels(str(response.status_code)).inc()
        log.debug(
            "crisp_request",
            method=method,
            route=route,
            status=response.status_code,
            reason=answer.reason if answer else None,
            cache=response.headers.get("Bloom-Status"),
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if answer is not None and not answer.error and response.is_success:
            return answer
        if answer is not None and found and answer.reason == "people_not_found":
            return None
        if answer is not None and exists and answer.reason == "people_exists":
            return None
        raise _error_for(route, response, answer)


@dataclass(slots=True)
class _ProfileSync:
    """The state of one `CrispClient.sync_profile` call."""

    client: CrispClient
    target: ProfileTarget
    wanted: SentState
    wanted_order: list[str]
    removable: frozenset[str]
    create_profiles: bool
    people_id: str | None
    requests: int = 0
    created: bool = False
    segments_written: bool = False
    data_written: bool = False

    @property
    def address(self) -> str:
        if self.people_id:
            return quote(self.people_id, safe="")
        address = self.target.address
        assert address is not None  # sync_profile checked it
        return address

    def run(
        self, *, segments_changed: bool, data_changed: bool, last_sent: SentState | None
    ) -> SyncResult:
        if segments_changed:
            self.requests += 1
            profile = self.client.get_profile(self.address)
            if profile is None:
                missing = self._create(last_sent)
                if missing is not None:
                    return missing
            else:
                self._write_segments(profile)
        if data_changed:
            self.requests += 1
            if not self.client.update_data(self.address, self.wanted.data):
                if self.created:
                    raise _vanished("data.update")
                missing = self._create(last_sent)
                if missing is not None:
                    return missing
                self.requests += 1
                if not self.client.update_data(self.address, self.wanted.data):
                    raise _vanished("data.update")
            self.data_written = True
        return SyncResult(
            SyncOutcome.CREATED if self.created else SyncOutcome.SYNCED,
            self.wanted,
            self.people_id,
            self.requests,
            segments_written=self.segments_written,
            data_written=self.data_written,
        )

    def _write_segments(self, profile: Profile) -> None:
        if profile.people_id:
            self.people_id = profile.people_id
        merged = merge_segments(profile.segments, self.wanted_order, self.removable)
        if merged == list(profile.segments):
            return
        self.requests += 1
        if not self.client.update_segments(self.address, merged):
            raise _vanished("profile.update")
        self.segments_written = True

    def _create(self, last_sent: SentState | None) -> SyncResult | None:
        """Create the missing profile; a NOT_FOUND result if it may not be."""
        email = self.target.email
        if not email or not self.create_profiles:
            detail = "profile creation is off" if email else "no email to create"
            return SyncResult(
                SyncOutcome.NOT_FOUND,
                last_sent,
                self.target.people_id,
                self.requests,
                detail=f"people_not_found; {detail}",
            )
        self.requests += 1
        people_id = self.client.create_profile(email, self.wanted_order)
        if people_id is not None:
            self.people_id = people_id
            self.created = True
            self.segments_written = True
            return None
        # The email has a profile after all: the people id we held is stale
        # or the read came from a lagging cache. Read it by email and merge.
        self.requests += 1
        self.people_id = None
        profile = self.client.get_profile(quote(email, safe=""))
        if profile is None:
            raise CrispUnavailable(
                "Crisp says the profile exists but cannot find it",
                reason="people_exists",
            )
        self._write_segments(profile)
        return None


def _vanished(route: str) -> CrispUnavailable:
    # The profile was there a moment ago; the next attempt re-reads it and
    # creates it if it is really gone.
    return CrispUnavailable(
        f"Crisp {route}: profile vanished during the sync",
        status=404,
        reason="people_not_found",
    )


def _read_answer(response: httpx.Response) -> _Answer | None:
    """Parse Crisp's JSON envelope; None for HTML or any other body."""
    try:
        envelope = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        envelope = None
    if not isinstance(envelope, dict) or "error" not in envelope:
        return None
    reason = envelope.get("reason")
    return _Answer(
        error=envelope["error"] is not False,
        reason=reason if isinstance(reason, str) else None,
        data=envelope.get("data"),
        headers=response.headers,
    )


def _error_for(
    route: str, response: httpx.Response, answer: _Answer | None
) -> LifecycleError:
    status = response.status_code
    reason = answer.reason if answer is not None else None
    message = f"Crisp {route} answered {status}" + (f" {reason}" if reason else "")
    retry_after_s = _retry_after_s(response.headers.get("Retry-After"))
    body = response.text[:BODY_LIMIT] if response.content else ""
    if status == 423 or reason == "quota_limit_exceeded":
        return CrispQuotaExceeded(
            message, status=status, reason=reason, retry_after_s=retry_after_s
        )
    if status in {401, 403} or reason == "not_allowed":
        return CrispAuthError(message, status=status, body=body)
    retryable = (
        answer is None
        or status in {420, 429}
        or status >= 500
        or (status == 422 and reason != "invalid_data")
        or status < 400
    )
    if retryable:
        if answer is None:
            message += " with a body that is not JSON"
        return CrispUnavailable(
            message, status=status, reason=reason, retry_after_s=retry_after_s
        )
    return CrispRejected(message, status=status, body=body)


def _retry_after_s(value: str | None) -> float | None:
    """Read a Retry-After header: seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
