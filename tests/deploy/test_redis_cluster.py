"""The service runs unchanged on a Redis Cluster (DESIGN.md, "State in Redis").

The same events are consumed twice by the real consumer, once into the
standalone test Redis and once into a three-node cluster started by
``deploy/local/redis-cluster.sh``; the two final states must be equal. A
script or transaction that touched keys of two slots would fail on the
cluster (CROSSSLOT) and stop the consumer, so equality also proves that
every multi-key step stays within one slot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from consumer.store import Store
from tests.conftest import REDIS_URL, MakeTopic
from tests.deploy.conftest import CLUSTER_PORTS, CLUSTER_URL
from tests.service.harness import (
    DAY_MS,
    ServiceEnv,
    produce,
    snapshot,
    stage_counts,
    synthetic_events,
)

# Events end 60 days ago, so every 30-day timer is due before the runs and
# the final state does not depend on when a run happens.
OLD = int(time.time() * 1000) - 60 * DAY_MS
CONTACTS = 300
EVENTS = 3000


@pytest.fixture
def cluster_namespace(
    redis_cluster: redis.RedisCluster, namespace: str
) -> Iterator[str]:
    """Return a key prefix on the cluster; delete its keys on every node after."""
    prefix = f"{namespace}-cluster"
    yield prefix
    for port in CLUSTER_PORTS:
        node = redis.Redis(host="127.0.0.1", port=port)
        for key in list(node.scan_iter(match=f"*{prefix}*", count=1000)):
            node.delete(key)
        node.close()


def deployment(
    bootstrap: str, topics: dict[str, str], redis_url: str, namespace: str
) -> ServiceEnv:
    """Return one consumer deployment of its own group over the shared topics."""
    return ServiceEnv(
        bootstrap=bootstrap,
        topic=topics["events"],
        redis_url=redis_url,
        namespace=namespace,
        group=f"group-{uuid.uuid4().hex[:8]}",
        dead_letter_topic=topics["dead_letters"],
        transitions_topic=topics["transitions"],
    )


def relay_records(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """Return what the dry-run relay recorded per contact, and what is pending."""
    store = Store(client, namespace)
    return {
        record.contact_id: (record.last_sent_dry_run, record.pending, record.parked)
        for record in store.scan_contacts()
    }


def contacts_per_node(namespace: str) -> dict[int, int]:
    """Count the namespace's contact hashes that each cluster node holds."""
    counts = {}
    for port in CLUSTER_PORTS:
        node = redis.Redis(host="127.0.0.1", port=port)
        counts[port] = sum(1 for _ in node.scan_iter(match=f"{namespace}:c:*"))
        node.close()
    return counts


def test_cluster_run_ends_in_the_state_of_a_standalone_run(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    redis_client: redis.Redis,
    redis_cluster: redis.RedisCluster,
    namespace: str,
    cluster_namespace: str,
) -> None:
    """Stages, relay bookkeeping and offsets match; contacts span every node.

    Both runs read the same 3-partition topic to its end with
    ``--until-caught-up``, timers and dry-run Crisp syncs included. The
    cluster run must also really have used the cluster: each node holds
    some contacts and the standalone server holds none of its namespace.
    """
    topics = {
        "events": make_topic(partitions=3),
        "dead_letters": make_topic(partitions=1),
        "transitions": make_topic(partitions=3),
    }
    events = synthetic_events(CONTACTS, EVENTS, seed=41, now_ms=OLD)
    produce(kafka_bootstrap, topics["events"], events)

    standalone = deployment(
        kafka_bootstrap, topics, REDIS_URL, f"{namespace}-standalone"
    )
    clustered = deployment(kafka_bootstrap, topics, CLUSTER_URL, cluster_namespace)
    standalone.run_until_caught_up()
    clustered.run_until_caught_up()

    expected = snapshot(redis_client, standalone.namespace)
    assert len(expected) == CONTACTS
    assert len(stage_counts(expected)) > 1, "the events should move contacts"
    assert snapshot(redis_cluster, clustered.namespace) == expected
    assert relay_records(redis_cluster, clustered.namespace) == relay_records(
        redis_client, standalone.namespace
    )

    standalone_store = Store(redis_client, standalone.namespace)
    cluster_store = Store(redis_cluster, clustered.namespace)
    for partition in range(3):
        stored = cluster_store.stored_offset(topics["events"], partition)
        assert stored is not None
        assert stored == standalone_store.stored_offset(topics["events"], partition)

    per_node = contacts_per_node(clustered.namespace)
    assert sum(per_node.values()) == CONTACTS
    assert all(count > 0 for count in per_node.values()), per_node
    assert not list(redis_client.scan_iter(match=f"{clustered.namespace}:*"))
