//! Sessions: one scoped unit of work per request or job.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseExecutor, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    IsolationLevel, QueryResult, Statement,
};

use crate::bound::answered;
use crate::connect::Pool;
use crate::error::{Error, Result, unanswered};
use crate::replicas::Replicas;

/// How a session reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Writes, in a transaction on the primary.
    ReadWrite,
    /// Reads only. Without an isolation level each statement runs on its own
    /// (no `BEGIN`/`COMMIT` round trips); with one, in a read-only transaction.
    /// Read-only sessions use the read pool. A statement that starts as a
    /// write (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `REPLACE` or a schema
    /// change, temporary tables included) is refused before it is sent,
    /// wherever the session runs: on PostgreSQL's or MySQL's primary without
    /// a transaction nothing else would stop it, and the server's own
    /// refusal (PostgreSQL's 25006, from a replica or a read-only
    /// transaction) looks like a failover (503).
    ReadOnly,
}

/// Options for [`Db::session`](crate::Db::session) and
/// [`Db::transaction`](crate::Db::transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    pub(crate) access: Access,
    pub(crate) isolation: Option<IsolationLevel>,
    pub(crate) max_attempts: u32,
    pub(crate) single_statement: bool,
    pub(crate) on_primary: bool,
}

impl SessionOptions {
    /// A read-write transaction at the server's default isolation level.
    pub fn read_write() -> Self {
        SessionOptions {
            access: Access::ReadWrite,
            isolation: None,
            max_attempts: 5,
            single_statement: false,
            on_primary: false,
        }
    }

    /// A write that is one statement (an `INSERT ... RETURNING`, an
    /// `UPDATE ... RETURNING`): atomic by itself, so it runs on the primary
    /// without `BEGIN` and `COMMIT`, two round trips saved. The caller
    /// promises one statement; a second would commit separately.
    pub fn single_statement() -> Self {
        SessionOptions {
            single_statement: true,
            ..Self::read_write()
        }
    }

    /// A read-only session.
    pub fn read_only() -> Self {
        SessionOptions {
            access: Access::ReadOnly,
            ..Self::read_write()
        }
    }

    /// Reads from the primary, not from replicas: for reads that must see
    /// the latest committed state (a read-write session always does).
    pub fn on_primary(mut self) -> Self {
        self.on_primary = true;
        self
    }

    /// Runs in a transaction at this isolation level.
    pub fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = Some(level);
        self
    }

    /// How many times [`Db::transaction`](crate::Db::transaction) runs the work
    /// when it keeps failing with a serialization failure or a deadlock
    /// (default 5, at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The access mode.
    pub fn access(&self) -> Access {
        self.access
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self::read_write()
    }
}

#[derive(Clone)]
enum Conn {
    /// A transaction, and the bound on each of its operations.
    Tx(Arc<DatabaseTransaction>, Option<Duration>),
    Direct(Pool),
    /// Reads on the replicas, falling back to the primary.
    Routed(Arc<Replicas>, Pool),
}

/// The first words of the statements that a read-only session refuses.
const WRITES: [&str; 9] = [
    "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "CREATE", "ALTER", "DROP", "TRUNCATE",
];

/// The first word of `sql` on `backend`, after blanks and comments (`--`,
/// `#`, and `/* */`, which nest on PostgreSQL), if it starts a write. MySQL
/// and MariaDB run what is inside `/*! */`, `/*!50000 */` and `/*M! */`, so
/// there that is read as if the comment's marks were blanks.
fn write_keyword(mut sql: &str, backend: DbBackend) -> Option<&'static str> {
    let mysql = backend == DbBackend::MySql;
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--").or_else(|| sql.strip_prefix('#')) {
            // PostgreSQL also ends a line at a carriage return.
            sql = rest.split_once(['\n', '\r']).map_or("", |(_, rest)| rest);
        } else if let Some(rest) =
            (sql.strip_prefix("/*!").or_else(|| sql.strip_prefix("/*M!"))).filter(|_| mysql)
        {
            sql = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        } else if let Some(rest) = sql.strip_prefix("*/").filter(|_| mysql) {
            // The end of an executable comment.
            sql = rest;
        } else if let Some(rest) = sql.strip_prefix("/*") {
            sql = after_comment(rest, backend == DbBackend::Postgres);
        } else {
            break;
        }
    }
    let word = sql.split(|c: char| !c.is_ascii_alphabetic()).next()?;
    WRITES.into_iter().find(|w| w.eq_ignore_ascii_case(word))
}

/// What follows the block comment whose text starts `rest`; nothing if it
/// is never closed.
fn after_comment(mut rest: &str, nests: bool) -> &str {
    let mut depth = 1;
    while depth > 0 {
        let open = rest.find("/*").filter(|_| nests);
        let Some(close) = rest.find("*/") else {
            return "";
        };
        match open.filter(|open| *open < close) {
            Some(open) => (depth, rest) = (depth + 1, &rest[open + 2..]),
            None => (depth, rest) = (depth - 1, &rest[close + 2..]),
        }
    }
    rest
}

/// One unit of work. Use it wherever SeaORM takes a connection
/// (`Entity::find().all(&session)`), then [`commit`](Session::commit).
///
/// A read-write session is a transaction: dropped without `commit` (early
/// return, `?`, panic, cancelled request) it is rolled back. Clones share the
/// same transaction, so a session can be moved into the future that uses it;
/// `commit` needs the last one.
///
/// Each statement, `COMMIT` and `ROLLBACK` waits for the server at most
/// `DB_OPERATION_TIMEOUT` (see the `bound` module); a statement without a
/// transaction waits that long once the pool has handed it a connection.
#[derive(Clone)]
pub struct Session {
    conn: Conn,
    access: Access,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access", &self.access)
            .field("transaction", &matches!(self.conn, Conn::Tx(..)))
            .finish()
    }
}

impl Session {
    /// A session on `tx`, each of whose operations waits at most `limit`.
    pub(crate) fn transaction(
        tx: DatabaseTransaction,
        access: Access,
        limit: Option<Duration>,
    ) -> Self {
        Session {
            conn: Conn::Tx(Arc::new(tx), limit),
            access,
        }
    }

    pub(crate) fn direct(conn: impl Into<Pool>, access: Access) -> Self {
        Session {
            conn: Conn::Direct(conn.into()),
            access,
        }
    }

    pub(crate) fn routed(replicas: Arc<Replicas>, primary: Pool) -> Self {
        Session {
            conn: Conn::Routed(replicas, primary),
            access: Access::ReadOnly,
        }
    }

    /// The SeaORM transaction behind this session, for APIs that take one
    /// (such as a migrator); `None` for a session without a transaction.
    pub fn as_transaction(&self) -> Option<&DatabaseTransaction> {
        match &self.conn {
            Conn::Tx(tx, _) => Some(tx),
            _ => None,
        }
    }

    /// A SeaORM executor on this session's transaction, or on its pool when
    /// it has none (the primary's, for a read-only session on replicas), for
    /// APIs that take one, such as a migrator's `up`. What is sent through it
    /// bypasses a read-only session's refusal of writes.
    pub fn executor(&self) -> DatabaseExecutor<'_> {
        match &self.conn {
            Conn::Tx(tx, _) => DatabaseExecutor::Transaction(tx),
            Conn::Direct(c) | Conn::Routed(_, c) => DatabaseExecutor::Connection(c),
        }
    }

    /// Whether this session may write.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Commits the work. For a read-only session without a transaction this
    /// does nothing. When the connection breaks or the server gives no
    /// answer while a read-write session's `COMMIT` is in flight, the work
    /// may have been committed or not: [`Error::OutcomeUnknown`].
    pub async fn commit(self) -> Result<()> {
        match self.conn {
            Conn::Tx(tx, limit) => {
                let tx = Arc::try_unwrap(tx).map_err(|_| Error::SessionInUse)?;
                match answered(limit, tx.commit()).await {
                    Ok(()) => Ok(()),
                    Err(source) if self.access == Access::ReadWrite && unanswered(&source) => {
                        Err(Error::OutcomeUnknown { source })
                    }
                    Err(e) => Err(Error::from(e)),
                }
            }
            Conn::Direct(_) | Conn::Routed(..) => Ok(()),
        }
    }

    /// Rolls the work back now (dropping the session does it too, a moment later).
    pub async fn rollback(self) -> Result<()> {
        match self.conn {
            Conn::Tx(tx, limit) => match Arc::try_unwrap(tx) {
                Ok(tx) => answered(limit, tx.rollback()).await.map_err(Error::from),
                // Another clone is alive; it rolls back when it is dropped.
                Err(_) => Ok(()),
            },
            Conn::Direct(_) | Conn::Routed(..) => Ok(()),
        }
    }

    /// An error for `sql` if it writes and this session is read-only.
    fn refuse_writes(&self, sql: &str) -> Result<(), DbErr> {
        let write = (self.access == Access::ReadOnly)
            .then(|| write_keyword(sql, self.get_database_backend()));
        match write.flatten() {
            Some(write) => Err(DbErr::Custom(format!(
                "{write} through a read-only session: writes need a read-write one"
            ))),
            None => Ok(()),
        }
    }

    /// Runs a statement without a transaction on the pool `c`; a read-write
    /// session's statement is a whole write.
    async fn on_pool<T>(
        &self,
        c: &Pool,
        statement: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        match self.access {
            Access::ReadWrite => c.run_write(statement).await,
            Access::ReadOnly => c.run(statement).await,
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Session {
    fn get_database_backend(&self) -> DbBackend {
        match &self.conn {
            Conn::Tx(tx, _) => tx.get_database_backend(),
            Conn::Direct(c) | Conn::Routed(_, c) => c.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.refuse_writes(&stmt.sql)?;
        match &self.conn {
            Conn::Tx(tx, limit) => answered(*limit, tx.execute_raw(stmt)).await,
            Conn::Direct(c) => self.on_pool(c, c.execute_raw(stmt)).await,
            Conn::Routed(replicas, primary) => {
                replicas
                    .route(primary, |c| {
                        let stmt = stmt.clone();
                        async move { c.execute_raw(stmt).await }
                    })
                    .await
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.refuse_writes(sql)?;
        match &self.conn {
            Conn::Tx(tx, limit) => answered(*limit, tx.execute_unprepared(sql)).await,
            Conn::Direct(c) => self.on_pool(c, c.execute_unprepared(sql)).await,
            Conn::Routed(replicas, primary) => {
                replicas
                    .route(primary, |c| async move { c.execute_unprepared(sql).await })
                    .await
            }
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.refuse_writes(&stmt.sql)?;
        match &self.conn {
            Conn::Tx(tx, limit) => answered(*limit, tx.query_one_raw(stmt)).await,
            Conn::Direct(c) => self.on_pool(c, c.query_one(stmt)).await,
            Conn::Routed(replicas, primary) => {
                replicas
                    .route(primary, |c| {
                        let stmt = stmt.clone();
                        async move { c.query_one(stmt).await }
                    })
                    .await
            }
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.refuse_writes(&stmt.sql)?;
        match &self.conn {
            Conn::Tx(tx, limit) => answered(*limit, tx.query_all_raw(stmt)).await,
            Conn::Direct(c) => self.on_pool(c, c.query_all(stmt)).await,
            Conn::Routed(replicas, primary) => {
                replicas
                    .route(primary, |c| {
                        let stmt = stmt.clone();
                        async move { c.query_all(stmt).await }
                    })
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::DatabaseBackend::{self as DbBackend, MySql, Postgres, Sqlite};

    use super::write_keyword;

    #[test]
    fn writes_are_known_by_their_first_word_after_comments() {
        const ALL: &[DbBackend] = &[Sqlite, Postgres, MySql];
        let cases: &[(&str, &[DbBackend], Option<&str>)] = &[
            ("INSERT INTO t VALUES (1)", ALL, Some("INSERT")),
            ("  update t SET x = 1", ALL, Some("UPDATE")),
            (
                "-- why\n/* how */ # MySQL's\nDelete FROM t",
                ALL,
                Some("DELETE"),
            ),
            ("CREATE TEMPORARY TABLE t (x INT)", ALL, Some("CREATE")),
            ("SELECT 1", ALL, None),
            ("INSERTED", ALL, None),
            ("(SELECT 1)", ALL, None),
            ("WITH t AS (SELECT 1) SELECT * FROM t", ALL, None),
            ("/* never closed INSERT", ALL, None),
            ("-- only a comment", ALL, None),
            ("", ALL, None),
            // PostgreSQL's comments nest; the others end at the first `*/`.
            ("/* a /* b */ */ DELETE FROM t", &[Postgres], Some("DELETE")),
            ("/* a /* b */ INSERT */ SELECT 1", &[Postgres], None),
            ("/* a /* b /* c */ */ INSERT */ SELECT 1", &[Postgres], None),
            (
                "/* a /* b */ INSERT */ SELECT 1",
                &[Sqlite, MySql],
                Some("INSERT"),
            ),
            // MySQL and MariaDB run what their executable comments hold.
            (
                "/*!50000 INSERT */ INTO t VALUES (1)",
                &[MySql],
                Some("INSERT"),
            ),
            ("/*! INSERT */ INTO t VALUES (1)", &[MySql], Some("INSERT")),
            ("/*M!100000 DROP */ TABLE t", &[MySql], Some("DROP")),
            ("/*!50000 */ DELETE FROM t", &[MySql], Some("DELETE")),
            ("/*!*/ /* a */ DELETE FROM t", &[MySql], Some("DELETE")),
            ("/*! INSERT */ SELECT 1", &[Sqlite, Postgres], None),
            // PostgreSQL ends a line comment at a carriage return too.
            ("-- a\rDELETE FROM t", &[Postgres], Some("DELETE")),
        ];
        for (sql, backends, write) in cases {
            for backend in *backends {
                assert_eq!(write_keyword(sql, *backend), *write, "{sql} on {backend:?}");
            }
        }
    }
}
