#!/usr/bin/env bash
# Run an Apicurio Registry on loopback as the project's schema registry, with
# in-memory storage and its Confluent-compatible API under /apis/ccompat/v7.
#
#   deploy/local/registry.sh start|stop|status
#
# Environment:
#   REGISTRY_PORT              HTTP port on 127.0.0.1 (default 8081)
#   REGISTRY_HEAP_OPTS         JVM heap options (default -Xms64m -Xmx384m)
#   REGISTRY_START_TIMEOUT_S   how long start waits (default 120)
#
# The server is io.apicurio:apicurio-registry-app, classifier "all", from
# Maven Central, unpacked once into .cache/apicurio/. Version 3.0.x is pinned:
# the 3.3 line is compiled for Java 21 and fails on the Java 17 this project
# assumes. Schemas live in memory only, so a restart forgets them and ids
# begin again at 1.
set -euo pipefail

SERVICE=registry
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APICURIO_VERSION=3.0.9
REGISTRY_PORT=${REGISTRY_PORT:-8081}
REGISTRY_HEAP_OPTS=${REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}
REGISTRY_START_TIMEOUT_S=${REGISTRY_START_TIMEOUT_S:-120}

ARTIFACT=io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all
ARCHIVE_DIR=${CACHE_DIR}/m2/io/apicurio/apicurio-registry-app/${APICURIO_VERSION}
ARCHIVE=${ARCHIVE_DIR}/apicurio-registry-app-${APICURIO_VERSION}-all.tar.gz
APP_DIR=${CACHE_DIR}/apicurio/${APICURIO_VERSION}
APP_JAR=${APP_DIR}/apicurio-registry-app-${APICURIO_VERSION}-runner.jar
STATE_DIR=${RUN_DIR}/registry
PIDFILE=${STATE_DIR}/registry.pid
LOG=${STATE_DIR}/registry.log
MARKER=${APP_JAR}
SUBJECTS_URL=http://127.0.0.1:${REGISTRY_PORT}/apis/ccompat/v7/subjects

fetch_app() {
    [[ -f ${APP_DIR}/.complete ]] && return 0
    if [[ ! -f ${ARCHIVE} ]]; then
        say "downloading Apicurio Registry ${APICURIO_VERSION} from Maven Central"
        mvn_local dependency:get -Dtransitive=false -Dartifact="${ARTIFACT}"
    fi
    rm -rf "${APP_DIR}"
    mkdir -p "${APP_DIR}"
    tar -xzf "${ARCHIVE}" -C "${APP_DIR}"
    [[ -f ${APP_JAR} ]] || die "no ${APP_JAR##*/} in ${ARCHIVE}"
    touch "${APP_DIR}/.complete"
}

# True when the Confluent-compatible API answers 200 on its subjects list.
answers() {
    "$(python_bin)" - "${SUBJECTS_URL}" <<'PY' 2>/dev/null
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
}

start() {
    local pid deadline heap
    if pid=$(live_pid "${PIDFILE}" "${MARKER}"); then
        answers || die "running (pid ${pid}) but not at ${SUBJECTS_URL}; stop it first"
        say "already running (pid ${pid}) on 127.0.0.1:${REGISTRY_PORT}, log ${LOG}"
        return 0
    fi
    if port_open "${REGISTRY_PORT}"; then
        die "port ${REGISTRY_PORT} is taken by a process this checkout did not start"
    fi
    command -v java >/dev/null 2>&1 || die "java not found on PATH"
    fetch_app
    mkdir -p "${STATE_DIR}"
    rotate_log "${LOG}"
    read -ra heap <<<"${REGISTRY_HEAP_OPTS}"
    say "starting on 127.0.0.1:${REGISTRY_PORT}"
    # Loopback only, for the API and for Quarkus' management interface too.
    # setsid keeps a Ctrl-C of the calling terminal away from the server.
    setsid java "${heap[@]}" -Djava.awt.headless=true \
        -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="${REGISTRY_PORT}" \
        -Dquarkus.management.host=127.0.0.1 \
        -jar "${APP_JAR}" >>"${LOG}" 2>&1 </dev/null &
    pid=$!
    echo "${pid}" >"${PIDFILE}"
    deadline=$((SECONDS + REGISTRY_START_TIMEOUT_S))
    until answers; do
        if ! kill -0 "${pid}" 2>/dev/null; then
            grep -v '^[[:space:]]*at ' "${LOG}" | tail -n 20 >&2
            die "registry exited during start, see ${LOG}"
        fi
        if ((SECONDS >= deadline)); then
            die "registry not answering after ${REGISTRY_START_TIMEOUT_S}s, see ${LOG}"
        fi
        sleep 0.5
    done
    say "up (pid ${pid}) at ${SUBJECTS_URL%/subjects}, log ${LOG}"
}

status() {
    local pid
    if pid=$(live_pid "${PIDFILE}" "${MARKER}"); then
        if answers; then
            say "up (pid ${pid}) at ${SUBJECTS_URL%/subjects}, log ${LOG}"
            return 0
        fi
        say "process ${pid} alive but ${SUBJECTS_URL} not answering, log ${LOG}"
        return 1
    fi
    say "down"
    return 3
}

case ${1:-} in
    start) start ;;
    stop) stop_pid "${PIDFILE}" "${MARKER}" 20 ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
