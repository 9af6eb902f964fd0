"""How the client translates Crisp's failures into the project's error tree."""

from __future__ import annotations

import pytest
import structlog
from structlog.testing import capture_logs

from consumer.crisp import CrispClient, ProfileTarget
from consumer.errors import (
    CrispAuthError,
    CrispQuotaExceeded,
    CrispRejected,
    CrispUnavailable,
    RetryableError,
)
from consumer.ratelimit import RequestBudget
from consumer.sandbox import Sandbox

from .support import MANAGED, Desired, make_client

EMAIL = "bob+ops@example.com"
TARGET = ProfileTarget(email=EMAIL, people_id=None)
DESIRED = Desired(("lifecycle:customer",), {"plan": "pro"})


def sync(client: CrispClient) -> None:
    client.sync_profile(TARGET, DESIRED, None, MANAGED, True)


@pytest.mark.parametrize("status", [429, 420])
def test_rate_limits_are_retryable(
    sandbox: Sandbox, client: CrispClient, status: int
) -> None:
    """429 and 420 raise CrispUnavailable carrying the status and Retry-After."""
    sandbox.set_faults(
        rate_limit_burst=1, rate_limit_status=status, rate_limit_retry_after_s=7
    )

    with pytest.raises(CrispUnavailable) as caught:
        sync(client)

    assert type(caught.value) is CrispUnavailable
    assert caught.value.status == status
    assert caught.value.retry_after_s == 7.0


def test_a_burst_ends_and_the_next_attempt_succeeds(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """The sandbox's 429 burst is finite; after it the same sync goes through."""
    sandbox.set_faults(rate_limit_burst=2)
    for _ in range(2):
        with pytest.raises(CrispUnavailable):
            sync(client)

    sync(client)

    assert sandbox.profile(EMAIL) is not None


def test_422_is_retryable_unless_the_reason_is_invalid_data(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """422 means reschedule; 422 invalid_data is decided on the reason."""
    sandbox.set_faults(fail_next=[{"status": 422, "reason": "route_busy"}])
    with pytest.raises(CrispUnavailable) as caught:
        sync(client)
    assert caught.value.status == 422

    sandbox.set_faults(fail_next=[{"status": 422, "reason": "invalid_data"}])
    with pytest.raises(CrispRejected) as rejected:
        sync(client)
    assert rejected.value.status == 422


def test_html_5xx_is_retryable_and_never_crashes(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """A 502 HTML page from an edge proxy raises CrispUnavailable, status kept."""
    sandbox.set_faults(html_5xx=1)

    with pytest.raises(CrispUnavailable) as caught:
        sync(client)

    assert caught.value.status == 502
    assert caught.value.reason is None
    assert "not JSON" in str(caught.value)


def test_json_5xx_is_retryable(sandbox: Sandbox, client: CrispClient) -> None:
    """A 503 with Crisp's envelope is retryable too."""
    sandbox.set_faults(fail_next=[{"status": 503, "reason": "service_unavailable"}])
    with pytest.raises(CrispUnavailable) as caught:
        sync(client)
    assert caught.value.status == 503


def test_slow_answer_times_out_as_unavailable(sandbox: Sandbox) -> None:
    """An answer slower than the client's timeout raises CrispUnavailable."""
    sandbox.set_faults(slow_s=1.0)
    with (
        make_client(sandbox, timeout_s=0.2) as client,
        pytest.raises(CrispUnavailable) as caught,
    ):
        sync(client)
    assert caught.value.reason == "timeout"


def test_hang_that_drops_the_connection_is_unavailable(sandbox: Sandbox) -> None:
    """A request held and then dropped without an answer is retryable."""
    sandbox.set_faults(hang_s=0.2)
    with (
        make_client(sandbox, timeout_s=2.0) as client,
        pytest.raises(CrispUnavailable) as caught,
    ):
        sync(client)
    assert caught.value.reason == "connection_error"


def test_connection_refused_is_unavailable(sandbox: Sandbox) -> None:
    """Nobody listening on the port: CrispUnavailable, not an httpx error."""
    client = make_client(sandbox)
    sandbox.stop()
    with client, pytest.raises(CrispUnavailable) as caught:
        sync(client)
    assert caught.value.reason == "connection_error"


def test_quota_spent_raises_quota_exceeded(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """423 quota_limit_exceeded raises CrispQuotaExceeded, still retryable."""
    sandbox.set_faults(quota_exhausted=True)

    with pytest.raises(CrispQuotaExceeded) as caught:
        sync(client)

    assert caught.value.status == 423
    assert caught.value.reason == "quota_limit_exceeded"
    assert isinstance(caught.value, RetryableError)


def test_daily_quota_of_the_sandbox_runs_out() -> None:
    """Past its daily quota the sandbox answers 423: CrispQuotaExceeded."""
    with Sandbox(daily_quota=2) as sandbox, make_client(sandbox) as client:
        sandbox.seed_profile(EMAIL)
        with pytest.raises(CrispQuotaExceeded):
            sync(client)  # read, segment write, then the data write: the third
        assert sandbox.requests()["total"] == 3
        profile = sandbox.profile(EMAIL)
        assert profile is not None
        assert profile["segments"] == ["lifecycle:customer"]
        assert profile["data"] == {}


def test_invalid_data_is_rejected_with_the_body(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """400 invalid_data raises CrispRejected with the status and the body."""
    seeded = sandbox.seed_profile(EMAIL)

    with pytest.raises(CrispRejected) as caught:
        client.update_segments(seeded["people_id"], ["dup", "dup"])

    assert caught.value.status == 400
    assert "invalid_data" in caught.value.body


def test_other_4xx_is_rejected(sandbox: Sandbox, client: CrispClient) -> None:
    """A 4xx with no retry meaning (here 409) is set aside, not retried."""
    sandbox.set_faults(fail_next=[{"status": 409, "reason": "conflict"}])
    with pytest.raises(CrispRejected) as caught:
        sync(client)
    assert caught.value.status == 409


def test_bad_credentials_raise_auth_error(sandbox: Sandbox) -> None:
    """401 for a wrong key is CrispAuthError, a fatal error."""
    with (
        make_client(sandbox, key="wrong") as client,
        pytest.raises(CrispAuthError) as caught,
    ):
        sync(client)
    assert caught.value.status == 401


def test_foreign_website_raises_auth_error(sandbox: Sandbox) -> None:
    """403 not_allowed (plugin not on that website) is CrispAuthError."""
    with (
        make_client(sandbox, website_id="someone-else") as client,
        pytest.raises(CrispAuthError) as caught,
    ):
        sync(client)
    assert caught.value.status == 403


def test_budget_spent_stops_before_the_network(sandbox: Sandbox) -> None:
    """The client asks the budget first: once spent, nothing reaches Crisp."""
    budget = RequestBudget(daily_limit=1, max_rps=100)
    sandbox.seed_profile(EMAIL)
    with (
        make_client(sandbox, budget=budget) as client,
        pytest.raises(CrispQuotaExceeded) as caught,
    ):
        sync(client)  # the read is granted, the write is not
    assert caught.value.reason == "daily_budget_spent"
    assert sandbox.requests()["total"] == 1
    assert budget.used_today == 1


def test_emails_and_key_stay_out_of_logs_and_errors(sandbox: Sandbox) -> None:
    """Neither the email nor the key appears in a log line or error message."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    messages: list[str] = []
    try:
        with capture_logs() as logs, make_client(sandbox) as client:
            sync(client)  # created: read, create, data
            sandbox.set_faults(html_5xx=1)
            with pytest.raises(CrispUnavailable) as unavailable:
                client.sync_profile(TARGET, Desired(("x",)), None, MANAGED, True)
            messages.append(str(unavailable.value))
            sandbox.set_faults(fail_next=[{"status": 400, "reason": "invalid_data"}])
            with pytest.raises(CrispRejected) as rejected:
                client.sync_profile(TARGET, Desired(("x",)), None, MANAGED, True)
            messages.append(str(rejected.value) + rejected.value.body)
    finally:
        structlog.configure(**saved)

    assert len(logs) >= 5 and len(messages) == 2
    text = repr(logs) + " ".join(messages) + repr(client)
    for secret in (EMAIL, "bob%2Bops", sandbox.key):
        assert secret not in text
