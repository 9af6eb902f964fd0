"""The sandbox itself, spoken to over raw HTTP: it must be as strict as Crisp."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consumer.sandbox import Sandbox


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """A raw HTTP client with the sandbox's credentials, rooted at the website."""
    with httpx.Client(
        base_url=f"{sandbox.url}/website/{sandbox.website_id}",
        auth=(sandbox.identifier, sandbox.key),
        headers={"X-Crisp-Tier": "plugin"},
        timeout=5,
    ) as client:
        yield client


@pytest.fixture
def control(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """A raw HTTP client for the control API."""
    with httpx.Client(base_url=sandbox.control_url, timeout=5) as client:
        yield client


def create(api: httpx.Client, email: str, **fields: Any) -> str:
    answer = api.post("/people/profile", json={"email": email, **fields})
    assert answer.status_code == 200, answer.text
    people_id: str = answer.json()["data"]["people_id"]
    return people_id


def test_duplicate_segments_are_refused(api: httpx.Client, sandbox: Sandbox) -> None:
    """A PATCH with one segment twice is 400 invalid_data and changes nothing."""
    people_id = create(api, "a@example.com", segments=["x"])

    answer = api.patch(f"/people/profile/{people_id}", json={"segments": ["y", "y"]})

    assert answer.status_code == 400
    assert answer.json() == {"error": True, "reason": "invalid_data", "data": {}}
    assert sandbox.profiles()[0]["segments"] == ["x"]


def test_duplicate_refusal_can_be_switched_off(
    api: httpx.Client, sandbox: Sandbox
) -> None:
    """With the switch off, duplicates are accepted and stored once."""
    people_id = create(api, "a@example.com")
    sandbox.set_faults(fail_duplicate_segments=False)

    answer = api.patch(f"/people/profile/{people_id}", json={"segments": ["y", "y"]})

    assert answer.status_code == 200
    assert sandbox.profiles()[0]["segments"] == ["y"]


@pytest.mark.parametrize(
    "body",
    [
        {"plan": "pro"},  # flat, not wrapped
        {"data": {"plan": None}},
        {"data": {"plan": {"nested": 1}}},
        {"data": {"tags": ["a"]}},
        {"data": {"Plan": "pro"}},  # keys are lower-case
        {"data": {"plan": "pro"}, "extra": 1},
    ],
)
def test_custom_data_must_be_wrapped_and_flat(
    api: httpx.Client, sandbox: Sandbox, body: dict[str, Any]
) -> None:
    """PATCH people/data refuses flat bodies, nulls, nesting and bad keys."""
    people_id = create(api, "a@example.com")

    answer = api.patch(f"/people/data/{people_id}", json=body)

    assert answer.status_code == 400
    assert answer.json()["reason"] == "invalid_data"
    assert sandbox.profiles()[0]["data"] == {}


def test_custom_data_patch_merges_and_put_replaces(api: httpx.Client) -> None:
    """PATCH merges keys, PUT replaces the map, GET reads data.data."""
    people_id = create(api, "a@example.com")
    api.patch(f"/people/data/{people_id}", json={"data": {"a": 1, "b": "x"}})
    api.patch(f"/people/data/{people_id}", json={"data": {"b": "y", "c": True}})
    merged = api.get(f"/people/data/{people_id}").json()["data"]["data"]
    assert merged == {"a": 1, "b": "y", "c": True}

    api.put(f"/people/data/{people_id}", json={"data": {"z": 0.5}})
    assert api.get(f"/people/data/{people_id}").json()["data"]["data"] == {"z": 0.5}


def test_create_refuses_existing_email_and_custom_data(api: httpx.Client) -> None:
    """POST of a known email is people_exists; data on create is invalid."""
    create(api, "Dup@Example.com")

    again = api.post("/people/profile", json={"email": "dup@example.com"})
    with_data = api.post(
        "/people/profile", json={"email": "new@example.com", "data": {"a": 1}}
    )

    assert again.json()["reason"] == "people_exists"
    assert again.status_code == 409
    assert with_data.status_code == 400


def test_profile_is_found_by_people_id_and_by_encoded_email(
    api: httpx.Client,
) -> None:
    """GET and HEAD find a profile by id or by percent-encoded email."""
    people_id = create(api, "c+d@example.com", segments=["s"])

    by_id = api.get(f"/people/profile/{people_id}").json()["data"]
    by_email = api.get("/people/profile/c%2Bd%40example.com").json()["data"]
    head = api.head(f"/people/profile/{people_id}")
    missing = api.head("/people/profile/nobody%40example.com")

    assert by_id == by_email
    assert by_id["segments"] == ["s"] and by_id["email"] == "c+d@example.com"
    assert (head.status_code, missing.status_code) == (200, 404)
    assert head.content == b""


def test_put_profile_replaces_the_whole_profile(api: httpx.Client) -> None:
    """PUT overwrites: segments not sent are gone (why the client never uses it)."""
    people_id = create(api, "a@example.com", segments=["x", "y"])

    api.put(f"/people/profile/{people_id}", json={"email": "a@example.com"})

    assert api.get(f"/people/profile/{people_id}").json()["data"]["segments"] == []


def test_events_take_one_object_never_an_array(
    api: httpx.Client, sandbox: Sandbox
) -> None:
    """POST people/events accepts one event object and refuses a list."""
    people_id = create(api, "a@example.com")
    good = api.post(
        f"/people/events/{people_id}",
        json={"text": "Became customer", "color": "green"},
    )
    array = api.post(f"/people/events/{people_id}", json=[{"text": "x"}])

    assert good.status_code == 200
    assert array.status_code == 400
    assert sandbox.profiles()[0]["events"][0]["text"] == "Became customer"


def test_credentials_and_tier_header_are_required(sandbox: Sandbox) -> None:
    """Wrong key or a missing X-Crisp-Tier answers 401."""
    base = f"{sandbox.url}/website/{sandbox.website_id}/people/profile/x"
    wrong_key = httpx.get(
        base, auth=(sandbox.identifier, "nope"), headers={"X-Crisp-Tier": "plugin"}
    )
    no_tier = httpx.get(base, auth=(sandbox.identifier, sandbox.key))
    assert wrong_key.status_code == no_tier.status_code == 401


def test_control_api_seeds_lists_faults_and_resets(
    api: httpx.Client, control: httpx.Client
) -> None:
    """Seed a profile, switch a 429 burst, read counts, reset: all over HTTP."""
    seeded = control.post(
        "/profiles", json={"email": "v@example.com", "segments": ["human-set"]}
    ).json()
    assert control.get("/profiles").json()[0]["segments"] == ["human-set"]

    assert control.post("/faults", json={"rate_limit_burst": 2}).status_code == 200
    statuses = [
        api.get(f"/people/profile/{seeded['people_id']}").status_code for _ in range(3)
    ]
    assert statuses == [429, 429, 200]

    counts = control.get("/requests").json()
    assert counts["by_route"] == {"GET /people/profile/{id}": 3}
    assert [entry["status"] for entry in counts["recent"]] == [429, 429, 200]
    assert control.post("/faults", json={"no_such_fault": 1}).status_code == 400

    control.post("/reset")
    assert control.get("/profiles").json() == []
    assert control.get("/requests").json()["total"] == 0


def test_quota_fault_answers_423_until_cleared(
    api: httpx.Client, control: httpx.Client
) -> None:
    """quota_exhausted answers 423 quota_limit_exceeded until switched off."""
    control.post("/faults", json={"quota_exhausted": True})
    blocked = api.get("/people/profile/x%40example.com")
    control.post("/faults", json={"quota_exhausted": False})
    open_again = api.get("/people/profile/x%40example.com")

    assert blocked.status_code == 423
    assert blocked.json()["reason"] == "quota_limit_exceeded"
    assert open_again.status_code == 404
    assert open_again.json()["reason"] == "people_not_found"


def test_html_fault_answers_an_html_502(api: httpx.Client, sandbox: Sandbox) -> None:
    """html_5xx answers 502 with an HTML page, the way an edge proxy does."""
    sandbox.set_faults(html_5xx=1)
    answer = api.get("/people/profile/x%40example.com")
    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.text.startswith("<html>")


def test_not_found_fault_hides_every_profile(
    api: httpx.Client, sandbox: Sandbox
) -> None:
    """not_found makes lookups answer people_not_found even for known ones."""
    people_id = create(api, "a@example.com")
    sandbox.set_faults(not_found=True)
    answer = api.get(f"/people/profile/{people_id}")
    assert (answer.status_code, answer.json()["reason"]) == (404, "people_not_found")
