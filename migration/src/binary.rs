//! What the workspace's binaries (`tracker`, `migration`, `bench`) share:
//! where their settings come from, with the project's own defaults; logging
//! to standard error without making the logging thread wait for it; and
//! turning an error into one line and an exit code.

use std::error::Error as StdError;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::Error;

mod log_buffer;
mod text;

/// With nothing configured, the binaries use a SQLite file, so that a fresh
/// clone runs with no server.
pub const DEFAULT_DATABASE: &str = "sqlite://data/tracker.db?mode=rwc";

/// The binaries' PostgreSQL `application_name`, unless configured.
pub const APPLICATION_NAME: &str = "tracker";

/// The binaries' settings source: the process environment and `.env`, with
/// the project's own defaults ([`DEFAULT_DATABASE`], [`APPLICATION_NAME`]).
pub fn source() -> Result<db_core::Source, db_core::Error> {
    Ok(db_core::Source::from_process()?
        .default_value("url", DEFAULT_DATABASE)
        .default_value("application_name", APPLICATION_NAME))
}

/// The settings of a binary that reads only the database's (`migration`,
/// the benchmarks): the tables of the configuration files are sections of
/// the application, which reads and checks them.
pub fn database_settings() -> Result<db_core::Settings, db_core::Error> {
    db_core::Settings::load(&source()?.sections_elsewhere())
}

/// The command line, parsed as `C::parse` does (on bad arguments clap's
/// message, exit code 2), after filling in the process environment's unset
/// variables from `./.env`: so that what reads the environment itself
/// (`RUST_LOG`, and arguments with a variable such as `METRICS`) sees
/// `.env` as the settings do. Call it first in `main`.
pub fn args<C: clap::Parser>() -> C {
    // A `.env` that cannot be read or parsed is reported by `source`.
    let _ = dotenvy::from_path(".env");
    C::parse()
}

/// The log filter binaries use when `RUST_LOG` is not set: `info`, without
/// PostgreSQL's notices and the migrator's step-by-step lines.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn,sea_orm_migration=warn";

/// Logs to standard error: human-readable (colours on a terminal) or JSON
/// lines. `RUST_LOG` wins over `filter`; one that is not a filter exits
/// with code 2 and a line that says so, as a bad argument does.
///
/// The thread that logs formats its line and appends it to a buffer in
/// memory; a thread of its own writes the buffer out, every line gathered
/// in the last 20 ms in one `write(2)`. If standard error falls 4 MiB
/// behind, further lines are dropped and counted ([`Logs::dropped_lines`]),
/// so that a slow standard error never holds up a request. Keep the
/// returned [`Logs`] until the program ends: dropping it, or [`Logs::fail`],
/// writes out every line logged before.
pub fn init_logging(json: bool, filter: &str) -> Logs {
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&text)
            .unwrap_or_else(|e| usage_error(&format!("RUST_LOG=\"{text}\": {e}"))),
        Err(std::env::VarError::NotUnicode(_)) => usage_error("RUST_LOG: not valid UTF-8"),
        _ => tracing_subscriber::EnvFilter::new(filter),
    };
    let (buffer, writer) = log_buffer::start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(buffer.clone());
    if json {
        builder.json().with_timer(text::Time).init();
    } else {
        builder.event_format(text::Text::default()).init();
    }
    Logs { writer, buffer }
}

/// Prints `error: {message}` and exits with code 2, before logging starts.
fn usage_error(message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    std::process::exit(2)
}

/// The log writer of [`init_logging`]. Dropping it writes out the lines
/// still buffered (waiting up to a second for standard error to take them)
/// and stops the writer thread; lines logged after that are lost, so it
/// lives until `main` returns.
#[derive(Debug)]
#[must_use = "dropping it stops writing logs"]
pub struct Logs {
    writer: log_buffer::Writer,
    buffer: log_buffer::Buffer,
}

impl Logs {
    /// How many log lines were dropped because the buffer was full.
    pub fn dropped_lines(&self) -> DroppedLines {
        DroppedLines(self.buffer.clone())
    }

    /// Writes out the buffered log lines, then prints `error` and its causes
    /// on one line (`error: outer: inner`) after them; an error that lists
    /// several problems keeps one indented line for each. Returns the exit
    /// code: 2 when a cause is a configuration error (of db-core or of the
    /// migrator) or one `is_usage` recognises (bad arguments), 1 otherwise.
    pub fn fail(
        self,
        error: &(dyn StdError + 'static),
        is_usage: impl Fn(&(dyn StdError + 'static)) -> bool,
    ) -> ExitCode {
        drop(self.writer);
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
            db_core::error::Report(error)
                .to_string()
                .replace('\n', "\n  ")
        );
        ExitCode::from(if usage { 2 } else { 1 })
    }
}

/// The count of log lines dropped because the buffer was full, as it grows
/// (for a metric).
#[derive(Debug, Clone)]
pub struct DroppedLines(log_buffer::Buffer);

impl DroppedLines {
    /// Lines dropped so far.
    pub fn get(&self) -> u64 {
        self.0.dropped()
    }
}
