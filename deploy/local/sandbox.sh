#!/usr/bin/env bash
# Start, stop or report the local Crisp sandbox (`crisp-lifecycle sandbox`),
# the project's own Crisp-compatible server, on 127.0.0.1:${SANDBOX_PORT}.
#
#   deploy/local/sandbox.sh start|stop|status
#
# Needs the virtual environment (`make venv`). Its credentials are the
# sandbox's throwaway defaults; `sandbox.env` beside its log holds the
# CRISP_* settings that point the service at it.
set -euo pipefail

SERVICE=sandbox
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SANDBOX_PORT=${SANDBOX_PORT:-8765}
# A local demo syncs a few thousand contacts; real Crisp allows ~5,000/day.
SANDBOX_DAILY_QUOTA=${SANDBOX_DAILY_QUOTA:-100000}
STATE_DIR=${RUN_DIR}/sandbox
PIDFILE=${STATE_DIR}/sandbox.pid
LOG=${STATE_DIR}/sandbox.log
ENV_FILE=${STATE_DIR}/sandbox.env
MARKER="consumer sandbox"
BIN=${ROOT_DIR}/.venv/bin

answers() {
    "$(python_bin)" - "${SANDBOX_PORT}" <<'PY'
import sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/_sandbox/profiles"
try:
    urllib.request.urlopen(url, timeout=2).read()
except Exception:
    sys.exit(1)
PY
}

start() {
    local pid deadline
    if pid=$(live_pid "${PIDFILE}" "${MARKER}"); then
        say "already running (pid ${pid}) on 127.0.0.1:${SANDBOX_PORT}, log ${LOG}"
        return 0
    fi
    if port_open "${SANDBOX_PORT}"; then
        die "port ${SANDBOX_PORT} is taken by a process this checkout did not start"
    fi
    [[ -x ${BIN}/python ]] || die "no virtual environment; run 'make venv' first"
    mkdir -p "${STATE_DIR}"
    rotate_log "${LOG}"
    nohup "${BIN}/python" -m consumer sandbox --host 127.0.0.1 \
        --port "${SANDBOX_PORT}" --daily-quota "${SANDBOX_DAILY_QUOTA}" \
        >"${LOG}" 2>&1 &
    echo $! >"${PIDFILE}"
    deadline=$((SECONDS + 20))
    until answers; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "${LOG}" >&2
            die "no answer on 127.0.0.1:${SANDBOX_PORT} after 20s, see ${LOG}"
        fi
        sleep 0.2
    done
    cat >"${ENV_FILE}" <<ENV
CRISP_BASE_URL=http://127.0.0.1:${SANDBOX_PORT}/v1
CRISP_WEBSITE_ID=sandbox-website
CRISP_IDENTIFIER=sandbox
CRISP_KEY=sandbox-key
ENV
    say "up (pid $(<"${PIDFILE}")) at http://127.0.0.1:${SANDBOX_PORT}/v1, log ${LOG}"
}

status() {
    local pid
    if pid=$(live_pid "${PIDFILE}" "${MARKER}") && answers; then
        say "up (pid ${pid}) at http://127.0.0.1:${SANDBOX_PORT}/v1, log ${LOG}"
        return 0
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
