//! Metrics of the pools, statements and retries, recorded through the
//! `metrics` facade into whatever recorder the binary installed (a
//! Prometheus one, for example). Nothing is recorded until [`enable`] is
//! called; pools opened before it stay silent.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `db_pool_connections` | gauge | `pool` |
//! | `db_pool_idle_connections` | gauge | `pool` |
//! | `db_pool_in_use_connections` | gauge | `pool` |
//! | `db_pool_max_connections` | gauge | `pool` |
//! | `db_pool_waiters` | gauge | `pool` |
//! | `db_pool_acquire_wait_seconds` | histogram | `pool` |
//! | `db_pool_acquire_timeouts_total` | counter | `pool` |
//! | `db_pool_connections_opened_total` | counter | `pool` |
//! | `db_pool_connections_closed_total` | counter | `pool` |
//! | `db_pool_connections_discarded_total` | counter | `pool` |
//! | `db_pool_connection_failures_total` | counter | `pool` |
//! | `db_statement_duration_seconds` | histogram | `operation` |
//! | `db_transaction_retries_total` | counter | `reason` |
//! | `db_replica_up` | gauge | `pool` |
//! | `db_replica_lag_seconds` | gauge | `pool` |
//!
//! `pool` is `primary`, `primary_reader` (SQLite's read-only pool), `replica1`,
//! `replica2`, … in the order of `DB_REPLICA_URLS`, or `migration`.
//! `operation` is a name the caller gives with [`Operation`] (`other` outside
//! one); `reason` is `serialization`, `deadlock`, `failover` or
//! `replica_behind`. No label
//! carries a URL, a user, SQL text or a parameter.
//!
//! Acquisitions are measured wherever db-core asks a pool for a connection:
//! a transaction's `BEGIN`, each statement of a session without a
//! transaction, [`crate::Db::ping`], the replica lag query, and the
//! connection that `with_lock` (MySQL's `GET_LOCK`, SQLite's exclusive
//! transaction) and `copy_in` hold. The pool's own callbacks (sqlx's `after_connect`
//! and `before_acquire`) mark the moment a connection is handed over, inside
//! the waiting task, which is how the wait is timed without a wrapper around
//! the driver.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, SharedString, Unit};
use sea_orm::{ConnAcquireErr, DatabaseConnection, DbErr, RuntimeErr};

use crate::error::{database_error, sqlx_db_err};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Starts recording (for the pools opened from now on) and describes every
/// metric to the installed recorder. Call it once, after installing one.
pub fn enable() {
    describe();
    // Each reason's series exists from the start, at 0, so a rate or an
    // alert on it has something to read before the first retry.
    for reason in [
        RetryReason::Serialization,
        RetryReason::Deadlock,
        RetryReason::Failover,
        RetryReason::ReplicaBehind,
    ] {
        metrics::counter!(RETRIES, "reason" => reason.label()).absolute(0);
    }
    ENABLED.store(true, Ordering::Relaxed);
}

pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

const POOL_CONNECTIONS: &str = "db_pool_connections";
const POOL_IDLE: &str = "db_pool_idle_connections";
const POOL_IN_USE: &str = "db_pool_in_use_connections";
const POOL_MAX: &str = "db_pool_max_connections";
const POOL_WAITERS: &str = "db_pool_waiters";
const ACQUIRE_WAIT: &str = "db_pool_acquire_wait_seconds";
const ACQUIRE_TIMEOUTS: &str = "db_pool_acquire_timeouts_total";
const OPENED: &str = "db_pool_connections_opened_total";
const CLOSED: &str = "db_pool_connections_closed_total";
const DISCARDED: &str = "db_pool_connections_discarded_total";
const FAILED: &str = "db_pool_connection_failures_total";
const STATEMENT_DURATION: &str = "db_statement_duration_seconds";
const RETRIES: &str = "db_transaction_retries_total";
const REPLICA_UP: &str = "db_replica_up";
const REPLICA_LAG: &str = "db_replica_lag_seconds";

/// The metrics db-core records, with the buckets its histograms want
/// (seconds): acquire waits and statements are short when healthy, so the
/// buckets are fine below 10 ms and reach the longest acquire timeout.
pub const HISTOGRAM_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(POOL_CONNECTIONS, "Open connections of the pool");
    describe_gauge!(POOL_IDLE, "Open connections not checked out");
    describe_gauge!(POOL_IN_USE, "Connections checked out");
    describe_gauge!(POOL_MAX, "The pool's maximum size");
    describe_gauge!(POOL_WAITERS, "Sessions waiting for a connection");
    describe_histogram!(
        ACQUIRE_WAIT,
        Unit::Seconds,
        "Time a session waited for a connection"
    );
    describe_counter!(
        ACQUIRE_TIMEOUTS,
        "Sessions that got no connection within DB_ACQUIRE_TIMEOUT"
    );
    describe_counter!(OPENED, "Connections the pool opened");
    describe_counter!(
        CLOSED,
        "Connections that left the pool (idle or lifetime limit, errors, close)"
    );
    describe_counter!(
        DISCARDED,
        "Connections closed when they came back still owing the server an answer (an operation that timed out, a cancelled request)"
    );
    describe_counter!(
        FAILED,
        "Connection attempts that failed (refused, rejected, unreachable)"
    );
    describe_histogram!(
        STATEMENT_DURATION,
        Unit::Seconds,
        "Statement execution time by service operation (after acquiring)"
    );
    describe_counter!(
        RETRIES,
        "Work run again: a transaction after a conflict, a read moved off a failed replica or off one behind a migration"
    );
    describe_gauge!(
        REPLICA_UP,
        "1 while reads go to the replica, 0 while it is skipped"
    );
    describe_gauge!(
        REPLICA_LAG,
        Unit::Seconds,
        "How far the replica's replay is behind (PostgreSQL; absent when unknown)"
    );
}

/// One pool's handles, registered once when the pool is built.
pub(crate) struct PoolMetrics {
    label: SharedString,
    connections: Gauge,
    idle: Gauge,
    in_use: Gauge,
    max: Gauge,
    waiters: Gauge,
    wait: Histogram,
    timeouts: Counter,
    opened: Counter,
    closed: Counter,
    discarded: Counter,
    failed: Counter,
    /// Sessions waiting for a connection now. The gauge is set from it when
    /// the metrics are sampled: a plain counter costs a request less than
    /// the recorder's gauge, which every change would go through.
    waiting: AtomicI64,
    /// Connections opened and closed as seen by this pool, to derive closes.
    opened_here: AtomicU64,
    closed_here: AtomicU64,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics")
            .field("pool", &self.label)
            .finish()
    }
}

impl PoolMetrics {
    /// Handles for the pool named `label`, or `None` while recording is off.
    pub(crate) fn new(label: impl Into<SharedString>) -> Option<Arc<Self>> {
        if !enabled() {
            return None;
        }
        let label: SharedString = label.into();
        Some(Arc::new(PoolMetrics {
            connections: metrics::gauge!(POOL_CONNECTIONS, "pool" => label.clone()),
            idle: metrics::gauge!(POOL_IDLE, "pool" => label.clone()),
            in_use: metrics::gauge!(POOL_IN_USE, "pool" => label.clone()),
            max: metrics::gauge!(POOL_MAX, "pool" => label.clone()),
            waiters: metrics::gauge!(POOL_WAITERS, "pool" => label.clone()),
            wait: metrics::histogram!(ACQUIRE_WAIT, "pool" => label.clone()),
            timeouts: metrics::counter!(ACQUIRE_TIMEOUTS, "pool" => label.clone()),
            opened: metrics::counter!(OPENED, "pool" => label.clone()),
            closed: metrics::counter!(CLOSED, "pool" => label.clone()),
            discarded: metrics::counter!(DISCARDED, "pool" => label.clone()),
            failed: metrics::counter!(FAILED, "pool" => label.clone()),
            waiting: AtomicI64::new(0),
            opened_here: AtomicU64::new(0),
            closed_here: AtomicU64::new(0),
            label,
        }))
    }

    pub(crate) fn label(&self) -> &SharedString {
        &self.label
    }

    /// A connection was opened: counted, and if a session of this task is
    /// waiting for it, its wait ends here.
    pub(crate) fn connected(&self) {
        self.opened.increment(1);
        self.opened_here.fetch_add(1, Ordering::Relaxed);
        self.handed_over();
    }

    /// A connection came back owing the server an answer and was closed.
    pub(crate) fn discarded(&self) {
        self.discarded.increment(1);
    }

    /// A connection attempt failed.
    pub(crate) fn connect_failed(&self) {
        self.failed.increment(1);
    }

    /// A connection is being handed to the task that runs this (an idle one,
    /// or one just opened).
    pub(crate) fn handed_over(&self) {
        let _ = WAITING.try_with(|w| {
            if std::ptr::eq(self, &*w.pool) && !w.done.replace(true) {
                self.wait.record(w.started.elapsed());
                self.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    /// Sets the gauges from the pool's state and its waiting sessions, and
    /// counts the connections that left it since the last look.
    fn sample(&self, conn: &DatabaseConnection) {
        let waiting = self.waiting.load(Ordering::Relaxed).max(0);
        self.waiters.set(waiting as f64);
        let Some((size, idle, max)) = pool_state(conn) else {
            return;
        };
        self.connections.set(f64::from(size));
        self.idle.set(idle as f64);
        self.in_use
            .set(f64::from(size).max(idle as f64) - idle as f64);
        self.max.set(f64::from(max));
        let gone = self
            .opened_here
            .load(Ordering::Relaxed)
            .saturating_sub(u64::from(size));
        let before = self.closed_here.swap(gone, Ordering::Relaxed);
        self.closed.increment(gone.saturating_sub(before));
    }
}

/// Size, idle connections and maximum size of the sqlx pool behind `conn`.
pub(crate) fn pool_state(conn: &DatabaseConnection) -> Option<(u32, usize, u32)> {
    fn of<DB: sea_orm::sqlx::Database>(p: &sea_orm::sqlx::Pool<DB>) -> (u32, usize, u32) {
        (p.size(), p.num_idle(), p.options().get_max_connections())
    }
    use sea_orm::DatabaseConnectionType as Type;
    match &conn.inner {
        Type::SqlxPostgresPoolConnection(_) => Some(of(conn.get_postgres_connection_pool())),
        Type::SqlxMySqlPoolConnection(_) => Some(of(conn.get_mysql_connection_pool())),
        Type::SqlxSqlitePoolConnection(_) => Some(of(conn.get_sqlite_connection_pool())),
        _ => None,
    }
}

/// A pool that [`sample`] reads while it is alive.
#[derive(Debug)]
pub(crate) struct Sampled {
    pub(crate) metrics: Arc<PoolMetrics>,
    conn: DatabaseConnection,
}

impl Drop for Sampled {
    /// The pool is gone (the migration pool after startup, a replica's pool
    /// replaced by a fresh one): nobody samples it any more, so its
    /// connection gauges drop to zero rather than keep their last values. A
    /// fresh pool under the same label sets them again at the next sample.
    fn drop(&mut self) {
        let m = &self.metrics;
        for gauge in [&m.connections, &m.idle, &m.in_use, &m.waiters] {
            gauge.set(0.0);
        }
    }
}

static SAMPLED: Mutex<Vec<Weak<Sampled>>> = Mutex::new(Vec::new());

/// Registers `conn` for sampling for as long as the returned handle lives.
pub(crate) fn watch(metrics: Arc<PoolMetrics>, conn: &DatabaseConnection) -> Arc<Sampled> {
    let sampled = Arc::new(Sampled {
        metrics,
        conn: conn.clone(),
    });
    let mut list = SAMPLED.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(&sampled));
    sampled
}

/// Sets every live pool's gauges (size, idle, in use, maximum) and counts
/// the connections that left each: call it before rendering the metrics.
pub fn sample() {
    let live: Vec<Arc<Sampled>> = {
        let mut list = SAMPLED.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    for pool in live {
        pool.metrics.sample(&pool.conn);
    }
}

/// A session of this task is waiting for a connection of `pool`. Dropped
/// while still waiting (a timeout, an error, a cancelled request), it takes
/// itself off the waiters count.
struct Waiting {
    pool: Arc<PoolMetrics>,
    started: Instant,
    done: Cell<bool>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.done.get() {
            self.pool.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

tokio::task_local! {
    static WAITING: Waiting;
}

/// Runs `work`, which asks the pool of `metrics` for a connection: counts the
/// waiter, times the wait, and counts a timeout or a failed connection.
/// Every acquisition of db-core goes through it: sessions, `ping`, the
/// replica lag query, and the connections that `with_lock` and `copy_in`
/// take from sqlx's pool directly (see [`acquire_sqlx`]).
pub(crate) async fn acquiring<T>(
    metrics: Option<&Arc<PoolMetrics>>,
    work: impl Future<Output = Result<T, DbErr>>,
) -> Result<T, DbErr> {
    let Some(pool) = metrics else {
        return work.await;
    };
    pool.waiting.fetch_add(1, Ordering::Relaxed);
    let waiting = Waiting {
        pool: pool.clone(),
        started: Instant::now(),
        done: Cell::new(false),
    };
    WAITING
        .scope(waiting, async move {
            let result = work.await;
            if let Err(e) = &result {
                WAITING.with(|w| {
                    if w.done.get() {
                        return;
                    }
                    // SeaORM reports the pool's own failures as
                    // `ConnectionAcquire`; a caller of sqlx's pool wraps
                    // sqlx's error as it comes.
                    let sqlx = match e {
                        DbErr::Conn(RuntimeErr::SqlxError(e))
                        | DbErr::Exec(RuntimeErr::SqlxError(e)) => Some(&**e),
                        _ => None,
                    };
                    match (e, sqlx) {
                        (DbErr::ConnectionAcquire(ConnAcquireErr::Timeout), _)
                        | (_, Some(sea_orm::sqlx::Error::PoolTimedOut)) => {
                            w.pool.wait.record(w.started.elapsed());
                            w.pool.timeouts.increment(1);
                        }
                        (DbErr::ConnectionAcquire(_), _)
                        | (_, Some(sea_orm::sqlx::Error::PoolClosed)) => {}
                        _ => w.pool.failed.increment(1),
                    }
                });
            }
            result
        })
        .await
}

/// A name for a unit of work, such as a service operation: statements run
/// inside [`Operation::scope`] are timed under it.
#[derive(Debug, Clone)]
pub struct Operation {
    statements: Option<Histogram>,
}

impl Operation {
    /// An operation named `name`, which becomes a label value: use a fixed
    /// set of names, never data.
    pub fn new(name: impl Into<SharedString>) -> Self {
        Operation {
            statements: enabled()
                .then(|| metrics::histogram!(STATEMENT_DURATION, "operation" => name.into())),
        }
    }

    /// Runs `work` as this operation. An operation lives as long as the
    /// process (made once per name and kept), so work run under it holds a
    /// reference and no request writes to a count of its owners.
    pub async fn scope<F: Future>(&'static self, work: F) -> F::Output {
        match &self.statements {
            Some(h) => OPERATION.scope(h, work).await,
            None => work.await,
        }
    }
}

tokio::task_local! {
    static OPERATION: &'static Histogram;
}

/// Counts a statement that took the given time and records it under the
/// current [`Operation`] (`other` outside one).
pub(crate) type StatementTimer = Arc<dyn Fn(Duration) + Send + Sync>;

/// Times every statement that SeaORM runs on `conn`; returns the timer, for
/// the statements that db-core runs on the same pool itself.
pub(crate) fn time_statements(
    conn: &mut DatabaseConnection,
    count: impl Fn() + Send + Sync + 'static,
) -> StatementTimer {
    let other = enabled().then(|| metrics::histogram!(STATEMENT_DURATION, "operation" => "other"));
    let timer: StatementTimer = Arc::new(move |elapsed| {
        count();
        if let Some(other) = &other
            && OPERATION.try_with(|h| h.record(elapsed)).is_err()
        {
            other.record(elapsed);
        }
    });
    let callback = timer.clone();
    conn.set_metric_callback(move |info| callback(info.elapsed));
    timer
}

/// Why work ran again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A serialization failure (PostgreSQL 40001).
    Serialization,
    /// A deadlock (PostgreSQL 40P01, MySQL 1213).
    Deadlock,
    /// A replica could not be reached and the read moved on, or work on a
    /// host list ran again after the primary went away or turned read-only.
    Failover,
    /// A replica did not know a table, column or function that the read
    /// uses, as while it has not yet replayed a migration: the read ran
    /// again on the primary.
    ReplicaBehind,
}

impl RetryReason {
    fn label(self) -> &'static str {
        match self {
            RetryReason::Serialization => "serialization",
            RetryReason::Deadlock => "deadlock",
            RetryReason::Failover => "failover",
            RetryReason::ReplicaBehind => "replica_behind",
        }
    }

    /// The reason behind a database error, if it is one that a retry may cure.
    pub fn of(err: &DbErr) -> Option<RetryReason> {
        let d = database_error(err)?;
        // MySQL reports its deadlock (1213) with SQLSTATE 40001, which on
        // PostgreSQL means a serialization failure: the number decides.
        if let Some(m) = d.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>() {
            return (m.number() == 1213).then_some(RetryReason::Deadlock);
        }
        match d.code().as_deref() {
            Some("40001") => Some(RetryReason::Serialization),
            Some("40P01") => Some(RetryReason::Deadlock),
            _ => None,
        }
    }
}

/// Counts one retry.
pub(crate) fn retried(reason: Option<RetryReason>) {
    if enabled() {
        let reason = reason.map_or("other", RetryReason::label);
        metrics::counter!(RETRIES, "reason" => reason).increment(1);
    }
}

/// Sets a replica's state and lag gauges.
pub(crate) fn replica(label: &SharedString, up: bool, lag: Option<Duration>) {
    if !enabled() {
        return;
    }
    metrics::gauge!(REPLICA_UP, "pool" => label.clone()).set(if up { 1.0 } else { 0.0 });
    let lag_gauge = metrics::gauge!(REPLICA_LAG, "pool" => label.clone());
    match lag {
        Some(lag) => lag_gauge.set(lag.as_secs_f64()),
        None => lag_gauge.set(f64::NAN),
    }
}

/// One connection from the sqlx pool behind `pool`, acquired under
/// [`acquiring`].
pub(crate) async fn acquire_sqlx<DB: sea_orm::sqlx::Database>(
    metrics: Option<&Arc<PoolMetrics>>,
    pool: &sea_orm::sqlx::Pool<DB>,
) -> crate::Result<sea_orm::sqlx::pool::PoolConnection<DB>> {
    acquiring(metrics, async { pool.acquire().await.map_err(sqlx_db_err) })
        .await
        .map_err(crate::Error::from)
}
