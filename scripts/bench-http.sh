#!/usr/bin/env bash
# `just bench-http`: the HTTP path. Loads the scale-1 data into the benchmark
# database, measures the same run's get_concurrent (tracker stack), starts
# `tracker serve` on it, drives GET /tasks/{random id}/ with wrk (-t2 -c64
# -d10s), and reports req/s, p50/p99 latency, the server's peak RSS, and
# req/s against get_concurrent.
set -euo pipefail
cd "$(dirname "$0")/.."

url="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tracker_bench}"
duration="${DURATION:-10s}"
log="${SERVER_LOG:-warn}"

if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

cargo build --release -q -p app -p bench
export DATABASE_URL="$url"
target/release/tracker db create >&2

# Fresh tables, the scale-1 data, and get_concurrent through the tracker stack.
concurrent=$(target/release/bench --scale 1 --stack tracker --ops load,get_concurrent --rounds 1 |
    tee /dev/stderr | sed -n 's/.*"op":"get_concurrent".*"ops_per_s":\([0-9.]*\).*/\1/p')

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG="$log" target/release/tracker serve --addr "127.0.0.1:$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
done

script=$(mktemp --suffix=.lua)
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
output=$(wrk -t2 -c64 -d"$duration" --latency -s "$script" "http://127.0.0.1:$port")
rm -f "$script"
echo "$output" >&2
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
kill -TERM "$server"
wait "$server" || true
trap - EXIT

rps=$(echo "$output" | awk '/Requests\/sec/ {print $2}')
result=$(echo "$output" | grep '^RESULT')
p50=$(echo "$result" | sed 's/.*p50_ms=\([0-9.]*\).*/\1/')
p99=$(echo "$result" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/')
errors=$(echo "$result" | sed 's/.*errors=\([0-9]*\).*/\1/')
non2xx=$(echo "$result" | sed 's/.*non2xx=\([0-9]*\).*/\1/')
ratio=$(python3 -c "print(f'{$rps / $concurrent:.2f}')")
printf '{"stack": "tracker-http", "op": "get_http", "req_per_s": %s, "p50_ms": %s, "p99_ms": %s, "errors": %s, "non_2xx": %s, "server_peak_rss_mb": %.1f, "get_concurrent_ops_per_s": %s, "http_over_get_concurrent": %s, "connections": 64, "server_log": "%s"}\n' \
    "$rps" "$p50" "$p99" "$errors" "$non2xx" "$(python3 -c "print($rss_kb / 1024)")" "$concurrent" "$ratio" "$log"
