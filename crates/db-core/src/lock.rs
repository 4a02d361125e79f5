//! Named locks, so that a job that must not run twice at once on a database
//! (such as a migrator) waits for, or gives up on, another process doing it:
//! around one unit of work ([`Db::with_lock`]), or held on a connection of
//! its own while the job runs many ([`Db::hold`]).

use std::fmt;
use std::time::{Duration, Instant};

use sea_orm::sqlx::mysql::MySqlConnection;
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::sqlx::sqlite::SqlitePoolOptions;
use sea_orm::sqlx::{self, Connection};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

use crate::bound::no_answer;
use crate::db::Db;
use crate::error::{Error, Result, database_error};
use crate::metrics::{acquire_sqlx, acquiring};
use crate::session::{Access, Session};
use crate::url::backend_name;

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
    /// The work's transaction runs on a connection of its own, opened with
    /// foreign keys off and closed with the work, also when its future is
    /// dropped: the handle's pooled connections, and so the writes of other
    /// tasks meanwhile, keep them on. Those writes wait for the work's
    /// exclusive transaction on the database's lock, at most
    /// `DB_SQLITE_BUSY_TIMEOUT` each, rather than in the pool's queue. (An
    /// in-memory database lives in its handle's one connection: there they
    /// are turned off on it for the work and on again after, so nothing else
    /// should write through that handle meanwhile, and a future dropped
    /// mid-way leaves them off.)
    pub fn schema_change(mut self) -> Self {
        self.schema_change = true;
        self
    }
}

/// The name of a MySQL lock: `GET_LOCK`'s names are server-wide, so the
/// database's digest makes it one lock per database.
const MYSQL_LOCK_NAME: &str = "CONCAT(?, ':', SHA1(DATABASE()))";

/// A lock that [`Db::hold`] took, held on a connection of its own until
/// [`release`](HeldLock::release) or drop (dropping closes the connection,
/// which releases it too).
pub struct HeldLock {
    what: String,
    /// The lock's timeout, which also bounds each of its statements.
    timeout: Duration,
    conn: Held,
    /// A statement on the connection ended without its answer (it failed,
    /// got none in time, or was cancelled mid-way): the connection is not
    /// used again, and the lock goes with it.
    unsettled: bool,
}

/// The lock's connection. Its statements are unnamed (`persistent(false)`):
/// through a transaction pooler a named one would stay behind on a server
/// connection that other clients share.
enum Held {
    Postgres {
        conn: PgConnection,
        key: i64,
        /// In a transaction, through a transaction pooler.
        pooled: bool,
    },
    MySql {
        conn: MySqlConnection,
        name: String,
    },
}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLock")
            .field("what", &self.what)
            .finish()
    }
}

/// A session that holds a lock another one waits for, as
/// [`HeldLock::blockers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The server process of the session.
    pub pid: i32,
    /// Its `application_name` (empty when it set none).
    pub application_name: String,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// How long its transaction has been open, if it is in one.
    pub transaction_age: Option<Duration>,
}

/// The sessions of `pg_stat_activity` as [`SessionRow`]s.
const SESSIONS: &str = "SELECT pid, application_name, state, \
                        extract(epoch FROM clock_timestamp() - xact_start)::float8 \
                        FROM pg_stat_activity";

/// pid, application_name, state, and the transaction's age in seconds.
type SessionRow = (i32, Option<String>, Option<String>, Option<f64>);

impl From<SessionRow> for Blocker {
    fn from((pid, application_name, state, age): SessionRow) -> Self {
        Blocker {
            pid,
            application_name: application_name.unwrap_or_default(),
            state: state.unwrap_or_else(|| "unknown".to_owned()),
            transaction_age: age.map(|s| Duration::from_secs_f64(s.max(0.0))),
        }
    }
}

/// The session that holds the advisory lock `key` in this database, for
/// the message of a lock not taken in time; `None` when it cannot be seen
/// (it went meanwhile, or the role may not read the catalog).
async fn postgres_holder(conn: &mut PgConnection, key: i64, timeout: Duration) -> Option<Blocker> {
    // A bigint key is held as two 32-bit halves, classid and objid.
    let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SESSIONS} WHERE pid = (SELECT pid FROM pg_locks WHERE locktype = 'advisory' \
         AND granted AND objsubid = 1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid::bigint = ($1 >> 32) & 4294967295 AND objid::bigint = $1 & 4294967295 \
         LIMIT 1)"
    )));
    let row: Option<SessionRow> = within(
        timeout,
        query.bind(key).persistent(false).fetch_optional(conn),
    )
    .await
    .ok()?;
    row.map(Blocker::from)
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} (application_name {:?}, {}",
            self.pid, self.application_name, self.state
        )?;
        if let Some(age) = self.transaction_age {
            let age = Duration::from_millis(age.as_millis() as u64);
            write!(f, ", transaction open {}", humantime::format_duration(age))?;
        }
        write!(f, ")")
    }
}

impl HeldLock {
    /// What is held, for messages: the lock's name and where.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Fails when the lock's connection is gone (the server ended it, the
    /// network broke): the lock is then no longer held; and when the server
    /// gives no answer within the lock's timeout (at least a second).
    /// Once a statement on the connection failed, this fails at once.
    pub async fn check(&mut self) -> Result<()> {
        let ping = async {
            match &mut self.conn {
                Held::Postgres { conn, .. } => conn.ping().await,
                Held::MySql { conn, .. } => conn.ping().await,
            }
        };
        let timeout = self.timeout;
        settled(&mut self.unsettled, within(timeout, ping))
            .await
            .map_err(|e| match e {
                Error::Unavailable { source, .. } => Error::Unavailable {
                    reason: GONE,
                    source,
                },
                e => e,
            })
    }

    /// PostgreSQL: the sessions that the server process `pid` waits for
    /// (`pg_blocking_pids`), oldest transaction first; empty when it waits
    /// for none, and on other backends. Fails as unavailable when the server
    /// gives no answer within the lock's timeout (at least a second).
    pub async fn blockers(&mut self, pid: i32) -> Result<Vec<Blocker>> {
        let Held::Postgres { conn, pooled, .. } = &mut self.conn else {
            return Ok(Vec::new());
        };
        let (timeout, pooled) = (self.timeout, *pooled);
        let read = async {
            if pooled {
                // The lock's transaction stays open, and a transaction keeps
                // what it first read of the server's activity: read it afresh.
                let clear = sqlx::raw_sql("SELECT pg_stat_clear_snapshot()").execute(&mut *conn);
                within(timeout, clear).await?;
            }
            let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SESSIONS} WHERE pid = ANY(pg_blocking_pids($1)) ORDER BY xact_start NULLS LAST"
            )));
            let rows: Vec<SessionRow> =
                within(timeout, query.bind(pid).persistent(false).fetch_all(conn)).await?;
            Ok(rows.into_iter().map(Blocker::from).collect())
        };
        settled(&mut self.unsettled, read).await
    }

    /// Releases the lock and closes its connection. When the release fails,
    /// or the server gives no answer within the lock's timeout, or an
    /// earlier statement on the connection ended without its answer, the
    /// connection is dropped instead, and the server releases the lock when
    /// it sees the connection closed.
    pub async fn release(self) {
        let timeout = self.timeout;
        if self.unsettled {
            // Closed without a word: it may still owe an answer, or be gone.
            return;
        }
        let released = match self.conn {
            Held::Postgres {
                mut conn,
                key,
                pooled,
            } => {
                let unlock = async {
                    match pooled {
                        true => sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.map(drop),
                        false => sqlx::query("SELECT pg_advisory_unlock($1)")
                            .bind(key)
                            .persistent(false)
                            .execute(&mut conn)
                            .await
                            .map(drop),
                    }
                };
                match within(timeout, unlock).await {
                    Ok(()) => conn.close().await.map_err(Error::from_sqlx),
                    Err(e) => Err(e),
                }
            }
            Held::MySql { mut conn, name } => {
                let unlock = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT RELEASE_LOCK({MYSQL_LOCK_NAME})"
                )))
                .bind(name)
                .execute(&mut conn);
                match within(timeout, unlock).await {
                    Ok(_) => conn.close().await.map_err(Error::from_sqlx),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = released {
            tracing::debug!("releasing the lock's connection: {e}");
        }
    }
}

impl Db {
    /// Runs `work` on a read-write session while holding `lock` on this
    /// database, and returns its result; `work` takes the session as
    /// [`Db::transaction`]'s does, once. Another holder of the same lock on
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
    ///   connection (for a schema change, on one of its own: see
    ///   [`Lock::schema_change`]), and the work runs in it as on PostgreSQL.
    ///
    /// ```no_run
    /// # async fn example(db: db_core::Db) -> Result<(), db_core::Error> {
    /// use std::time::Duration;
    /// use sea_orm::ConnectionTrait;
    ///
    /// let lock = db_core::Lock::new("nightly", Duration::from_secs(10));
    /// db.with_lock(&lock, |session| async move {
    ///     session.execute_unprepared("DELETE FROM tasks WHERE status = 'done'").await?;
    ///     Ok::<_, db_core::Error>(())
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_lock<T, E, Fut>(
        &self,
        lock: &Lock,
        work: impl FnOnce(Session) -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        match self.backend() {
            DbBackend::Postgres => self.with_advisory_lock(lock, work).await,
            DbBackend::MySql => self.with_named_lock(lock, work).await,
            _ => self.with_exclusive_transaction(lock, work).await,
        }
    }

    async fn with_advisory_lock<T, E: From<Error>, Fut: Future<Output = Result<T, E>>>(
        &self,
        lock: &Lock,
        work: impl FnOnce(Session) -> Fut,
    ) -> Result<T, E> {
        let key = advisory_key(&lock.name);
        let session = self.begin().await?;
        let what = format!(
            "the {} lock (advisory lock {key} on {})",
            lock.name,
            self.target()
        );
        let mut waiting = Waiting::new(&what, lock.timeout);
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
        let value = work(session.clone()).await?;
        session.commit().await?;
        Ok(value)
    }

    async fn with_named_lock<T, E: From<Error>, Fut: Future<Output = Result<T, E>>>(
        &self,
        lock: &Lock,
        work: impl FnOnce(Session) -> Fut,
    ) -> Result<T, E> {
        let held = self.hold(lock).await?;
        let result = work(self.autocommit()).await;
        held.release().await;
        result
    }

    /// Takes `lock` on a connection of its own, taken out of the pool, and
    /// holds it until [`HeldLock::release`], or until the connection ends:
    /// when the process dies or the guard is dropped, the server releases
    /// it. Work meanwhile runs on this handle's pools, in as many
    /// transactions as it likes (a migrator that runs each migration in its
    /// own, or none). Another holder is waited for as in
    /// [`Db::with_lock`]; a server that stops answering, for as long (at
    /// least a second) for each statement on the lock's connection.
    ///
    /// - PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`).
    ///   Through a transaction pooler, where a session-level lock would stay
    ///   on a server connection that other clients share, it is a
    ///   transaction-level one in a transaction left open on the lock's
    ///   connection (the pooler keeps one server connection for it, and
    ///   the transaction turns the server's idle-in-transaction timeout off
    ///   for itself); that transaction holds no snapshot between
    ///   statements, so it does not hold back vacuum or a concurrent index
    ///   build.
    /// - MySQL: `GET_LOCK`.
    /// - SQLite has no such lock: [`Error::Unsupported`] (use
    ///   [`Db::with_lock`], whose exclusive transaction is the lock).
    pub async fn hold(&self, lock: &Lock) -> Result<HeldLock> {
        let held = match self.backend() {
            DbBackend::Postgres => {
                let pooled = self.pooled();
                let key = advisory_key(&lock.name);
                let mut conn =
                    acquire_sqlx(self.metrics(), self.conn().get_postgres_connection_pool())
                        .await?
                        .detach();
                let (how, try_lock) = match pooled {
                    true => (
                        "transaction-level advisory lock",
                        "SELECT pg_try_advisory_xact_lock($1)",
                    ),
                    false => ("advisory lock", "SELECT pg_try_advisory_lock($1)"),
                };
                let what = format!("the {} lock ({how} {key} on {})", lock.name, self.target());
                let mut waiting = Waiting::new(&what, lock.timeout);
                loop {
                    // Through a pooler, each attempt is a transaction of its
                    // own, kept open only when it took the lock: a waiter
                    // holds neither a server connection nor a transaction
                    // that a concurrent index build would wait for.
                    if pooled {
                        within(lock.timeout, sqlx::raw_sql("BEGIN").execute(&mut conn)).await?;
                    }
                    let taken: bool = within(
                        lock.timeout,
                        sqlx::query_scalar(try_lock)
                            .bind(key)
                            .persistent(false)
                            .fetch_one(&mut conn),
                    )
                    .await?;
                    if taken && pooled {
                        // The transaction that is the lock stays open and
                        // idle while the work runs: a server-side idle
                        // timeout (the role's, the database's) must not
                        // end it.
                        let forever = "SET LOCAL idle_in_transaction_session_timeout = 0";
                        within(lock.timeout, sqlx::raw_sql(forever).execute(&mut conn)).await?;
                    } else if taken {
                        // So does the session that holds the lock, idle
                        // while the work runs: PostgreSQL 14's
                        // idle_session_timeout must not end it. Older
                        // servers do not know the setting, nor end idle
                        // sessions.
                        let set = async {
                            match sqlx::raw_sql("SET idle_session_timeout = 0")
                                .execute(&mut conn)
                                .await
                            {
                                // undefined_object: an unknown setting.
                                Err(sqlx::Error::Database(e))
                                    if e.code().as_deref() == Some("42704") =>
                                {
                                    Ok(())
                                }
                                done => done.map(drop),
                            }
                        };
                        within(lock.timeout, set).await?;
                    }
                    if taken {
                        break;
                    }
                    if pooled {
                        within(lock.timeout, sqlx::raw_sql("ROLLBACK").execute(&mut conn)).await?;
                    }
                    match waiting.pause().await {
                        Err(Error::LockTimeout { what, waited, .. }) => {
                            let holder = postgres_holder(&mut conn, key, lock.timeout).await;
                            return Err(Error::LockTimeout {
                                what,
                                waited,
                                holder,
                            });
                        }
                        waited => waited?,
                    }
                }
                waiting.done();
                HeldLock {
                    what,
                    timeout: lock.timeout,
                    conn: Held::Postgres { conn, key, pooled },
                    unsettled: false,
                }
            }
            DbBackend::MySql => {
                let mut conn =
                    acquire_sqlx(self.metrics(), self.conn().get_mysql_connection_pool())
                        .await?
                        .detach();
                // The session that holds the lock is idle while the work
                // runs: the server's wait_timeout (8 hours by default, often
                // set lower) must not end it, and the lock with it.
                let forever = "SET SESSION wait_timeout = 31536000";
                within(lock.timeout, sqlx::raw_sql(forever).execute(&mut conn)).await?;
                let what = format!("the {} lock (GET_LOCK on {})", lock.name, self.target());
                let mut waiting = Waiting::new(&what, lock.timeout);
                loop {
                    let get_lock = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT GET_LOCK({MYSQL_LOCK_NAME}, 0)"
                    )))
                    .bind(&lock.name)
                    .fetch_one(&mut conn);
                    let taken: Option<i64> = within(lock.timeout, get_lock).await?;
                    if taken == Some(1) {
                        break;
                    }
                    waiting.pause().await?;
                }
                waiting.done();
                HeldLock {
                    what,
                    timeout: lock.timeout,
                    conn: Held::MySql {
                        conn,
                        name: lock.name.clone(),
                    },
                    unsettled: false,
                }
            }
            _ => {
                return Err(Error::Unsupported {
                    operation: "a lock held on a connection of its own",
                    backend: backend_name(self.backend()),
                });
            }
        };
        Ok(held)
    }

    async fn with_exclusive_transaction<T, E: From<Error>, Fut: Future<Output = Result<T, E>>>(
        &self,
        lock: &Lock,
        work: impl FnOnce(Session) -> Fut,
    ) -> Result<T, E> {
        let own = (lock.schema_change && !self.in_memory()).then(|| schema_connection(self.conn()));
        // An in-memory database has one connection: the pragma, only
        // possible outside a transaction, applies to the one the
        // transaction runs on, since the writer pool has no other.
        let toggled = lock.schema_change && own.is_none();
        let writer = own.as_ref().unwrap_or(self.conn());
        // The writer pool's metrics count its own connections only.
        let metrics = self.metrics().filter(|_| own.is_none());
        if toggled {
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
            let what = format!(
                "the {} lock (an exclusive transaction on {})",
                lock.name,
                self.target()
            );
            let mut waiting = Waiting::new(&what, lock.timeout);
            let tx = loop {
                match acquiring(metrics, writer.begin_with_options(options)).await {
                    Ok(tx) => break tx,
                    Err(e) if sqlite_busy(&e) => waiting.pause().await?,
                    Err(e) => return Err(Error::from(e).into()),
                }
            };
            waiting.done();
            // SQLite: no server that could stop answering.
            let session = Session::transaction(tx, Access::ReadWrite, None);
            let value = work(session.clone()).await?;
            if lock.schema_change {
                foreign_key_check(&session).await?;
            }
            session.commit().await?;
            Ok(value)
        }
        .await;
        if toggled {
            writer
                .execute_unprepared("PRAGMA foreign_keys = ON")
                .await
                .map_err(Error::from)?;
        }
        result
    }
}

/// A connection of its own to the file database of SQLite's `writer`, with
/// foreign keys off, for a schema change. It opens when the work's
/// transaction begins, where a locked database is waited for, and closes
/// when it is dropped, with the work.
fn schema_connection(writer: &DatabaseConnection) -> DatabaseConnection {
    let options = writer.get_sqlite_connection_pool().connect_options();
    let options = options.as_ref().clone().foreign_keys(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    DatabaseConnection::from(pool)
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

/// What a check of a lock whose connection failed says.
const GONE: &str = "the connection that held the lock is gone or gives no answer";

/// `statement` on the connection whose state `unsettled` is: it fails at
/// once when an earlier one ended without its answer; it leaves the flag
/// set unless it ends with one, also when it is cancelled mid-way.
async fn settled<T>(unsettled: &mut bool, statement: impl Future<Output = Result<T>>) -> Result<T> {
    if *unsettled {
        return Err(Error::Unavailable {
            reason: GONE,
            source: None,
        });
    }
    *unsettled = true;
    let result = statement.await;
    *unsettled = result.is_err();
    result
}

/// `statement` on a lock's own connection, which has no
/// `DB_OPERATION_TIMEOUT`. A server that gives no answer (paused, or its
/// network path gone with the socket open) within the lock's `timeout`, or
/// within a second when that is shorter (a lock tried once), makes it fail
/// as unavailable; the connection is dropped.
async fn within<T>(
    timeout: Duration,
    statement: impl Future<Output = sqlx::Result<T>>,
) -> Result<T> {
    let limit = timeout.max(Duration::from_secs(1));
    match tokio::time::timeout(limit, statement).await {
        Ok(answer) => answer.map_err(Error::from_sqlx),
        Err(_) => Err(Error::from(no_answer(limit, "the lock's timeout"))),
    }
}

/// Bounded waiting for a lock, announced once.
struct Waiting {
    what: String,
    timeout: Duration,
    start: Instant,
    announced: bool,
}

impl Waiting {
    fn new(what: &str, timeout: Duration) -> Self {
        Waiting {
            what: what.to_owned(),
            timeout,
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
                holder: None,
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
