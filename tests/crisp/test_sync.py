"""`CrispClient.sync_profile` against the sandbox: requests spent and results."""

from __future__ import annotations

import threading

from consumer.crisp import (
    CrispClient,
    ProfileTarget,
    SentState,
    SyncOutcome,
    merge_segments,
)
from consumer.errors import CrispUnavailable
from consumer.sandbox import Sandbox

from .support import MANAGED, Desired

EMAIL = "ann+trial@example.com"


def by_email(email: str = EMAIL) -> ProfileTarget:
    return ProfileTarget(email=email, people_id=None)


def test_skip_when_desired_equals_last_sent(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """No request at all when the desired state is the one last sent.

    The sandbox is set to fail every request, so any request would raise.
    """
    desired = Desired(("lifecycle:customer",), {"plan": "pro", "seats": 3})
    last_sent = SentState.of(
        Desired(("lifecycle:customer",), {"seats": 3, "plan": "pro"})
    )
    sandbox.set_faults(html_5xx=10)

    result = client.sync_profile(by_email(), desired, last_sent, MANAGED, True)

    assert result.outcome is SyncOutcome.SKIPPED
    assert result.requests == 0
    assert result.sent == last_sent
    assert sandbox.requests()["total"] == 0


def test_foreign_segments_survive_a_managed_change(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """Segments set by people or other tools stay, in place; ours are swapped."""
    sandbox.seed_profile(EMAIL, segments=["vip", "lifecycle:visit", "imported"])
    last_sent = SentState.of(Desired(("lifecycle:visit",)))

    result = client.sync_profile(
        by_email(), Desired(("lifecycle:customer",)), last_sent, MANAGED, True
    )

    assert result.outcome is SyncOutcome.SYNCED
    profile = sandbox.profile(EMAIL)
    assert profile is not None
    assert profile["segments"] == ["vip", "imported", "lifecycle:customer"]


def test_segment_change_costs_one_get_and_one_patch(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """A segment change is one read and one write of the whole list, no more."""
    seeded = sandbox.seed_profile(EMAIL, segments=["lifecycle:subscriber"])

    result = client.sync_profile(
        by_email(),
        Desired(("lifecycle:customer",)),
        SentState.of(Desired(("lifecycle:subscriber",))),
        MANAGED,
        True,
    )

    assert result.requests == 2
    assert result.segments_written and not result.data_written
    assert result.people_id == seeded["people_id"]
    assert sandbox.requests()["by_route"] == {
        "GET /people/profile/{id}": 1,
        "PATCH /people/profile/{id}": 1,
    }


def test_no_write_when_the_profile_already_holds_the_segments(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """With no last sent state, a profile that is already right costs one read."""
    sandbox.seed_profile(EMAIL, segments=["other", "lifecycle:customer"])

    result = client.sync_profile(
        by_email(), Desired(("lifecycle:customer",)), None, MANAGED, True
    )

    assert result.outcome is SyncOutcome.SYNCED
    assert result.requests == 1
    assert not result.segments_written
    assert sandbox.count("PATCH /people/profile/{id}") == 0


def test_desired_duplicates_and_empty_segments_are_dropped(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """The list written has no duplicates or empty strings (Crisp refuses them)."""
    sandbox.seed_profile(EMAIL, segments=["lifecycle:customer"])

    client.sync_profile(
        by_email(),
        Desired(("lifecycle:customer", "", "lifecycle:customer", "beta")),
        None,
        MANAGED,
        True,
    )

    profile = sandbox.profile(EMAIL)
    assert profile is not None
    assert profile["segments"] == ["lifecycle:customer", "beta"]


def test_data_is_patched_wrapped_and_only_when_changed(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """Custom data goes as one wrapped PATCH, only when it changed.

    A foreign data key on the profile is neither sent nor lost. The sandbox
    refuses a flat body, so a successful write also proves the wrapping.
    """
    sandbox.seed_profile(EMAIL, segments=["lifecycle:customer"], data={"crm": "x"})
    segments = ("lifecycle:customer",)
    first = client.sync_profile(
        by_email(), Desired(segments, {"plan": "pro"}), None, MANAGED, True
    )
    assert first.data_written
    assert sandbox.count("PATCH /people/data/{id}") == 1

    same_data = client.sync_profile(
        by_email(),
        Desired(("lifecycle:visit",), {"plan": "pro"}),
        first.sent,
        MANAGED,
        True,
    )
    assert not same_data.data_written
    assert sandbox.count("PATCH /people/data/{id}") == 1

    new_data = client.sync_profile(
        by_email(),
        Desired(("lifecycle:visit",), {"plan": "team"}),
        same_data.sent,
        MANAGED,
        True,
    )
    assert new_data.requests == 1  # no profile read for a data-only change
    assert new_data.data_written
    profile = sandbox.profile(EMAIL)
    assert profile is not None
    assert profile["data"] == {"crm": "x", "plan": "team"}


def test_missing_profile_is_created_and_its_people_id_used_after(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """404 people_not_found creates the profile; later syncs address its id."""
    created = client.sync_profile(
        by_email(),
        Desired(("lifecycle:subscriber",), {"plan": "free"}),
        None,
        MANAGED,
        True,
    )

    assert created.outcome is SyncOutcome.CREATED
    profile = sandbox.profile(EMAIL)
    assert profile is not None
    assert created.people_id == profile["people_id"]
    assert profile["segments"] == ["lifecycle:subscriber"]
    assert profile["data"] == {"plan": "free"}
    assert sandbox.count("POST /people/profile") == 1
    assert created.requests == 3  # read (404), create, data

    later = client.sync_profile(
        ProfileTarget(email=EMAIL, people_id=created.people_id),
        Desired(("lifecycle:customer",), {"plan": "free"}),
        created.sent,
        MANAGED,
        True,
    )
    assert later.outcome is SyncOutcome.SYNCED
    last_paths = [entry["path"] for entry in sandbox.requests()["recent"][-2:]]
    assert all(path.endswith(f"/{created.people_id}") for path in last_paths)
    profile = sandbox.profile(EMAIL)
    assert profile is not None
    assert profile["segments"] == ["lifecycle:customer"]


def test_missing_profile_without_permission_to_create(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """With profile creation off, a 404 creates nothing and keeps last sent."""
    last_sent = SentState.of(Desired(("lifecycle:visit",)))

    result = client.sync_profile(
        by_email(), Desired(("lifecycle:customer",)), last_sent, MANAGED, False
    )

    assert result.outcome is SyncOutcome.NOT_FOUND
    assert result.sent == last_sent
    assert not result.delivered
    assert sandbox.profiles() == []
    assert sandbox.count("POST /people/profile") == 0


def test_contact_without_identity_sends_nothing(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """Neither email nor people id: wait for an identity, spend nothing."""
    result = client.sync_profile(
        ProfileTarget(email=None, people_id=None),
        Desired(("lifecycle:visit",), {"plan": "free"}),
        None,
        MANAGED,
        True,
    )

    assert result.outcome is SyncOutcome.WAITING_FOR_IDENTITY
    assert result.requests == 0
    assert result.sent is None
    assert sandbox.requests()["total"] == 0


def test_stale_people_id_falls_back_to_the_email(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """A people id Crisp no longer knows: create says people_exists, so the
    profile is read by email, merged, and its real id returned."""
    seeded = sandbox.seed_profile(EMAIL, segments=["vip"])
    target = ProfileTarget(
        email=EMAIL, people_id="00000000-dead-beef-0000-000000000000"
    )

    result = client.sync_profile(
        target, Desired(("lifecycle:customer",)), None, MANAGED, True
    )

    assert result.outcome is SyncOutcome.SYNCED
    assert result.people_id == seeded["people_id"]
    profile = sandbox.profile(EMAIL)
    assert profile is not None
    assert profile["segments"] == ["vip", "lifecycle:customer"]
    assert len(sandbox.profiles()) == 1


def test_email_is_percent_encoded_in_the_path(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """``+`` and ``@`` of an email reach Crisp as %2B and %40."""
    sandbox.seed_profile(EMAIL)

    client.sync_profile(by_email(), Desired(("lifecycle:visit",)), None, MANAGED, True)

    path = sandbox.requests()["recent"][0]["path"]
    assert path.endswith("/people/profile/ann%2Btrial%40example.com")


def test_one_client_serves_many_threads(sandbox: Sandbox) -> None:
    """Concurrent syncs through one shared client each reach their profile."""
    emails = [f"user{index}@example.com" for index in range(12)]
    for email in emails:
        sandbox.seed_profile(email, segments=["keep"])
    errors: list[BaseException] = []

    with CrispClient(
        base_url=sandbox.url,
        website_id=sandbox.website_id,
        identifier=sandbox.identifier,
        key=sandbox.key,
        max_connections=4,
    ) as shared:

        def sync(email: str) -> None:
            # A kept-alive connection that the server closed meanwhile is a
            # transient failure by contract: the relay retries it, so do we.
            for attempt in range(3):
                try:
                    shared.sync_profile(
                        by_email(email),
                        Desired(("lifecycle:customer",), {"n": len(email)}),
                        None,
                        MANAGED,
                        True,
                    )
                    return
                except CrispUnavailable as exc:
                    if attempt == 2:
                        errors.append(exc)
                except BaseException as exc:  # collected for the assertion below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=sync, args=(e,)) for e in emails]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    for email in emails:
        profile = sandbox.profile(email)
        assert profile is not None
        assert profile["segments"] == ["keep", "lifecycle:customer"]
        assert profile["data"] == {"n": len(email)}


def test_merge_removes_segments_last_sent_even_if_no_longer_managed() -> None:
    """A segment the service wrote before a plan change is still removed."""
    merged = merge_segments(
        ["a", "old-stage", "b", "b", ""], ["new-stage"], {"old-stage"}
    )
    assert merged == ["a", "b", "new-stage"]


def test_sent_state_round_trips_through_json() -> None:
    """What is stored in Redis reads back equal; a bool is not the number 1."""
    state = SentState.of(Desired(("b", "a", "a"), {"flag": True, "n": 1, "x": 1.5}))
    assert state.segments == ("a", "b")
    assert SentState.from_json(state.to_json()) == state
    assert SentState.of(Desired(("a", "b"), {"flag": 1, "n": 1, "x": 1.5})) != state


def test_a_key_leaving_the_plan_is_no_reason_to_write(
    sandbox: Sandbox, client: CrispClient
) -> None:
    """Data that only lost a key sends nothing: a PATCH would change nothing."""
    last_sent = SentState.of(Desired(("lifecycle:visit",), {"plan": "pro", "old": 1}))

    result = client.sync_profile(
        by_email(),
        Desired(("lifecycle:visit",), {"plan": "pro"}),
        last_sent,
        MANAGED,
        True,
    )

    assert result.outcome is SyncOutcome.SYNCED
    assert result.requests == 0 and not result.data_written
    assert result.sent == SentState.of(Desired(("lifecycle:visit",), {"plan": "pro"}))
    assert sandbox.requests()["total"] == 0
