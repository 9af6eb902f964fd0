"""Fixtures of the codec tests: schemas, a fake registry, registry URLs."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.codec import EVENT_SCHEMA
from tests.codec.fake_registry import FakeRegistry


def current_event_schema() -> dict[str, Any]:
    """Return the shipped event schema as JSON data."""
    schema: dict[str, Any] = json.loads(EVENT_SCHEMA.read_text())
    return schema


def older_event_schema() -> dict[str, Any]:
    """Return the event schema as it would have been before ``email``."""
    schema = current_event_schema()
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "email"]
    return schema


def newer_event_schema() -> dict[str, Any]:
    """Return a later event schema: one more field, with a default."""
    schema = copy.deepcopy(current_event_schema())
    schema["fields"].append({"name": "channel", "type": "string", "default": "web"})
    return schema


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    """Return a schemas directory: the shipped files plus both other versions.

    The older and newer versions sit in ``history/``, where the local-schema
    mode looks for versions other than the current one.
    """
    directory = tmp_path / "schemas"
    directory.mkdir()
    for path in EVENT_SCHEMA.parent.glob("*.avsc"):
        shutil.copy(path, directory / path.name)
    history = directory / "history"
    history.mkdir()
    (history / "event.v0.avsc").write_text(json.dumps(older_event_schema()))
    (history / "event.v2.avsc").write_text(json.dumps(newer_event_schema()))
    return directory


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    """Return a running fake registry on 127.0.0.1, stopped after the test."""
    registry = FakeRegistry().start()
    yield registry
    registry.stop()


@pytest.fixture
def registry_urls(fake_registry: FakeRegistry, registry_url: str | None) -> list[str]:
    """Return the fake registry's URL, and the real one's when it runs."""
    urls = [fake_registry.url]
    if registry_url is not None:
        urls.append(registry_url)
    return urls
