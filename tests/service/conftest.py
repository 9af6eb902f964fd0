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
from tests.service.harness import REPO, ServiceEnv

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
        """Start the server (again); nothing to do while it runs."""
        if self.process is not None and self.process.poll() is None:
            return
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


class PrivateKafka:
    """A Kafka broker of one test's own, which the test may kill and restart.

    It runs from the jars `make services-up` gathered, through the same
    script, on free loopback ports and with its state in a temporary folder.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.controller_port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lifecycle-kafka-"))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def kill(self) -> None:
        """SIGKILL the broker and wait until its port is closed."""
        os.kill(int((self.dir / "kafka.pid").read_text()), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)
        raise AssertionError("the killed broker still listens")

    def _script(self, action: str) -> None:
        done = subprocess.run(
            [str(REPO / "deploy" / "local" / "kafka.sh"), action],
            env={
                **os.environ,
                "KAFKA_PORT": str(self.port),
                "KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "KAFKA_STATE_DIR": str(self.dir),
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"kafka.sh {action}: {done.stderr[-2000:]}"


@pytest.fixture
def private_kafka() -> Iterator[PrivateKafka]:
    """Start a Kafka broker only this test uses; stop it afterwards."""
    broker = PrivateKafka()
    broker.start()
    yield broker
    with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
        broker.stop()
    shutil.rmtree(broker.dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_crisp_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's Crisp settings out of these tests."""
    for variable in list(os.environ):
        if variable.startswith("CRISP_"):
            monkeypatch.delenv(variable)
