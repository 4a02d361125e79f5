//! The database handle: pools, sessions, the retrying transaction helper, health.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

use crate::connect::{Pools, open};
use crate::error::{Error, Result, Retryable};
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
    backend: DbBackend,
    target: String,
    retries: AtomicU64,
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

/// Counters since [`Db::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Transactions that [`Db::transaction`] ran again after a serialization
    /// failure or deadlock.
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
        let pools = open(settings).await?;
        Ok(Db {
            inner: Arc::new(Inner {
                pools,
                backend: settings.url.backend(),
                target: settings.url.target(),
                retries: AtomicU64::new(0),
            }),
        })
    }

    /// The pool for writes, as a SeaORM connection: every statement runs on
    /// its own. Prefer sessions for units of work.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.inner.pools.write
    }

    /// The pool for reads (a separate read-only pool on SQLite; the write pool
    /// elsewhere).
    pub fn reader(&self) -> &DatabaseConnection {
        &self.inner.pools.read
    }

    /// Which database server this is.
    pub fn backend(&self) -> DbBackend {
        self.inner.backend
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

    /// A session with the given options.
    pub async fn session(&self, options: SessionOptions) -> Result<Session> {
        let (pool, access_mode) = match options.access {
            Access::ReadWrite if options.single_statement => {
                return Ok(Session::direct(
                    self.inner.pools.write.clone(),
                    Access::ReadWrite,
                ));
            }
            Access::ReadWrite => (&self.inner.pools.write, None),
            Access::ReadOnly if options.isolation.is_none() => {
                return Ok(Session::direct(
                    self.inner.pools.read.clone(),
                    Access::ReadOnly,
                ));
            }
            Access::ReadOnly => (&self.inner.pools.read, Some(AccessMode::ReadOnly)),
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
        let tx = pool
            .begin_with_options(TransactionOptions {
                isolation_level,
                access_mode,
                sqlite_transaction_mode,
            })
            .await?;
        Ok(Session::transaction(tx, options.access))
    }

    /// Runs `work` in a session and commits it. When the database aborts the
    /// transaction because of a concurrent one (PostgreSQL serialization
    /// failure 40001 or deadlock 40P01, MySQL deadlock 1213), the work runs
    /// again in a new session, after a jittered exponential pause, up to
    /// `options.max_attempts` times in all.
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
        options: SessionOptions,
        mut work: F,
    ) -> Result<T, E>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error> + Retryable,
    {
        let mut attempt = 1;
        loop {
            let session = self.session(options).await?;
            let error = match work(session.clone()).await {
                Ok(value) => match session.commit().await {
                    Ok(()) => return Ok(value),
                    Err(e) => E::from(e),
                },
                Err(e) => {
                    let _ = session.rollback().await;
                    e
                }
            };
            if attempt >= options.max_attempts || !error.is_retryable() {
                return Err(error);
            }
            self.inner.retries.fetch_add(1, Ordering::Relaxed);
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
        self.inner.pools.write.ping().await?;
        Ok(start.elapsed())
    }

    /// Backend, server version and ping round trip.
    pub async fn health(&self) -> Result<Health> {
        let sql = match self.inner.backend {
            DbBackend::Postgres => "SHOW server_version",
            DbBackend::MySql => "SELECT VERSION()",
            _ => "SELECT sqlite_version()",
        };
        let row = self
            .conn()
            .query_one_raw(Statement::from_string(self.inner.backend, sql))
            .await?
            .ok_or_else(|| Error::Unavailable("the server returned no version".to_owned()))?;
        let server_version: String = row.try_get_by_index(0).map_err(Error::from)?;
        let round_trip = self.ping().await?;
        Ok(Health {
            backend: backend_name(self.inner.backend),
            server_version,
            round_trip,
        })
    }

    /// Closes the pools: waits for checked-out connections to come back, then
    /// closes every connection. Later use fails with [`Error::PoolTimeout`].
    pub async fn close(&self) {
        let _ = self.inner.pools.write.close_by_ref().await;
        let _ = self.inner.pools.read.close_by_ref().await;
    }
}
