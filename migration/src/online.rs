//! Schema changes that the application keeps running through: building
//! blocks for migrations, this crate's and yours (docs/migrations.md).
//!
//! A schema change stalls an application in two ways: it holds a lock that
//! blocks writes for as long as it works (a plain `CREATE INDEX`, a foreign
//! key checked against every row), or it waits for its lock behind a long
//! transaction while every later query on the table queues behind it. The
//! runner bounds the second on PostgreSQL and MySQL: each statement waits
//! at most `DB_MIGRATION_LOCK_TIMEOUT` for its lock (on MySQL in whole
//! seconds, and with no session named in the way), then a statement of
//! the blocks below (or a transactional migration as a whole) is tried
//! again after a jittered pause, as after a deadlock that the server ended
//! by aborting it, until `DB_MIGRATION_DEADLINE`; giving up names the
//! sessions in the way. A plain statement in a migration without a
//! transaction is not tried again: run it through [`execute`]. The blocks
//! below avoid the first, and each is safe to run again after it was
//! interrupted:
//!
//! | block | PostgreSQL | MySQL / MariaDB | SQLite |
//! | --- | --- | --- | --- |
//! | [`create_index`] | `CREATE INDEX CONCURRENTLY`, an INVALID leftover dropped first | `ALGORITHM=INPLACE, LOCK=NONE` | `CREATE INDEX` |
//! | [`drop_index`] | `DROP INDEX CONCURRENTLY` | `ALGORITHM=INPLACE, LOCK=NONE` | `DROP INDEX` |
//! | [`add_foreign_key`] | `NOT VALID`, then `VALIDATE` in a transaction of its own | `ADD CONSTRAINT` (checks rows while it blocks writes) | not possible in place |
//! | [`replace_foreign_key`] | the old one dropped and the new one added `NOT VALID` at once, then `VALIDATE` | drop, then add | not possible in place |
//! | [`add_check`] | `NOT VALID`, then `VALIDATE` | `ADD CONSTRAINT` | not possible in place |
//! | [`set_not_null`] | a validated check, then `SET NOT NULL` (no scan) | `MODIFY` in place | not possible in place |
//! | [`Backfill`] | the rows there when it starts, in batches, each a transaction of its own, paced | the same | batches in the migration's one transaction (the runner's lock), without pauses |
//! | [`execute`] | one statement in a transaction of its own, retried | the statement, retried | the statement |
//!
//! On PostgreSQL they run in a migration that opts out of the runner's
//! transaction (a `CONCURRENTLY` statement cannot run in one, and a check
//! that commits separately is the point), and refuse to run inside one:
//!
//! ```
//! use migration::online;
//! use sea_orm_migration::prelude::*;
//!
//! #[derive(DeriveMigrationName)]
//! pub struct Migration;
//!
//! #[async_trait::async_trait]
//! impl MigrationTrait for Migration {
//!     async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
//!         let index = Index::create()
//!             .name("idx_tasks_status")
//!             .table("tasks")
//!             .col("status")
//!             .to_owned();
//!         online::create_index(manager, index).await
//!     }
//!
//!     fn use_transaction(&self) -> Option<bool> {
//!         Some(false)
//!     }
//! }
//! ```
//!
//! SQLite cannot add a constraint to an existing table, nor make a column
//! `NOT NULL`, without rebuilding the table; those blocks say so.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::lock::{Blocker, HeldLock};
use rand::Rng;
use sea_orm::{
    ConnectionTrait, DatabaseExecutor, DbBackend, DbErr, RuntimeErr, Statement, TransactionTrait,
};
use sea_orm_migration::SchemaManager;
use sea_orm_migration::prelude::*;
use tokio::sync::Mutex;

tokio::task_local! {
    static CONTEXT: Context;
}

/// How long statements wait for locks and are tried again: the runner's
/// settings (`DB_MIGRATION_LOCK_TIMEOUT`, `DB_MIGRATION_DEADLINE`,
/// `DB_MIGRATION_INDEX_TIMEOUT`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub lock_timeout: Duration,
    pub deadline: Duration,
    pub index_timeout: Duration,
}

impl Policy {
    pub(crate) fn from_settings(settings: &db_core::Settings) -> Self {
        Policy {
            lock_timeout: settings.migration_lock_timeout,
            deadline: settings.migration_deadline,
            index_timeout: settings.migration_index_timeout,
        }
    }
}

/// What the runner gives the migrations it runs.
#[derive(Clone)]
pub(crate) struct Context {
    pub policy: Policy,
    /// The migration lock's own connection, which sees who blocks a statement.
    pub lock: Option<Arc<Mutex<HeldLock>>>,
    /// Through a transaction pooler: nothing may be set on the session.
    pub pooled: bool,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            policy: Policy::from_settings(&db_core::Settings::new(
                db_core::url::DatabaseUrl::parse("sqlite::memory:", "defaults")
                    .expect("a constant URL parses"),
            )),
            lock: None,
            pooled: false,
        }
    }
}

/// Runs `work` with `context` for the building blocks it calls.
pub(crate) async fn scope<T>(context: Context, work: impl Future<Output = T>) -> T {
    CONTEXT.scope(context, work).await
}

fn context() -> Context {
    CONTEXT.try_with(Context::clone).unwrap_or_default()
}

/// The SQLSTATE of a database error.
fn sqlstate(e: &DbErr) -> Option<String> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

/// How an attempt ended that a later one may get past: nothing of it stays.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockWait {
    /// PostgreSQL's `lock_not_available` (55P03), MySQL's 1205: a statement
    /// gave up waiting for a lock.
    TimedOut,
    /// PostgreSQL's `deadlock_detected` (40P01), MySQL's 1213: the server
    /// aborted the transaction to end a cycle of lock waits.
    Deadlock,
}

/// An error that may be a [`LockWait`].
pub(crate) trait LockNotAvailable: From<DbErr> {
    /// Which one this is, if it is one.
    fn lock_wait(&self) -> Option<LockWait>;
}

impl LockNotAvailable for DbErr {
    fn lock_wait(&self) -> Option<LockWait> {
        match (sqlstate(self).as_deref(), mysql_error(self)) {
            (Some("55P03"), _) | (_, Some(1205)) => Some(LockWait::TimedOut),
            (Some("40P01"), _) | (_, Some(1213)) => Some(LockWait::Deadlock),
            _ => None,
        }
    }
}

/// What the attempts saw while they waited for locks: the sessions in the
/// way, last seen. Clones share it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Seen(Arc<std::sync::Mutex<Vec<Blocker>>>);

impl Seen {
    /// Runs `work` on `conn`, noting every tenth of a second which sessions
    /// it waits for. On PostgreSQL only, and `conn` must be one server
    /// process throughout: a transaction, or the runner's connection when it
    /// does not go through a transaction pooler.
    pub(crate) async fn watch<T, E: From<DbErr>>(
        &self,
        conn: &impl ConnectionTrait,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let Some(lock) = context()
            .lock
            .filter(|_| conn.get_database_backend() == DbBackend::Postgres)
        else {
            return work.await;
        };
        let pid: i32 = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_backend_pid()",
            ))
            .await?
            .ok_or_else(|| DbErr::Migration("no backend pid".to_owned()))?
            .try_get_by_index(0)?;
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return result,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Ok(blockers) = lock.lock().await.blockers(pid).await
                        && !blockers.is_empty()
                    {
                        *self.0.lock().expect("never poisoned") = blockers;
                    }
                }
            }
        }
    }
}

/// Fails when the migration lock's connection is gone (the server ended
/// it, the network broke): another migrator may hold the lock by now, and
/// this one must not go on beside it. Without a lock of its own (SQLite,
/// whose exclusive transaction is the lock, or outside the runner) it passes.
async fn still_locked() -> Result<(), DbErr> {
    let Some(lock) = context().lock else {
        return Ok(());
    };
    let checked = lock.lock().await.check().await;
    checked.map_err(lock_lost)
}

/// What a migration stops with when its lock's [`HeldLock::check`] failed.
pub(crate) fn lock_lost(e: db_core::Error) -> DbErr {
    DbErr::Migration(format!(
        "the migration lock was lost, so the migration stops: {}",
        db_core::error::Report(&e)
    ))
}

/// Which setting bounds an attempt's lock wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound {
    /// `DB_MIGRATION_LOCK_TIMEOUT`.
    Statement,
    /// `DB_MIGRATION_INDEX_TIMEOUT`.
    Index,
}

impl Bound {
    fn setting(self, policy: &Policy) -> (&'static str, Duration) {
        match self {
            Bound::Statement => ("DB_MIGRATION_LOCK_TIMEOUT", policy.lock_timeout),
            Bound::Index => ("DB_MIGRATION_INDEX_TIMEOUT", policy.index_timeout),
        }
    }
}

/// Runs `attempt` until it ends other than by a lock timeout or a deadlock
/// ([`LockWait`]); after one,
/// pauses for a time drawn from [`pauses`] (so that the queries that
/// queued behind a statement drain, and its table is blocked at most half
/// the time) and tries again, until `DB_MIGRATION_DEADLINE`, then gives up
/// with one error that names `what`, the settings, and the sessions the
/// last attempts waited for.
pub(crate) async fn retrying<T, E: LockNotAvailable, F: Future<Output = Result<T, E>>>(
    what: &str,
    bound: Bound,
    mut attempt: impl FnMut(Seen) -> F,
) -> Result<T, E> {
    let policy = context().policy;
    let start = Instant::now();
    let seen = Seen::default();
    let mut attempts = 1u32;
    loop {
        let (error, wait) = match attempt(seen.clone()).await {
            Err(e) => match e.lock_wait() {
                Some(wait) => (e, wait),
                None => return Err(e),
            },
            done => return done,
        };
        let (setting, timeout) = bound.setting(&policy);
        let pause = rand::rng().random_range(pauses(bound, timeout, attempts));
        if start.elapsed() + pause >= policy.deadline {
            drop(error);
            return Err(E::from(DbErr::Migration(format!(
                "{what}: gave up after {} and {attempts} attempts, each waiting {setting}={} for a lock; in the way: {}; end those sessions, or allow more time with DB_MIGRATION_DEADLINE={}",
                short(start.elapsed()),
                short(timeout),
                Blocking(&seen.0.lock().expect("never poisoned")),
                short(policy.deadline),
            ))));
        }
        let why = match wait {
            LockWait::TimedOut => format!("no lock within {setting}={}", short(timeout)),
            LockWait::Deadlock => "a deadlock, which the server ended by aborting it".to_owned(),
        };
        tracing::warn!(
            "{what}: {why} (attempt {attempts}); in the way: {}; trying again in {}",
            Blocking(&seen.0.lock().expect("never poisoned")),
            short(pause),
        );
        tokio::time::sleep(pause).await;
        still_locked().await.map_err(E::from)?;
        attempts += 1;
    }
}

/// The range that the pause after attempt `attempts` is drawn from: from
/// 100 to 200 ms after the first, doubling up to 2.5 to 5 s; after a
/// statement's lock wait of `timeout`, never less than `timeout`. (A `CREATE
/// INDEX CONCURRENTLY` waiting for older transactions blocks no query; a
/// statement waiting for its table's lock blocks every query on the table
/// behind it.)
fn pauses(bound: Bound, timeout: Duration, attempts: u32) -> RangeInclusive<Duration> {
    let floor = match bound {
        Bound::Statement => timeout,
        Bound::Index => Duration::ZERO,
    };
    let cap = Duration::from_millis(100 << Ord::min(attempts, 6))
        .min(Duration::from_secs(5))
        .max(floor * 2);
    cap / 2..=cap
}

/// A duration to the millisecond, as settings are written.
fn short(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

struct Blocking<'a>(&'a [Blocker]);

impl fmt::Display for Blocking<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no session seen (it ended, or holds no lock that shows)");
        }
        for (n, blocker) in self.0.iter().enumerate() {
            if n > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{blocker}")?;
        }
        Ok(())
    }
}

/// Refuses a block that must commit on its own when it runs inside a
/// transaction on PostgreSQL; true when the backend is PostgreSQL.
fn postgres_outside_transaction(manager: &SchemaManager<'_>, what: &str) -> Result<bool, DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(false);
    }
    if matches!(
        manager.get_connection(),
        DatabaseExecutor::Transaction(_) | DatabaseExecutor::OwnedTransaction(_)
    ) {
        return Err(DbErr::Migration(format!(
            "{what} runs outside a transaction on PostgreSQL: make the migration's use_transaction() return Some(false)"
        )));
    }
    Ok(true)
}

/// `name` as a PostgreSQL or SQLite identifier (MySQL: between backticks).
fn quote(backend: DbBackend, name: &str) -> String {
    match backend {
        DbBackend::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// `d` in whole milliseconds for a PostgreSQL timeout, rounded up and at
/// least 1 (0 would turn it off).
pub(crate) fn millis(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000).max(1)
}

/// PostgreSQL: runs `statements` in a transaction of their own that waits at
/// most `DB_MIGRATION_LOCK_TIMEOUT` for each lock, tried again until the
/// deadline. Returns the rows the last statement affected.
async fn short_transaction(
    conn: &DatabaseExecutor<'_>,
    what: &str,
    statements: &[String],
) -> Result<u64, DbErr> {
    let policy = context().policy;
    retrying(what, Bound::Statement, |seen| async move {
        crate::sql::transaction_begins();
        let tx = conn.begin().await?;
        let rows = seen
            .watch(&tx, async {
                tx.execute_unprepared(&format!(
                    "SET LOCAL lock_timeout = '{}ms'",
                    millis(policy.lock_timeout)
                ))
                .await?;
                let mut rows = 0;
                for sql in statements {
                    rows = tx.execute_unprepared(sql).await?.rows_affected();
                }
                Ok::<_, DbErr>(rows)
            })
            .await;
        // Rolled back here, not when dropped: a dropped transaction's
        // connection is closed, and the runner's one connection carries
        // what the runner set on its session.
        match rows {
            Ok(rows) => tx.commit().await.map(|()| rows),
            Err(e) => {
                // The error that ended the work is the one to report.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    })
    .await
}

/// Runs one statement so that it never queues the application behind it
/// for long: on PostgreSQL outside a transaction, in a transaction of its
/// own that waits at most `DB_MIGRATION_LOCK_TIMEOUT` for its lock, tried
/// again until `DB_MIGRATION_DEADLINE`; inside the runner's transaction, as
/// part of it (the runner retries the migration as a whole). Elsewhere, as
/// it is.
pub async fn execute(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let in_transaction = matches!(
        conn,
        DatabaseExecutor::Transaction(_) | DatabaseExecutor::OwnedTransaction(_)
    );
    match manager.get_database_backend() {
        _ if in_transaction => conn.execute_unprepared(sql).await.map(drop),
        DbBackend::Postgres => short_transaction(conn, sql, &[sql.to_owned()])
            .await
            .map(drop),
        DbBackend::MySql => mysql_retrying(conn, sql).await.map(drop),
        _ => conn.execute_unprepared(sql).await.map(drop),
    }
}

/// PostgreSQL, outside a transaction: runs `sql` with `lock_timeout` set to
/// `timeout` for it, watched for blockers. Through a transaction pooler,
/// where nothing may be set on a shared session, the server's own
/// `lock_timeout` applies.
async fn with_session_lock_timeout(
    conn: &DatabaseExecutor<'_>,
    timeout: Duration,
    sql: &str,
    seen: &Seen,
) -> Result<(), DbErr> {
    let context = context();
    if context.pooled {
        return conn.execute_unprepared(sql).await.map(drop);
    }
    conn.execute_unprepared(&format!("SET lock_timeout = '{}ms'", millis(timeout)))
        .await?;
    let result = seen.watch(conn, conn.execute_unprepared(sql)).await;
    let reset = conn
        .execute_unprepared(&format!(
            "SET lock_timeout = '{}ms'",
            millis(context.policy.lock_timeout)
        ))
        .await;
    result?;
    reset.map(drop)
}

/// `name` as PostgreSQL keeps it in its catalog: at most 63 bytes, cut
/// between characters (a statement that names it cuts it alike).
fn stored_name(name: &str) -> &str {
    let cut = (0..=name.len().min(63)).rfind(|&i| name.is_char_boundary(i));
    &name[..cut.unwrap_or(0)]
}

fn index_name(index: &IndexCreateStatement) -> Result<String, DbErr> {
    index
        .get_index_spec()
        .get_name()
        .map(str::to_owned)
        .ok_or_else(|| DbErr::Migration("an index built online needs a name".to_owned()))
}

/// PostgreSQL: drops the INVALID index called `name` that an interrupted
/// concurrent build left, if there is one. A build whose migrator died may
/// still be running on the server (it notices the lost client only at its
/// next check, see the runner's `client_connection_check_interval`), and
/// no live migrator runs beside this one (the migration lock): such a build
/// is waited for, and then the older transactions that the drop waits for,
/// each up to `wait`. Returns whether there was one.
async fn drop_invalid_index(
    conn: &DatabaseExecutor<'_>,
    name: &str,
    wait: Duration,
) -> Result<bool, DbErr> {
    let started = Instant::now();
    let mut announced = false;
    loop {
        let building = conn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) FROM pg_stat_progress_create_index p \
                 JOIN pg_class c ON c.oid = p.index_relid \
                 WHERE c.relname = $1 AND pg_table_is_visible(c.oid) AND p.pid <> pg_backend_pid()",
                [stored_name(name).into()],
            ))
            .await?
            .map(|row| row.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        if building == 0 {
            break;
        }
        if started.elapsed() >= wait {
            return Err(DbErr::Migration(format!(
                "index {name}: an earlier build of it is still running after {}; end it, or allow more time with DB_MIGRATION_INDEX_TIMEOUT",
                short(started.elapsed())
            )));
        }
        if !announced {
            tracing::info!(
                "index {name}: waiting for an earlier build of it, whose migrator is gone, to end"
            );
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leftover = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_index i ON i.indexrelid = c.oid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND NOT i.indisvalid AND pg_table_is_visible(c.oid)",
            [stored_name(name).into()],
        ))
        .await?;
    let Some(row) = leftover else {
        return Ok(false);
    };
    let qualified: String = row.try_get_by_index(0)?;
    tracing::info!("dropping {qualified}, an INVALID index left by an interrupted build");
    with_session_lock_timeout(
        conn,
        wait,
        &format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"),
        &Seen::default(),
    )
    .await?;
    Ok(true)
}

/// The MySQL error number of a database error.
fn mysql_error(e: &DbErr) -> Option<u16> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => e
            .as_database_error()?
            .try_downcast_ref::<sea_orm::SqlxMySqlError>()
            .map(sea_orm::SqlxMySqlError::number),
        _ => None,
    }
}

/// MySQL: runs the statement `sql` outside a transaction; one that waits
/// longer than the session's `lock_wait_timeout` for its lock (the runner
/// sets `DB_MIGRATION_LOCK_TIMEOUT`) did nothing, and is tried again until
/// `DB_MIGRATION_DEADLINE`.
async fn mysql_retrying(conn: &DatabaseExecutor<'_>, sql: &str) -> Result<u64, DbErr> {
    retrying(sql, Bound::Statement, |_| async move {
        Ok(conn.execute_unprepared(sql).await?.rows_affected())
    })
    .await
}

/// Creates an index without blocking writes, and without doing anything
/// when it exists: on PostgreSQL `CREATE INDEX CONCURRENTLY IF NOT EXISTS`
/// (waiting at most `DB_MIGRATION_INDEX_TIMEOUT` for older transactions;
/// an INVALID index of the same name, left by an interrupted build, is
/// dropped first, and one left by this build when it fails too, unless the
/// transactions in the way hold up that drop for longer than
/// `DB_MIGRATION_LOCK_TIMEOUT`: then the error says that it is left); on
/// MySQL in place (`ALGORITHM=INPLACE, LOCK=NONE`); on SQLite as usual.
pub async fn create_index(
    manager: &SchemaManager<'_>,
    mut index: IndexCreateStatement,
) -> Result<(), DbErr> {
    let name = index_name(&index)?;
    let conn = manager.get_connection();
    match manager.get_database_backend() {
        DbBackend::Postgres => {
            postgres_outside_transaction(manager, "a concurrent index build")?;
            let sql = DbBackend::Postgres
                .build(index.concurrently().if_not_exists())
                .sql;
            let policy = context().policy;
            let timeout = policy.index_timeout;
            let (name, sql) = (&name, &sql);
            let built = retrying(sql, Bound::Index, |seen| async move {
                drop_invalid_index(conn, name, timeout).await?;
                with_session_lock_timeout(conn, timeout, sql, &seen).await?;
                // `IF NOT EXISTS` passes over an index of that name that an
                // earlier build, whose migrator is gone, made meanwhile: if
                // that one ended INVALID, it goes, and this one is built.
                while drop_invalid_index(conn, name, timeout).await? {
                    with_session_lock_timeout(conn, timeout, sql, &seen).await?;
                }
                Ok(())
            })
            .await;
            // The build's own INVALID index goes too. The transactions that
            // stopped the build would hold up its drop as long: the drop
            // waits `DB_MIGRATION_LOCK_TIMEOUT` only, so that the error comes
            // at once, and says so when it leaves the index to the next run.
            let Err(e) = built else { return Ok(()) };
            let left = drop_invalid_index(conn, name, policy.lock_timeout)
                .await
                .is_err();
            let note = format!("its INVALID index {name} is left, and the next run drops it first");
            match e {
                DbErr::Migration(why) if left => Err(DbErr::Migration(format!("{why}; {note}"))),
                e => {
                    if left {
                        tracing::warn!("{note}");
                    }
                    Err(e)
                }
            }
        }
        DbBackend::MySql => {
            let sql = format!(
                "{} ALGORITHM=INPLACE LOCK=NONE",
                DbBackend::MySql.build(&index).sql
            );
            match mysql_retrying(conn, &sql).await {
                // Duplicate key name.
                Err(e) if mysql_error(&e) == Some(1061) => Ok(()),
                other => other.map(drop),
            }
        }
        _ => manager.create_index(index.if_not_exists().to_owned()).await,
    }
}

/// Drops an index without blocking writes, and without doing anything when
/// it is gone: `DROP INDEX CONCURRENTLY IF EXISTS` on PostgreSQL, in place
/// on MySQL.
pub async fn drop_index(manager: &SchemaManager<'_>, name: &str, table: &str) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let backend = manager.get_database_backend();
    match backend {
        DbBackend::Postgres => {
            postgres_outside_transaction(manager, "a concurrent index drop")?;
            let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", quote(backend, name));
            let timeout = context().policy.index_timeout;
            let sql = &sql;
            retrying(sql, Bound::Index, |seen| async move {
                with_session_lock_timeout(conn, timeout, sql, &seen).await
            })
            .await
        }
        DbBackend::MySql => {
            let sql = format!(
                "ALTER TABLE {} DROP INDEX {}, ALGORITHM=INPLACE, LOCK=NONE",
                quote(backend, table),
                quote(backend, name)
            );
            match mysql_retrying(conn, &sql).await {
                // No such index.
                Err(e) if mysql_error(&e) == Some(1091) => Ok(()),
                other => other.map(drop),
            }
        }
        _ => conn
            .execute_unprepared(&format!("DROP INDEX IF EXISTS {}", quote(backend, name)))
            .await
            .map(drop),
    }
}

/// Whether constraint `name` exists on `table`, and whether it is validated.
async fn constraint(
    conn: &DatabaseExecutor<'_>,
    table: &str,
    name: &str,
) -> Result<Option<bool>, DbErr> {
    let backend = conn.get_database_backend();
    let statement = match backend {
        DbBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "SELECT convalidated FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)",
            [stored_name(name).into(), quote(backend, table).into()],
        ),
        _ => Statement::from_sql_and_values(
            backend,
            "SELECT TRUE FROM information_schema.TABLE_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = ?",
            [table.into(), name.into()],
        ),
    };
    match conn.query_one_raw(statement).await? {
        Some(row) => Ok(Some(row.try_get_by_index::<bool>(0)?)),
        None => Ok(None),
    }
}

fn sqlite_cannot(kind: &str, table: &str, name: &str) -> DbErr {
    DbErr::Migration(format!(
        "SQLite cannot add {kind} {name} to the existing table {table}: create the table with it, or rebuild the table (docs/migrations.md)"
    ))
}

/// Adds constraint `name` to `table` with `add` (an `ALTER TABLE ... ADD
/// CONSTRAINT` statement): on PostgreSQL `NOT VALID` (a moment's lock; new
/// rows are checked from then on), then `VALIDATE` in a transaction of its
/// own (existing rows checked while writes go on), and when existing rows
/// break it, dropped again before the error returns; elsewhere as it is.
async fn add_constraint(
    manager: &SchemaManager<'_>,
    kind: &str,
    table: &str,
    name: &str,
    add: String,
) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let backend = manager.get_database_backend();
    if backend == DbBackend::Sqlite {
        return Err(sqlite_cannot(kind, table, name));
    }
    let postgres = postgres_outside_transaction(manager, &format!("adding {kind} {name}"))?;
    let state = constraint(conn, table, name).await?;
    if !postgres {
        if state.is_none() {
            mysql_retrying(conn, &add).await?;
        }
        return Ok(());
    }
    if state.is_none() {
        let add = format!("{add} NOT VALID");
        short_transaction(conn, &add, std::slice::from_ref(&add)).await?;
    }
    if state != Some(true) {
        let (table, name) = (quote(backend, table), quote(backend, name));
        let validate = format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}");
        let validated = short_transaction(conn, &validate, std::slice::from_ref(&validate)).await;
        // Rows that break it: the constraint this call added goes again, so
        // that new writes are not held to it either. (One left by an
        // earlier, interrupted run stays as it was.)
        let violated = |e: &DbErr| matches!(sqlstate(e).as_deref(), Some("23514" | "23503"));
        if let Err(e) = validated {
            if state.is_none() && violated(&e) {
                let drop = format!("ALTER TABLE {table} DROP CONSTRAINT {name}");
                short_transaction(conn, &drop, std::slice::from_ref(&drop)).await?;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// The name of a foreign key and the table it is on.
fn name_and_table(foreign_key: &ForeignKeyCreateStatement) -> Result<(String, String), DbErr> {
    let spec = foreign_key.get_foreign_key();
    let name = spec
        .get_name()
        .ok_or_else(|| DbErr::Migration("a foreign key added online needs a name".to_owned()))?
        .to_owned();
    match spec.get_table() {
        Some(TableRef::Table(TableName(_, table), _)) => Ok((name, table.to_string())),
        _ => Err(DbErr::Migration(format!(
            "foreign key {name}: the table it is on is missing"
        ))),
    }
}

/// Adds a foreign key (it needs a name) without checking existing rows
/// while writes wait: see the table in the module docs. Does nothing when
/// a constraint of that name exists, and validates it when it is not yet.
pub async fn add_foreign_key(
    manager: &SchemaManager<'_>,
    foreign_key: ForeignKeyCreateStatement,
) -> Result<(), DbErr> {
    let (name, table) = name_and_table(&foreign_key)?;
    // SQLite's statement builder cannot write this statement at all.
    if manager.get_database_backend() == DbBackend::Sqlite {
        return Err(sqlite_cannot("foreign key", &table, &name));
    }
    let add = manager.get_database_backend().build(&foreign_key).sql;
    add_constraint(manager, "foreign key", &table, &name, add).await
}

/// Replaces foreign key `old` with `foreign_key` (another name, other rules):
/// on PostgreSQL the old one is dropped and the new one added `NOT VALID`
/// in one short transaction, so no moment is without a foreign key, then
/// the new one is validated while writes go on. Where `old` is gone, only
/// the new one is made sure of, as [`add_foreign_key`] does.
pub async fn replace_foreign_key(
    manager: &SchemaManager<'_>,
    old: &str,
    foreign_key: ForeignKeyCreateStatement,
) -> Result<(), DbErr> {
    let (name, table) = name_and_table(&foreign_key)?;
    let backend = manager.get_database_backend();
    if backend == DbBackend::Sqlite {
        return Err(sqlite_cannot("foreign key", &table, &name));
    }
    let conn = manager.get_connection();
    let postgres = postgres_outside_transaction(manager, &format!("replacing foreign key {old}"))?;
    if constraint(conn, &table, old).await?.is_some() {
        let drop = format!(
            "-- {name} replaces it in the same transaction, so the reference stays checked\n\
             -- squawk-ignore ban-drop-constraint\n{}",
            backend
                .build(ForeignKey::drop().name(old).table(Alias::new(&table)))
                .sql
        );
        let add = backend.build(&foreign_key).sql;
        if postgres {
            let add = format!("{add} NOT VALID");
            short_transaction(conn, &add, &[drop, add.clone()]).await?;
        } else {
            conn.execute_unprepared(&drop).await?;
            conn.execute_unprepared(&add).await?;
        }
    }
    add_foreign_key(manager, foreign_key).await
}

/// Adds `CHECK (condition)` as constraint `name` of `table`, checking
/// existing rows without holding up writes where the backend can: see the
/// table in the module docs.
pub async fn add_check(
    manager: &SchemaManager<'_>,
    table: &str,
    name: &str,
    condition: &str,
) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    let add = format!(
        "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({condition})",
        quote(backend, table),
        quote(backend, name)
    );
    add_constraint(manager, "check", table, name, add).await
}

/// Makes `table.column` `NOT NULL`. On PostgreSQL through a validated
/// `CHECK (column IS NOT NULL)`, which lets `SET NOT NULL` skip its scan of
/// the table under an exclusive lock, then drops the check; on MySQL with
/// `MODIFY` in place, keeping the rest of the column's definition. Fails,
/// changing nothing, while a row holds NULL.
pub async fn set_not_null(
    manager: &SchemaManager<'_>,
    table: &str,
    column: &str,
) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let backend = manager.get_database_backend();
    match backend {
        DbBackend::Postgres => {
            postgres_outside_transaction(manager, "SET NOT NULL")?;
            let row = conn
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2",
                    [quote(backend, table).into(), column.into()],
                ))
                .await?
                .ok_or_else(|| DbErr::Migration(format!("{table}.{column}: no such column")))?;
            if row.try_get_by_index::<bool>(0)? {
                return Ok(());
            }
            let check = format!("{table}_{column}_not_null");
            let check = stored_name(&check);
            add_check(
                manager,
                table,
                check,
                &format!("{} IS NOT NULL", quote(backend, column)),
            )
            .await?;
            let (table, column, check) = (
                quote(backend, table),
                quote(backend, column),
                quote(backend, check),
            );
            let statements = [
                format!("ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL"),
                format!("ALTER TABLE {table} DROP CONSTRAINT {check}"),
            ];
            short_transaction(conn, &statements[0], &statements).await?;
            Ok(())
        }
        DbBackend::MySql => {
            let create: String = conn
                .query_one_raw(Statement::from_string(
                    backend,
                    format!("SHOW CREATE TABLE {}", quote(backend, table)),
                ))
                .await?
                .ok_or_else(|| DbErr::Migration(format!("{table}: no such table")))?
                .try_get_by_index(1)?;
            let definition = mysql_column(&create, column)
                .ok_or_else(|| DbErr::Migration(format!("{table}.{column}: no such column")))?;
            let Some(not_null) = mysql_not_null(&definition) else {
                return Ok(());
            };
            let modify = format!(
                "ALTER TABLE {} MODIFY COLUMN {not_null}, ALGORITHM=INPLACE, LOCK=NONE",
                quote(backend, table)
            );
            mysql_retrying(conn, &modify).await.map(drop)
        }
        _ => Err(DbErr::Migration(format!(
            "SQLite cannot make the existing column {table}.{column} NOT NULL: rebuild the table (docs/migrations.md)"
        ))),
    }
}

/// The definition of `column` in MySQL's `SHOW CREATE TABLE` text.
fn mysql_column(create: &str, column: &str) -> Option<String> {
    let head = format!("`{}` ", column.replace('`', "``"));
    create.lines().find_map(|line| {
        let line = line.trim();
        line.starts_with(&head)
            .then(|| line.trim_end_matches(',').to_owned())
    })
}

/// A MySQL column definition made `NOT NULL`: its `NULL` and `DEFAULT NULL`
/// removed (outside quoted text), `NOT NULL` added; `None` when it is `NOT
/// NULL` already.
fn mysql_not_null(definition: &str) -> Option<String> {
    // Words outside quotes, with where each starts.
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = None;
    for (i, c) in definition.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' || c == '`' => quote = Some(c),
            None if c.is_ascii_alphabetic() => {
                start.get_or_insert(i);
                continue;
            }
            None => {}
        }
        if let Some(s) = start.take() {
            words.push((s, &definition[s..i]));
        }
    }
    if let Some(s) = start {
        words.push((s, &definition[s..]));
    }
    let upper = |w: &str| w.to_ascii_uppercase();
    if words
        .windows(2)
        .any(|w| upper(w[0].1) == "NOT" && upper(w[1].1) == "NULL")
    {
        return None;
    }
    // Byte ranges to cut: `DEFAULT NULL`, and a bare `NULL`.
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for (n, (at, word)) in words.iter().enumerate() {
        if upper(word) != "NULL" {
            continue;
        }
        match n.checked_sub(1).map(|p| words[p]) {
            Some((before, w))
                if upper(w) == "DEFAULT" && definition[before + 7..*at].trim().is_empty() =>
            {
                cuts.push((before, at + 4))
            }
            _ => cuts.push((*at, at + 4)),
        }
    }
    let mut out = String::new();
    let mut from = 0;
    for (start, end) in cuts {
        out.push_str(definition[from..start].trim_end());
        from = end;
    }
    out.push_str(&definition[from..]);
    Some(format!("{} NOT NULL", out.trim_end()))
}

/// Sets a value on existing rows in batches, each a transaction of its own
/// (so no lock is held for long and nothing waits for the whole table),
/// paced so that the application keeps most of the server: after each batch
/// it pauses for as long as the batch took, or as [`Backfill::pause`] says.
/// Batches are small (200 rows unless [`Backfill::batch_size`] says): an
/// application's commit made while a batch runs flushes the batch's
/// write-ahead log written so far, so it waits for a large batch's log as
/// if it were its own, and a write to a row of the batch waits for all of
/// it. So they are also short: outside a transaction, after a batch that
/// took longer than [`Backfill::batch_time`] (100 ms unless it says), the
/// next has as many rows as fit in that time at the same rate (wide rows, a
/// busy server), down to one; quicker batches grow back, at most doubling,
/// up to `batch_size`.
/// Rows are taken in the order of an integer key (`id` unless
/// [`Backfill::key`] names another), from where the last batch ended, so a
/// run that was interrupted starts again from the beginning but finds
/// nothing left to do where [`Backfill::only`] excludes filled rows. Inside
/// a transaction (on SQLite the runner's, which is its lock), the batches
/// are part of it and run without pauses, which would only hold its locks
/// longer.
///
/// ```no_run
/// # async fn example(manager: &migration::SchemaManager<'_>) -> Result<(), migration::DbErr> {
/// use migration::online::Backfill;
/// let rows = Backfill::new("tasks", "priority = CASE WHEN status = 'done' THEN 0 ELSE 1 END")
///     .only("priority IS NULL")
///     .run(manager)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Backfill {
    table: String,
    set: String,
    only: Option<String>,
    key: String,
    batch_size: u64,
    batch_time: Duration,
    pause: Option<Duration>,
}

impl Backfill {
    /// Sets `assignments` (what follows `SET` in an `UPDATE`) on every row of
    /// `table` that is there when it starts (up to the largest key then).
    pub fn new(table: &str, assignments: &str) -> Self {
        Backfill {
            table: table.to_owned(),
            set: assignments.to_owned(),
            only: None,
            key: "id".to_owned(),
            batch_size: 200,
            batch_time: Duration::from_millis(100),
            pause: None,
        }
    }

    /// Only rows where `condition` holds, such as `priority IS NULL`.
    pub fn only(mut self, condition: &str) -> Self {
        self.only = Some(condition.to_owned());
        self
    }

    /// The integer column batches follow (default `id`); it should be indexed,
    /// and hold no NULL: rows whose key is NULL are not filled.
    pub fn key(mut self, column: &str) -> Self {
        self.key = column.to_owned();
        self
    }

    /// Rows per batch (default 200, at least 1): the first batch's, and
    /// the most a batch has. Larger batches finish sooner and delay the
    /// application's commits more (docs/reliability.md has figures).
    pub fn batch_size(mut self, rows: u64) -> Self {
        self.batch_size = Ord::max(rows, 1);
        self
    }

    /// How long a batch may take (default 100 ms) before the next one is
    /// made smaller: the longest that the application's writes to its rows
    /// should wait. Zero means one row at a time after the first batch.
    /// Inside a transaction batches keep `batch_size`.
    pub fn batch_time(mut self, time: Duration) -> Self {
        self.batch_time = time;
        self
    }

    /// A fixed pause after each batch, instead of as long as the batch took.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = Some(pause);
        self
    }

    /// Runs the batches and returns how many rows they changed.
    pub async fn run(&self, manager: &SchemaManager<'_>) -> Result<u64, DbErr> {
        let conn = manager.get_connection();
        let backend = manager.get_database_backend();
        postgres_outside_transaction(manager, "a backfill")?;
        let in_transaction = matches!(
            conn,
            DatabaseExecutor::Transaction(_) | DatabaseExecutor::OwnedTransaction(_)
        );
        let (table, key) = (quote(backend, &self.table), quote(backend, &self.key));
        let only = self.only.as_deref().unwrap_or("1 = 1");
        let (mut after, mut rows, mut batches) = (None::<i64>, 0, 0);
        let (mut size, mut smallest) = (self.batch_size, self.batch_size);
        let started = Instant::now();
        // A key of any integer type (`smallint`, MySQL's `UNSIGNED`) is read
        // as a 64-bit signed one.
        let int64 = match backend {
            DbBackend::MySql => "SIGNED",
            _ => "BIGINT",
        };
        // Outside a transaction a read that waits for its lock (behind a
        // `VACUUM FULL`, someone's `ALTER TABLE`) is tried again, as the
        // updates are.
        let pooled = context().pooled;
        let upper = async |value: &str, rest: String| -> Result<Option<i64>, DbErr> {
            // Named apart from the key: `ORDER BY key` must sort by the
            // column (its index), not by this cast.
            let sql = format!("SELECT CAST({value} AS {int64}) AS bound FROM {table} WHERE {rest}");
            let read = async || match conn
                .query_one_raw(Statement::from_string(backend, sql.clone()))
                .await?
            {
                Some(row) => row.try_get_by_index::<Option<i64>>(0),
                None => Ok(None),
            };
            match in_transaction {
                false => {
                    retrying(&sql, Bound::Statement, |seen| async move {
                        match pooled {
                            true => read().await,
                            false => seen.watch(conn, read()).await,
                        }
                    })
                    .await
                }
                true => read().await,
            }
        };
        // The rows there when it starts: rows added later are the
        // application's to fill (it writes the column, or the column has a
        // default by then), and following them would not end while rows
        // keep coming.
        let most = format!("MAX({key})");
        let end = upper(&most, format!("({only})")).await?;
        while let Some(end) = end {
            if batches > 0 {
                still_locked().await?;
            }
            // The batch's time includes finding where it ends.
            let batch = Instant::now();
            let from = match after {
                Some(after) => format!("{key} > {after} AND {key} <= {end} AND "),
                None => format!("{key} <= {end} AND "),
            };
            let last = match upper(
                &key,
                format!("{from}({only}) ORDER BY {key} LIMIT 1 OFFSET {}", size - 1),
            )
            .await?
            {
                Some(last) => last,
                None => match upper(&most, format!("{from}({only})")).await? {
                    Some(last) => last,
                    None => break,
                },
            };
            let update = format!(
                "UPDATE {table} SET {} WHERE {from}{key} <= {last} AND ({only})",
                self.set
            );
            rows += match backend {
                _ if in_transaction => conn.execute_unprepared(&update).await?.rows_affected(),
                DbBackend::Postgres => {
                    short_transaction(conn, &update, std::slice::from_ref(&update)).await?
                }
                DbBackend::MySql => mysql_retrying(conn, &update).await?,
                _ => conn.execute_unprepared(&update).await?.rows_affected(),
            };
            batches += 1;
            smallest = Ord::min(smallest, size);
            after = Some(last);
            if !in_transaction {
                let took = batch.elapsed();
                size = next_batch(size, took, self.batch_time, self.batch_size);
                tokio::time::sleep(self.pause.unwrap_or(took)).await;
            }
        }
        let sized = match smallest < self.batch_size {
            true => format!(
                ", down to {smallest} rows to stay within {}",
                short(self.batch_time)
            ),
            false => String::new(),
        };
        tracing::info!(
            "backfilled {rows} rows of {} in {batches} batches ({}{sized})",
            self.table,
            short(started.elapsed())
        );
        Ok(rows)
    }
}

/// The rows of the batch after one of `rows` that took `took`: as many as
/// fit in `time` at that rate, at most twice `rows` and at most `most`, at
/// least one.
fn next_batch(rows: u64, took: Duration, time: Duration, most: u64) -> u64 {
    let fit = u128::from(rows).saturating_mul(time.as_nanos()) / took.as_nanos().max(1);
    // At least one, so that the clamp's bounds are in order for any input.
    let most = Ord::max(Ord::min(rows.saturating_mul(2), most), 1);
    // At most `most`, so it fits in 64 bits.
    fit.clamp(1, u128::from(most)) as u64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Bound, mysql_column, mysql_not_null, next_batch, pauses};

    #[test]
    fn batches_shrink_to_their_time_and_grow_back_at_most_doubling() {
        let ms = Duration::from_millis;
        let cases = [
            // Four times too slow: a quarter of the rows.
            ((200, ms(400)), 50),
            // Far too slow: one row, never none.
            ((200, Duration::from_secs(3_600)), 1),
            ((1, ms(500)), 1),
            // Quick: twice as many, and never more than the batch size.
            ((50, ms(1)), 100),
            ((150, ms(1)), 200),
            ((200, ms(1)), 200),
            ((200, Duration::ZERO), 200),
            // On time: the same.
            ((120, ms(100)), 120),
        ];
        for ((rows, took), expected) in cases {
            assert_eq!(
                next_batch(rows, took, ms(100), 200),
                expected,
                "{rows} rows in {took:?}"
            );
        }
        // No overflow, and never an empty batch.
        assert_eq!(
            next_batch(u64::MAX, ms(1), Duration::MAX, u64::MAX),
            u64::MAX
        );
        assert_eq!(next_batch(0, ms(1), ms(100), 0), 1);
    }

    #[test]
    fn pauses_double_and_never_undercut_a_statements_lock_wait() {
        let ms = Duration::from_millis;
        let index: Vec<_> = (1..=7)
            .map(|n| pauses(Bound::Index, ms(600_000), n))
            .collect();
        let doubling = [100, 200, 400, 800, 1_600, 2_500, 2_500].map(|low| ms(low)..=ms(low * 2));
        assert_eq!(index, doubling);
        for (n, doubled) in (1..=7).zip(&doubling) {
            let statement = pauses(Bound::Statement, ms(1_000), n);
            assert!(*statement.start() >= ms(1_000), "{n}: {statement:?}");
            assert_eq!(*statement.end(), ms(2_000).max(*doubled.end()));
        }
    }

    #[test]
    fn mysql_definitions_become_not_null_keeping_the_rest() {
        let create = "CREATE TABLE `tasks` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `deadline` date DEFAULT NULL,\n  `note` varchar(20) DEFAULT 'NULL or not' COMMENT 'may be NULL',\n  `at` timestamp NULL DEFAULT NULL,\n  PRIMARY KEY (`id`)\n)";
        assert_eq!(mysql_column(create, "missing"), None);
        let cases = [
            ("id", None),
            ("deadline", Some("`deadline` date NOT NULL")),
            (
                "note",
                Some("`note` varchar(20) DEFAULT 'NULL or not' COMMENT 'may be NULL' NOT NULL"),
            ),
            ("at", Some("`at` timestamp NOT NULL")),
        ];
        for (column, expected) in cases {
            let definition = mysql_column(create, column).unwrap();
            assert_eq!(mysql_not_null(&definition).as_deref(), expected, "{column}");
        }
    }
}
