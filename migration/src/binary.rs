//! What the workspace's binaries (`tracker`, `migration`, `bench`) share:
//! logging to standard error, and turning an error into one line and an
//! exit code.

use std::error::Error as StdError;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::Error;

/// The log filter binaries use when `RUST_LOG` is not set: `info`, without
/// PostgreSQL's notices and the migrator's step-by-step lines.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn,sea_orm_migration=warn";

/// Logs to standard error: human-readable (colours on a terminal) or JSON
/// lines. `RUST_LOG` wins over `filter`.
pub fn init_logging(json: bool, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Prints `error` and its causes on one line (`error: outer: inner`); an
/// error that lists several problems keeps one indented line for each. Returns
/// the exit code: 2 when a cause is a configuration error (of db-core or of
/// the migrator) or one `is_usage` recognises (bad arguments), 1 otherwise.
pub fn fail(
    error: &(dyn StdError + 'static),
    is_usage: impl Fn(&(dyn StdError + 'static)) -> bool,
) -> ExitCode {
    let usage = std::iter::successors(Some(error), |&e| e.source()).any(|cause| {
        cause
            .downcast_ref::<db_core::Error>()
            .is_some_and(db_core::Error::is_config)
            || cause.downcast_ref::<Error>().is_some_and(Error::is_config)
            || is_usage(cause)
    });
    let _ = writeln!(
        std::io::stderr(),
        "error: {}",
        db_core::Report(error).to_string().replace('\n', "\n  ")
    );
    ExitCode::from(if usage { 2 } else { 1 })
}
