//! Host lists on PostgreSQL: which server new connections go to, and
//! following a failover.
//!
//! sqlx connects a pool to one set of options. The pool's options point at
//! the host chosen last; each new connection checks `target_session_attrs`
//! right after connecting (one query), and a connection to a server that does
//! not fit is refused, which makes sqlx back off and read the options again.
//! A refused connection, or an error that means the server went away or
//! turned read-only, starts a search: the hosts are tried in order (shuffled
//! with `load_balance_hosts=random`) until one fits, and the pool's options
//! move there. Pooled connections older than the last failover are dropped
//! when they are next checked out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sea_orm::sqlx::{self, ConnectOptions, Connection, Row};

use crate::connect::{Options, transient_reason};
use crate::error::{Error, Result, scrub};
use crate::settings::Settings;
use crate::url::{LoadBalanceHosts, TargetSessionAttrs, host_text};

/// How long a search waits before trying the hosts again while none fits
/// (during a promotion there is no primary for some seconds).
const SEARCH_PAUSE: Duration = Duration::from_millis(300);

/// The host list of one pool and where its new connections go.
pub(crate) struct Failover {
    hosts: Vec<(String, u16)>,
    attrs: TargetSessionAttrs,
    random: bool,
    /// The options of the first host with every knob from the settings.
    base: PgConnectOptions,
    settings: Settings,
    /// The host new connections go to, an index into `hosts`.
    chosen: AtomicUsize,
    /// When the last failover was seen, in nanoseconds since `epoch` (0: never).
    epoch: Instant,
    failed_over: AtomicU64,
    searching: AtomicBool,
    /// The pool whose options follow the chosen host. Only the [`Pool`]
    /// holds this value strongly; the pool's callbacks hold it weakly, so
    /// dropping the pool drops it.
    ///
    /// [`Pool`]: crate::connect::Pool
    pool: Mutex<Option<PgPool>>,
}

/// Why a host was passed over.
struct Skipped {
    reason: String,
    /// Retrying cannot help (bad credentials, unknown database, TLS).
    hard: Option<Error>,
}

impl Skipped {
    fn soft(reason: String) -> Self {
        Skipped { reason, hard: None }
    }
}

/// One connection to the server of `options` (shown as `target`), within
/// the connect timeout.
async fn connect(
    s: &Settings,
    options: &PgConnectOptions,
    target: &str,
) -> Result<PgConnection, Skipped> {
    match tokio::time::timeout(s.connect_timeout, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            let user = options.get_username();
            let database = options.get_database().unwrap_or(user);
            Err(match transient_reason(&e, s, target, user, database) {
                Ok(reason) => Skipped::soft(reason),
                Err(hard) => Skipped {
                    reason: hard.to_string().replace(&format!("{target}: "), ""),
                    hard: Some(hard),
                },
            })
        }
        Err(_) => Err(Skipped::soft("timed out".to_owned())),
    }
}

impl Failover {
    /// The host list of `s.url`, if it has one or sets `target_session_attrs`;
    /// `base` holds the options of its first host.
    pub(crate) fn new(s: &Settings, base: &PgConnectOptions) -> Option<Arc<Self>> {
        let hosts = s.url.hosts()?;
        Some(Arc::new(Failover {
            hosts: hosts.list.clone(),
            attrs: hosts.attrs.unwrap_or_default(),
            random: hosts.balance == Some(LoadBalanceHosts::Random),
            base: base.clone(),
            settings: s.clone(),
            chosen: AtomicUsize::new(0),
            epoch: Instant::now(),
            failed_over: AtomicU64::new(0),
            searching: AtomicBool::new(false),
            pool: Mutex::new(None),
        }))
    }

    /// Hands over the pool whose options follow the chosen host.
    pub(crate) fn follow(&self, pool: PgPool) {
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = Some(pool);
    }

    /// The options for host `i`.
    fn options(&self, i: usize) -> PgConnectOptions {
        let (host, port) = &self.hosts[i];
        self.base.clone().host(host).port(*port)
    }

    /// The options of the host chosen now.
    pub(crate) fn current(&self) -> PgConnectOptions {
        self.options(self.chosen.load(Ordering::Relaxed))
    }

    /// `host:port` of host `i`.
    fn name(&self, i: usize) -> String {
        let (host, port) = &self.hosts[i];
        host_text(host, *port)
    }

    /// Checks a new connection against `target_session_attrs` (one query,
    /// none for `any` and `prefer-standby`, which take any server once no
    /// standby answers). On a mismatch, starts a search and refuses the
    /// connection.
    pub(crate) async fn verify(self: &Arc<Self>, conn: &mut PgConnection) -> sqlx::Result<()> {
        if let Err(why) = check(conn, self.attrs).await? {
            self.detected();
            let host = self.name(self.chosen.load(Ordering::Relaxed));
            return Err(sqlx::Error::Configuration(
                format!(
                    "{host} does not fit target_session_attrs={}: {why}",
                    self.attrs
                )
                .into(),
            ));
        }
        Ok(())
    }

    /// Whether a pooled connection of age `age` was made before the last
    /// failover, and must not be used again.
    pub(crate) fn stale(&self, age: Duration) -> bool {
        let at = self.failed_over.load(Ordering::Relaxed);
        at != 0
            && (self.epoch.elapsed().as_nanos() as u64).saturating_sub(age.as_nanos() as u64) < at
    }

    /// A failover was seen (a server went away or turned read-only): marks
    /// the connections made so far stale, and searches for a fitting host in
    /// the background unless a search is under way. The search tries again
    /// every few hundred milliseconds until a host fits or the pool closes.
    pub(crate) fn detected(self: &Arc<Self>) {
        if self.search() {
            self.mark_stale();
        }
    }

    /// Starts a search in the background unless one is under way; whether
    /// it started one. A pool that is not waited for at startup (a
    /// replica's) starts one at once, so that its first connections do not
    /// go to a host that does not fit.
    pub(crate) fn search(self: &Arc<Self>) -> bool {
        if self.searching.swap(true, Ordering::AcqRel) {
            return false;
        }
        tokio::spawn(search_until_found(Arc::downgrade(self)));
        true
    }

    fn mark_stale(&self) {
        let now = (self.epoch.elapsed().as_nanos() as u64).max(1);
        self.failed_over.store(now, Ordering::Relaxed);
    }

    /// One pass over the hosts: the first that fits becomes the pool's
    /// target. `Ok(Err(reasons))` names each host and why it was passed
    /// over; `Err` when every host refused for good (credentials, database).
    pub(crate) async fn find(&self) -> Result<std::result::Result<(), String>> {
        let mut order: Vec<usize> = (0..self.hosts.len()).collect();
        if self.random {
            order.shuffle(&mut rand::rng());
        }
        let passes: &[TargetSessionAttrs] = match self.attrs {
            TargetSessionAttrs::PreferStandby => {
                &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            }
            _ => std::slice::from_ref(&self.attrs),
        };
        let mut skipped = Vec::new();
        for &wanted in passes {
            skipped.clear();
            for &i in &order {
                match self.probe(i, wanted).await {
                    Ok(()) => {
                        self.choose(i);
                        return Ok(Ok(()));
                    }
                    Err(why) => skipped.push((i, why)),
                }
            }
        }
        if let Some(first) = skipped.iter().position(|(_, s)| s.hard.is_some())
            && skipped.iter().all(|(_, s)| s.hard.is_some())
        {
            let (_, why) = skipped.swap_remove(first);
            return Err(why.hard.expect("checked above"));
        }
        let reasons: Vec<String> = (skipped.iter())
            .map(|(i, why)| format!("{} {}", self.name(*i), why.reason))
            .collect();
        let what = match self.attrs {
            TargetSessionAttrs::Any => "no host answered".to_owned(),
            attrs => format!("no host fits target_session_attrs={attrs}"),
        };
        Ok(Err(format!("{what}: {}", reasons.join(", "))))
    }

    /// Makes host `i` the target of new connections.
    fn choose(&self, i: usize) {
        let before = self.chosen.swap(i, Ordering::Relaxed);
        if before == i {
            return;
        }
        // Connections made to the old host while the search ran are stale too.
        self.mark_stale();
        if let Some(pool) = &*self.pool.lock().unwrap_or_else(|e| e.into_inner()) {
            pool.set_connect_options(self.options(i));
        }
        tracing::info!(
            from = %self.name(before),
            to = %self.name(i),
            "new database connections go to another host"
        );
    }

    /// Connects to host `i` and checks it against `wanted`.
    async fn probe(&self, i: usize, wanted: TargetSessionAttrs) -> Result<(), Skipped> {
        let s = &self.settings;
        let mut conn = connect(s, &self.options(i), &self.name(i)).await?;
        let fits = check(&mut conn, wanted).await;
        let _ = conn.close().await;
        match fits {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Skipped::soft(why.to_owned())),
            Err(e) => Err(Skipped::soft(scrub(
                &e.to_string(),
                s.url.password().as_deref(),
            ))),
        }
    }

    /// Whether the pool was closed (the search then stops).
    fn closed(&self) -> bool {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.as_ref().is_none_or(PgPool::is_closed)
    }
}

/// Searches until a host fits, the pool closes, or the [`Failover`] is dropped.
async fn search_until_found(weak: Weak<Failover>) {
    let mut warned = false;
    loop {
        let Some(this) = weak.upgrade() else { return };
        if this.closed() {
            this.searching.store(false, Ordering::Release);
            return;
        }
        match this.find().await {
            Ok(Ok(())) => {
                this.searching.store(false, Ordering::Release);
                return;
            }
            Ok(Err(reason)) if !warned => {
                warned = true;
                tracing::warn!("{reason}; trying again");
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!("{e}; trying again");
            }
            _ => {}
        }
        drop(this);
        tokio::time::sleep(SEARCH_PAUSE).await;
    }
}

/// Whether the server of `conn` fits `wanted`: `Ok(Err(why))` names what it
/// is instead (`read-only`, `read-write`, `standby`, `primary`).
async fn check(
    conn: &mut PgConnection,
    wanted: TargetSessionAttrs,
) -> sqlx::Result<std::result::Result<(), &'static str>> {
    use TargetSessionAttrs::*;
    let fits = match wanted {
        Any | PreferStandby => return Ok(Ok(())),
        ReadWrite | ReadOnly => {
            let row = sqlx::raw_sql("SHOW transaction_read_only")
                .fetch_one(&mut *conn)
                .await?;
            let read_only = row.try_get::<String, _>(0)? == "on";
            match (wanted, read_only) {
                (ReadWrite, true) => Err("read-only"),
                (ReadOnly, false) => Err("read-write"),
                _ => Ok(()),
            }
        }
        Primary | Standby => {
            let row = sqlx::raw_sql("SELECT pg_is_in_recovery()")
                .fetch_one(&mut *conn)
                .await?;
            let standby = row.try_get::<bool, _>(0)?;
            match (wanted, standby) {
                (Primary, true) => Err("standby"),
                (Standby, false) => Err("primary"),
                _ => Ok(()),
            }
        }
    };
    Ok(fits)
}

/// What one server of a URL is, as [`host_status`] found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Not in recovery: it takes writes (unless `default_transaction_read_only`).
    Primary,
    /// In recovery, replaying `lag` behind (zero when it replayed all it
    /// received; `None` when unknown).
    Standby {
        /// How far its replay is behind.
        lag: Option<Duration>,
    },
    /// It could not be reached or refused us; why.
    Unreachable(String),
}

/// One server of the primary URL or of a replica URL.
#[derive(Debug, Clone)]
pub struct HostStatus {
    /// `primary`, or `replica1`, `replica2`, ... in the order of the replica list.
    pub url: String,
    /// `host:port`, or the socket directory.
    pub host: String,
    /// What it is now.
    pub role: Role,
}

/// Each server of each PostgreSQL URL of `s` (the primary's, then the
/// replicas'), connected to once: its role, a standby's replay lag, or why
/// it could not be reached. Empty on MySQL and SQLite.
pub async fn host_status(s: &Settings) -> Vec<HostStatus> {
    let urls = std::iter::once(("primary".to_owned(), &s.url))
        .chain((s.replicas.iter().enumerate()).map(|(i, url)| (format!("replica{}", i + 1), url)));
    let mut found = Vec::new();
    for (label, url) in urls {
        let mut one = s.clone();
        one.url = url.clone();
        let Ok(Options::Postgres(base)) = Options::new(&one) else {
            continue;
        };
        let hosts = match url.hosts() {
            Some(hosts) => (hosts.list.iter())
                .map(|(host, port)| (host_text(host, *port), base.clone().host(host).port(*port)))
                .collect(),
            None => vec![(
                url.target()
                    .trim_start_matches("postgres ")
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                base,
            )],
        };
        for (host, options) in hosts {
            let role = match connect(&one, &options, &host).await {
                Ok(mut conn) => {
                    let role = role(&mut conn).await;
                    let _ = conn.close().await;
                    role.unwrap_or_else(|e| {
                        Role::Unreachable(scrub(&e.to_string(), url.password().as_deref()))
                    })
                }
                Err(skipped) => Role::Unreachable(skipped.reason),
            };
            found.push(HostStatus {
                url: label.clone(),
                host,
                role,
            });
        }
    }
    found
}

/// Whether the server of `conn` is in recovery, and its lag if so.
async fn role(conn: &mut PgConnection) -> sqlx::Result<Role> {
    let sql =
        format!("SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN {REPLAY_LAG} END");
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?;
    Ok(match row.try_get::<bool, _>(0)? {
        false => Role::Primary,
        true => Role::Standby {
            lag: row
                .try_get::<Option<f64>, _>(1)?
                .map(|s| Duration::from_secs_f64(s.max(0.0))),
        },
    })
}

/// A standby's replay lag in seconds: zero when it replayed everything it
/// received, else the age of the last transaction it replayed.
pub(crate) const REPLAY_LAG: &str = "(CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
    ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END)::float8";
