//! Host lists on PostgreSQL: which server new connections go to, and
//! following a failover.
//!
//! sqlx connects a pool to one set of options. The pool's options point at
//! the host chosen last; each new connection checks `target_session_attrs`
//! right after connecting (one query), and a connection to a server that does
//! not fit is refused, which makes sqlx back off and read the options again.
//! A refused connection, or an error that means the server went away, turned
//! read-only or stopped answering, starts a search in the background, and
//! the pool's options move to the first host found to fit. The search probes
//! every host at once, each again every few hundred milliseconds while none
//! fits, so a host that does not answer (a paused primary, whose connection
//! attempts wait out `DB_CONNECT_TIMEOUT`) holds up none of the others: the
//! pool follows a newly promoted primary within one probe of its promotion.
//! Pooled connections older than the last failover are dropped when they
//! are next checked out. A wait for a pooled connection that ends without
//! one starts a search too (the chosen host may take no connections), but
//! is no failover by itself: a busy pool keeps its connections unless the
//! search moves it to another host. At startup the hosts are tried in
//! order instead (shuffled with `load_balance_hosts=random`), as libpq does.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use sea_orm::DbErr;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sea_orm::sqlx::{self, ConnectOptions, Connection, Row};
use tokio::sync::Notify;

use crate::connect::{Options, transient_reason};
use crate::error::{Error, Result, scrub};
use crate::settings::Settings;
use crate::url::{LoadBalanceHosts, TargetSessionAttrs, host_text};

/// How long a search waits before probing a host again while none fits
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
    /// Wakes the work that waits for a search to end.
    searched: Notify,
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
    /// The server answered; it is just not what was wanted.
    answered: bool,
}

impl Skipped {
    fn soft(reason: String) -> Self {
        Skipped {
            reason,
            hard: None,
            answered: false,
        }
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
                    answered: false,
                },
            })
        }
        Err(_) => Err(Skipped::soft("timed out".to_owned())),
    }
}

/// Connects to the server of `options` (shown as `target`) and checks it
/// against `wanted`; the check waits for an answer no longer than the
/// connection did.
async fn probe(
    s: &Settings,
    options: &PgConnectOptions,
    target: &str,
    wanted: TargetSessionAttrs,
) -> Result<(), Skipped> {
    let mut conn = connect(s, options, target).await?;
    let fits = tokio::time::timeout(s.connect_timeout, check(&mut conn, wanted)).await;
    let _ = conn.close().await;
    match fits {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(Skipped {
            answered: true,
            ..Skipped::soft(why.to_owned())
        }),
        Ok(Err(e)) => Err(Skipped::soft(scrub(&e.to_string(), &s.url.secrets()))),
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
            searched: Notify::new(),
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

    /// What the error `e` of work on the pool says: a server that went
    /// away, turned read-only or stopped answering is a failover
    /// ([`Failover::detected`]). No free connection in time may as well be a
    /// busy pool as a server that takes no connections: that starts a search
    /// (which moves the pool, and drops its connections, only if another
    /// host fits), but marks no connection stale, since closing and
    /// reopening them all would add to the load.
    pub(crate) fn saw(self: &Arc<Self>, e: &DbErr) {
        if Error::pool_timeout(e) {
            self.search();
        } else if Error::unreachable(e) {
            self.detected();
        }
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

    /// The search ended: work waiting for it goes on.
    fn searched(&self) {
        self.searching.store(false, Ordering::Release);
        self.searched.notify_waiters();
    }

    /// Waits, for at most the acquire timeout, while a search is under way:
    /// until it ends, new connections would go to the host that failed,
    /// which may not answer at all (a paused primary), and each attempt
    /// would hold a pool permit for the whole acquire timeout. Whether no
    /// search is under way (any more).
    pub(crate) async fn searched_in_time(&self) -> bool {
        let deadline = Instant::now() + self.settings.acquire_timeout;
        loop {
            // Registered before the flag is read, so that no end is missed.
            let ended = self.searched.notified();
            if !self.searching.load(Ordering::Acquire) {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), ended)
                .await
                .is_err()
            {
                return false;
            }
        }
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
        Ok(Err(format!("{}: {}", self.none_fits(), reasons.join(", "))))
    }

    /// What it means that no host fits.
    fn none_fits(&self) -> String {
        match self.attrs {
            TargetSessionAttrs::Any => "no host answered".to_owned(),
            attrs => format!("no host fits target_session_attrs={attrs}"),
        }
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
        probe(&self.settings, &self.options(i), &self.name(i), wanted).await
    }

    /// Whether the pool was closed (the search then stops).
    fn closed(&self) -> bool {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.as_ref().is_none_or(PgPool::is_closed)
    }
}

/// Searches until a host fits, the pool closes, or the [`Failover`] is
/// dropped: every host is probed at once, and each again [`SEARCH_PAUSE`]
/// after its last probe ended, so a host whose probe waits out the connect
/// timeout holds up no other. The first host found to fit is chosen. With
/// `prefer-standby`, a standby is wanted; once every host has been probed
/// and none is a standby, the first that answered is chosen.
async fn search_until_found(weak: Weak<Failover>) {
    let Some(hosts) = weak.upgrade().map(|f| f.hosts.len()) else {
        return;
    };
    let mut probes = tokio::task::JoinSet::new();
    let mut probing = vec![false; hosts];
    let mut due = vec![Instant::now(); hosts];
    let mut last: Vec<Option<Skipped>> = (0..hosts).map(|_| None).collect();
    let mut warned = false;
    loop {
        let Some(this) = weak.upgrade() else { return };
        if this.closed() {
            this.searched();
            return;
        }
        let wanted = match this.attrs {
            TargetSessionAttrs::PreferStandby => TargetSessionAttrs::Standby,
            attrs => attrs,
        };
        let now = Instant::now();
        for i in 0..hosts {
            if probing[i] || due[i] > now {
                continue;
            }
            probing[i] = true;
            // The probe holds no reference to the failover, so that it can
            // be dropped (with its pool) while a probe waits.
            let (s, options, target) = (this.settings.clone(), this.options(i), this.name(i));
            probes.spawn(async move { (i, probe(&s, &options, &target, wanted).await) });
        }
        let next = (0..hosts).filter(|&i| !probing[i]).map(|i| due[i]).min();
        let attrs = this.attrs;
        drop(this);
        let found = tokio::select! {
            Some(Ok((i, result))) = probes.join_next() => {
                probing[i] = false;
                due[i] = Instant::now() + SEARCH_PAUSE;
                match result {
                    Ok(()) => Some(i),
                    Err(skipped) => {
                        last[i] = Some(skipped);
                        None
                    }
                }
            }
            () = sleep_until_or_forever(next) => None,
        };
        let Some(this) = weak.upgrade() else { return };
        let everyone = last.iter().all(Option::is_some);
        let fallback = (attrs == TargetSessionAttrs::PreferStandby && everyone)
            .then(|| {
                last.iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.answered))
            })
            .flatten();
        if let Some(i) = found.or(fallback) {
            this.choose(i);
            this.searched();
            return;
        }
        if everyone && !warned {
            warned = true;
            let reasons: Vec<String> = (last.iter().enumerate())
                .filter_map(|(i, s)| Some(format!("{} {}", this.name(i), s.as_ref()?.reason)))
                .collect();
            tracing::warn!("{}: {}; trying again", this.none_fits(), reasons.join(", "));
        }
    }
}

/// Sleeps until `at`, or forever when there is no such moment.
async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
                // The question waits no longer than the connection did: a
                // server that took the login (a pooler's) may never answer.
                Ok(mut conn) => {
                    let role = tokio::time::timeout(one.connect_timeout, role(&mut conn)).await;
                    let _ = conn.close().await;
                    match role {
                        Ok(Ok(role)) => role,
                        Ok(Err(e)) => Role::Unreachable(scrub(&e.to_string(), &url.secrets())),
                        Err(_) => Role::Unreachable(format!(
                            "no answer within {} (DB_CONNECT_TIMEOUT)",
                            humantime::format_duration(one.connect_timeout)
                        )),
                    }
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
