//! `#[needs(...)]`, re-exported as `test_support::needs`: marks a test that
//! needs a database server, or that is a long fault-injection test, so that
//! libtest reports it as ignored, with the reason, instead of letting it pass
//! without running.
//!
//! ```text
//! #[test_support::needs(postgres)]
//! #[tokio::test]
//! async fn stops_and_restarts() { /* uses TEST_POSTGRES_URL */ }
//! ```
//!
//! It goes above the test attribute, so that `#[test]` sees the `#[ignore]`
//! it adds.
//!
//! - `postgres` / `mysql`: ignored when `TEST_POSTGRES_URL` / `TEST_MYSQL_URL`
//!   was not set when the tests were built (the build script watches both, so
//!   `cargo test` always builds with the variables it runs with).
//! - `browser`: ignored when `TEST_BROWSER` was not set: the test needs
//!   Debian's chromium, `playwright-core` and `openapi-spec-validator`, which
//!   `just browser-tools` installs (`just browser-test` and `.ci/run` set it).
//! - `prometheus`: ignored when `TEST_PROMETHEUS` was not set: the test runs
//!   Debian's `prometheus` server (`.ci/run` installs it and sets the variable).
//! - `patroni`: ignored when `TEST_PATRONI` was not set: the test runs a
//!   Patroni cluster (Debian's `patroni` and `etcd-server`, which `.ci/run`
//!   installs; `just ha-test` and `.ci/run` set the variable).
//! - `squawk`: ignored when `TEST_SQUAWK` was not set: the test runs the
//!   `squawk` migration linter (PyPI's `squawk-cli`, pinned in the justfile;
//!   `just lint-migrations` and `.ci/run` install it and set the variable).
//! - `pgbouncer`: ignored when `TEST_PGBOUNCER` was not set: the test runs
//!   Debian's `pgbouncer` (`.ci/run` installs it and sets the variable).
//! - `chaos`: always ignored; `just chaos` runs these with `--ignored`.
//!
//! Every reason starts with `needs`, and a missing server is named by its
//! variable (`needs TEST_POSTGRES_URL`), which is what `.ci/run` looks for.

use proc_macro::{TokenStream, TokenTree};

/// Ignores the test it is put on unless the named servers were configured
/// (`postgres`, `mysql`) or the tools installed (`browser`, `prometheus`,
/// `patroni`, `squawk`, `pgbouncer`); `chaos` ignores it always.
#[proc_macro_attribute]
pub fn needs(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut missing = Vec::new();
    for tree in args {
        match &tree {
            TokenTree::Ident(ident) => match ident.to_string().as_str() {
                "postgres" if !cfg!(postgres_configured) => missing.push("TEST_POSTGRES_URL"),
                "mysql" if !cfg!(mysql_configured) => missing.push("TEST_MYSQL_URL"),
                "browser" if !cfg!(browser_configured) => missing.push(
                    "TEST_BROWSER (chromium, playwright-core and openapi-spec-validator: `just browser-test`)",
                ),
                "prometheus" if !cfg!(prometheus_configured) => {
                    missing.push("TEST_PROMETHEUS (Debian's prometheus package)")
                }
                "patroni" if !cfg!(patroni_configured) => missing.push(
                    "TEST_PATRONI (Debian's patroni and etcd-server packages: `just ha-test`)",
                ),
                "squawk" if !cfg!(squawk_configured) => missing.push(
                    "TEST_SQUAWK (PyPI's squawk-cli: `just lint-migrations`)",
                ),
                "pgbouncer" if !cfg!(pgbouncer_configured) => {
                    missing.push("TEST_PGBOUNCER (Debian's pgbouncer package)")
                }
                "chaos" => missing.push("`just chaos` (a long fault-injection test)"),
                "postgres" | "mysql" | "browser" | "prometheus" | "patroni" | "squawk"
                | "pgbouncer" => {}
                other => return error(&format!("needs: unknown requirement `{other}`")),
            },
            TokenTree::Punct(punct) if punct.as_char() == ',' => {}
            other => return error(&format!("needs: expected a name, found `{other}`")),
        }
    }
    if missing.is_empty() {
        return item;
    }
    let reason = format!("needs {}", missing.join(" and "));
    let ignore: TokenStream = format!("#[ignore = {reason:?}]")
        .parse()
        .expect("an ignore attribute parses");
    ignore.into_iter().chain(item).collect()
}

fn error(message: &str) -> TokenStream {
    format!("::core::compile_error!({message:?});")
        .parse()
        .expect("a compile_error! call parses")
}
