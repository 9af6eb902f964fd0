#!/usr/bin/env bash
# Forget the demo: delete its topics, its Redis namespace and its group.
set -euo pipefail

SERVICE=demo-reset
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${ROOT_DIR}"

.venv/bin/python - <<'PY'
import os
import redis
from confluent_kafka.admin import AdminClient

bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
admin = AdminClient({"bootstrap.servers": bootstrap})
topics = ["lifecycle.events", "lifecycle.transitions", "lifecycle.events.dlq"]
existing = set(admin.list_topics(timeout=10).topics)
for topic, future in admin.delete_topics(
    [t for t in topics if t in existing], operation_timeout=30
).items():
    future.result()
    print(f"deleted topic {topic}")
for group, future in admin.delete_consumer_groups(["crisp-lifecycle-demo"]).items():
    try:
        future.result()
        print(f"deleted group {group}")
    except Exception as exc:  # an unknown group is fine here
        print(f"group {group}: {exc}")
client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0"))
keys = list(client.scan_iter(match="demo:*", count=1000))
for start in range(0, len(keys), 500):
    client.delete(*keys[start : start + 500])
print(f"deleted {len(keys)} keys of namespace demo")
PY
"${LOCAL_DIR}/sandbox.sh" stop
