#!/usr/bin/env bash
# `just bench-http`: GET /tasks/{random id}/ over HTTP with wrk (-t2 -c64)
# against five servers on the same database and the same ids, each run a
# fresh process, in rounds whose order rotates:
# - `tracker serve` as shipped (metrics on, the default `info` filter: one
#   access line per request);
# - `tracker serve --metrics off`, which shows in the same run what metrics
#   cost, the figure docs/operations.md points to;
# - `seaorm-server` (axum and SeaORM with default `ConnectOptions`,
#   `Entity::find_by_id`) and `sqlx-server` (axum, a default `PgPool` and
#   `query_as`): what a user would write instead;
# - `limit-server` (tokio-postgres, queries pipelined on two shared
#   connections): what the driver allows.
# The three reference servers answer with the tracker's exact bytes
# (crates/bench/src/bin, tested by `reference::` in crates/bench/tests/it).
# Prints req/s, p50/p99 latency and the server's peak RSS of every run (one
# JSON line each), then the servers side by side per round, the median
# ratios tracker/seaorm-server, tracker/sqlx-server and tracker/limit with
# their min and max, and what metrics cost. Before that, the in-process
# get_concurrent with and without `bench --metrics`, alternating, ROUNDS
# times each.
#
# Variables: ROUNDS (5), DURATION of a measured run (10s), WARMUP before it
# (2s), SERVER_LOG (the tracker's RUST_LOG; unset: its default, `info`),
# BENCH_DATABASE_URL. Every DB_* variable set in the environment reaches the
# tracker; none set means its default settings. PGSSLMODE (`disable` unless
# set) reaches every server: the tracker reaches a server on this machine
# without TLS by default, and sqlx's own default (`prefer`) would otherwise
# measure TLS in the reference servers.
set -euo pipefail
cd "$(dirname "$0")/.."

url="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tracker_bench}"
rounds="${ROUNDS:-5}"
duration="${DURATION:-10s}"
warmup="${WARMUP:-2s}"
stacks=(tracker tracker-metrics-off seaorm-server sqlx-server limit)
export PGSSLMODE="${PGSSLMODE:-disable}"

if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

# --- set-up: binaries, database, the scale-1 data ---------------------------
started=$(date +%s)
cargo build --release -q -p app -p bench
export DATABASE_URL="$url"
target/release/tracker db create >&2
target/release/bench --scale 1 --stack tracker --ops load --rounds 1 >&2

script=$(mktemp --suffix=.lua)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -f "$script"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$script" <<'LUA'
math.randomseed(42)
request = function()
    return wrk.format("GET", "/tasks/" .. math.random(1, 100000) .. "/")
end
done = function(summary, latency, requests)
    io.write(string.format("RESULT requests=%d errors=%d non2xx=%d p50_ms=%.2f p99_ms=%.2f\n",
        summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- one server per run -----------------------------------------------------
# start_server STACK: starts it on a free port; sets $server (pid) and $port.
start_server() {
    port=$(free_port)
    case "$1" in
        tracker)
            if [ -n "${SERVER_LOG:-}" ]; then
                RUST_LOG="$SERVER_LOG" target/release/tracker serve --addr "127.0.0.1:$port" "${@:2}" >/dev/null 2>&1 &
            else
                env -u RUST_LOG target/release/tracker serve --addr "127.0.0.1:$port" "${@:2}" >/dev/null 2>&1 &
            fi
            ;;
        tracker-metrics-off) start_server tracker --metrics off; return ;;
        seaorm-server | sqlx-server | limit-server)
            target/release/"$1" --addr "127.0.0.1:$port" >/dev/null 2>&1 &
            ;;
        limit) start_server limit-server; return ;;
        *) echo "unknown stack $1" >&2; exit 2 ;;
    esac
    server=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/tasks/1/" >/dev/null && return 0
        sleep 0.1
    done
    echo "$1 did not answer GET /tasks/1/ on port $port" >&2
    exit 1
}

stop_server() {
    kill -TERM "$server"
    wait "$server" || true
    server=""
}

# measure STACK ROUND: one warm-up and one measured wrk run; prints a JSON
# line and appends "STACK ROUND REQ_PER_S" to $results.
results=""
measure() {
    start_server "$1"
    wrk -t2 -c64 -d"$warmup" -s "$script" "http://127.0.0.1:$port" >/dev/null
    local output
    output=$(wrk -t2 -c64 -d"$duration" --latency -s "$script" "http://127.0.0.1:$port")
    local rss_kb
    rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
    stop_server
    local rps result p50 p99 errors non2xx requests
    rps=$(echo "$output" | awk '/Requests\/sec/ {print $2}')
    result=$(echo "$output" | grep '^RESULT')
    p50=$(echo "$result" | sed 's/.*p50_ms=\([0-9.]*\).*/\1/')
    p99=$(echo "$result" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/')
    errors=$(echo "$result" | sed 's/.*errors=\([0-9]*\).*/\1/')
    non2xx=$(echo "$result" | sed 's/.*non2xx=\([0-9]*\).*/\1/')
    printf '{"stack": "%s", "round": %s, "op": "get_http", "req_per_s": %s, "p50_ms": %s, "p99_ms": %s, "errors": %s, "non_2xx": %s, "server_peak_rss_mb": %s, "connections": 64}\n' \
        "$1" "$2" "$rps" "$p50" "$p99" "$errors" "$non2xx" "$(awk "BEGIN {printf \"%.1f\", $rss_kb / 1024}")"
    # A wrong answer fails the run; a few socket timeouts under full load do not.
    requests=$(echo "$result" | sed 's/.*requests=\([0-9]*\).*/\1/')
    if [ "$non2xx" != 0 ] || [ $((errors * 1000)) -gt "$requests" ]; then
        echo "$1: $errors socket errors, $non2xx answers other than 2xx in $requests requests" >&2
        exit 1
    fi
    results+="$1 $2 $rps"$'\n'
}

# --- what is measured --------------------------------------------------------
db_vars=$(env | grep '^DB_' | grep -v -e PASSWORD -e URL | sort | tr '\n' ' ' || true)
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tracker: RUST_LOG=${SERVER_LOG:-unset (default filter, info)}; DB_* set: ${db_vars:-none (default settings)}; PGSSLMODE=$PGSSLMODE"
echo "wrk -t2 -c64, $warmup warm-up + $duration per run, $rounds rounds alternating ${stacks[*]}"

# --- in process: get_concurrent without and with metrics, alternating -----
ops_per_s() { sed -n 's/.*"op":"get_concurrent".*"ops_per_s":\([0-9.]*\).*/\1/p'; }
for round in $(seq "$rounds"); do
    if ((round % 2)); then order=(off on); else order=(on off); fi
    for metrics in "${order[@]}"; do
        flag=$([ "$metrics" = on ] && echo --metrics || true)
        value=$(target/release/bench --scale 1 --stack tracker --ops get_concurrent --reuse --rounds 1 $flag |
            ops_per_s)
        echo "{\"op\": \"get_concurrent\", \"metrics\": \"$metrics\", \"round\": $round, \"ops_per_s\": $value}"
        results+="get_concurrent-$metrics $round $value"$'\n'
    done
done

# --- rounds; each starts one stack later than the one before ------------------
for round in $(seq "$rounds"); do
    first=$(((round - 1) % ${#stacks[@]}))
    order=("${stacks[@]:first}" "${stacks[@]:0:first}")
    for stack in "${order[@]}"; do
        measure "$stack" "$round"
    done
done

# --- side by side --------------------------------------------------------------
echo "$results" | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    if line.strip():
        stack, round_, rps = line.split()
        runs.setdefault(int(round_), {})[stack] = float(rps)
refs = ["seaorm-server", "sqlx-server", "limit"]
print("\n| round | tracker req/s | tracker --metrics off | seaorm-server | sqlx-server | limit | tracker/seaorm-server | tracker/sqlx-server | tracker/limit | metrics cost, HTTP | metrics cost, get_concurrent |")
print("|" + " --- |" * 11)
ratios = {ref: [] for ref in refs}
http_cost, inproc_cost = [], []
for r in sorted(runs):
    run = runs[r]
    t, off = run["tracker"], run["tracker-metrics-off"]
    for ref in refs:
        ratios[ref].append(t / run[ref])
    http_cost.append(100 * (1 - t / off))
    inproc_cost.append(100 * (1 - run["get_concurrent-on"] / run["get_concurrent-off"]))
    cells = [f"{run[s]:,.0f}" for s in ["tracker", "tracker-metrics-off"] + refs]
    cells += [f"{ratios[ref][-1]:.2f}" for ref in refs]
    cells += [f"{http_cost[-1]:.1f}%", f"{inproc_cost[-1]:.1f}%"]
    print(f"| {r} | " + " | ".join(cells) + " |")
TWO, ONE = ".2f", ".1f"
spread = lambda xs, f: f"median {statistics.median(xs):{f}} (min {min(xs):{f}}, max {max(xs):{f}})"
print()
for ref in refs:
    print(f"tracker/{ref}: {spread(ratios[ref], TWO)} over {len(ratios[ref])} rounds")
print(f"metrics cost, HTTP req/s: {spread(http_cost, ONE)} %")
print(f"metrics cost, in-process get_concurrent: {spread(inproc_cost, ONE)} %")
'
echo "took $(($(date +%s) - started)) s (set-up included); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
