#!/usr/bin/env bash
# `just profile-routes`: what each read route of `tracker serve` costs per
# request in CPU instructions, counted by valgrind's callgrind, which does
# not depend on how busy the machine is. For each route: a fresh `tracker
# serve` (release build, as shipped: metrics on, `info` access log) under
# callgrind on the scale-1 data, a warm-up, then REQUESTS (200) requests one
# after the other on one keep-alive connection with only those counted.
# Prints, per route, the instructions per request of the whole process
# (every thread) and the shares (inclusive) of what SeaORM and the log add
# per request: assembling a select of every column (`Entity::find`,
# `find_by_id`, `find_related`: the largest of them, a lower bound when a
# route assembles two), rendering a statement's SQL (`StatementBuilder::build`),
# both of which a route on a `db_core::CachedStatement` run through
# `Model::find_by_statement` does once per process instead; decoding rows
# into models (`FromQueryResult`, by column name); formatting the access line.
#
# Variables: REQUESTS (200), BENCH_DATABASE_URL (its data is replaced),
# KEEP (a folder to keep the callgrind files in; `callgrind_annotate
# --inclusive=yes FILE` shows where the rest goes).
set -euo pipefail
cd "$(dirname "$0")/.."

url="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tracker_bench}"
requests="${REQUESTS:-200}"
export PGSSLMODE="${PGSSLMODE:-disable}"

for tool in valgrind callgrind_annotate callgrind_control; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing valgrind (Debian package)" >&2
        apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
        break
    fi
done

cargo build --release -q -p app -p bench
export DATABASE_URL="$url"
target/release/tracker db create >&2
target/release/bench --scale 1 --stack tracker --ops load --rounds 1 >&2

out="${KEEP:-$(mktemp -d)}"
mkdir -p "$out"
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$out"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# get PORT PATH N: N requests on one connection, each answered 200.
get() {
    python3 - "$@" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
for _ in range(n):
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"GET {path}: {response.status}")
PY
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Task 1000 heads a subtree of 11 tasks at scale 1; employee 7 has 100 tasks.
routes=(/tasks/7/ /tasks/ /employees/ /employees/7/ /tasks/1000/subtree/ /employees/7/tasks/)
echo "callgrind, $requests sequential requests per route after 20 to warm up; tracker as shipped (metrics on, RUST_LOG unset: info)"
echo
echo "| route | instructions per request | assembling selects | rendering SQL | decoding rows | formatting the access line |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for route in "${routes[@]}"; do
    name=$(echo "$route" | tr -c 'a-z0-9\n' '_')
    port=$(free_port)
    env -u RUST_LOG valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$out/$name.out" \
        target/release/tracker serve --addr "127.0.0.1:$port" >/dev/null 2>"$out/$name.log" &
    server=$!
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 0.2
    done
    get "$port" "$route" 20
    callgrind_control -i on "$server" >/dev/null
    get "$port" "$route" "$requests"
    callgrind_control -i off "$server" >/dev/null
    kill -TERM "$server"
    wait "$server" || true
    server=""
    callgrind_annotate --inclusive=yes --threshold=100 "$out/$name.out" >"$out/$name.txt" 2>/dev/null
    python3 - "$out/$name.txt" "$route" "$requests" <<'PY'
import re, sys
path, route, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Inclusive costs. One function can be listed several times (once per
# source file its inlined code comes from): the largest entry counts.
PARTS = {
    # Where the select is assembled; they call one another, or are inlined
    # into one another, so the largest of them stands for all.
    "select": r"sea_orm::query::select::Select<E>::new$|EntityTrait::find(_by_id)?$|ModelTrait::find_related$",
    "sql": r"SelectStatement as sea_orm::database::statement::StatementBuilder>::build",
    "decode": r"Model as sea_orm::entity::model::FromQueryResult>::from_query_result$",
    "log": r"(migration::binary::text::Text|Format<tracing_subscriber::fmt::format::Full,T>) as tracing_subscriber::fmt::format::FormatEvent<S,N>>::format_event$",
}
total, parts = None, {k: 0 for k in PARTS}
for line in open(path):
    m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(.*?)(?: \[[^\]]*\])?$", line)
    if not m:
        continue
    cost, what = int(m.group(1).replace(",", "")), m.group(2)
    if "PROGRAM TOTALS" in what:
        total = cost
    for key, pattern in PARTS.items():
        if re.search(pattern, what):
            parts[key] = max(parts[key], cost)
share = lambda key: f"{100 * parts[key] / total:.1f}%"
print(f"| `GET {route}` | {total / n:,.0f} | {share('select')} | {share('sql')} | {share('decode')} | {share('log')} |")
PY
done
