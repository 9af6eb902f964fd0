"""Fixtures for tests that run the consumer service as a subprocess."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL, MakeTopic
from tests.service.harness import ServiceEnv

MakeEnv = Callable[..., ServiceEnv]


@pytest.fixture
def make_env(kafka_bootstrap: str, make_topic: MakeTopic, namespace: str) -> MakeEnv:
    """Return a factory of deployments sharing one events topic.

    Each call gets its own consumer group and namespace (suffix), so a clean
    run and a faulty run of the same events can be compared side by side.
    """
    topic = make_topic(partitions=3)
    dead_letters = make_topic(partitions=1)
    transitions = make_topic(partitions=3)

    def make(suffix: str = "a", **changes: object) -> ServiceEnv:
        env = ServiceEnv(
            bootstrap=kafka_bootstrap,
            topic=topic,
            redis_url=REDIS_URL,
            namespace=f"{namespace}-{suffix}",
            group=f"group-{uuid.uuid4().hex[:8]}",
            dead_letter_topic=dead_letters,
            transitions_topic=transitions,
        )
        return dataclasses.replace(env, **changes)  # type: ignore[arg-type]

    return make


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A redis-server of one test's own, which the test may stop and start."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lifecycle-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH; run `make services-up`"
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def stop(self) -> None:
        """Stop the server, saving its data so that a start restores it."""
        if self.process is None:
            return
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(port=self.port).shutdown(save=True)
        self.process.wait(20)
        self.process = None

    def freeze(self) -> None:
        """Suspend the server (SIGSTOP): connections hang, none are refused."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen server (SIGCONT; harmless when it runs)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """Start a Redis server only this test uses; stop it afterwards."""
    server = PrivateRedis()
    server.start()
    yield server
    if server.process is not None:
        server.process.kill()
        server.process.wait(10)
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_crisp_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's Crisp settings out of these tests."""
    for variable in list(os.environ):
        if variable.startswith("CRISP_"):
            monkeypatch.delenv(variable)
