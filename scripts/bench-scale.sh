#!/usr/bin/env bash
# `just bench-scale`: how cost grows with the data, on PostgreSQL. For each
# scale (0.1, 1 and 10 by default: 10k, 100k and 1M tasks) it loads the
# benchmark database, runs raw's `list` (plain OFFSET, the reference) and then
# the tracker stack's operations once on the same data, with `list_after`
# (keyset pages, flat at any depth); then it serves that
# database with `tracker serve` and drives GET /tasks/{random id}/ with wrk
# (-t2 -c64) while recording the server's peak RSS. The results (JSON lines)
# go to target/bench-scale.jsonl, the plot to docs/bench-scale.png, and the
# table into docs/performance.md between its bench-scale markers.
set -euo pipefail
cd "$(dirname "$0")/.."

url="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tracker_bench}"
scales="${SCALES:-0.1 1 10}"
duration="${DURATION:-10s}"
results=target/bench-scale.jsonl

for tool in wrk curl; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] ||
    { apt-get update -qq && apt-get install -y -qq fonts-dejavu-core >/dev/null; }

cargo build --release -q -p app -p bench
export DATABASE_URL="$url"
target/release/tracker db create >&2
: >"$results"

server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null || true; }
trap cleanup EXIT

for scale in $scales; do
    echo "== scale $scale" >&2
    # raw first, then the tracker, whose data the server then reads.
    target/release/bench --scale "$scale" --stack raw --ops list --rounds 1 >>"$results"
    target/release/bench --scale "$scale" --stack tracker --ops get,create,update,list,list_after,subtree --rounds 1 >>"$results"

    tasks=$(python3 -c "print(int(100000 * $scale))")
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RUST_LOG=warn target/release/tracker serve --addr "127.0.0.1:$port" >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 0.1
    done
    script=$(mktemp --suffix=.lua)
    printf 'math.randomseed(42)\nrequest = function()\n    return wrk.format("GET", "/tasks/" .. math.random(1, %d) .. "/")\nend\n' "$tasks" >"$script"
    output=$(wrk -t2 -c64 -d"$duration" -s "$script" "http://127.0.0.1:$port")
    rm -f "$script"
    echo "$output" >&2
    if echo "$output" | grep -q 'Non-2xx'; then
        echo "FATAL: the server answered errors under load" >&2
        exit 1
    fi
    rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
    kill -TERM "$server"
    wait "$server" || true
    server=
    rps=$(echo "$output" | awk '/Requests\/sec/ {print $2}')
    printf '{"stack": "tracker", "op": "http", "scale": %s, "req_per_s": %s, "rss_mb": %.1f}\n' \
        "$scale" "$rps" "$(python3 -c "print($rss_kb / 1024)")" >>"$results"
done

table=$(target/release/bench-plot docs/bench-scale.png <"$results")
echo "$table"
# The table goes between the markers in docs/performance.md.
python3 - "$table" <<'PY'
import re, sys
path = "docs/performance.md"
text = open(path).read()
begin, end = "<!-- bench-scale:begin -->", "<!-- bench-scale:end -->"
if begin not in text or end not in text:
    sys.exit(f"{path}: the {begin} ... {end} markers are missing")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(f"{head}{begin}\n{sys.argv[1]}\n{end}{tail}")
PY
echo "wrote $results, docs/bench-scale.png and the table in docs/performance.md" >&2
