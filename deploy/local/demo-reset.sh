#!/usr/bin/env bash
# Forget the demo: delete its topics, its Redis namespace and its groups.
set -euo pipefail

SERVICE=demo-reset
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${ROOT_DIR}"

.venv/bin/python - <<'PY'
import os
import redis
from confluent_kafka.admin import AdminClient

env = os.environ.get
bootstrap = env("LIFECYCLE_BOOTSTRAP") or env("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
admin = AdminClient({"bootstrap.servers": bootstrap})
topic = env("LIFECYCLE_TOPIC", "lifecycle.events")
namespace = env("LIFECYCLE_NAMESPACE", "demo")
group = env("LIFECYCLE_GROUP", "crisp-lifecycle-demo")
topics = [
    topic,
    env("LIFECYCLE_TRANSITIONS_TOPIC", "lifecycle.transitions"),
    env("LIFECYCLE_DEAD_LETTER_TOPIC", "lifecycle.events.dlq"),
]
existing = set(admin.list_topics(timeout=10).topics)
for topic, future in admin.delete_topics(
    [t for t in topics if t in existing], operation_timeout=30
).items():
    future.result()
    print(f"deleted topic {topic}")
# The demo's group and those its replays made (kept when one was stopped).
listed = admin.list_consumer_groups().result(timeout=30).valid
groups = [group] + [g.group_id for g in listed if g.group_id.startswith(group + ".replay.")]
for name, future in admin.delete_consumer_groups(groups).items():
    try:
        future.result()
        print(f"deleted group {name}")
    except Exception as exc:  # an unknown group is fine here
        print(f"group {name}: {exc}")
url = env("LIFECYCLE_REDIS_URL") or env("REDIS_URL", "redis://127.0.0.1:6390/0")
client = redis.Redis.from_url(url)
# The namespace, the replays built beside it, and the sandbox website's
# daily request count (shared by every run against the sandbox).
patterns = [f"{namespace}:*", f"{namespace}.*", "crisp-lifecycle:budget:sandbox-website:*"]
keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)]
for key in keys:
    client.delete(key)
print(f"deleted {len(keys)} keys of namespace {namespace} and the sandbox budget")
PY
"${LOCAL_DIR}/sandbox.sh" stop
