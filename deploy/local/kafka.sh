#!/usr/bin/env bash
# Run a single-node Apache Kafka broker (KRaft, broker and controller in one
# process) on loopback, from the broker's own jars on Maven Central.
#
#   deploy/local/kafka.sh start|stop|status
#
# Environment:
#   KAFKA_PORT              client listener port (default 9092)
#   KAFKA_CONTROLLER_PORT   KRaft controller port (default 9093)
#   KAFKA_HEAP_OPTS         JVM heap options (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT_S   how long start waits for the broker (default 120)
#   KAFKA_STATE_DIR         properties, data, pid and log (default .run/kafka);
#                           a second broker needs its own, and its own ports
#
# The jars are gathered once into .cache/kafka/libs by maven (pom.xml beside
# this script); storage is formatted once into the state directory. Remove
# the state directory to start from an empty broker.
set -euo pipefail

SERVICE=kafka
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_START_TIMEOUT_S=${KAFKA_START_TIMEOUT_S:-120}

POM=${LOCAL_DIR}/kafka/pom.xml
LIBS_DIR=${CACHE_DIR}/kafka/libs
LIBS_STAMP=${LIBS_DIR}/.complete
STATE_DIR=${KAFKA_STATE_DIR:-${RUN_DIR}/kafka}
DATA_DIR=${STATE_DIR}/data
PROPS=${STATE_DIR}/server.properties
PIDFILE=${STATE_DIR}/kafka.pid
LOG=${STATE_DIR}/kafka.log
# Only a process started from this checkout carries this path on its command
# line; stop and status act on nothing else.
MARKER=${PROPS}

fetch_jars() {
    if [[ -f ${LIBS_STAMP} && ${LIBS_STAMP} -nt ${POM} ]]; then
        return 0
    fi
    say "collecting broker jars from Maven Central into ${LIBS_DIR}"
    # Start from an empty directory: jars of an older version left beside the
    # new ones would put two copies of each class on the class path.
    rm -rf "${LIBS_DIR}"
    mvn_local -f "${POM}" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="${LIBS_DIR}"
    touch "${LIBS_STAMP}"
}

# The java command line up to the main class, shared by the storage tool
# and the broker.
java_args() {
    read -ra JAVA_ARGS <<<"${KAFKA_HEAP_OPTS}"
    JAVA_ARGS=(java "${JAVA_ARGS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=${LOCAL_DIR}/kafka/log4j2.properties"
        -cp "${LIBS_DIR}/*")
}

write_properties() {
    mkdir -p "${STATE_DIR}"
    sed -e "s|@KAFKA_PORT@|${KAFKA_PORT}|g" \
        -e "s|@CONTROLLER_PORT@|${KAFKA_CONTROLLER_PORT}|g" \
        -e "s|@DATA_DIR@|${DATA_DIR}|g" \
        "${LOCAL_DIR}/kafka/server.properties" >"${PROPS}"
}

format_storage() {
    [[ -f ${DATA_DIR}/meta.properties ]] && return 0
    local cluster_id
    # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding;
    # one starting with '-' would read as an option, so draw again.
    cluster_id=$("$(python_bin)" -c '
import base64, uuid
while True:
    text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not text.startswith("-"):
        print(text)
        break
')
    say "formatting storage in ${DATA_DIR} (cluster id ${cluster_id})"
    "${JAVA_ARGS[@]}" kafka.tools.StorageTool format -t "${cluster_id}" -c "${PROPS}" \
        >>"${LOG}" 2>&1 || die "storage format failed, see ${LOG}"
}

wait_ready() {
    local pid=$1 deadline=$((SECONDS + KAFKA_START_TIMEOUT_S))
    # The broker logs this line once it has joined the quorum and been
    # unfenced, that is, when it serves metadata and accepts produce requests.
    until grep -q 'Kafka Server started' "${LOG}" && port_open "${KAFKA_PORT}"; do
        if ! kill -0 "${pid}" 2>/dev/null; then
            tail -n 30 "${LOG}" >&2
            die "broker exited during start, see ${LOG}"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "${LOG}" >&2
            die "broker not ready after ${KAFKA_START_TIMEOUT_S}s, see ${LOG}"
        fi
        sleep 0.5
    done
}

start() {
    local pid
    if pid=$(live_pid "${PIDFILE}" "${MARKER}"); then
        port_open "${KAFKA_PORT}" \
            || die "running (pid ${pid}) but not on port ${KAFKA_PORT}; stop it first"
        say "already running (pid ${pid}) on 127.0.0.1:${KAFKA_PORT}, log ${LOG}"
        return 0
    fi
    for port in "${KAFKA_PORT}" "${KAFKA_CONTROLLER_PORT}"; do
        if port_open "${port}"; then
            die "port ${port} is taken by a process this checkout did not start"
        fi
    done
    command -v java >/dev/null 2>&1 || die "java not found on PATH"
    fetch_jars
    java_args
    write_properties
    rotate_log "${LOG}"
    format_storage
    say "starting on 127.0.0.1:${KAFKA_PORT} (controller ${KAFKA_CONTROLLER_PORT})"
    # setsid: a Ctrl-C in the terminal that ran `make` must not reach the
    # broker. Not being a group leader, setsid execs in place, so $! is java.
    setsid "${JAVA_ARGS[@]}" kafka.Kafka "${PROPS}" >>"${LOG}" 2>&1 </dev/null &
    pid=$!
    echo "${pid}" >"${PIDFILE}"
    wait_ready "${pid}"
    say "up (pid ${pid}) on 127.0.0.1:${KAFKA_PORT}, log ${LOG}"
}

status() {
    local pid
    if pid=$(live_pid "${PIDFILE}" "${MARKER}"); then
        if port_open "${KAFKA_PORT}"; then
            say "up (pid ${pid}) on 127.0.0.1:${KAFKA_PORT}, log ${LOG}"
            return 0
        fi
        say "process ${pid} alive but port ${KAFKA_PORT} closed, log ${LOG}"
        return 1
    fi
    say "down"
    return 3
}

case ${1:-} in
    start) start ;;
    # Controlled shutdown of a single node takes a few seconds.
    stop) stop_pid "${PIDFILE}" "${MARKER}" 60 ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
