//! Read replicas: read-only sessions go to them round-robin; one that fails
//! (gone, refusing new connections) or gives no answer within
//! `DB_OPERATION_TIMEOUT` is skipped (the statement runs again on the next
//! one, then on the primary) until a background probe finds it answering
//! again; one that has answered but whose pool is full and taken for
//! `DB_ACQUIRE_TIMEOUT` (at most a second) is busy, and skipped for that
//! statement only. Each replica has a probe task of its own, so a replica
//! that does not answer holds up no other. On a host list, a read that the
//! primary's failover interrupts runs again once a host fits, within
//! `DB_FAILOVER_TIMEOUT`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, DbErr};

use crate::bound::{answered, no_answer};
use crate::connect::{Pool, ServerPool, probe, server_pool};
use crate::error::{Error, Result, sqlx_db_err};
use crate::metrics::{self, PoolMetrics, RetryReason};
use crate::settings::Settings;

/// How often a replica marked down is tried again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The pause before a read interrupted by a failover of the primary runs again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One replica: its pool, and whether reads may go there.
pub(crate) struct Replica {
    settings: Settings,
    target: String,
    pool: RwLock<ServerPool>,
    up: AtomicBool,
    /// A statement got an answer through the current pool: it connects.
    answered: AtomicBool,
    statements: Arc<AtomicU64>,
    metrics: Option<Arc<PoolMetrics>>,
}

impl Replica {
    /// The replica's pool, opened lazily: a replica that is down at startup
    /// does not hold the application up.
    fn new(settings: Settings, statements: Arc<AtomicU64>, label: String) -> Result<Self> {
        let metrics = PoolMetrics::new(label);
        let pool = server_pool(&settings, &statements, metrics.as_ref())?;
        if let Some(failover) = pool.pool.failover() {
            failover.search();
        }
        let replica = Replica {
            target: settings.url.target(),
            settings,
            pool: RwLock::new(pool),
            up: AtomicBool::new(true),
            answered: AtomicBool::new(false),
            statements,
            metrics,
        };
        replica.report(None);
        Ok(replica)
    }

    /// Sets the replica's state and lag gauges (`lag` when known).
    pub(crate) fn report(&self, lag: Option<Duration>) {
        if let Some(m) = &self.metrics {
            metrics::replica(m.label(), self.is_up(), lag);
        }
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn conn(&self) -> DatabaseConnection {
        (*self.pool()).clone()
    }

    pub(crate) fn pool(&self) -> Pool {
        self.pool
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pool
            .clone()
    }

    fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(replica = %self.target, "replica unavailable ({reason}); reading from the others");
            self.report(None);
        }
    }

    /// On a host list, checks that the chosen host still fits: a standby
    /// that a failover promoted is left for one that fits before the next
    /// failover takes its connections away. One query per probe interval;
    /// a replica that gives no answer within `DB_OPERATION_TIMEOUT` is
    /// marked down.
    async fn recheck(&self) {
        let pool = self.pool();
        let Some(failover) = pool.failover() else {
            return;
        };
        let sqlx_pool = pool.get_postgres_connection_pool();
        if let Ok(mut conn) = metrics::acquire_sqlx(pool.metrics(), sqlx_pool).await {
            // On a mismatch this starts a search and marks the pool's
            // connections stale; the error says no more than that.
            let verified = answered(pool.operation_timeout(), async {
                failover.verify(&mut conn).await.map_err(sqlx_db_err)
            })
            .await;
            if let Err(e) = verified
                && Error::unreachable(&e)
            {
                self.mark_down(&e.to_string());
            }
        }
    }

    /// Tries the replica; if it answers, gives it a fresh pool (the old
    /// connections died with the outage) and marks it up, unless the pools
    /// were `closed` meanwhile.
    async fn revive(&self, closed: &AtomicBool) {
        if !probe(&self.settings).await {
            if let Some(m) = &self.metrics {
                m.connect_failed();
            }
            return;
        }
        let Ok(fresh) = server_pool(&self.settings, &self.statements, self.metrics.as_ref()) else {
            return;
        };
        // Under the pool's lock: `Db::close` sets `closed`, then takes each
        // pool under it to close it. The one that is not used is closed.
        let (unused, closed) = {
            let mut pool = self.pool.write().unwrap_or_else(|e| e.into_inner());
            match closed.load(Ordering::Acquire) {
                true => (fresh, true),
                false => (std::mem::replace(&mut *pool, fresh), false),
            }
        };
        tokio::spawn(async move { unused.close().await });
        if closed {
            return;
        }
        self.answered.store(false, Ordering::Relaxed);
        if let Some(failover) = self.pool().failover() {
            failover.search();
        }
        self.up.store(true, Ordering::Relaxed);
        self.report(None);
        tracing::info!(replica = %self.target, "replica is back");
    }
}

/// The replicas of one [`Db`](crate::Db).
pub(crate) struct Replicas {
    list: Vec<Replica>,
    next: AtomicUsize,
    /// How long a read waits for a primary on a host list to come back.
    failover_timeout: Duration,
    /// [`Db::close`](crate::Db::close) closed the pools: no replica is
    /// given a fresh one any more.
    closed: AtomicBool,
}

impl Replicas {
    /// Pools for every replica in `settings`, and a task that revives the
    /// ones marked down for as long as the set lives.
    pub(crate) fn open(settings: &Settings, statements: &Arc<AtomicU64>) -> Result<Arc<Self>> {
        let list = settings
            .replicas
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let mut s = settings.clone();
                s.url = url.clone();
                s.replicas = Vec::new();
                // A replica with no free connection within a second is skipped
                // for this statement, not waited for.
                s.acquire_timeout = s.acquire_timeout.min(Duration::from_secs(1));
                Replica::new(s, statements.clone(), format!("replica{}", i + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        let replicas = Arc::new(Replicas {
            list,
            next: AtomicUsize::new(0),
            failover_timeout: settings.failover_timeout,
            closed: AtomicBool::new(false),
        });
        for i in 0..replicas.list.len() {
            tokio::spawn(monitor(Arc::downgrade(&replicas), i));
        }
        Ok(replicas)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn all(&self) -> &[Replica] {
        &self.list
    }

    /// Stops the probes: a replica marked down is not revived with a fresh
    /// pool once the pools are closing. Before closing them.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// The replicas that are up, starting with the next in turn.
    fn in_turn(&self) -> impl Iterator<Item = &Replica> {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(move |i| &self.list[(start + i) % n])
            .filter(|r| r.is_up())
    }

    /// Runs `work` on a replica, moving on to the next one (and finally to
    /// `primary`) when a replica cannot be reached; on `primary` when the
    /// replica does not know a table, column or function that `work` uses
    /// (it has not replayed a migration yet, and the others are no further
    /// ahead for sure). Only for reads, which may run twice: a write that a
    /// replica refuses as read-only fails, and runs nowhere else, but one
    /// that reaches the primary (no replica up, or one that lacks its
    /// table) runs there.
    pub(crate) async fn route<T, F, Fut>(&self, primary: &Pool, work: F) -> Result<T, DbErr>
    where
        F: Fn(Pool) -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        for replica in self.in_turn() {
            let pool = replica.pool();
            match pool.attempt(work(pool.clone())).await.0 {
                // A replica is read-only: `work` writes, which is its own
                // error, not the replica's.
                Err(e) if Error::read_only(&e) => return Err(e),
                // No free connection in time from a full pool that has
                // connected: busy, not down. The read moves on; the replica
                // keeps its pool and its turn.
                Err(e)
                    if Error::pool_timeout(&e)
                        && pool.is_full()
                        && replica.answered.load(Ordering::Relaxed) => {}
                // Gone, silent, or refusing new connections (its password,
                // its connection limit): down until the probe gets in.
                Err(e) if Error::unreachable(&e) || Error::refused(&e) => {
                    replica.mark_down(&e.to_string());
                    metrics::retried(Some(RetryReason::Failover));
                }
                Err(e) if Error::schema_behind(&e) => {
                    metrics::retried(Some(RetryReason::ReplicaBehind));
                    break;
                }
                done => {
                    replica.answered.store(true, Ordering::Relaxed);
                    return done;
                }
            }
        }
        // On a host list the primary may be moving: a read runs again there
        // once a host fits, until the failover timeout, which also cuts the
        // attempt running then (a read is safe to cut).
        let deadline = Instant::now() + self.failover_timeout;
        let mut again = false;
        loop {
            let attempt = primary.attempt(work(primary.clone()));
            let result = if again {
                match tokio::time::timeout_at(deadline.into(), attempt).await {
                    Ok((result, _)) => result,
                    Err(_) => Err(no_answer(self.failover_timeout, "DB_FAILOVER_TIMEOUT")),
                }
            } else {
                attempt.await.0
            };
            match (&result, primary.failover()) {
                (Err(e), Some(failover)) if Error::unreachable(e) => {
                    failover.saw(e);
                    if Instant::now() >= deadline {
                        return result;
                    }
                    metrics::retried(Some(RetryReason::Failover));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    again = true;
                }
                _ => return result,
            }
        }
    }
}

/// Rechecks replica `i` while it is up and tries to revive it while it is
/// down, once per probe interval, for as long as the set lives and is not
/// closed.
async fn monitor(replicas: Weak<Replicas>, i: usize) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(replicas) = replicas.upgrade() else {
            return;
        };
        let replica = &replicas.list[i];
        if replica.is_up() {
            replica.recheck().await;
        } else {
            replica.revive(&replicas.closed).await;
        }
        if replicas.closed.load(Ordering::Acquire) {
            return;
        }
    }
}
