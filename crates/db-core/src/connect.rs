//! From settings to driver options, a reachable server and pools. This module
//! is the only place that turns settings into connections.
//!
//! `DB_MIN_CONNECTIONS` is kept by db-core, not by sqlx. When a pool drops
//! below sqlx's `min_connections` (a connection lost or reaped), sqlx starts
//! a task that holds a pool permit while it reconnects, retries a refused
//! connection until a deadline 5 minutes away (the idle reaper's: its next
//! run), and does not stop when the pool closes; `Pool::close` waits for
//! every permit, so a pool whose server had stopped could not close for
//! those minutes, and a server process using it did not exit. Each pool here gets a
//! floor task instead ([`keep_floor`]): it opens connections through the
//! pool's own acquire (bounded by `DB_ACQUIRE_TIMEOUT`) and ends, giving
//! its permit back, the moment the pool closes.

use std::future::Future;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sea_orm::sea_query::Values;
use sea_orm::sqlx::AssertSqlSafe;
use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::pool::PoolOptions;
use sea_orm::sqlx::postgres::Postgres;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};
use sea_orm::sqlx::query::Query;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{self, ConnectOptions, Connection};
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DatabaseConnectionType, DbBackend, DbErr,
    QueryResult, RuntimeErr, Statement,
};
use sea_query_sqlx::SqlxValues;
use tokio_util::task::AbortOnDropHandle;

use crate::bound::{checkout, handed_over, settled};
use crate::error::{Error, Result, scrub, unanswered, unconfirmed_write};
use crate::failover::Failover;
use crate::metrics::{PoolMetrics, Sampled, StatementTimer, acquiring, time_statements, watch};
use crate::replicas::Replicas;
use crate::settings::Settings;
use crate::url::SslMode;

/// The pools behind a [`Db`](crate::Db): one for writes and one for reads (the
/// same pool, except on SQLite, where one writer connection serialises writes
/// in-process and a pool of read-only connections reads concurrently).
pub(crate) struct Pools {
    pub write: Pool,
    pub read: Pool,
    /// Read replicas, if any; read-only sessions prefer them to `read`.
    pub replicas: Arc<Replicas>,
    /// Statements run through any of the pools.
    pub statements: Arc<AtomicU64>,
    /// A SQLite database in memory, which lives in the writer's one
    /// connection.
    pub in_memory: bool,
}

/// One SeaORM pool, with its metrics while they are recorded, the host
/// list it follows, if its URL has one, the bound on each of its operations
/// (`DB_OPERATION_TIMEOUT`), and the task that keeps its
/// `DB_MIN_CONNECTIONS` open, which ends with the last clone.
#[derive(Clone)]
pub(crate) struct Pool {
    conn: DatabaseConnection,
    sampled: Option<Arc<Sampled>>,
    failover: Option<Arc<Failover>>,
    operation_timeout: Option<Duration>,
    /// Counts and times the statements that db-core runs itself.
    timer: Option<StatementTimer>,
    /// The task of [`keep_floor`]; dropping the last clone aborts it.
    _floor: Option<Arc<AbortOnDropHandle<()>>>,
}

impl Pool {
    /// Whether every connection the pool may have is open.
    pub(crate) fn is_full(&self) -> bool {
        crate::metrics::pool_state(&self.conn).is_some_and(|(size, _, max)| size >= max)
    }

    /// `conn` with `metrics`, sampled for as long as the pool lives, and at
    /// least `min` connections open while its server answers.
    fn new(conn: DatabaseConnection, metrics: Option<&Arc<PoolMetrics>>, min: u32) -> Self {
        let floor = (min > 0).then(|| {
            let task = match conn.get_database_backend() {
                DbBackend::Postgres => {
                    tokio::spawn(keep_floor(conn.get_postgres_connection_pool().clone(), min))
                }
                DbBackend::MySql => {
                    tokio::spawn(keep_floor(conn.get_mysql_connection_pool().clone(), min))
                }
                _ => tokio::spawn(keep_floor(conn.get_sqlite_connection_pool().clone(), min)),
            };
            Arc::new(AbortOnDropHandle::new(task))
        });
        Pool {
            sampled: metrics.map(|m| watch(m.clone(), &conn)),
            conn,
            failover: None,
            operation_timeout: None,
            timer: None,
            _floor: floor,
        }
    }

    /// The first row of `stmt`'s answer, as SeaORM's `query_one_raw` gives
    /// it. On PostgreSQL the query goes to sqlx directly: SeaORM's future
    /// holds the state of every backend it supports and is moved into a box
    /// on every call, which cost about a quarter of the CPU instructions of
    /// a `GET /tasks/{id}/` (docs/performance.md, "What each read route
    /// pays").
    pub(crate) fn query_one(&self, stmt: Statement) -> Answer<'_, Option<QueryResult>> {
        let DatabaseConnectionType::SqlxPostgresPoolConnection(_) = &self.conn.inner else {
            return self.conn.query_one_raw(stmt);
        };
        Box::pin(async move {
            let mut conn = self.postgres_connection().await?;
            let start = Instant::now();
            let row = postgres_query(stmt).fetch_optional(&mut *conn).await;
            self.timed(start);
            Ok(row.map_err(query_error)?.map(QueryResult::from))
        })
    }

    /// Every row of `stmt`'s answer, as [`Pool::query_one`] gives the first.
    pub(crate) fn query_all(&self, stmt: Statement) -> Answer<'_, Vec<QueryResult>> {
        let DatabaseConnectionType::SqlxPostgresPoolConnection(_) = &self.conn.inner else {
            return self.conn.query_all_raw(stmt);
        };
        Box::pin(async move {
            let mut conn = self.postgres_connection().await?;
            let start = Instant::now();
            let rows = postgres_query(stmt).fetch_all(&mut *conn).await;
            self.timed(start);
            Ok(rows
                .map_err(query_error)?
                .into_iter()
                .map(QueryResult::from)
                .collect())
        })
    }

    /// A connection of this PostgreSQL pool, with SeaORM's errors for a
    /// connection that does not come.
    async fn postgres_connection(&self) -> Result<PoolConnection<Postgres>, DbErr> {
        let pool = self.conn.get_postgres_connection_pool();
        pool.acquire().await.map_err(|e| match e {
            sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            e => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))),
        })
    }

    fn timed(&self, start: Instant) {
        if let Some(timer) = &self.timer {
            timer(start.elapsed());
        }
    }

    pub(crate) fn metrics(&self) -> Option<&Arc<PoolMetrics>> {
        self.sampled.as_ref().map(|s| &s.metrics)
    }

    /// The host list this pool follows, if its URL has one.
    pub(crate) fn failover(&self) -> Option<&Arc<Failover>> {
        self.failover.as_ref()
    }

    /// The bound on each operation on this pool's connections
    /// (`DB_OPERATION_TIMEOUT`; none on SQLite).
    pub(crate) fn operation_timeout(&self) -> Option<Duration> {
        self.operation_timeout
    }

    /// Runs `work`, which takes a connection from this pool and uses it,
    /// with its wait for a connection counted and each operation bounded
    /// (see [`crate::bound`]); also whether a connection was handed over,
    /// so that `work` may have reached the server.
    ///
    /// On a host list, a connection is not asked for while a search for the
    /// host to use is under way (see [`Failover::searched_in_time`]); when
    /// it does not end within the acquire timeout, the work fails as if no
    /// connection had come.
    pub(crate) async fn attempt<T>(
        &self,
        work: impl Future<Output = Result<T, DbErr>>,
    ) -> (Result<T, DbErr>, bool) {
        let after_search = async {
            if let Some(failover) = &self.failover
                && !failover.searched_in_time().await
            {
                return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
            }
            work.await
        };
        checkout(
            self.operation_timeout,
            acquiring(self.metrics(), after_search),
        )
        .await
    }

    /// Runs `work` as [`Pool::attempt`] does. On a host list, an error that
    /// means the server could not be reached, went away or stopped answering
    /// starts the search for a host that fits, so the next work goes there;
    /// `work` itself is not run again ([`Db::transaction`] does that).
    ///
    /// [`Db::transaction`]: crate::Db::transaction
    pub(crate) async fn run<T>(
        &self,
        work: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        self.run_sent(work).await.0
    }

    /// [`Pool::run`] for a statement that is a whole write (it commits by
    /// itself): when it reached the server and no answer came, its outcome
    /// is unknown ([`Error::OutcomeUnknown`]).
    pub(crate) async fn run_write<T>(
        &self,
        work: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        match self.run_sent(work).await {
            (Err(e), true) if unanswered(&e) => Err(unconfirmed_write(e)),
            (result, _) => result,
        }
    }

    async fn run_sent<T>(
        &self,
        work: impl Future<Output = Result<T, DbErr>>,
    ) -> (Result<T, DbErr>, bool) {
        let (result, sent) = self.attempt(work).await;
        if let (Err(e), Some(failover)) = (&result, &self.failover) {
            failover.saw(e);
        }
        (result, sent)
    }
}

impl Deref for Pool {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        &self.conn
    }
}

impl From<DatabaseConnection> for Pool {
    fn from(conn: DatabaseConnection) -> Self {
        Pool {
            conn,
            sampled: None,
            failover: None,
            operation_timeout: None,
            timer: None,
            _floor: None,
        }
    }
}

/// The answer to a query, boxed as SeaORM's are.
pub(crate) type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 'a>>;

/// How often a pool below its floor tries to open connections again.
const FLOOR_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `min` connections open in `pool` until it closes: whenever it has
/// fewer (at first, and after connections were lost, reaped for idleness or
/// replaced for age), it acquires connections until the pool has `min` and
/// gives them back. An acquire waits at most `DB_ACQUIRE_TIMEOUT` and is
/// dropped, with its permit, as soon as the pool closes: unlike sqlx's own
/// `min_connections`, this never keeps a closed pool waiting.
async fn keep_floor<DB: sqlx::Database>(pool: sqlx::Pool<DB>, min: u32) {
    let mut closing = pool.close_event();
    let _ = closing
        .do_until(async {
            loop {
                // Idle connections are held too while a new one opens: an
                // acquire takes an idle connection before it opens one.
                let mut held = Vec::new();
                while pool.size() < min {
                    match pool.acquire().await {
                        Ok(conn) => held.push(conn),
                        Err(_) => break,
                    }
                }
                drop(held);
                tokio::time::sleep(FLOOR_INTERVAL).await;
            }
        })
        .await;
}

fn count_statements(pool: &mut Pool, statements: &Arc<AtomicU64>) {
    let statements = statements.clone();
    pool.timer = Some(time_statements(&mut pool.conn, move || {
        statements.fetch_add(1, Ordering::Relaxed);
    }));
}

/// `stmt` for sqlx, with its values bound as SeaORM binds them.
fn postgres_query(stmt: Statement) -> Query<'static, Postgres, SqlxValues> {
    let values = stmt.values.unwrap_or(Values(Vec::new()));
    sqlx::query_with(AssertSqlSafe(stmt.sql), SqlxValues(values))
}

/// A query's error, as SeaORM gives it.
fn query_error(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

/// A pool on a PostgreSQL or MySQL server that connects when first used.
pub(crate) struct ServerPool {
    pub pool: Pool,
}

impl ServerPool {
    pub(crate) async fn close(self) {
        let _ = self.pool.close_by_ref().await;
    }
}

/// A lazily connecting pool for the server of `s` (no waiting, no check).
pub(crate) fn server_pool(
    s: &Settings,
    statements: &Arc<AtomicU64>,
    metrics: Option<&Arc<PoolMetrics>>,
) -> Result<ServerPool> {
    let (max, min) = (s.max_connections, s.min_connections);
    let (conn, failover) = match Options::new(s)? {
        Options::Postgres(o) => {
            let failover = Failover::new(s, &o);
            let options = failover.as_ref().map_or(o, |f| f.current());
            let pool = pool_options::<sqlx::Postgres>(s, max, metrics, failover.as_ref())
                .connect_lazy_with(options);
            if let Some(f) = &failover {
                f.follow(pool.clone());
            }
            (DatabaseConnection::from(pool), failover)
        }
        Options::MySql(o) => (
            DatabaseConnection::from(
                pool_options::<sqlx::MySql>(s, max, metrics, None).connect_lazy_with(o),
            ),
            None,
        ),
        Options::Sqlite(_) => {
            return Err(Error::Config(
                "a server pool cannot be a SQLite database".to_owned(),
            ));
        }
    };
    let mut pool = Pool {
        failover,
        operation_timeout: s.operation_timeout,
        ..Pool::new(conn, metrics, min.min(max))
    };
    count_statements(&mut pool, statements);
    Ok(ServerPool { pool })
}

/// Whether one connection attempt to the server of `s` succeeds within its
/// connect timeout.
pub(crate) async fn probe(s: &Settings) -> bool {
    async fn attempt<O>(o: &O, timeout: Duration) -> bool
    where
        O: ConnectOptions,
        O::Connection: Sized,
    {
        match tokio::time::timeout(timeout, o.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                true
            }
            _ => false,
        }
    }
    match Options::new(s) {
        Ok(Options::Postgres(o)) => match Failover::new(s, &o) {
            Some(failover) => failover.find().await.is_ok_and(|found| found.is_ok()),
            None => attempt(&o, s.connect_timeout).await,
        },
        Ok(Options::MySql(o)) => attempt(&o, s.connect_timeout).await,
        Ok(Options::Sqlite(_)) => true,
        Err(_) => false,
    }
}

/// Driver options for one backend, built from settings.
pub(crate) enum Options {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

fn with_logging<O: ConnectOptions>(options: O, s: &Settings) -> O {
    let options = options.log_statements(s.log_statements);
    match s.slow_statement_threshold {
        Some(threshold) => options.log_slow_statements(log::LevelFilter::Warn, threshold),
        None => options.log_slow_statements(log::LevelFilter::Off, Duration::ZERO),
    }
}

fn config_error(s: &Settings, e: &sqlx::Error) -> Error {
    Error::Config(format!(
        "database URL: {}",
        scrub(&e.to_string(), &s.url.secrets())
    ))
}

/// An IPv6 host without the brackets its URL form keeps, which the tokio
/// resolver does not accept.
fn unbracketed(host: &str) -> Option<String> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map(str::to_owned)
}

/// Whether `host` is this machine: `localhost`, a loopback address, or a
/// Unix socket's folder.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `first` and every other host of the URL's host list are this machine.
fn every_host_is_loopback(s: &Settings, first: &str) -> bool {
    let others = s.url.hosts().map(|h| h.list.as_slice()).unwrap_or_default();
    is_loopback(first) && others.iter().all(|(host, _)| is_loopback(host))
}

/// Whether the URL sets a TLS mode itself (`sslmode`, or MySQL's `ssl-mode`).
fn url_asks_for_tls(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("sslmode") || k.eq_ignore_ascii_case("ssl-mode"))
    })
}

impl Options {
    /// Builds the driver options: the URL parsed by the driver's own parser,
    /// then every knob from the settings. TLS is off to a server on this
    /// machine (a loopback address, `localhost`, a Unix socket) unless
    /// `DB_SSL_MODE`, the URL's `sslmode` or a `PGSSLMODE` other than `prefer` asks for it: there it
    /// protects nothing and costs about a fifth of a simple query's time.
    pub(crate) fn new(s: &Settings) -> Result<Self> {
        let url = s.url.driver_url();
        Ok(match s.url.backend() {
            DbBackend::Postgres => {
                let mut o = PgConnectOptions::from_str(url).map_err(|e| config_error(s, &e))?;
                if let Some(bare) = unbracketed(o.get_host()) {
                    o = o.host(&bare);
                }
                if o.get_application_name().is_none()
                    && let Some(name) = &s.application_name
                {
                    o = o.application_name(name);
                }
                if s.transaction_pooler {
                    // A shared server connection keeps no statement of ours,
                    // and PgBouncer refuses the `options` startup parameter:
                    // sessions set these per transaction instead.
                    o = o.statement_cache_capacity(0);
                } else {
                    o = o.statement_cache_capacity(s.statement_cache_capacity);
                    for (name, millis) in s.session_parameters() {
                        o = o.options([(name, format!("{millis}ms"))]);
                    }
                    if let Some(schema) = &s.schema {
                        o = o.options([("search_path", schema)]);
                    }
                }
                if s.ssl_mode.is_none()
                    && matches!(o.get_ssl_mode(), PgSslMode::Prefer)
                    && !url_asks_for_tls(url)
                    && (o.get_socket().is_some() || every_host_is_loopback(s, o.get_host()))
                {
                    o = o.ssl_mode(PgSslMode::Disable);
                }
                if let Some(mode) = s.ssl_mode {
                    o = o.ssl_mode(match mode {
                        SslMode::Disable => PgSslMode::Disable,
                        SslMode::Prefer => PgSslMode::Prefer,
                        SslMode::Require => PgSslMode::Require,
                        SslMode::VerifyFull => PgSslMode::VerifyFull,
                    });
                }
                if let Some(cert) = &s.ssl_root_cert {
                    o = o.ssl_root_cert(cert);
                }
                Options::Postgres(with_logging(o, s))
            }
            DbBackend::MySql => {
                let mut o = MySqlConnectOptions::from_str(url).map_err(|e| config_error(s, &e))?;
                if let Some(bare) = unbracketed(o.get_host()) {
                    o = o.host(&bare);
                }
                o = o.statement_cache_capacity(s.statement_cache_capacity);
                if s.ssl_mode.is_none()
                    && !url_asks_for_tls(url)
                    && (o.get_socket().is_some() || is_loopback(o.get_host()))
                {
                    o = o.ssl_mode(MySqlSslMode::Disabled);
                }
                if let Some(mode) = s.ssl_mode {
                    o = o.ssl_mode(match mode {
                        SslMode::Disable => MySqlSslMode::Disabled,
                        SslMode::Prefer => MySqlSslMode::Preferred,
                        SslMode::Require => MySqlSslMode::Required,
                        SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
                    });
                }
                if let Some(cert) = &s.ssl_root_cert {
                    o = o.ssl_ca(cert);
                }
                Options::MySql(with_logging(o, s))
            }
            _ => {
                let o = SqliteConnectOptions::from_str(url)
                    .map_err(|e| config_error(s, &e))?
                    .foreign_keys(true)
                    .busy_timeout(s.sqlite_busy_timeout);
                Options::Sqlite(with_logging(o, s))
            }
        })
    }

    /// The same server with another database: the maintenance database for
    /// creating and dropping databases.
    pub(crate) fn with_database(self, database: &str) -> Self {
        match self {
            Options::Postgres(o) => Options::Postgres(o.database(database)),
            Options::MySql(o) => Options::MySql(o.database(database)),
            sqlite => sqlite,
        }
    }
}

/// Whether the URL names an in-memory SQLite database, where every connection
/// would see a database of its own.
fn sqlite_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Whether a SQLite URL asks for the file to be created.
fn sqlite_creates(url: &str) -> bool {
    url::Url::parse(url)
        .map(|u| u.query_pairs().any(|(k, v)| k == "mode" && v == "rwc"))
        .unwrap_or(false)
}

/// A driver whose new connections a [`Failover`] can check. Only
/// PostgreSQL has host lists; the other drivers never get one.
pub(crate) trait Checked: sqlx::Database {
    fn verify<'c>(
        conn: &'c mut Self::Connection,
        failover: &'c Arc<Failover>,
    ) -> Pin<Box<dyn Future<Output = sqlx::Result<()>> + Send + 'c>>;
}

impl Checked for sqlx::Postgres {
    fn verify<'c>(
        conn: &'c mut sqlx::postgres::PgConnection,
        failover: &'c Arc<Failover>,
    ) -> Pin<Box<dyn Future<Output = sqlx::Result<()>> + Send + 'c>> {
        Box::pin(failover.verify(conn))
    }
}

macro_rules! unchecked {
    ($($db:ty),*) => {$(
        impl Checked for $db {
            fn verify<'c>(
                _: &'c mut Self::Connection,
                _: &'c Arc<Failover>,
            ) -> Pin<Box<dyn Future<Output = sqlx::Result<()>> + Send + 'c>> {
                Box::pin(async { Ok(()) })
            }
        }
    )*};
}
unchecked!(sqlx::MySql, sqlx::Sqlite);

/// sqlx's options for a pool of at most `max` connections. sqlx's own
/// `min_connections` stays 0: [`Pool::new`] keeps the floor (see the module
/// docs). Its callbacks mark the moment a connection is handed over (for
/// the acquire metrics and the operation timeout, see [`crate::bound`]),
/// check connections against the host list, and close a returned
/// connection that still owes the server an answer instead of pooling it.
fn pool_options<DB: Checked>(
    s: &Settings,
    max: u32,
    metrics: Option<&Arc<PoolMetrics>>,
    failover: Option<&Arc<Failover>>,
) -> PoolOptions<DB> {
    let ping_after_idle = s.ping_after_idle;
    // Weak: the failover holds the pool, and the pool these callbacks.
    let failover = failover.map(Arc::downgrade);
    let (connected, acquired, released) = (metrics.cloned(), metrics.cloned(), metrics.cloned());
    let (verify, stale) = (failover.clone(), failover);
    PoolOptions::<DB>::new()
        .max_connections(max)
        .acquire_timeout(s.acquire_timeout)
        .idle_timeout(s.idle_timeout)
        .max_lifetime(s.max_lifetime)
        // A ping on every checkout costs a round trip per query; ping only
        // connections that sat idle long enough to have been dropped by a
        // firewall or a server restart.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            let (connected, verify) = (connected.clone(), verify.as_ref().and_then(Weak::upgrade));
            Box::pin(async move {
                if let Some(failover) = &verify {
                    DB::verify(conn, failover).await?;
                }
                connected.inspect(|m| m.connected());
                handed_over();
                Ok(())
            })
        })
        .before_acquire(move |conn, meta| {
            let acquired = acquired.clone();
            // A connection made before the last failover may be to the
            // old primary, now read-only or gone: never hand it out.
            let stale = (stale.as_ref().and_then(Weak::upgrade)).is_some_and(|f| f.stale(meta.age));
            Box::pin(async move {
                if stale {
                    return Ok(false);
                }
                if ping_after_idle.is_some_and(|threshold| meta.idle_for >= threshold) {
                    conn.ping().await?;
                }
                acquired.inspect(|m| m.handed_over());
                handed_over();
                Ok(true)
            })
        })
        .after_release(move |conn, _| {
            let keep = settled(conn);
            if !keep {
                if let Some(m) = &released {
                    m.discarded();
                }
                tracing::debug!("closing a connection that still owes the server an answer");
            }
            Box::pin(async move { Ok(keep) })
        })
}

/// Waits until the server accepts a connection, retrying with exponential
/// backoff until the connect deadline. Fails at once when retrying cannot help
/// (bad credentials, unknown database, TLS failure).
async fn wait_for_server<O>(
    options: &O,
    s: &Settings,
    user: &str,
    database: &str,
    metrics: Option<&Arc<PoolMetrics>>,
) -> Result<()>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    let target = s.url.target();
    wait_until(s, metrics, || async {
        match tokio::time::timeout(s.connect_timeout, options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(Ok(()))
            }
            Ok(Err(e)) => transient_reason(&e, s, &target, user, database).map(Err),
            Err(_) => Ok(Err(format!(
                "no answer within {} (DB_CONNECT_TIMEOUT)",
                humantime::format_duration(s.connect_timeout)
            ))),
        }
    })
    .await
}

/// Runs `attempt` until it succeeds (`Ok(Ok(()))`), fails for good (`Err`),
/// or the connect deadline passes after a failure that may go away
/// (`Ok(Err(reason))`), with exponential backoff in between.
async fn wait_until<F, Fut>(
    s: &Settings,
    metrics: Option<&Arc<PoolMetrics>>,
    mut attempt: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<(), String>>>,
{
    let target = s.url.target();
    let start = Instant::now();
    let deadline = start + s.connect_deadline.unwrap_or_default();
    let mut delay = Duration::from_millis(100);
    let mut tries = 1u32;
    loop {
        let reason = match attempt().await {
            Ok(Ok(())) => {
                if tries > 1 {
                    tracing::info!(%target, attempt = tries, "database is up");
                }
                return Ok(());
            }
            Ok(Err(reason)) => reason,
            Err(e) => {
                metrics.inspect(|m| m.connect_failed());
                return Err(e);
            }
        };
        metrics.inspect(|m| m.connect_failed());
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Unreachable {
                target,
                reason,
                waited: round_to_millis(now - start),
            });
        }
        let pause = delay.min(deadline - now);
        tracing::warn!(
            %target,
            attempt = tries,
            "database not ready ({reason}); retrying in {}",
            humantime::format_duration(round_to_millis(pause))
        );
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        tries += 1;
    }
}

fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Classifies a failed connection attempt: `Ok(reason)` when a later attempt
/// may succeed, `Err` when it cannot.
pub(crate) fn transient_reason(
    e: &sqlx::Error,
    s: &Settings,
    target: &str,
    user: &str,
    database: &str,
) -> Result<String> {
    let secrets = s.url.secrets();
    let text = |t: &str| scrub(t, &secrets);
    match e {
        // Certificate and handshake problems surface as invalid data; they do
        // not go away by waiting. Everything else on the wire (refused, reset,
        // timed out, unknown host) may be a server that is still starting.
        sqlx::Error::Io(io)
            if matches!(
                io.kind(),
                ErrorKind::InvalidData
                    | ErrorKind::InvalidInput
                    | ErrorKind::PermissionDenied
                    | ErrorKind::Unsupported
            ) =>
        {
            Err(Error::Rejected {
                target: target.to_owned(),
                reason: text(&io.to_string()),
            })
        }
        sqlx::Error::Io(io) => Ok(match io.kind() {
            ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            ErrorKind::ConnectionReset => "connection reset".to_owned(),
            ErrorKind::TimedOut => "timed out".to_owned(),
            ErrorKind::NotFound => "no such socket".to_owned(),
            _ => text(&io.to_string()),
        }),
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default().into_owned();
            let mysql = d
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number());
            match (code.as_str(), mysql) {
                ("28P01" | "28000", _) | (_, Some(1045 | 1698)) => Err(Error::Auth {
                    target: target.to_owned(),
                    user: user.to_owned(),
                }),
                ("3D000", _) | (_, Some(1049)) => Err(Error::UnknownDatabase {
                    target: target.to_owned(),
                    database: database.to_owned(),
                }),
                // Starting up, shutting down, or out of connection slots.
                ("57P03" | "57P01" | "53300", _) | (_, Some(1040 | 1053)) => Ok(text(d.message())),
                _ => Err(Error::Rejected {
                    target: target.to_owned(),
                    reason: text(d.message()),
                }),
            }
        }
        other => Err(Error::Rejected {
            target: target.to_owned(),
            reason: text(&other.to_string()),
        }),
    }
}

/// Opens the pools for `s`, waiting for the server as the settings allow.
/// `label` names the primary's pool in metrics (`primary`, `migration`).
pub(crate) async fn open(s: &Settings, label: &'static str) -> Result<Pools> {
    let statements = Arc::new(AtomicU64::new(0));
    let metrics = PoolMetrics::new(label);
    let metrics = metrics.as_ref();
    let (write, read) = match Options::new(s)? {
        Options::Postgres(o) => {
            let pool = server_pool(s, &statements, metrics)?.pool;
            match pool.failover() {
                Some(failover) => wait_until(s, metrics, || failover.find()).await?,
                None => {
                    let user = o.get_username().to_owned();
                    let database = o.get_database().unwrap_or(&user).to_owned();
                    wait_for_server(&o, s, &user, &database, metrics).await?;
                }
            }
            (pool, None)
        }
        Options::MySql(o) => {
            let user = o.get_username().to_owned();
            let database = o.get_database().unwrap_or_default().to_owned();
            wait_for_server(&o, s, &user, &database, metrics).await?;
            (server_pool(s, &statements, metrics)?.pool, None)
        }
        Options::Sqlite(o) => {
            let (mut write, read) = open_sqlite(s, o, label, metrics).await?;
            count_statements(&mut write, &statements);
            let read = read.map(|mut read| {
                count_statements(&mut read, &statements);
                read
            });
            (write, read)
        }
    };
    let read = read.unwrap_or_else(|| write.clone());
    Ok(Pools {
        write,
        read,
        replicas: Replicas::open(s, &statements)?,
        statements,
        in_memory: s.url.backend() == DbBackend::Sqlite && sqlite_in_memory(s.url.expose()),
    })
}

/// The writer and, for a file, the readers.
async fn open_sqlite(
    s: &Settings,
    o: SqliteConnectOptions,
    label: &str,
    metrics: Option<&Arc<PoolMetrics>>,
) -> Result<(Pool, Option<Pool>)> {
    let url = s.url.expose();
    let target = s.url.target();
    let reject = |e: sqlx::Error| {
        let mut reason = e.to_string();
        if !sqlite_creates(url) && reason.contains("unable to open") {
            reason.push_str(" (add ?mode=rwc to the URL to create it)");
        }
        Error::Rejected {
            target: target.clone(),
            reason,
        }
    };
    if sqlite_in_memory(url) {
        // Each connection to `:memory:` is a database of its own: one
        // connection, never closed for being idle or old, which would empty it.
        let pool = pool_options::<sqlx::Sqlite>(s, 1, metrics, None)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(o)
            .await
            .map_err(reject)?;
        return Ok((Pool::new(DatabaseConnection::from(pool), metrics, 1), None));
    }
    if sqlite_creates(url)
        && let Some(parent) = o.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| Error::Rejected {
            target: target.clone(),
            reason: format!("cannot create the folder {}: {e}", parent.display()),
        })?;
    }
    // One writer: SQLite allows one write transaction at a time, and waiting in
    // the pool queue is fair and cheap, where waiting on the file lock is
    // neither. WAL lets the readers read while it writes.
    let writer = pool_options::<sqlx::Sqlite>(s, 1, metrics, None)
        .connect_with(
            o.clone()
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
        )
        .await
        .map_err(reject)?;
    let reader_metrics = PoolMetrics::new(format!("{label}_reader"));
    let readers = pool_options::<sqlx::Sqlite>(s, s.max_connections, reader_metrics.as_ref(), None)
        .connect_lazy_with(o.read_only(true).create_if_missing(false));
    Ok((
        Pool::new(DatabaseConnection::from(writer), metrics, 1),
        Some(Pool::new(
            DatabaseConnection::from(readers),
            reader_metrics.as_ref(),
            s.min_connections.min(s.max_connections),
        )),
    ))
}

/// Connects once to the server's maintenance database (`postgres` on
/// PostgreSQL, `information_schema` on MySQL) for administrative statements.
pub(crate) async fn maintenance(s: &Settings) -> Result<(DatabaseConnection, String)> {
    let options = Options::new(s)?;
    let (name, options) = match options {
        Options::Postgres(o) => {
            let name = o.get_database().unwrap_or(o.get_username()).to_owned();
            // With a host list, the server that fits: administration writes.
            let o = match Failover::new(s, &o) {
                Some(failover) => {
                    wait_until(s, None, || failover.find()).await?;
                    failover.current()
                }
                None => o,
            };
            (name, Options::Postgres(o).with_database("postgres"))
        }
        Options::MySql(o) => {
            let name = o.get_database().unwrap_or_default().to_owned();
            (name, Options::MySql(o).with_database("information_schema"))
        }
        Options::Sqlite(_) => {
            return Err(Error::Config(
                "SQLite has no maintenance database".to_owned(),
            ));
        }
    };
    let conn = match options {
        Options::Postgres(o) => {
            let user = o.get_username().to_owned();
            wait_for_server(&o, s, &user, "postgres", None).await?;
            DatabaseConnection::from(
                pool_options::<sqlx::Postgres>(s, 1, None, None).connect_lazy_with(o),
            )
        }
        Options::MySql(o) => {
            let user = o.get_username().to_owned();
            wait_for_server(&o, s, &user, "information_schema", None).await?;
            DatabaseConnection::from(
                pool_options::<sqlx::MySql>(s, 1, None, None).connect_lazy_with(o),
            )
        }
        Options::Sqlite(_) => unreachable!("handled above"),
    };
    Ok((conn, name))
}
