"""Fixtures of the deployment tests: a live health server, a Redis Cluster.

The cluster is the one ``deploy/local/redis-cluster.sh`` runs on loopback
(ports ``REDIS_CLUSTER_PORTS``, default 7101-7103). The fixture starts it
and stops it again afterwards, unless it was already up when the tests
began, in which case it is left running as found.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
import redis

from consumer.health import Health, HealthServer
from tests.deploy.files import REPO

CLUSTER_SCRIPT = REPO / "deploy" / "local" / "redis-cluster.sh"
CLUSTER_PORTS = tuple(
    int(port)
    for port in os.environ.get("REDIS_CLUSTER_PORTS", "7101 7102 7103").split()
)
#: What a deployment puts in LIFECYCLE_REDIS_URL to use the cluster.
CLUSTER_URL = f"redis+cluster://127.0.0.1:{CLUSTER_PORTS[0]}/0"
SCRIPT_TIMEOUT_S = 120


def _script(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLUSTER_SCRIPT), action],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[redis.RedisCluster]:
    """Start the three-node cluster; yield a client of it; stop it after."""
    was_up = _script("status").returncode == 0
    started = _script("start")
    if started.returncode != 0:
        if not was_up:
            _script("stop")  # nodes a half-done start left behind
        pytest.fail(
            f"{CLUSTER_SCRIPT.name} start failed:\n{started.stdout}{started.stderr}"
        )
    client = redis.RedisCluster(host="127.0.0.1", port=CLUSTER_PORTS[0])
    yield client
    client.close()
    if not was_up:
        stopped = _script("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture
def health_server() -> Iterator[tuple[Health, HealthServer]]:
    """Serve /healthz, /readyz and /metrics on a free loopback port."""
    health = Health(stall_timeout_s=60)
    server = HealthServer(health, "127.0.0.1", 0)
    server.start()
    yield health, server
    server.stop()
