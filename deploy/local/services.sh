#!/usr/bin/env bash
# Start, stop or report all local services: Kafka, Redis and the schema
# registry, each on loopback.
#
#   deploy/local/services.sh up|down|status
#
# The registry is optional: the consumer also runs with local schemas, so a
# registry that fails to start only warns, unless REGISTRY_REQUIRED=1.
set -euo pipefail

SERVICE=services
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REGISTRY_REQUIRED=${REGISTRY_REQUIRED:-0}

up() {
    "${LOCAL_DIR}/kafka.sh" start
    "${LOCAL_DIR}/redis.sh" start
    if ! "${LOCAL_DIR}/registry.sh" start; then
        if [[ ${REGISTRY_REQUIRED} == 1 ]]; then
            die "schema registry did not start and REGISTRY_REQUIRED=1"
        fi
        say "warning: no schema registry; tests use local schemas"
    fi
}

# Stop everything even when one stop fails, and report the failure after.
down() {
    local failed=0
    "${LOCAL_DIR}/registry.sh" stop || failed=1
    "${LOCAL_DIR}/kafka.sh" stop || failed=1
    "${LOCAL_DIR}/redis.sh" stop || failed=1
    return "${failed}"
}

# Exit 0 when Kafka and Redis are up (and the registry too if required).
status() {
    local failed=0
    "${LOCAL_DIR}/kafka.sh" status || failed=1
    "${LOCAL_DIR}/redis.sh" status || failed=1
    if ! "${LOCAL_DIR}/registry.sh" status && [[ ${REGISTRY_REQUIRED} == 1 ]]; then
        failed=1
    fi
    return "${failed}"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
