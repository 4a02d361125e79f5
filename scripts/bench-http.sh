#!/usr/bin/env bash
# `just bench-http`: the HTTP path, with metrics on and off in one run.
# Loads the scale-1 data into the benchmark database, measures get_concurrent
# (tracker stack) with and without `bench --metrics` in alternating rounds
# (medians), then ROUNDS times (3 by default) starts `tracker serve --metrics
# on` and `--metrics off` in turn on the same database and drives GET /tasks/{random id}/ with wrk (-t2 -c64
# -d$DURATION). Prints one JSON line per round and a last line with the
# medians and what metrics cost (percent of throughput).
set -euo pipefail
cd "$(dirname "$0")/.."

url="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tracker_bench}"
duration="${DURATION:-10s}"
rounds="${ROUNDS:-3}"
log="${SERVER_LOG:-warn}"
# PROFILE=dev: a quick check of the script itself on debug builds (no figures).
profile="${PROFILE:-release}"
bin=target/$([ "$profile" = dev ] && echo debug || echo "$profile")

if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

cargo build --profile "$profile" -q -p app -p bench
export DATABASE_URL="$url"
"$bin"/tracker db create >&2

# get_concurrent's ops/s from one bench run's output.
ops_per_s() { sed -n 's/.*"op":"get_concurrent".*"ops_per_s":\([0-9.]*\).*/\1/p'; }

# Fresh tables and the scale-1 data; then get_concurrent on that data without
# and with metrics, alternating, ROUNDS times each.
"$bin"/bench --scale 1 --stack tracker --ops load --rounds 1 >&2
concurrent_off=() concurrent_on=()
for n in $(seq "$rounds"); do
    if ((n % 2)); then order="off on"; else order="on off"; fi
    for metrics in $order; do
        flag=$([ "$metrics" = on ] && echo --metrics || true)
        value=$("$bin"/bench --scale 1 --stack tracker --ops get_concurrent --reuse --rounds 1 $flag |
            tee /dev/stderr | ops_per_s)
        if [ "$metrics" = on ]; then concurrent_on+=("$value"); else concurrent_off+=("$value"); fi
    done
done
median() { printf '%s\n' "$@" | python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.stdin))'; }
concurrent_off=$(median "${concurrent_off[@]}")
concurrent_on=$(median "${concurrent_on[@]}")

script=$(mktemp --suffix=.lua)
trap 'rm -f "$script"' EXIT
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

# round METRICS N: one `tracker serve --metrics METRICS` and one wrk run;
# prints a JSON line and appends req/s to the file for METRICS.
round() {
    local metrics=$1 n=$2 port server output rss_kb rps result
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RUST_LOG="$log" "$bin"/tracker serve --addr "127.0.0.1:$port" --metrics "$metrics" >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 0.1
    done
    output=$(wrk -t2 -c64 -d"$duration" --latency -s "$script" "http://127.0.0.1:$port")
    echo "$output" >&2
    if [ "$metrics" = on ]; then
        curl -fs "http://127.0.0.1:$port/metrics" | grep -c '^[a-z]' | sed 's/^/metrics series: /' >&2
    fi
    rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
    kill -TERM "$server"
    wait "$server" || true
    rps=$(echo "$output" | awk '/Requests\/sec/ {print $2}')
    result=$(echo "$output" | grep '^RESULT')
    echo "$rps" >>"$script.$metrics"
    printf '{"stack": "tracker-http", "op": "get_http", "metrics": "%s", "round": %s, "req_per_s": %s, "p50_ms": %s, "p99_ms": %s, "errors": %s, "non_2xx": %s, "server_peak_rss_mb": %.1f, "connections": 64, "server_log": "%s"}\n' \
        "$metrics" "$n" "$rps" \
        "$(echo "$result" | sed 's/.*p50_ms=\([0-9.]*\).*/\1/')" \
        "$(echo "$result" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/')" \
        "$(echo "$result" | sed 's/.*errors=\([0-9]*\).*/\1/')" \
        "$(echo "$result" | sed 's/.*non2xx=\([0-9]*\).*/\1/')" \
        "$(python3 -c "print($rss_kb / 1024)")" "$log"
}

trap 'rm -f "$script" "$script.on" "$script.off"' EXIT
for n in $(seq "$rounds"); do
    # Alternating which goes first keeps a drift of the machine from
    # favouring one side.
    if ((n % 2)); then order="on off"; else order="off on"; fi
    for metrics in $order; do
        round "$metrics" "$n"
    done
done

python3 - "$script.on" "$script.off" "$concurrent_on" "$concurrent_off" <<'PY'
import json, statistics, sys
on = statistics.median(float(x) for x in open(sys.argv[1]))
off = statistics.median(float(x) for x in open(sys.argv[2]))
c_on, c_off = float(sys.argv[3]), float(sys.argv[4])
print(json.dumps({
    "stack": "tracker-http", "op": "metrics_cost",
    "http_req_per_s_on": on, "http_req_per_s_off": off,
    "http_cost_pct": round(100 * (off - on) / off, 2),
    "get_concurrent_ops_per_s_on": c_on, "get_concurrent_ops_per_s_off": c_off,
    "get_concurrent_cost_pct": round(100 * (c_off - c_on) / c_off, 2),
    "http_over_get_concurrent": round(off / c_off, 2),
}))
PY
