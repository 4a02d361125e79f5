//! The one error type of this crate.

use std::fmt;
use std::time::Duration;

use crate::bound::NoAnswer;
use crate::metrics::RetryReason;
use sea_orm::{DbErr, RuntimeErr, sqlx};

/// Returns an [`Error::Config`] with a formatted message from the enclosing
/// function.
macro_rules! bail {
    ($($message:tt)*) => {
        return Err($crate::error::Error::Config(format!($($message)*)))
    };
}
pub(crate) use bail;

/// Everything that can go wrong between settings and a finished unit of work.
///
/// Messages are single lines, lower-case, and never contain a password: values
/// of `DB_PASS` and `DATABASE_URL` are never echoed, and driver messages are
/// scrubbed of the password before they are stored here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing, malformed or out of range. The message names the
    /// setting (`DB_PORT`, or a key in a configuration file) and what was expected.
    /// A driver's text quoted here is scrubbed of the password first; that
    /// is why it is text and not a source.
    #[error("{0}")]
    Config(String),

    /// The server did not accept a connection before the connect deadline.
    #[error("cannot connect to {target}: {reason} (gave up after {})", humantime::format_duration(*.waited))]
    Unreachable {
        /// Where we tried to connect (never includes credentials).
        target: String,
        /// The last failure, e.g. `connection refused`.
        reason: String,
        /// How long we kept trying.
        waited: Duration,
    },

    /// The server rejected the credentials. Retrying cannot help.
    #[error(
        "{target}: authentication failed for user \"{user}\" (check DB_USER and DB_PASS, or DATABASE_URL; for migrations, DB_MIGRATION_URL when it is set)"
    )]
    Auth {
        /// Where we tried to connect.
        target: String,
        /// The user name that was rejected.
        user: String,
    },

    /// The server answered, but the configured database does not exist.
    #[error(
        "{target}: database \"{database}\" does not exist (create it, or check DB_NAME or DATABASE_URL; for migrations, DB_MIGRATION_URL when it is set)"
    )]
    UnknownDatabase {
        /// Where we tried to connect.
        target: String,
        /// The missing database.
        database: String,
    },

    /// The connection was refused by the server for another reason (TLS, protocol,
    /// server configuration); retrying would not help.
    #[error("{target}: {reason}")]
    Rejected {
        /// Where we tried to connect.
        target: String,
        /// What the server or the TLS layer said.
        reason: String,
    },

    /// No pooled connection became free within the acquire timeout: the pool is
    /// exhausted or the server stopped answering.
    #[error(
        "no database connection available within the acquire timeout (pool exhausted or server unreachable)"
    )]
    PoolTimeout,

    /// The connection to the server broke while in use, the server gave no
    /// answer within `DB_OPERATION_TIMEOUT`, it is going away, or it refused
    /// a new connection of the pool (a password rotated: no failover, and
    /// trying again does not help). `reason` says which; `source` is the
    /// driver's error (which never holds the password: it comes from a
    /// connection already made, or from the server's refusal).
    #[error("database unavailable: {reason}")]
    Unavailable {
        /// What happened, e.g. `the connection broke`.
        reason: &'static str,
        /// The database error behind it, when there is one.
        #[source]
        source: Option<DbErr>,
    },

    /// A write was sent but its end was never confirmed: the server stopped
    /// answering, or the connection broke, while its `COMMIT` (or the single
    /// statement that was the whole write) was in flight. It may have been
    /// saved or not; the server may still commit it once it answers again.
    /// Running it again could write it twice: read it back first.
    #[error("the write may or may not have been saved: the database did not confirm it")]
    OutcomeUnknown {
        /// Why there was no confirmation.
        #[source]
        source: DbErr,
    },

    /// A named lock could not be taken in time.
    #[error(
        "timed out after {} waiting for {what}{}",
        humantime::format_duration(*.waited),
        .holder.as_ref().map_or(String::new(), |h| format!(", held by {h}"))
    )]
    LockTimeout {
        /// What the lock protects, e.g. `the migration lock`.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The session that held it then, if it could be seen: for a lock
        /// of [`Db::hold`](crate::Db::hold) on PostgreSQL.
        holder: Option<crate::lock::Blocker>,
    },

    /// Work under a [`Lock`](crate::Lock) declared as a schema change left
    /// rows that violate a foreign key (SQLite); it was rolled back.
    #[error("the changes leave rows in {table} that violate a foreign key; nothing was applied")]
    ForeignKeyViolation {
        /// The first table with such rows.
        table: String,
    },

    /// A value for [`CopyIn`](crate::copy::CopyIn) holds a NUL character, which
    /// PostgreSQL text cannot store.
    #[error(
        "{table}.{column}, row {row}: text with a NUL character cannot be stored in PostgreSQL"
    )]
    NulInText {
        /// The table of the value.
        table: String,
        /// Its column.
        column: String,
        /// The row it was for, counted from 1.
        row: usize,
    },

    /// A row for `COPY` with more or fewer values than it has columns.
    #[error("{table}, row {row}: {values} values for {columns} columns")]
    CopyRowWidth {
        /// The table of the row.
        table: String,
        /// The row, counted from 1.
        row: usize,
        /// How many values it had.
        values: usize,
        /// How many columns it is for.
        columns: usize,
    },

    /// An operation that this backend does not have, such as `COPY` outside PostgreSQL.
    #[error("{operation} is not available on {backend}")]
    Unsupported {
        /// What was asked for.
        operation: &'static str,
        /// `mysql` or `sqlite`.
        backend: &'static str,
    },

    /// [`Session::commit`](crate::Session::commit) was called while a clone of the
    /// session was still alive (for example inside a spawned task).
    #[error("cannot commit: the session is still in use elsewhere")]
    SessionInUse,

    /// Any other database error (constraint violation, syntax, ...).
    #[error(transparent)]
    Db(DbErr),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shows an error with its causes on one line, `error: cause: cause`, for
/// logs and for a binary's last words. A cause whose text the line already
/// ends with is left out: wrappers that repeat their source's message would
/// otherwise print it twice.
///
/// ```
/// let err = db_core::Error::Unavailable {
///     reason: "the connection broke",
///     source: Some(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal("reset".into()))),
/// };
/// assert_eq!(
///     db_core::error::Report(&err).to_string(),
///     "database unavailable: the connection broke: Connection Error: reset"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(current) = cause {
            let text = current.to_string();
            if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = current.source();
        }
        f.write_str(&line)
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// True for configuration errors, which binaries report with exit code 2.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_))
    }

    /// True when the database could not be reached or had no free connection:
    /// the caller's request was fine and may succeed later (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::PoolTimeout
                | Error::Unavailable { .. }
                | Error::OutcomeUnknown { .. }
        )
    }

    /// True when a write may or may not have been saved ([`Error::OutcomeUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// The underlying SeaORM error, if this is one.
    pub fn db_err(&self) -> Option<&DbErr> {
        match self {
            Error::Db(e) => Some(e),
            _ => None,
        }
    }

    /// The value that the database refused to store, when that is what
    /// this error is: text with a character that its column's character
    /// set lacks (an emoji for a MySQL table in `latin1` or `utf8mb3`,
    /// or for a PostgreSQL database in `LATIN1`), text too long for its
    /// column, a number out of its column's range, or a date that MySQL
    /// does not take. The input was at fault, not the server: an HTTP
    /// service answers 422.
    pub fn refused_value(&self) -> Option<RefusedValue> {
        let d = database_error(self.db_err()?)?;
        if let Some(m) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
            let reason = match m.number() {
                1366 => RefusedValue::CHARACTERS,
                1292 => RefusedValue::INVALID,
                1406 => RefusedValue::TOO_LONG,
                1264 => RefusedValue::OUT_OF_RANGE,
                _ => return None,
            };
            // `… for column 'title' at row 1`, or `` `db`.`tasks`.`title` ``.
            let column = (m.message().split_once(" for column ").map(|(_, rest)| rest))
                .and_then(|rest| rest.split(" at row").next()?.rsplit('.').next())
                .map(|name| name.trim_matches(['`', '\'', '"']).to_owned());
            return Some(RefusedValue { column, reason });
        }
        let reason = match d.code()?.as_ref() {
            "22P05" | "22021" => RefusedValue::CHARACTERS,
            "22001" => RefusedValue::TOO_LONG,
            "22003" => RefusedValue::OUT_OF_RANGE,
            _ => return None,
        };
        let column = (d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
            .and_then(|p| p.column())
            .map(str::to_owned);
        Some(RefusedValue { column, reason })
    }
}

/// A value that the database refused to store ([`Error::refused_value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedValue {
    /// Its column, when the server names it (MySQL does; PostgreSQL, for
    /// these errors, does not).
    pub column: Option<String>,
    /// Why, for people: one of the constants of this type.
    pub reason: &'static str,
}

impl RefusedValue {
    /// Text with a character that the column's character set lacks.
    pub const CHARACTERS: &str = "holds a character that the database cannot store";
    /// Text longer than its column holds.
    pub const TOO_LONG: &str = "is too long for its database column";
    /// A number outside its column's range.
    pub const OUT_OF_RANGE: &str = "is out of range for its database column";
    /// A value its column's type does not take (MySQL: a date it does not
    /// know, such as February 29th of year 0).
    pub const INVALID: &str = "is not valid for its database column";
}

impl Error {
    /// A driver error from a connection used without SeaORM, classified
    /// like any other database error.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Error {
        Error::from(sqlx_db_err(e))
    }
}

/// A driver error from a connection used without SeaORM, as SeaORM would
/// have reported it.
pub(crate) fn sqlx_db_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(e)))
}

/// A write whose statement reached the server (or may have) without an
/// answer: it travels through SeaORM's API as the database error of the
/// statement, and becomes [`Error::OutcomeUnknown`].
#[derive(Debug)]
struct Unconfirmed(DbErr);

impl fmt::Display for Unconfirmed {
    /// What happened to the connection, without the wrappers that the
    /// driver's error around this one repeats.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match io_error(&self.0) {
            Some(io) => write!(f, "the write was not confirmed: {io}"),
            None => write!(f, "the write was not confirmed: {}", self.0),
        }
    }
}

impl std::error::Error for Unconfirmed {}

/// Marks `err`, the failure of a statement that was a whole write, as
/// leaving the write's outcome unknown.
pub(crate) fn unconfirmed_write(err: DbErr) -> DbErr {
    let kind = io_error(&err).map_or(std::io::ErrorKind::Other, std::io::Error::kind);
    sqlx_db_err(sqlx::Error::Io(std::io::Error::new(kind, Unconfirmed(err))))
}

/// The driver's I/O error behind `err`, if that is what it is.
fn io_error(err: &DbErr) -> Option<&std::io::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => match &**e {
            sqlx::Error::Io(io) => Some(io),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `err` leaves it unknown if the server ran the statement: the
/// connection broke or the server gave no answer after it was sent. An
/// answer from the server (an error it reported) is no such case, nor is a
/// failure to get a connection.
pub(crate) fn unanswered(err: &DbErr) -> bool {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            &**e,
            sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)
        ),
        _ => false,
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if let Some(Unconfirmed(cause)) = io_error(&err)
            .and_then(|io| io.get_ref())
            .and_then(|e| e.downcast_ref::<Unconfirmed>())
        {
            return Error::OutcomeUnknown {
                source: cause.clone(),
            };
        }
        match connection_failure(&err) {
            Some(Failure::PoolTimeout) => Error::PoolTimeout,
            Some(Failure::Unavailable(reason)) => Error::Unavailable {
                reason,
                source: Some(err),
            },
            Some(Failure::Refused) => Error::Unavailable {
                reason: REFUSED,
                source: Some(err),
            },
            None => Error::Db(err),
        }
    }
}

impl Error {
    /// Whether `err` means the server could not be reached, went away, or
    /// had no free connection: the statement itself was not at fault.
    pub(crate) fn unreachable(err: &DbErr) -> bool {
        matches!(
            connection_failure(err),
            Some(Failure::PoolTimeout | Failure::Unavailable(_))
        )
    }

    /// Whether `err` is the server's refusal of a new connection.
    pub(crate) fn refused(err: &DbErr) -> bool {
        matches!(connection_failure(err), Some(Failure::Refused))
    }

    /// Whether `err` is a wait for a pooled connection that ended without one.
    pub(crate) fn pool_timeout(err: &DbErr) -> bool {
        matches!(connection_failure(err), Some(Failure::PoolTimeout))
    }

    /// Whether `err` is PostgreSQL's refusal to write in a read-only
    /// transaction or on a standby (SQLSTATE 25006).
    pub(crate) fn read_only(err: &DbErr) -> bool {
        database_error(err).and_then(|d| d.code()).as_deref() == Some(READ_ONLY)
    }

    /// Whether `err` says that a table, column or function does not exist
    /// (SQLSTATE 42P01, 42703, 42883; MySQL's 42S02, 42S22): from a
    /// replica, that it has not yet replayed a migration that the primary
    /// has.
    pub(crate) fn schema_behind(err: &DbErr) -> bool {
        database_error(err)
            .and_then(|d| d.code())
            .is_some_and(|code| matches!(&*code, "42P01" | "42703" | "42883" | "42S02" | "42S22"))
    }
}

/// PostgreSQL's `read_only_sql_transaction`: a write in a read-only
/// transaction, or on a standby.
const READ_ONLY: &str = "25006";

/// A connection-level failure, as [`Error`] reports it.
enum Failure {
    PoolTimeout,
    Unavailable(&'static str),
    /// The server refused a new connection of the pool (a password
    /// rotated, a database renamed): unavailable to the request, which did
    /// not cause it, but no failover, and trying again does not help.
    Refused,
}

/// What [`Error::Unavailable`] says of a [`Failure::Refused`].
const REFUSED: &str = "the server refused a new connection";

/// The connection-level failure behind `err`, if that is what it is.
fn connection_failure(err: &DbErr) -> Option<Failure> {
    match err {
        DbErr::ConnectionAcquire(_) => Some(Failure::PoolTimeout),
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => match &**e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Some(Failure::PoolTimeout),
            sqlx::Error::Io(io)
                if io
                    .get_ref()
                    .is_some_and(|e| e.downcast_ref::<NoAnswer>().is_some()) =>
            {
                Some(Failure::Unavailable("the server did not answer in time"))
            }
            sqlx::Error::Io(_) => Some(Failure::Unavailable("the connection broke")),
            sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => {
                Some(Failure::Unavailable("the connection failed"))
            }
            sqlx::Error::Database(d) if is_admin_shutdown(d.code().as_deref()) => {
                Some(Failure::Unavailable("the server is going away"))
            }
            // read_only_sql_transaction: "cannot execute ... in a read-only
            // transaction", also during recovery: the primary became a standby.
            sqlx::Error::Database(d) if d.code().as_deref() == Some(READ_ONLY) => {
                Some(Failure::Unavailable("the server is read-only"))
            }
            _ if matches!(err, DbErr::Conn(_)) => Some(Failure::Refused),
            _ => None,
        },
        DbErr::Conn(_) => Some(Failure::Unavailable("cannot connect")),
        _ => None,
    }
}

/// PostgreSQL SQLSTATEs that mean the server is going away (shutdown, crash
/// recovery, restart): the connection is lost, not the request wrong.
fn is_admin_shutdown(code: Option<&str>) -> bool {
    matches!(code, Some("57P01" | "57P02" | "57P03" | "08006" | "08003"))
}

/// Errors a transaction may be retried after: the database aborted it because
/// of a conflict with a concurrent transaction, not because it was wrong.
///
/// Implement it for your own error type (delegating to its database variant) to
/// use it with [`Db::transaction`](crate::Db::transaction).
pub trait Retryable {
    /// True when running the same transaction again may succeed.
    fn is_retryable(&self) -> bool;

    /// Which conflict made it retryable, for the retry counter's `reason`
    /// (`other` when `None`).
    fn retry_reason(&self) -> Option<RetryReason> {
        None
    }
}

/// The database server's own error behind `err`, if that is what it is.
pub(crate) fn database_error(err: &DbErr) -> Option<&dyn sqlx::error::DatabaseError> {
    let (DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))
    | DbErr::Conn(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    match &**e {
        sqlx::Error::Database(d) => Some(&**d),
        _ => None,
    }
}

impl Retryable for DbErr {
    /// PostgreSQL's serialization_failure and deadlock_detected, MySQL's
    /// ER_LOCK_DEADLOCK (the transaction was rolled back).
    fn is_retryable(&self) -> bool {
        RetryReason::of(self).is_some()
    }

    fn retry_reason(&self) -> Option<RetryReason> {
        RetryReason::of(self)
    }
}

impl Retryable for Error {
    fn is_retryable(&self) -> bool {
        self.db_err().is_some_and(Retryable::is_retryable)
    }

    /// [`RetryReason::Failover`] for an error that a failover causes: the
    /// server went away, is shutting down or in recovery, turned read-only,
    /// or no connection came in time. [`Db::transaction`](crate::Db::transaction)
    /// retries those only on a host list, within `DB_FAILOVER_TIMEOUT`.
    fn retry_reason(&self) -> Option<RetryReason> {
        // Never `OutcomeUnknown`: running a write that may have been saved
        // again could save it twice.
        match self {
            Error::Unavailable { reason, .. } if *reason != REFUSED => Some(RetryReason::Failover),
            Error::PoolTimeout => Some(RetryReason::Failover),
            _ => self.db_err().and_then(RetryReason::of),
        }
    }
}

/// Replaces every occurrence of each of `secrets` (and of its
/// percent-encoded form) in `text` with `***`, the longest first. Used on
/// driver messages before they are stored.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut all: Vec<String> = (secrets.iter().filter(|s| !s.is_empty()))
        .flat_map(|s| [s.clone(), crate::url::encode(s)])
        .collect();
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.iter()
        .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
}
