//! The database handle: pools, sessions, the retrying transaction helper, health.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use sea_orm::sea_query::{PostgresQueryBuilder, QueryBuilder as _};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

use crate::bound::no_answer;
use crate::connect::{Pools, open};
use crate::error::{Error, Result, Retryable};
use crate::failover::REPLAY_LAG;
use crate::metrics::{self, RetryReason, acquiring};
use crate::session::{Access, Session, SessionOptions};
use crate::settings::Settings;
use crate::url::backend_name;

/// A cheap-to-clone handle on the database: the connection pools plus what
/// is needed to hand out sessions. Clone it into every task that needs it.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pools: Pools,
    /// Through a transaction pooler, what each transaction runs first.
    pooler_setup: Option<String>,
    backend: DbBackend,
    target: String,
    retries: AtomicU64,
    /// How long [`Db::transaction`] retries work that a failover interrupted.
    failover_timeout: Duration,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &backend_name(self.inner.backend))
            .field("target", &self.inner.target)
            .finish()
    }
}

/// What [`Db::health`] found.
#[derive(Debug, Clone)]
pub struct Health {
    /// `postgres`, `mysql` or `sqlite`.
    pub backend: &'static str,
    /// The server's version string.
    pub server_version: String,
    /// Round-trip time of one ping on a pooled connection.
    pub round_trip: Duration,
}

/// What every transaction through a transaction pooler runs after its
/// `SET TRANSACTION`: `DEALLOCATE ALL`, which drops the prepared statements
/// other clients left on the shared server connection (sqlx names its
/// statements the same way on every connection), then the per-connection
/// settings, for this transaction. `search_path` goes through `set_config`,
/// which reads the value as the startup option of an unpooled connection
/// does (an unquoted name in lower case).
fn pooler_setup(settings: &Settings) -> String {
    let mut sql = "DEALLOCATE ALL".to_owned();
    for (name, millis) in settings.session_parameters() {
        sql.push_str(&format!("; SET LOCAL {name} = '{millis}ms'"));
    }
    if let Some(schema) = &settings.schema {
        let value = PostgresQueryBuilder.value_to_string(&schema.as_str().into());
        sql.push_str(&format!(
            "; SELECT set_config('search_path', {value}, true)"
        ));
    }
    sql
}

/// A replica as [`Db::replica_status`] sees it.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    /// Where it is, without credentials.
    pub target: String,
    /// Whether read-only sessions go there now.
    pub up: bool,
    /// How far its replay is behind (zero when it has replayed all it received).
    pub lag: Option<Duration>,
}

/// A request's or job's view of the database: read-only sessions go to the
/// replicas until the scope starts a read-write session, then to the
/// primary, so the scope reads its own writes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scope {
    db: Db,
    wrote: Arc<AtomicBool>,
}

impl Scope {
    /// A read-only session: on a replica, or on the primary once this scope wrote.
    pub async fn read(&self) -> Result<Session> {
        if self.wrote.load(Ordering::Relaxed) {
            return self
                .db
                .session(SessionOptions::read_only().on_primary())
                .await;
        }
        self.db.read().await
    }

    /// A read-write session on the primary; later reads of this scope follow it there.
    pub async fn begin(&self) -> Result<Session> {
        self.wrote.store(true, Ordering::Relaxed);
        self.db.begin().await
    }

    /// [`Db::transaction`] within this scope.
    pub async fn transaction<T, E, F, Fut>(&self, options: SessionOptions, work: F) -> Result<T, E>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error> + Retryable,
    {
        if options.access() == Access::ReadWrite {
            self.wrote.store(true, Ordering::Relaxed);
        }
        self.db.transaction(options, work).await
    }
}

/// Counters since [`Db::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Transactions that [`Db::transaction`] ran again after a serialization
    /// failure or deadlock, or after a failover.
    pub transaction_retries: u64,
    /// Statements executed through SeaORM on this handle's pools (a way to
    /// see N+1 queries in tests).
    pub statements: u64,
}

impl Db {
    /// Connects as `settings` say: waits for the server with bounded
    /// exponential backoff up to the connect deadline, failing at once on bad
    /// credentials or an unknown database.
    pub async fn connect(settings: &Settings) -> Result<Db> {
        Self::connect_labelled(settings, "primary").await
    }

    /// [`Db::connect`] with the label its primary pool has in metrics
    /// (`pool="migration"` for the migrator's own pool).
    pub async fn connect_labelled(settings: &Settings, label: &'static str) -> Result<Db> {
        // On the heap: opening waits for the server in a large future, and
        // callers on a small stack (a test thread) await it.
        let pools = Box::pin(open(settings, label)).await?;
        Ok(Db {
            inner: Arc::new(Inner {
                pools,
                pooler_setup: settings.transaction_pooler.then(|| pooler_setup(settings)),
                backend: settings.url.backend(),
                target: settings.url.target(),
                retries: AtomicU64::new(0),
                failover_timeout: settings.failover_timeout,
            }),
        })
    }

    /// The pool for writes, as a SeaORM connection. The escape hatch for
    /// reference code that measures raw driver calls against this crate (the
    /// bench's `raw` stack); nothing else in the workspace uses it. It
    /// bypasses what sessions guarantee (transaction-pooler set-up, replica
    /// routing, rollback on drop): use [`Db::begin`], [`Db::read`] or
    /// [`Db::session`] instead.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.inner.pools.write
    }

    /// The pool for reads (a separate read-only pool on SQLite; the write pool
    /// elsewhere). The same escape hatch as [`Db::conn`], for the same
    /// reference code only.
    pub fn reader(&self) -> &DatabaseConnection {
        &self.inner.pools.read
    }

    /// Whether sessions go through a transaction pooler (`DB_TRANSACTION_POOLER`).
    pub(crate) fn pooled(&self) -> bool {
        self.inner.pooler_setup.is_some()
    }

    /// Which database server this is.
    pub fn backend(&self) -> DbBackend {
        self.inner.backend
    }

    /// Whether the server has `INSERT`/`UPDATE ... RETURNING` (not MySQL),
    /// so a write that returns its row is one statement.
    pub fn supports_returning(&self) -> bool {
        self.inner.pools.write.support_returning()
    }

    /// Where this handle connects, without credentials.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// A read-write session: a transaction on the primary.
    pub async fn begin(&self) -> Result<Session> {
        self.session(SessionOptions::read_write()).await
    }

    /// A read-only session on the read pool.
    pub async fn read(&self) -> Result<Session> {
        self.session(SessionOptions::read_only()).await
    }

    /// A read-write session on the primary without a transaction: each
    /// statement commits by itself. For work that cannot run in a
    /// transaction, such as `CREATE INDEX CONCURRENTLY`, and for work that
    /// commits in steps of its own. Through a transaction pooler each
    /// statement may reach another server connection, so nothing set on the
    /// session lasts from one to the next.
    pub fn autocommit(&self) -> Session {
        Session::direct(self.inner.pools.write.clone(), Access::ReadWrite)
    }

    /// A session with the given options.
    pub async fn session(&self, options: SessionOptions) -> Result<Session> {
        let pools = &self.inner.pools;
        let pooled = self.inner.pooler_setup.is_some();
        let (pool, access_mode) = match options.access {
            // Through a transaction pooler every statement runs in a
            // transaction: outside one, consecutive messages of a statement
            // may reach different server connections.
            Access::ReadWrite if options.single_statement && !pooled => {
                return Ok(Session::direct(pools.write.clone(), Access::ReadWrite));
            }
            Access::ReadWrite => (&pools.write, None),
            Access::ReadOnly if options.on_primary && options.isolation.is_none() && !pooled => {
                return Ok(Session::direct(pools.write.clone(), Access::ReadOnly));
            }
            Access::ReadOnly if options.isolation.is_none() && !pooled => {
                // A host list's reads are routed too, for their retry when
                // the primary moves.
                return Ok(
                    if pools.replicas.is_empty() && pools.read.failover().is_none() {
                        Session::direct(pools.read.clone(), Access::ReadOnly)
                    } else {
                        Session::routed(pools.replicas.clone(), pools.read.clone())
                    },
                );
            }
            Access::ReadOnly if options.on_primary => (&pools.write, Some(AccessMode::ReadOnly)),
            Access::ReadOnly => (&pools.read, Some(AccessMode::ReadOnly)),
        };
        // SQLite: a write transaction takes the write lock at BEGIN, so it
        // waits for other writers there instead of failing with "database is
        // locked" when it upgrades from reading to writing.
        let sqlite_transaction_mode = (self.inner.backend == DbBackend::Sqlite
            && options.access == Access::ReadWrite)
            .then_some(SqliteTransactionMode::Immediate);
        // SQLite transactions are always serializable; it only warns about a level.
        let isolation_level = options
            .isolation
            .filter(|_| self.inner.backend != DbBackend::Sqlite);
        // Through a transaction pooler, SeaORM's own `SET TRANSACTION` would
        // be a prepared statement run before the server connection is clean:
        // it goes as plain text with the pooler's setup instead.
        let tx_options = match &self.inner.pooler_setup {
            Some(_) => TransactionOptions::default(),
            None => TransactionOptions {
                isolation_level,
                access_mode,
                sqlite_transaction_mode,
            },
        };
        let tx = if options.access == Access::ReadOnly
            && !options.on_primary
            && !pools.replicas.is_empty()
        {
            pools
                .replicas
                .route(
                    pool,
                    |c| async move { c.begin_with_options(tx_options).await },
                )
                .await?
        } else {
            pool.run(pool.begin_with_options(tx_options)).await?
        };
        let session = Session::transaction(tx, options.access, pool.operation_timeout());
        if let Some(setup) = &self.inner.pooler_setup {
            // First: PostgreSQL takes an isolation level only before any
            // other statement of the transaction (`DEALLOCATE` counts).
            let mut sql = String::new();
            if let Some(level) = isolation_level {
                sql.push_str(&format!("SET TRANSACTION ISOLATION LEVEL {level}; "));
            }
            if access_mode == Some(AccessMode::ReadOnly) {
                sql.push_str("SET TRANSACTION READ ONLY; ");
            }
            sql.push_str(setup);
            session.execute_unprepared(&sql).await?;
        }
        Ok(session)
    }

    /// Runs `work` in a session and commits it. When the database aborts the
    /// transaction because of a concurrent one (PostgreSQL serialization
    /// failure 40001 or deadlock 40P01, MySQL deadlock 1213), the work runs
    /// again in a new session, after a jittered exponential pause, up to
    /// `options.max_attempts` times in all.
    ///
    /// With a PostgreSQL host list, work interrupted by a failover (the
    /// server went away, turned read-only or gave no answer within
    /// `DB_OPERATION_TIMEOUT`, or no connection came in time) before its
    /// COMMIT runs again on a fresh connection, until `DB_FAILOVER_TIMEOUT`
    /// after the work began, which also cuts an attempt still running then
    /// (before its COMMIT); a single statement then runs in a transaction
    /// too, so that it is known not to have committed. When the connection
    /// breaks or the server gives no answer during COMMIT, the outcome is
    /// unknown: [`Error::OutcomeUnknown`] is returned (HTTP 503), never
    /// retried, since a retry could write twice.
    ///
    /// Work that fails because the server could not be reached or gave no
    /// answer is not rolled back with a `ROLLBACK` it would wait for: the
    /// session is dropped, and its connection, which owes the server an
    /// answer, is closed (the server rolls back when it sees that).
    ///
    /// `work` gets a clone of the session, to move into its future:
    ///
    /// ```no_run
    /// # async fn example(db: db_core::Db) -> Result<(), db_core::Error> {
    /// use sea_orm::ConnectionTrait;
    /// let rows = db
    ///     .transaction(db_core::SessionOptions::read_write(), |tx| async move {
    ///         let result = tx.execute_unprepared("UPDATE tasks SET status = 'done'").await?;
    ///         Ok::<_, db_core::Error>(result.rows_affected())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, E, F, Fut>(
        &self,
        mut options: SessionOptions,
        mut work: F,
    ) -> Result<T, E>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error> + Retryable,
    {
        let failover = self.inner.pools.write.failover();
        if failover.is_some() && options.access == Access::ReadWrite {
            options.single_statement = false;
        }
        let deadline = Instant::now() + self.inner.failover_timeout;
        let mut attempt = 1;
        let mut after_failover = false;
        loop {
            let mut committing = false;
            // Until the session is open, an error is the pool's, which has
            // told the host list what it means (`Failover::saw`); a cut at
            // the deadline then ends a wait for a connection (a server that
            // does not answer `BEGIN` is the pool's to see, within
            // `DB_OPERATION_TIMEOUT`).
            let mut opening = true;
            let ran = async {
                let session = self.session(options).await.map_err(E::from)?;
                opening = false;
                match work(session.clone()).await {
                    Ok(value) => Ok((session, value)),
                    Err(e) => {
                        if e.retry_reason() != Some(RetryReason::Failover) {
                            let _ = session.rollback().await;
                        }
                        Err(e)
                    }
                }
            };
            let ran = if after_failover {
                match tokio::time::timeout_at(deadline.into(), ran).await {
                    Ok(ran) => ran,
                    Err(_) => Err(E::from(Error::from(no_answer(
                        self.inner.failover_timeout,
                        "DB_FAILOVER_TIMEOUT",
                    )))),
                }
            } else {
                ran.await
            };
            let error = match ran {
                Ok((session, value)) => {
                    committing = true;
                    match session.commit().await {
                        Ok(()) => return Ok(value),
                        Err(e) => E::from(e),
                    }
                }
                Err(e) => e,
            };
            let reason = error.retry_reason();
            if let Some(failover) = failover.filter(|_| reason == Some(RetryReason::Failover)) {
                if !opening {
                    failover.detected();
                }
                if committing || Instant::now() >= deadline {
                    return Err(error);
                }
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
                metrics::retried(reason);
                tracing::info!("work interrupted by a failover; retrying");
                let pause = rand::rng()
                    .random_range(Duration::from_millis(50)..=Duration::from_millis(250));
                tokio::time::sleep(pause).await;
                after_failover = true;
                continue;
            }
            if attempt >= options.max_attempts || !error.is_retryable() {
                return Err(error);
            }
            self.inner.retries.fetch_add(1, Ordering::Relaxed);
            metrics::retried(reason);
            let cap = Duration::from_millis(10 << attempt.min(6));
            let pause = rand::rng().random_range(Duration::ZERO..=cap);
            tracing::info!(
                attempt,
                "transaction conflicted with a concurrent one; retrying"
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// A view for one request or job that reads from replicas until it
    /// writes, and from the primary after (read-your-writes).
    pub fn scope(&self) -> Scope {
        Scope {
            db: self.clone(),
            wrote: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Each replica: where it is, whether reads go there, and how far behind
    /// the primary it is (PostgreSQL; `None` when unknown).
    pub async fn replica_status(&self) -> Vec<ReplicaStatus> {
        let mut status = Vec::new();
        for replica in self.inner.pools.replicas.all() {
            let lag = if self.inner.backend == DbBackend::Postgres {
                let sql = format!("SELECT {REPLAY_LAG}");
                let pool = replica.pool();
                let query = acquiring(
                    pool.metrics(),
                    pool.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)),
                );
                match tokio::time::timeout(Duration::from_secs(2), query).await {
                    Ok(Ok(Some(row))) => row
                        .try_get_by_index::<Option<f64>>(0)
                        .ok()
                        .flatten()
                        .map(|s| Duration::from_secs_f64(s.max(0.0))),
                    _ => None,
                }
            } else {
                None
            };
            replica.report(lag);
            status.push(ReplicaStatus {
                target: replica.target().to_owned(),
                up: replica.is_up(),
                lag,
            });
        }
        status
    }

    /// Counters since connect.
    pub fn stats(&self) -> Stats {
        Stats {
            transaction_retries: self.inner.retries.load(Ordering::Relaxed),
            statements: self.inner.pools.statements.load(Ordering::Relaxed),
        }
    }

    /// Checks that the database answers, and how fast.
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        let pool = &self.inner.pools.write;
        // Boxed: SeaORM's ping is a large future, which every layer around
        // it would otherwise copy on the stack of a debug build.
        pool.run(Box::pin(pool.ping())).await?;
        Ok(start.elapsed())
    }

    /// The metrics of the pool for writes, while they are recorded.
    pub(crate) fn metrics(&self) -> Option<&Arc<metrics::PoolMetrics>> {
        self.inner.pools.write.metrics()
    }

    /// Whether this is a SQLite database in memory, which lives in the
    /// writer's one connection.
    pub(crate) fn in_memory(&self) -> bool {
        self.inner.pools.in_memory
    }

    /// Backend, server version and ping round trip.
    pub async fn health(&self) -> Result<Health> {
        let sql = match self.inner.backend {
            DbBackend::Postgres => "SHOW server_version",
            DbBackend::MySql => "SELECT VERSION()",
            _ => "SELECT sqlite_version()",
        };
        // A read on the primary; through a pooler, in a transaction like
        // every statement.
        let session = self
            .session(SessionOptions::read_only().on_primary())
            .await?;
        let row = session
            .query_one_raw(Statement::from_string(self.inner.backend, sql))
            .await?
            .ok_or(Error::Unavailable {
                reason: "the server returned no version",
                source: None,
            })?;
        let server_version: String = row.try_get_by_index(0).map_err(Error::from)?;
        let round_trip = self.ping().await?;
        Ok(Health {
            backend: backend_name(self.inner.backend),
            server_version,
            round_trip,
        })
    }

    /// Closes the pools, all at once: idle connections are closed, and later
    /// use fails with [`Error::PoolTimeout`]. Connections still checked out
    /// are closed as they come back, which each operation's bound
    /// (`DB_OPERATION_TIMEOUT`) makes soon; this waits for them at most a
    /// second. What can keep one out longer is a server that stopped
    /// answering during sqlx's release ping, which has no timeout (see
    /// the `bound` module): it is left to the process's exit, which closes its
    /// socket.
    pub async fn close(&self) {
        let pools = &self.inner.pools;
        let mut closing = tokio::task::JoinSet::new();
        // The read pool is the write pool except on SQLite.
        let read = (self.inner.backend == DbBackend::Sqlite).then(|| (*pools.read).clone());
        pools.replicas.close();
        let replicas = pools.replicas.all().iter().map(|r| r.conn());
        for conn in std::iter::once((*pools.write).clone())
            .chain(read)
            .chain(replicas)
        {
            closing.spawn(async move {
                let _ = conn.close_by_ref().await;
            });
        }
        let all = async { while closing.join_next().await.is_some() {} };
        if tokio::time::timeout(CLOSE_WAIT, all).await.is_err() {
            tracing::warn!(
                "closing the database pools: connections still out after {}ms (a server that stopped answering); leaving them to the exit",
                CLOSE_WAIT.as_millis()
            );
        }
    }
}

/// How long [`Db::close`] waits for connections still checked out.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
