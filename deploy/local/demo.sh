#!/usr/bin/env bash
# The whole path on real data: `make demo` runs this after `services-up`.
#
# 1. starts the Crisp sandbox (unless CRISP_WEBSITE_ID points at real Crisp);
# 2. creates the topics and produces both shared data sets, once;
# 3. runs the consumer until it has caught up and the outbox is drained;
# 4. prints the stage report and where to look next.
#
# Everything lives in the namespace `demo` and the consumer group
# `crisp-lifecycle-demo`; `make demo-reset` starts over.
set -euo pipefail

SERVICE=demo
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${ROOT_DIR}"

CLI=(.venv/bin/python -m consumer --log-level warning)
export LIFECYCLE_NAMESPACE=${LIFECYCLE_NAMESPACE:-demo}
export LIFECYCLE_GROUP=${LIFECYCLE_GROUP:-crisp-lifecycle-demo}
export LIFECYCLE_BOOTSTRAP=${LIFECYCLE_BOOTSTRAP:-${KAFKA_BOOTSTRAP:-127.0.0.1:9092}}
export LIFECYCLE_REDIS_URL=${LIFECYCLE_REDIS_URL:-${REDIS_URL:-redis://127.0.0.1:6390/0}}
export LIFECYCLE_TOPIC=${LIFECYCLE_TOPIC:-lifecycle.events}
# The health port of a long-running consumer may be taken; pick a free one.
export LIFECYCLE_HEALTH_PORT=${LIFECYCLE_HEALTH_PORT:-0}

email_flags=()
CRISP_WEBSITE_ID_GIVEN=${CRISP_WEBSITE_ID:-}
if [[ -n ${CRISP_WEBSITE_ID:-} ]]; then
    say "syncing to the Crisp website in CRISP_WEBSITE_ID (real Crisp)"
    say "the data sets carry no emails: contacts wait for an identity"
else
    "${LOCAL_DIR}/sandbox.sh" start
    set -a
    # shellcheck disable=SC1091
    source "${RUN_DIR}/sandbox/sandbox.env"
    set +a
    # The sandbox is local: lift the plugin token's limits so that the demo
    # syncs every contact in seconds. Real Crisp keeps the defaults.
    export CRISP_DAILY_BUDGET=${CRISP_DAILY_BUDGET:-10000000}
    export CRISP_MAX_RPS=${CRISP_MAX_RPS:-500}
    # The data sets have no emails; demo identities under the reserved
    # .invalid domain let the sandbox create profiles.
    email_flags=(--email-template '{contact_id}@demo.invalid')
fi

"${CLI[@]}" topics create --partitions 3

produced=$(.venv/bin/python - <<'PY'
import os
from confluent_kafka import Consumer, TopicPartition
topic = os.environ["LIFECYCLE_TOPIC"]
consumer = Consumer({"bootstrap.servers": os.environ["LIFECYCLE_BOOTSTRAP"],
                     "group.id": "crisp-lifecycle-demo-probe"})
meta = consumer.list_topics(topic, timeout=10).topics[topic]
print(sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
          for p in meta.partitions))
consumer.close()
PY
) || produced=0
if ((produced > 0)); then
    say "topic ${LIFECYCLE_TOPIC} already holds ${produced} events; not producing again"
else
    say "producing the CDNOW purchases and the web-shop clickstream"
    "${CLI[@]}" produce tests/data/cdnow_sample.txt --mapping mappings/cdnow.yaml \
        "${email_flags[@]}"
    "${CLI[@]}" produce tests/data/ecom_clickstream.csv.gz \
        --mapping mappings/ecom_clickstream.yaml "${email_flags[@]}"
fi

say "consuming until caught up and the Crisp outbox is drained"
started=${SECONDS}
"${CLI[@]}" run --until-caught-up
say "caught up in $((SECONDS - started))s"

echo
"${CLI[@]}" report
echo
cat <<TXT
Where to look next:
  .venv/bin/crisp-lifecycle contact show cdnow-00004 --namespace ${LIFECYCLE_NAMESPACE} --redis-url ${LIFECYCLE_REDIS_URL}
  .venv/bin/crisp-lifecycle report --json --namespace ${LIFECYCLE_NAMESPACE} --redis-url ${LIFECYCLE_REDIS_URL}
  curl -s http://127.0.0.1:${SANDBOX_PORT:-8765}/_sandbox/profiles | head -c 600
  curl -s http://127.0.0.1:${SANDBOX_PORT:-8765}/_sandbox/requests | head -c 600
To run other commands (run, replay, outbox ...) against the same services:
  export LIFECYCLE_BOOTSTRAP=${LIFECYCLE_BOOTSTRAP} LIFECYCLE_REDIS_URL=${LIFECYCLE_REDIS_URL}
  export LIFECYCLE_TOPIC=${LIFECYCLE_TOPIC} LIFECYCLE_NAMESPACE=${LIFECYCLE_NAMESPACE} LIFECYCLE_GROUP=${LIFECYCLE_GROUP}
TXT
if [[ -z ${CRISP_WEBSITE_ID_GIVEN:-} ]]; then
    echo "  set -a; . ${RUN_DIR}/sandbox/sandbox.env; set +a   # the sandbox's CRISP_* settings"
fi
echo "The services keep running; 'make services-down' stops them."
