//! Sets `cfg(postgres_configured)` / `cfg(mysql_configured)` when
//! `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` name a server, and
//! `cfg(browser_configured)` when `TEST_BROWSER` says the browser tools are
//! installed, `cfg(prometheus_configured)` when `TEST_PROMETHEUS` says
//! Debian's `prometheus` is, and `cfg(patroni_configured)` when
//! `TEST_PATRONI` says Debian's `patroni` and `etcd-server` are, and
//! `cfg(squawk_configured)` when `TEST_SQUAWK` says `squawk` is, and
//! `cfg(pgbouncer_configured)` when `TEST_PGBOUNCER` says Debian's `pgbouncer`
//! is. Cargo re-runs
//! this when any of them changes, so `cargo test` rebuilds the tests (not the
//! libraries) with what it was given.

fn main() {
    for (variable, cfg) in [
        ("TEST_POSTGRES_URL", "postgres_configured"),
        ("TEST_MYSQL_URL", "mysql_configured"),
        ("TEST_BROWSER", "browser_configured"),
        ("TEST_PROMETHEUS", "prometheus_configured"),
        ("TEST_PATRONI", "patroni_configured"),
        ("TEST_SQUAWK", "squawk_configured"),
        ("TEST_PGBOUNCER", "pgbouncer_configured"),
    ] {
        println!("cargo::rerun-if-env-changed={variable}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if std::env::var(variable).is_ok_and(|url| !url.trim().is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
