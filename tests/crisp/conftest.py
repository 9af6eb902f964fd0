"""Fixtures: a real sandbox on 127.0.0.1 (port 0) and a client aimed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.crisp import CrispClient
from consumer.sandbox import Sandbox

from .support import make_client


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox("127.0.0.1", 0, daily_quota=None) as running:
        yield running


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[CrispClient]:
    with make_client(sandbox) as opened:
        yield opened
