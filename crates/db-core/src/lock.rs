//! Named locks around a unit of work, so that a job that must not run twice
//! at once on a database (such as a migrator) waits for, or gives up on,
//! another process doing it.

use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, Connection};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};

use crate::db::Db;
use crate::error::{Error, Result, database_error};
use crate::metrics::{acquire_sqlx, acquiring};
use crate::session::{Access, Session};

/// How often a lock that is held elsewhere is tried again.
const POLL: Duration = Duration::from_millis(200);

/// A named lock on one database and how long to wait for it; see
/// [`Db::with_lock`].
#[derive(Debug, Clone)]
pub struct Lock {
    name: String,
    timeout: Duration,
    schema_change: bool,
}

impl Lock {
    /// The lock called `name`, waited for at most `timeout`. Keep the name
    /// short (at most 23 bytes): on MySQL the server-wide lock name is
    /// `name:` followed by a digest of the database name, at most 64 bytes.
    pub fn new(name: &str, timeout: Duration) -> Self {
        Lock {
            name: name.to_owned(),
            timeout,
            schema_change: false,
        }
    }

    /// Declares that the work changes the schema. On SQLite, foreign keys are
    /// then off while it runs and checked before the commit (SQLite's own
    /// procedure for schema changes: without it, dropping a referenced table
    /// fails and rebuilding one cascades); elsewhere this changes nothing.
    pub fn schema_change(mut self) -> Self {
        self.schema_change = true;
        self
    }
}

impl Db {
    /// Runs `work` on a read-write session while holding `lock` on this
    /// database, and returns its result. Another holder of the same lock on
    /// the same database, in any process, is waited for at most the lock's
    /// timeout (announced once in the log), then [`Error::LockTimeout`] names
    /// the lock. The lock is released when the work ends, and when the
    /// process dies.
    ///
    /// - PostgreSQL: a transaction-level advisory lock in the session's
    ///   transaction; the work runs in that transaction, which commits when
    ///   the work returns `Ok` and rolls back otherwise. It works through a
    ///   transaction pooler, where a session-level lock would stay with
    ///   whichever client shared the server connection last.
    /// - MySQL: `GET_LOCK` on a pooled connection held aside for as long as
    ///   the work runs; the work runs on the pool without a transaction
    ///   (MySQL commits DDL implicitly, so there would be nothing to roll back).
    /// - SQLite: the lock is an exclusive transaction on the writer
    ///   connection, and the work runs in it as on PostgreSQL.
    ///
    /// ```no_run
    /// # async fn example(db: db_core::Db) -> Result<(), db_core::Error> {
    /// use std::time::Duration;
    /// use sea_orm::ConnectionTrait;
    ///
    /// let lock = db_core::Lock::new("nightly", Duration::from_secs(10));
    /// db.with_lock(&lock, async |session| {
    ///     session.execute_unprepared("DELETE FROM tasks WHERE status = 'done'").await?;
    ///     Ok::<_, db_core::Error>(())
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_lock<T, E>(
        &self,
        lock: &Lock,
        work: impl AsyncFnOnce(&Session) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        match self.backend() {
            DbBackend::Postgres => self.with_advisory_lock(lock, work).await,
            DbBackend::MySql => self.with_named_lock(lock, work).await,
            _ => self.with_exclusive_transaction(lock, work).await,
        }
    }

    async fn with_advisory_lock<T, E: From<Error>>(
        &self,
        lock: &Lock,
        work: impl AsyncFnOnce(&Session) -> Result<T, E>,
    ) -> Result<T, E> {
        let key = advisory_key(&lock.name);
        let session = self.begin().await?;
        let mut waiting = Waiting::new(lock, format!("advisory lock {key} on {}", self.target()));
        loop {
            let row = session
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_try_advisory_xact_lock($1)",
                    [key.into()],
                ))
                .await
                .map_err(Error::from)?;
            let taken = row
                .map(|row| row.try_get_by_index::<bool>(0))
                .transpose()
                .map_err(Error::from)?
                .unwrap_or(false);
            if taken {
                break;
            }
            waiting.pause().await?;
        }
        waiting.done();
        let value = work(&session).await?;
        session.commit().await?;
        Ok(value)
    }

    async fn with_named_lock<T, E: From<Error>>(
        &self,
        lock: &Lock,
        work: impl AsyncFnOnce(&Session) -> Result<T, E>,
    ) -> Result<T, E> {
        const NAME: &str = "CONCAT(?, ':', SHA1(DATABASE()))";
        let mut holder =
            acquire_sqlx(self.metrics(), self.conn().get_mysql_connection_pool()).await?;
        let mut waiting = Waiting::new(lock, format!("GET_LOCK on {}", self.target()));
        loop {
            let taken: Option<i64> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT GET_LOCK({NAME}, 0)")))
                    .bind(&lock.name)
                    .fetch_one(&mut *holder)
                    .await
                    .map_err(Error::from_sqlx)?;
            if taken == Some(1) {
                break;
            }
            waiting.pause().await?;
        }
        waiting.done();
        let result = work(&Session::direct(self.conn().clone(), Access::ReadWrite)).await;
        let released = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT RELEASE_LOCK({NAME})")))
            .bind(&lock.name)
            .execute(&mut *holder)
            .await;
        if released.is_err() {
            // Closing the connection releases the lock too.
            let _ = holder.detach().close().await;
        }
        result
    }

    async fn with_exclusive_transaction<T, E: From<Error>>(
        &self,
        lock: &Lock,
        work: impl AsyncFnOnce(&Session) -> Result<T, E>,
    ) -> Result<T, E> {
        // Only possible outside a transaction. The writer pool has one
        // connection, so the pragma applies to the one the transaction runs on.
        let writer = self.conn();
        if lock.schema_change {
            writer
                .execute_unprepared("PRAGMA foreign_keys = OFF")
                .await
                .map_err(Error::from)?;
        }
        let result = async {
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Exclusive),
                ..TransactionOptions::default()
            };
            let mut waiting = Waiting::new(
                lock,
                format!("an exclusive transaction on {}", self.target()),
            );
            let tx = loop {
                match acquiring(self.metrics(), writer.begin_with_options(options)).await {
                    Ok(tx) => break tx,
                    Err(e) if sqlite_busy(&e) => waiting.pause().await?,
                    Err(e) => return Err(Error::from(e).into()),
                }
            };
            waiting.done();
            let session = Session::transaction(tx, Access::ReadWrite);
            let value = work(&session).await?;
            if lock.schema_change {
                foreign_key_check(&session).await?;
            }
            session.commit().await?;
            Ok(value)
        }
        .await;
        if lock.schema_change {
            writer
                .execute_unprepared("PRAGMA foreign_keys = ON")
                .await
                .map_err(Error::from)?;
        }
        result
    }
}

/// Fails with the first table that has rows violating a foreign key.
async fn foreign_key_check(session: &Session) -> Result<()> {
    let violations = session
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA foreign_key_check",
        ))
        .await?;
    match violations.first() {
        Some(row) => Err(Error::ForeignKeyViolation {
            table: row.try_get_by_index(0).unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// The advisory lock key for a name: its 64-bit FNV-1a hash, the same in
/// every process and version.
fn advisory_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Whether SQLite refused because another connection holds a lock
/// (`SQLITE_BUSY` or `SQLITE_LOCKED`, in any of their extended forms).
fn sqlite_busy(e: &DbErr) -> bool {
    database_error(e)
        .and_then(|d| d.code())
        .and_then(|code| code.parse::<u32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Bounded waiting for a lock, announced once.
struct Waiting {
    what: String,
    timeout: Duration,
    start: Instant,
    announced: bool,
}

impl Waiting {
    fn new(lock: &Lock, how: String) -> Self {
        Waiting {
            what: format!("the {} lock ({how})", lock.name),
            timeout: lock.timeout,
            start: Instant::now(),
            announced: false,
        }
    }

    /// After a failed attempt: gives up past the timeout, else pauses.
    async fn pause(&mut self) -> Result<()> {
        if self.start.elapsed() >= self.timeout {
            return Err(Error::LockTimeout {
                what: self.what.clone(),
                waited: self.start.elapsed(),
            });
        }
        if !self.announced {
            tracing::info!("waiting for {}, held by another process", self.what);
            self.announced = true;
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }

    fn done(&self) {
        if self.announced {
            tracing::info!("took {}", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::advisory_key;

    #[test]
    fn advisory_keys_are_fixed_per_name() {
        // Pinned: processes of different versions must agree on the key.
        assert_eq!(advisory_key(""), -3_750_763_034_362_895_579);
        assert_ne!(advisory_key("migration"), advisory_key("migrations"));
    }
}
