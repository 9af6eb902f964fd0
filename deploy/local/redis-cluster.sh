#!/usr/bin/env bash
# Run a throw-away three-node Redis Cluster on loopback, to test the service
# against the layout it must keep: every multi-key step within one slot.
#
#   deploy/local/redis-cluster.sh start|stop|status
#
# Environment:
#   REDIS_CLUSTER_PORTS   node ports on 127.0.0.1 (default "7101 7102 7103");
#                         each node also binds its cluster bus on port + 10000,
#                         so each must be at most 55535
#
# Three primaries, no replicas, created with `redis-cli --cluster create`.
# Uses Debian's redis-server and redis-cli from PATH (deploy/local/redis.sh
# installs them). Nothing is persisted: every start after a stop builds a new,
# empty cluster. Pid files, node tables and logs live in .run/redis-cluster/.
# Clients connect with LIFECYCLE_REDIS_URL=redis+cluster://127.0.0.1:7101/0.
set -euo pipefail

SERVICE=redis-cluster
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -ra PORTS <<<"${REDIS_CLUSTER_PORTS:-7101 7102 7103}"
for port in "${PORTS[@]}"; do
    # The cluster bus takes port + 10000, which must itself be a port.
    if [[ ! ${port} =~ ^[0-9]+$ ]] || ((port < 1 || port > 55535)); then
        die "REDIS_CLUSTER_PORTS: ${port} is not a port from 1 to 55535 (the bus uses port + 10000)"
    fi
done
STATE_DIR=${RUN_DIR}/redis-cluster
START_TIMEOUT_S=30

node_dir() { echo "${STATE_DIR}/$1"; }
node_pidfile() { echo "${STATE_DIR}/$1/redis.pid"; }
node_log() { echo "${STATE_DIR}/$1/redis.log"; }
# redis-server sets its process title to "<binary> <addr> [cluster]"; the
# address tells this checkout's nodes from any other redis-server.
node_marker() { echo "127.0.0.1:$1 [cluster]"; }

node_pid() { live_pid "$(node_pidfile "$1")" "$(node_marker "$1")"; }

cli() {
    local port=$1
    shift
    redis-cli -h 127.0.0.1 -p "${port}" "$@"
}

ping() { [[ $(cli "$1" ping 2>/dev/null) == PONG ]]; }

# True when node $1 sees every slot served and all three nodes known.
cluster_ok() {
    local info
    info=$(cli "$1" cluster info 2>/dev/null) || return 1
    grep -q '^cluster_state:ok' <<<"${info}" \
        && grep -q "^cluster_known_nodes:${#PORTS[@]}" <<<"${info}"
}

all_ok() {
    local port
    for port in "${PORTS[@]}"; do
        cluster_ok "${port}" || return 1
    done
}

# Print how many nodes of this checkout are alive.
alive_count() {
    local port count=0
    for port in "${PORTS[@]}"; do
        node_pid "${port}" >/dev/null && count=$((count + 1))
    done
    echo "${count}"
}

start_node() {
    local port=$1 dir
    dir=$(node_dir "${port}")
    # A node table left by an earlier cluster would make this node rejoin it
    # with slots whose data is gone: start from nothing.
    rm -rf "${dir}"
    mkdir -p "${dir}"
    : >"$(node_log "${port}")"
    redis-server --bind 127.0.0.1 --port "${port}" --protected-mode yes \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 5000 \
        --save '' --appendonly no --dir "${dir}" \
        --daemonize yes --pidfile "$(node_pidfile "${port}")" \
        --logfile "$(node_log "${port}")" \
        || die "node ${port} failed to start, see $(node_log "${port}")"
}

wait_until() {
    local what=$1 deadline=$((SECONDS + START_TIMEOUT_S))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die "${what} after ${START_TIMEOUT_S}s, see ${STATE_DIR}/*/redis.log"
        fi
        sleep 0.2
    done
}

start() {
    local port probe alive addresses=()
    alive=$(alive_count)
    if ((alive == ${#PORTS[@]})) && all_ok; then
        say "already running on 127.0.0.1 ports ${PORTS[*]}"
        return 0
    fi
    if ((alive > 0)); then
        die "${alive} of ${#PORTS[@]} nodes alive, cluster not ok; stop it first"
    fi
    for port in "${PORTS[@]}"; do
        for probe in "${port}" $((port + 10000)); do
            if port_open "${probe}"; then
                die "port ${probe} is taken by a process this checkout did not start"
            fi
        done
    done
    if ! command -v redis-server >/dev/null 2>&1 \
        || ! command -v redis-cli >/dev/null 2>&1; then
        die "no redis-server or redis-cli on PATH; deploy/local/redis.sh installs them"
    fi
    for port in "${PORTS[@]}"; do
        start_node "${port}"
        addresses+=("127.0.0.1:${port}")
    done
    for port in "${PORTS[@]}"; do
        wait_until "no PONG on 127.0.0.1:${port}" ping "${port}"
    done
    say "creating the cluster of ${addresses[*]}"
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 \
        --cluster-yes >"${STATE_DIR}/create.log" 2>&1 \
        || die "cluster create failed, see ${STATE_DIR}/create.log"
    # create returns once slots are assigned; the nodes agree a moment later.
    wait_until "cluster not ok" all_ok
    say "up on 127.0.0.1 ports ${PORTS[*]}, url redis+cluster://127.0.0.1:${PORTS[0]}/0"
}

stop() {
    local port failed=0
    for port in "${PORTS[@]}"; do
        SERVICE="redis-cluster ${port}" \
            stop_pid "$(node_pidfile "${port}")" "$(node_marker "${port}")" 10 \
            || failed=1
    done
    return "${failed}"
}

status() {
    local alive
    alive=$(alive_count)
    if ((alive == ${#PORTS[@]})) && all_ok; then
        say "up on 127.0.0.1 ports ${PORTS[*]}, logs under ${STATE_DIR}"
        return 0
    fi
    if ((alive > 0)); then
        say "${alive} of ${#PORTS[@]} nodes alive, cluster not ok, see ${STATE_DIR}"
        return 1
    fi
    say "down"
    return 3
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
