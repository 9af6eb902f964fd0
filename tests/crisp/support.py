"""Shared test helpers: a stand-in desired state and a client factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consumer.crisp import CrispClient
from consumer.sandbox import Sandbox

MANAGED = frozenset({"lifecycle:visit", "lifecycle:subscriber", "lifecycle:customer"})


@dataclass(frozen=True)
class Desired:
    """Stands in for `consumer.engine.DesiredCrisp`: segments and data."""

    segments: tuple[str, ...]
    data: Mapping[str, str | int | float | bool] = field(default_factory=dict)


def make_client(sandbox: Sandbox, **overrides: Any) -> CrispClient:
    """Return a client for ``sandbox``; keyword arguments override defaults."""
    options: dict[str, Any] = {
        "base_url": sandbox.url,
        "website_id": sandbox.website_id,
        "identifier": sandbox.identifier,
        "key": sandbox.key,
        "timeout_s": 2.0,
    }
    options.update(overrides)
    return CrispClient(**options)
