#!/usr/bin/env bash
# `just bench-scaling`: get_concurrent through the tracker stack on a private
# PostgreSQL, directly, through PgBouncer (transaction pooling), and with
# reads spread over the primary and a streaming replica. Everything runs on
# free ports in a temporary folder, removed afterwards. Prints one JSON line
# per configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-1}"

if ! command -v pgbouncer >/dev/null; then
    echo "installing pgbouncer (Debian package)" >&2
    apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work"
primary_port=$(free_port); replica_port=$(free_port); bouncer_port=$(free_port)
cleanup() {
    [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true
    as_postgres "$bin/pg_ctl" -D "$work/replica" -m immediate stop >/dev/null 2>&1 || true
    as_postgres "$bin/pg_ctl" -D "$work/primary" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

start() { # data dir, port
    as_postgres "$bin/pg_ctl" -D "$1" -l "$1.log" -w -o "-c port=$2 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work" start >/dev/null
}
as_postgres "$bin/initdb" -D "$work/primary" -U postgres --auth=trust --no-sync >/dev/null
start "$work/primary" "$primary_port"
as_postgres "$bin/psql" -h "$work" -p "$primary_port" -U postgres -qc "CREATE DATABASE tracker"
as_postgres "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$work/replica" -R -X stream --checkpoint=fast --no-sync
start "$work/replica" "$replica_port"

cat >"$work/pgbouncer.ini" <<INI
[databases]
tracker = host=127.0.0.1 port=$primary_port dbname=tracker
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = 16
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
pidfile = $work/pgbouncer.pid
logfile = $work/pgbouncer.log
INI
echo '"postgres" ""' >"$work/users.txt"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pgbouncer.ini" "$work/users.txt"
as_postgres pgbouncer -d "$work/pgbouncer.ini"

cargo build --release -q -p bench
direct="postgres://postgres@127.0.0.1:$primary_port/tracker"
# The data, loaded once directly; each configuration then reads it.
DATABASE_URL="$direct" target/release/bench --scale "$SCALE" --stack tracker --ops load --rounds 1 >/dev/null
for _ in $(seq 100); do
    [ "$(as_postgres "$bin/psql" -h "$work" -p "$replica_port" -U postgres -d tracker -tAc 'SELECT COUNT(*) FROM tasks' 2>/dev/null)" != "" ] && break
    sleep 0.1
done

run() { # label, then environment assignments
    local label=$1; shift
    env "$@" target/release/bench --scale "$SCALE" --stack tracker --ops get,get_concurrent --reuse --rounds 1 2>/dev/null |
        sed "s/^{/{\"configuration\": \"$label\", /"
}
run direct DATABASE_URL="$direct"
run pgbouncer DATABASE_URL="postgres://postgres@127.0.0.1:$bouncer_port/tracker" DB_TRANSACTION_POOLER=true
run primary+replica DATABASE_URL="$direct" DB_REPLICA_HOSTS="127.0.0.1:$replica_port"
