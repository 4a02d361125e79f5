//! The SQL that migrations run, recorded as they run it: `migrate sql`
//! prints it for review (like Django's `sqlmigrate` or Alembic's `--sql`),
//! and CI lints it with squawk.
//!
//! Migrations are code that may read the catalog and decide, so their SQL
//! is taken from a real run, on a scratch database of the same server, never
//! guessed. The driver reports every statement it sends as a `sqlx::query`
//! tracing event, except the `BEGIN` it sends with the next statement;
//! while the migrations run, a subscriber of this module's own takes those
//! events, and the marks (`migration_starts`, `transaction_begins`)
//! that the runner and the building blocks make where a migration or a
//! transaction starts. Reads (`SELECT`, `SHOW`) and the runner's
//! bookkeeping (`seaql_migrations*`) are left out.

use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use sea_orm::{ConnectionTrait, DbErr, StatementBuilder};
use sea_orm_migration::SchemaManager;

/// The target of the marks.
const MARK: &str = "migration::sql";

/// Marks where migration `name` starts, for a recording.
pub(crate) fn migration_starts(name: &str) {
    tracing::trace!(target: MARK, migration = name);
}

/// Marks a `BEGIN`, which the driver does not report, for a recording.
pub(crate) fn transaction_begins() {
    tracing::trace!(target: MARK, begin = true);
}

/// What a run sent, in order.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// One per migration: its name and the statements it sent.
    pub migrations: Vec<(String, Vec<String>)>,
    /// Whether a marked transaction is open, so that its `COMMIT` is kept
    /// (the runner's own bookkeeping transactions are not marked).
    open: bool,
}

impl fmt::Display for Recorded {
    /// Every migration as a commented block of SQL statements, each ending
    /// in `;`: what squawk reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (name, statements)) in self.migrations.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            writeln!(f, "-- {name}")?;
            if statements.is_empty() {
                writeln!(f, "-- (no statements on this database)")?;
            }
            for statement in statements {
                writeln!(f, "{};", statement.trim().trim_end_matches(';'))?;
            }
        }
        Ok(())
    }
}

/// What every migration statement runs with, set when the runner's session
/// is opened (so the driver reports no statement for it), as SQL.
pub fn session_settings(settings: &db_core::Settings) -> String {
    format!(
        "-- Every migration statement runs on a session opened with these settings:\n\
         SET statement_timeout = 0;\nSET lock_timeout = '{}ms';\n",
        crate::online::millis(settings.migration_lock_timeout)
    )
}

/// Runs `work` and returns, with its result, the statements that the
/// migrations it applied sent (see the module docs). Statements sent before
/// the first migration starts are not kept.
pub async fn record<T>(work: impl Future<Output = T>) -> (T, Recorded) {
    let recorder = Recorder::default();
    // While a single dispatcher is registered, tracing-core takes it for the
    // global one and decides whether events are wanted from whichever
    // dispatcher is the default on the thread that first meets them (none,
    // off this future): a second one, never used, keeps it asking all.
    let _second = tracing::Dispatch::new(Recorder::default());
    // On the heap: a migrator's future is large, and this one wraps it.
    let value = Box::pin(work).with_subscriber(recorder.clone()).await;
    let recorded = recorder.0.lock().expect("never poisoned").clone();
    (value, recorded)
}

/// Runs `statement` with a note for the linter, sent with it as SQL
/// comments so that `migrate sql` prints it: squawk's `rules` do not apply
/// to this statement, for `reason`. For the rare statement that breaks a
/// rule on purpose; the reason is for the next reader.
pub async fn excepted<S: StatementBuilder>(
    manager: &SchemaManager<'_>,
    statement: &S,
    rules: &[&str],
    reason: &str,
) -> Result<(), DbErr> {
    let sql = manager.get_database_backend().build(statement).sql;
    let sql = format!("-- {reason}\n-- squawk-ignore {}\n{sql}", rules.join(", "));
    manager.get_connection().execute_unprepared(&sql).await?;
    Ok(())
}

/// Takes the runner's migration markers and the driver's statements, and
/// nothing else. It keeps no spans: a span it was asked to make may be
/// closed from a thread of the driver's, where another subscriber is the
/// default.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Recorded>>);

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // By target alone: the driver first asks through a hint that is not
        // an event.
        matches!(metadata.target(), "sqlx::query" | MARK)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut recorded = self.0.lock().expect("never poisoned");
        let target = event.metadata().target();
        if target == MARK {
            if let Some(name) = fields.migration {
                recorded.migrations.push((name, Vec::new()));
            } else if let Some((_, statements)) = recorded.migrations.last_mut() {
                statements.push("BEGIN".to_owned());
                recorded.open = true;
            }
            return;
        }
        if target != "sqlx::query" {
            return;
        }
        // The driver writes short statements as the summary, longer ones
        // after it.
        let statement = match fields.statement.trim() {
            "" => fields.summary.trim(),
            sql => sql,
        };
        let ends = matches!(
            statement.to_ascii_uppercase().as_str(),
            "COMMIT" | "ROLLBACK"
        );
        if ends && !std::mem::take(&mut recorded.open) {
            return;
        }
        if let Some((_, statements)) = recorded.migrations.last_mut()
            && kept(statement)
        {
            statements.push(statement.to_owned());
        }
    }
}

/// Whether a statement belongs in the printed SQL: not a read, not the
/// runner's bookkeeping.
fn kept(statement: &str) -> bool {
    let first = statement
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    !matches!(first.as_str(), "SELECT" | "SHOW" | "WITH" | "")
        && !statement.contains("seaql_migrations")
}

#[derive(Default)]
struct Fields {
    migration: Option<String>,
    summary: String,
    statement: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            "migration" => self.migration = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

#[cfg(test)]
mod tests {
    use super::kept;

    #[test]
    fn reads_and_bookkeeping_are_left_out() {
        assert!(kept("CREATE INDEX CONCURRENTLY i ON t (c)"));
        assert!(kept("BEGIN"));
        assert!(kept("SET LOCAL lock_timeout = '1000ms'"));
        assert!(!kept("SELECT pg_try_advisory_lock($1)"));
        assert!(!kept("  select 1"));
        assert!(!kept("WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(!kept(
            "INSERT INTO \"seaql_migrations\" (\"version\") VALUES ($1)"
        ));
    }
}
