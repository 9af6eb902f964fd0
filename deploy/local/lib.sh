# Helpers shared by the local service scripts. Sourced, never run.
#
# Every service keeps its downloads under .cache/ and its pid file, data and
# log under .run/<service>/, both inside the checkout and git-ignored, so two
# checkouts never share state (they do share the loopback ports, though).

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_DIR=${ROOT_DIR}/.cache
RUN_DIR=${ROOT_DIR}/.run
LOCAL_DIR=${ROOT_DIR}/deploy/local

say() { printf '%s: %s\n' "${SERVICE:?}" "$*"; }
die() { printf '%s: error: %s\n' "${SERVICE:?}" "$*" >&2; exit 1; }

# Python for small probes; only the standard library is needed.
python_bin() {
    if command -v python3.11 >/dev/null 2>&1; then echo python3.11
    else echo python3; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Print the pid recorded in pid file $1 if that process is alive and its
# command line contains $2 (guards against a recycled pid); fail otherwise.
live_pid() {
    local pidfile=$1 marker=$2 pid
    [[ -s ${pidfile} ]] || return 1
    pid=$(<"${pidfile}")
    [[ ${pid} =~ ^[0-9]+$ ]] || return 1
    kill -0 "${pid}" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "${marker}" \
        || return 1
    echo "${pid}"
}

# Stop the process of pid file $1 (checked against marker $2): SIGTERM, wait
# up to $3 seconds for a clean exit, then SIGKILL. Removes the pid file.
stop_pid() {
    local pidfile=$1 marker=$2 grace_s=$3 pid waited=0
    if ! pid=$(live_pid "${pidfile}" "${marker}"); then
        rm -f "${pidfile}"
        say "not running"
        return 0
    fi
    kill -TERM "${pid}" 2>/dev/null || true
    while kill -0 "${pid}" 2>/dev/null && ((waited < grace_s * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "${pid}" 2>/dev/null; then
        say "no exit after ${grace_s}s, killing pid ${pid}"
        kill -KILL "${pid}" 2>/dev/null || true
        while kill -0 "${pid}" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "${pidfile}"
    say "stopped (pid ${pid})"
}

# Keep the previous log beside the new one, so a start that fails can be
# compared with the last one that worked.
rotate_log() {
    [[ -f $1 ]] && mv -f "$1" "$1.1"
    : >"$1"
}

# Run maven with its local repository inside .cache, so that nothing outside
# the checkout is needed and a second run downloads nothing. Its output is
# shown only when it fails.
mvn_local() {
    local output
    command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH"
    if ! output=$(mvn -B -q -Dmaven.repo.local="${CACHE_DIR}/m2" "$@" 2>&1); then
        printf '%s\n' "${output}" >&2
        die "maven failed: mvn $*"
    fi
}
