# Task Tracker workspace recipes: thin wrappers over cargo and the migration
# CLI. Those that run the app or the migrations read the same configuration as
# the app (environment, .env, config/*.toml). `just --list` shows them.

# sea-orm-cli flags for entity/src/generated, chosen once: the compact format
# (relations as an enum, `Linked` impls for the task tree in entity/src/links.rs),
# serde derives, no version banner, without the migration tables.
entity_flags := "--entity-format compact --with-serde both --banner-version off --ignore-tables seaql_migrations,seaql_migrations_adopted"

# List the recipes.
default:
    @just --list

# Run the app: `just run` serves on 127.0.0.1:8000 (SQLite unless configured); `just run db check`.
run *ARGS:
    cargo run -p app -- {{ARGS}}

# Run every test (server suites too when TEST_POSTGRES_URL / TEST_MYSQL_URL are set).
test *ARGS:
    cargo test --workspace {{ARGS}}

# Apply pending migrations (all, or `-n N`), adopting existing tables of the same shape.
migrate *ARGS:
    cargo run -q -p migration -- up {{ARGS}}

# Record migrations as applied without running them, for existing tables adoption cannot verify (`--to NAME`).
migrate-baseline *ARGS:
    cargo run -q -p migration -- baseline {{ARGS}}

# Revert the last migration (or `-n N`; `--force` for an adopted one).
migrate-down *ARGS:
    cargo run -q -p migration -- down {{ARGS}}

# Show which migrations are applied (read-only).
migrate-status:
    cargo run -q -p migration -- status

# Print the SQL the pending migrations run (`--all`: every one), from a scratch database on the configured PostgreSQL.
migrate-sql *ARGS:
    cargo run -q -p migration -- sql {{ARGS}}

# The migration linter, pinned: squawk-cli from PyPI.
squawk_cli := "squawk-cli==2.70.0"

# Install the pinned squawk.
squawk-tool:
    python3 -m pip install -q {{squawk_cli}}

# Lint every migration's SQL with squawk, on an empty database and on the original app's (needs TEST_POSTGRES_URL).
lint-migrations: squawk-tool
    TEST_SQUAWK=1 cargo test -p migration --test it -- sql::

# Drop every table and apply all migrations.
migrate-fresh *ARGS:
    cargo run -q -p migration -- fresh {{ARGS}}

# Write a new migration file into migration/src: `just migration add_task_priority`.
migration NAME:
    cargo run -q -p migration -- generate {{NAME}}

# Regenerate entity/src/generated from a scratch database on the configured PostgreSQL server.
entities:
    cargo run -q -p migration -- entities -- {{entity_flags}}

# Fail with a diff if entity/src/generated is not what the migrations generate (`--live`: what the configured database generates).
check-entities *ARGS:
    cargo run -q -p migration -- entities --check {{ARGS}} -- {{entity_flags}}

# Benchmark scale: `SCALE=0.1 just bench`.
SCALE := env_var_or_default("SCALE", "1")
# Where the benchmarks run: a PostgreSQL database they may wipe.
BENCH_DATABASE_URL := env_var_or_default("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tracker_bench")

# Benchmark the stacks (tracker, seaorm-defaults, raw) on PostgreSQL, interleaved in 3 rounds, each on its own database (JSON lines on stdout, medians and spread on stderr).
bench:
    cargo build --release -q -p app -p bench
    DATABASE_URL="{{BENCH_DATABASE_URL}}" target/release/tracker db create >&2
    DATABASE_URL="{{BENCH_DATABASE_URL}}" target/release/bench --scale {{SCALE}}

# Benchmark GET /tasks/{id}/ over HTTP with wrk: tracker serve as shipped (and with metrics off) against axum + SeaORM, axum + sqlx and the limit server, in alternating rounds (ROUNDS=5, DURATION=10s); median ratios with min-max, and what metrics cost.
bench-http:
    BENCH_DATABASE_URL="{{BENCH_DATABASE_URL}}" scripts/bench-http.sh

# Fault injection (database restarts, crashes and pauses under load, pool exhaustion, startup with the server down, SIGTERM during a pause, killed and concurrent migrators, a Patroni failover, switchover and paused leader) and 100k-case property tests; prints the figures.
chaos:
    cargo test --workspace -- chaos --ignored --test-threads=1
    PROPTEST_CASES=100000 cargo test -p db-core -- properties any_parts

# High availability on a real Patroni cluster (Debian's patroni and etcd-server): the cluster test, then the failover and switchover and the paused-leader chaos tests under `tracker serve`; prints the figures.
ha-test:
    TEST_PATRONI=1 cargo test -p app --test it -- ha:: --include-ignored --test-threads=1

# Instructions per request of each read route of tracker serve under valgrind's callgrind (REQUESTS=200), and the shares of SeaORM's statement building, row decoding and the access line.
profile-routes:
    BENCH_DATABASE_URL="{{BENCH_DATABASE_URL}}" scripts/profile-routes.sh

# Cost as data grows: scales 0.1, 1 and 10 on PostgreSQL (SCALES="0.1 1" for fewer); writes docs/bench-scale.png and the table in docs/performance.md.
bench-scale:
    BENCH_DATABASE_URL="{{BENCH_DATABASE_URL}}" scripts/bench-scale.sh

# get/get_concurrent on a private PostgreSQL: direct, through PgBouncer, and with a streaming replica.
bench-scaling:
    SCALE="{{SCALE}}" scripts/bench-scaling.sh

# Pinned tools of the browser test; playwright-core's version is in its package.json.
browser_test_dir := "crates/app/tests/browser"
openapi_validator := "openapi-spec-validator==0.9.0"
# schemathesis, in a virtual environment of its own (its dependencies stay
# out of the system's Python, which Debian's Patroni uses).
schemathesis := "schemathesis==4.32.5"

# Install the browser test's pinned tools: the validator and schemathesis (pip), and playwright-core (npm); the browser is Debian's chromium.
browser-tools:
    python3 -m pip install -q {{openapi_validator}}
    test -x target/tools/schemathesis/bin/schemathesis || python3 -m venv target/tools/schemathesis
    target/tools/schemathesis/bin/pip install -q {{schemathesis}}
    npm install --prefix {{browser_test_dir}} --no-package-lock --no-audit --no-fund --loglevel=error

# /openapi.json through an OpenAPI 3.1 validator and schemathesis, /docs and /redoc in headless Chromium (needs Debian's chromium).
browser-test: browser-tools
    TEST_BROWSER=1 cargo test -p app --test it -- docs::

# The ReDoc version vendored in crates/web/assets/redoc.
redoc_version := "2.5.4"

# Replace the vendored ReDoc bundle with `redoc_version` from the npm registry.
vendor-redoc:
    #!/usr/bin/env bash
    set -euo pipefail
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    npm pack --silent --pack-destination "$tmp" "redoc@{{redoc_version}}" >/dev/null
    tar -xzf "$tmp/redoc-{{redoc_version}}.tgz" -C "$tmp"
    cp "$tmp/package/bundles/redoc.standalone.js" "$tmp/package/bundles/redoc.standalone.js.LICENSE.txt" "$tmp/package/LICENSE" crates/web/assets/redoc/
