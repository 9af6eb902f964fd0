#!/usr/bin/env bash
# Run a throw-away Redis server on loopback for tests and demos.
#
#   deploy/local/redis.sh start|stop|status
#
# Environment:
#   REDIS_PORT   port on 127.0.0.1 (default 6390, away from the usual 6379)
#
# Uses redis-server from PATH; when there is none, installs Debian's
# redis-server package (needs root). Nothing is persisted: a restart begins
# with an empty server. Pid file and log live in .run/redis/.
set -euo pipefail

SERVICE=redis
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_PORT=${REDIS_PORT:-6390}

STATE_DIR=${RUN_DIR}/redis
PIDFILE=${STATE_DIR}/redis.pid
LOG=${STATE_DIR}/redis.log
MARKER=redis-server
# The service that the Debian package may start on installation.
DEBIAN_PIDFILE=/run/redis/redis-server.pid

install_redis() {
    command -v redis-server >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "redis-server not on PATH and no apt-get to install it"
    ((EUID == 0)) || die "redis-server not on PATH; install it (needs root)"
    local debian_was_running=0
    [[ -s ${DEBIAN_PIDFILE} ]] && kill -0 "$(<"${DEBIAN_PIDFILE}")" 2>/dev/null \
        && debian_was_running=1
    say "installing Debian's redis-server package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        redis-server >/dev/null
    # The package's install script may start the system service on 6379.
    # Nothing here uses it, so a service that this install started is a
    # stray: stop it.
    if ((debian_was_running == 0)) && [[ -s ${DEBIAN_PIDFILE} ]] \
        && kill -0 "$(<"${DEBIAN_PIDFILE}")" 2>/dev/null; then
        say "stopping the system redis-server service the package started"
        service redis-server stop >/dev/null 2>&1 \
            || kill -TERM "$(<"${DEBIAN_PIDFILE}")" 2>/dev/null || true
    fi
}

ping() {
    [[ $(redis-cli -h 127.0.0.1 -p "${REDIS_PORT}" ping 2>/dev/null) == PONG ]]
}

start() {
    local pid deadline
    if pid=$(live_pid "${PIDFILE}" "${MARKER}"); then
        ping || die "running (pid ${pid}) but not on port ${REDIS_PORT}; stop it first"
        say "already running (pid ${pid}) on 127.0.0.1:${REDIS_PORT}, log ${LOG}"
        return 0
    fi
    if port_open "${REDIS_PORT}"; then
        die "port ${REDIS_PORT} is taken by a process this checkout did not start"
    fi
    install_redis
    mkdir -p "${STATE_DIR}"
    rotate_log "${LOG}"
    # A dump left by a manual SAVE or SHUTDOWN SAVE would be loaded on start
    # and bring back stale state; this server begins empty, as promised.
    rm -f "${STATE_DIR}/dump.rdb"
    redis-server --bind 127.0.0.1 --port "${REDIS_PORT}" --protected-mode yes \
        --save '' --appendonly no --dir "${STATE_DIR}" \
        --hash-max-listpack-value 512 \
        --daemonize yes --pidfile "${PIDFILE}" --logfile "${LOG}" \
        || die "redis-server failed to start, see ${LOG}"
    deadline=$((SECONDS + 20))
    until ping; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "${LOG}" >&2
            die "no PONG on 127.0.0.1:${REDIS_PORT} after 20s, see ${LOG}"
        fi
        sleep 0.1
    done
    say "up (pid $(<"${PIDFILE}")) on 127.0.0.1:${REDIS_PORT}, log ${LOG}"
}

status() {
    local pid
    if pid=$(live_pid "${PIDFILE}" "${MARKER}"); then
        if ping; then
            say "up (pid ${pid}) on 127.0.0.1:${REDIS_PORT}, log ${LOG}"
            return 0
        fi
        say "process ${pid} alive but no PONG on port ${REDIS_PORT}, log ${LOG}"
        return 1
    fi
    say "down"
    return 3
}

case ${1:-} in
    start) start ;;
    stop) stop_pid "${PIDFILE}" "${MARKER}" 10 ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
