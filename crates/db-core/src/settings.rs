//! Typed settings: serde structs read through the `config` crate in layers
//! (built-in defaults < the binary's own defaults < `config/default.toml` <
//! `config/{APP_ENV}.toml` < `.env` < the environment) and then checked.
//! Each setting is one field: its doc comment is its documentation, and its
//! `schemars` attribute holds its default, an example and what it expects;
//! README.md's table and `.env.example` are generated from them
//! ([`documented`]). A service's own settings are a [`Section`] of the same
//! layers.

use std::net::Ipv6Addr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use schemars::JsonSchema;
use sea_orm::DbBackend;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::Value as Json;
use serde_with::{DeserializeAs, DisplayFromStr};

use crate::error::{Result, bail};
use crate::source::{Given, Source, quoted};
pub use crate::source::{Section, SettingInfo};
use crate::url::backend_name;
use crate::url::{self, DatabaseUrl, LoadBalanceHosts, Parts, SslMode, TargetSessionAttrs};

const NONZERO: &str =
    "a duration greater than zero with a unit, like 5s, 500ms or 2m, up to 24 days";
const OR_OFF: &str = "a duration with a unit, like 5s, 500ms or 2m, up to 24 days, or off";
const URL: &str = "a postgres://, mysql:// or sqlite: URL";

/// The longest duration a setting takes: PostgreSQL's timeouts are a
/// 32-bit count of milliseconds (24 days and 20 hours).
const LONGEST: Duration = Duration::from_millis(i32::MAX as u64);

/// A duration with a unit (`500ms`, `2m`) greater than zero.
mod nonzero {
    use super::*;
    pub(super) use humantime_serde::serialize;
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        or_off::deserialize(d)?.ok_or_else(|| D::Error::custom("zero"))
    }
}

/// A duration with a unit (`500ms`, `2m`) up to [`LONGEST`]; `off` or zero is `None`.
mod or_off {
    use super::*;
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match String::deserialize(d)?.as_str() {
            "off" => Ok(None),
            text => match humantime::parse_duration(text).map_err(D::Error::custom)? {
                d if d > LONGEST => Err(D::Error::custom("too long")),
                d => Ok(Some(d).filter(|d| !d.is_zero())),
            },
        }
    }
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_str("off"),
        }
    }
}

/// A log level shown in lower case (`describe`); it is read by name in any case.
fn lower_case<S: Serializer>(level: &LevelFilter, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&level.as_str().to_lowercase())
}

/// A path shown as text (`describe`), lossily if it is not UTF-8.
fn shown_path<S: Serializer>(path: &Option<PathBuf>, s: S) -> std::result::Result<S::Ok, S::Error> {
    path.as_ref().map(|p| p.display().to_string()).serialize(s)
}

/// How the database is given; [`Settings::load`] combines these into URLs.
#[derive(Deserialize, JsonSchema)]
struct Connection {
    /// A `postgres://`, `mysql://` or `sqlite:` URL; wins over the `DB_*` parts (with a warning).
    #[schemars(extend("var" = "DATABASE_URL", "example" = "postgres://u:p@db:5432/app", "expects" = URL))]
    url: Option<String>,
    /// PostgreSQL host name, IP address (`::1`) or socket directory (`/var/run/postgresql`);
    /// or several hosts, comma-separated, tried as libpq does (see `DB_TARGET_SESSION_ATTRS`).
    #[schemars(extend("example" = "db.internal", "expects" = "a host name, an IP address or a socket directory (a port goes in DB_PORT)"))]
    host: Option<String>,
    /// PostgreSQL port; with several hosts in `DB_HOST`, one port for all or one per host,
    /// comma-separated.
    #[schemars(extend("default" = "5432", "example" = "6432", "expects" = "a port number 1-65535"))]
    port: String,
    /// Which server of a host list a connection may use: `any`, `read-write`, `read-only`,
    /// `primary`, `standby` or `prefer-standby` (libpq's `target_session_attrs`; the URL
    /// parameter of that name is the same setting). Checked on each new connection.
    #[schemars(with = "String", extend("example" = "read-write", "expects" = "any, read-write, read-only, primary, standby or prefer-standby"))]
    target_session_attrs: Option<TargetSessionAttrs>,
    /// The order a host list is tried in: `disable` (as given) or `random` (libpq's
    /// `load_balance_hosts`, also a URL parameter).
    #[schemars(with = "String", extend("example" = "random", "expects" = "disable or random"))]
    load_balance_hosts: Option<LoadBalanceHosts>,
    /// Database name.
    #[schemars(extend("example" = "app", "expects" = "a database name"))]
    name: Option<String>,
    /// User name.
    #[schemars(extend("example" = "app", "expects" = "a user name"))]
    user: Option<String>,
    /// Password; any characters (percent-encoded for you).
    #[schemars(with = "String", extend("example" = "p@ss:w/rd?#%&=", "expects" = ""))]
    pass: Option<SecretString>,
    /// Read replicas, comma-separated URLs (each may be a host list, e.g. with
    /// `target_session_attrs=standby`); read-only sessions (the GET routes) go there
    /// round-robin, skipping one that is down.
    #[schemars(extend("example" = "postgres://u:p@replica1/app,postgres://u:p@replica2/app", "expects" = "URLs, comma-separated"))]
    replica_urls: Option<String>,
    /// Read replicas as `host[:port]`, comma-separated, with the primary's user, password
    /// and database (instead of `DB_REPLICA_URLS`).
    #[schemars(extend("example" = "replica1,replica2:5433", "expects" = "host or host:port, comma-separated"))]
    replica_hosts: Option<String>,
    /// Where migrations connect instead of `DATABASE_URL`, e.g. straight to the primary
    /// when the application goes through a pooler.
    #[schemars(extend("example" = "postgres://u:p@primary:5432/app", "expects" = URL))]
    migration_url: Option<String>,
}

/// Pools, timeouts and sessions: every setting that is not the database's
/// address. [`Settings`] dereferences to it, so `settings.max_connections`
/// reads and writes these fields.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[non_exhaustive]
pub struct Options {
    /// Upper bound of pooled connections.
    #[schemars(range(min = 1, max = 10_000))]
    #[schemars(extend("default" = "10", "example" = "16", "expects" = "a whole number 1-10000"))]
    pub max_connections: u32,
    /// Connections kept open when idle.
    #[schemars(range(max = 10_000))]
    #[schemars(extend("default" = "1", "example" = "0", "expects" = "a whole number 0-10000"))]
    pub min_connections: u32,
    /// Time allowed for one connection attempt.
    #[serde(with = "nonzero")]
    #[schemars(with = "String", extend("default" = "5s", "example" = "2s", "expects" = NONZERO))]
    pub connect_timeout: Duration,
    /// How long connecting retries a server that is not up yet, with exponential
    /// backoff; `off` or `0s`: one attempt.
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "30s", "example" = "2m", "expects" = OR_OFF))]
    pub connect_deadline: Option<Duration>,
    /// How long a caller waits for a free pooled connection; then HTTP 503.
    #[serde(with = "nonzero")]
    #[schemars(with = "String", extend("default" = "5s", "example" = "1s", "expects" = NONZERO))]
    pub acquire_timeout: Duration,
    /// How long a caller waits for the server's answer to one statement (or `BEGIN`, `COMMIT`,
    /// `ROLLBACK`) once it has a connection, also when the server stopped answering with the
    /// connection still open (a paused machine, a dropped network path); then HTTP 503, and the
    /// connection is closed, never reused. So no request waits on the database for longer than
    /// `DB_ACQUIRE_TIMEOUT` plus this (on a host list: `DB_FAILOVER_TIMEOUT` plus this). Keep it
    /// above the slowest statement of a request; `DB_STATEMENT_TIMEOUT` stays the server's own bound.
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "2s", "example" = "10s", "expects" = OR_OFF, "applies" = "server"))]
    pub operation_timeout: Option<Duration>,
    /// Idle connections above `min_connections` are closed after this.
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "10m", "example" = "off", "expects" = OR_OFF))]
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this age.
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "30m", "example" = "off", "expects" = OR_OFF))]
    pub max_lifetime: Option<Duration>,
    /// A pooled connection idle for this long is pinged before use (not on every checkout).
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "30s", "example" = "off", "expects" = OR_OFF))]
    pub ping_after_idle: Option<Duration>,
    /// With a host list or `target_session_attrs`: how long work is tried again, on a fresh
    /// connection, after the server went away, turned read-only or stopped answering (a
    /// failover), counted from the start of the work: a unit of work of the retrying
    /// transaction helper, and a read routed to a host list; then HTTP 503. It bounds how long
    /// such a request waits: a failover that takes longer reaches clients as 503s.
    #[serde(with = "nonzero")]
    #[schemars(with = "String", extend("default" = "5s", "example" = "30s", "expects" = NONZERO, "applies" = "postgres"))]
    pub failover_timeout: Duration,
    /// PostgreSQL `statement_timeout` (migrations run without it).
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "30s", "example" = "off", "expects" = OR_OFF, "applies" = "postgres"))]
    pub statement_timeout: Option<Duration>,
    /// PostgreSQL `lock_timeout`: a statement that waits longer for a lock fails instead of
    /// queueing (and holding up everyone queued behind it).
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "off", "example" = "10s", "expects" = OR_OFF, "applies" = "postgres"))]
    pub lock_timeout: Option<Duration>,
    /// PostgreSQL `idle_in_transaction_session_timeout`: a session left idle inside a
    /// transaction for longer is ended, releasing its locks and its snapshot.
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "off", "example" = "1m", "expects" = OR_OFF, "applies" = "postgres"))]
    pub idle_in_transaction_timeout: Option<Duration>,
    /// PostgreSQL `tcp_keepalives_idle`: after this long without traffic the server probes
    /// the connection, so a client that vanished (its host crashed, the network dropped)
    /// is noticed within minutes and its session ends, releasing its locks; `off`: the
    /// operating system's default, often two hours.
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "off", "example" = "1m", "expects" = OR_OFF, "applies" = "postgres"))]
    pub tcp_keepalive: Option<Duration>,
    /// PostgreSQL `lock_timeout` (MySQL `lock_wait_timeout`, in whole seconds) of every
    /// migration statement: a schema change that waits longer for its lock (behind a long
    /// transaction) stops, so that the queries queued behind it go on, and is tried again
    /// until `DB_MIGRATION_DEADLINE`.
    #[serde(with = "nonzero")]
    #[schemars(with = "String", extend("default" = "1s", "example" = "3s", "expects" = NONZERO, "applies" = "server"))]
    pub migration_lock_timeout: Duration,
    /// How long a migration stopped by `DB_MIGRATION_LOCK_TIMEOUT` is tried again, with
    /// jittered backoff, before it gives up naming the sessions in its way.
    #[serde(with = "nonzero")]
    #[schemars(with = "String", extend("default" = "1m", "example" = "10m", "expects" = NONZERO, "applies" = "server"))]
    pub migration_deadline: Duration,
    /// PostgreSQL `lock_timeout` of `CREATE INDEX CONCURRENTLY` in migrations, which waits
    /// for every transaction older than itself (writes go on meanwhile). A build that
    /// times out is tried again only within `DB_MIGRATION_DEADLINE` (with the defaults: not).
    #[serde(with = "nonzero")]
    #[schemars(with = "String", extend("default" = "10m", "example" = "1h", "expects" = NONZERO, "applies" = "postgres"))]
    pub migration_index_timeout: Duration,
    /// PostgreSQL `search_path`, comma-separated schemas; the server's default when unset.
    #[schemars(extend("example" = "app,public", "expects" = "schema names separated by commas", "applies" = "postgres", "unset" = "(server default)"))]
    pub schema: Option<String>,
    /// PostgreSQL `application_name` (a URL parameter wins, then libpq's `PGAPPNAME`).
    #[schemars(extend("example" = "app-worker", "expects" = "at most 63 printable ASCII characters", "applies" = "postgres"))]
    pub application_name: Option<String>,
    /// TLS mode: `disable`, `prefer`, `require` or `verify-full`; when unset, the URL's
    /// `sslmode`, else `prefer`, except to a server on this machine (`localhost`, a loopback
    /// address, a socket), which is reached without TLS.
    #[schemars(with = "String", extend("example" = "verify-full", "expects" = "disable, prefer, require or verify-full", "applies" = "server", "unset" = "(from URL, default prefer; none locally)"))]
    pub ssl_mode: Option<SslMode>,
    /// CA certificate file for `verify-full`.
    #[serde(serialize_with = "shown_path")]
    #[schemars(extend("example" = "/etc/ssl/db-ca.pem", "expects" = "an existing file", "applies" = "server"))]
    pub ssl_root_cert: Option<PathBuf>,
    /// Prepared statements cached per connection (`0`: off). Off is not enough for a
    /// transaction pooler, where sqlx's statement names collide: use `DB_TRANSACTION_POOLER`.
    #[schemars(range(max = 100_000))]
    #[schemars(extend("default" = "100", "example" = "0", "expects" = "a whole number 0-100000", "applies" = "server"))]
    pub statement_cache_capacity: usize,
    /// How long SQLite waits for a lock held by another connection.
    #[serde(with = "nonzero")]
    #[schemars(with = "String", extend("default" = "5s", "example" = "30s", "expects" = NONZERO, "applies" = "sqlite"))]
    pub sqlite_busy_timeout: Duration,
    /// Level at which every statement is logged (`off`, `error`, `warn`, `info`, `debug`, `trace`).
    #[serde(
        deserialize_with = "DisplayFromStr::deserialize_as",
        serialize_with = "lower_case"
    )]
    #[schemars(with = "String", extend("default" = "debug", "example" = "info", "expects" = "off, error, warn, info, debug or trace"))]
    pub log_statements: LevelFilter,
    /// Statements slower than this are logged at `warn`.
    #[serde(with = "or_off")]
    #[schemars(with = "String", extend("default" = "1s", "example" = "200ms", "expects" = OR_OFF))]
    pub slow_statement_threshold: Option<Duration>,
    /// The server is reached through a transaction-pooling PgBouncer: every session is a
    /// transaction that starts by dropping prepared statements left on the shared server
    /// connection, the statement cache is off, and `statement_timeout` and `search_path`
    /// are set per transaction.
    #[schemars(extend("default" = "false", "example" = "true", "expects" = "true or false"))]
    pub transaction_pooler: bool,
}

impl Connection {
    /// The first field, if any, whose value parses but is not valid.
    fn invalid(&self) -> Option<&'static str> {
        // Each of a list: a name or an IP address (a colon only in an IPv6
        // one: a port goes in DB_PORT), or a socket directory; without what
        // a URL's host cannot hold.
        let host = |h: &str| {
            !h.contains(|c: char| c.is_whitespace() || c.is_control() || "@?#<>[]\\^|%".contains(c))
                && (h.starts_with('/') || !h.contains('/'))
                && h.split(',').all(|h| {
                    let h = h.trim();
                    h.starts_with('/') || !h.contains(':') || h.parse::<Ipv6Addr>().is_ok()
                })
        };
        [
            ("host", self.host.as_deref().is_some_and(|h| !host(h))),
            ("port", url::ports(&self.port).is_none()),
        ]
        .into_iter()
        .find_map(|(key, bad)| bad.then_some(key))
    }
}

impl Options {
    /// The first field, if any, whose value parses but is not valid (the
    /// ranges of numbers are declared with the fields).
    fn invalid(&self) -> Option<&'static str> {
        let printable =
            |s: &str| s.len() <= 63 && s.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        let schema = |s: &str| s.split(',').all(|p| !p.trim().is_empty());
        [
            ("schema", self.schema.as_deref().is_some_and(|s| !schema(s))),
            (
                "application_name",
                self.application_name
                    .as_deref()
                    .is_some_and(|s| !printable(s)),
            ),
            (
                "ssl_root_cert",
                self.ssl_root_cert.as_deref().is_some_and(|p| !p.is_file()),
            ),
        ]
        .into_iter()
        .find_map(|(key, bad)| bad.then_some(key))
    }

    /// The PostgreSQL session parameters that these options set, by the
    /// server's name, in whole milliseconds (rounded up: `500us` is 1 ms,
    /// where 0 would mean off): those that are on.
    pub(crate) fn session_parameters(&self) -> impl Iterator<Item = (&'static str, u128)> {
        [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout,
            ),
            ("tcp_keepalives_idle", self.tcp_keepalive),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?.as_nanos().div_ceil(1_000_000))))
    }
}

/// Every setting db-core reads, in the order of README.md's table: how the
/// database is given, then the options. Binaries' tests generate README.md's
/// configuration table and `.env.example` from it.
pub fn documented() -> Vec<SettingInfo> {
    let mut all = SettingInfo::of::<Connection>("DB_");
    all.extend(SettingInfo::of::<Options>("DB_"));
    all
}

/// Everything db-core needs to connect. Build it with [`Settings::load`], or
/// with [`Settings::new`] and field updates (the [`Options`] fields through
/// `Deref`).
///
/// `Debug` never shows the password: the URLs are [`DatabaseUrl`]s.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// The database to connect to (`DATABASE_URL`, or the `DB_*` parts).
    pub url: DatabaseUrl,
    /// Read replicas (`DB_REPLICA_URLS`, or `DB_REPLICA_HOSTS` with the
    /// primary's credentials); read-only sessions go to them.
    pub replicas: Vec<DatabaseUrl>,
    /// Where migrations connect instead of `url` (`DB_MIGRATION_URL`).
    pub migration_url: Option<DatabaseUrl>,
    options: Options,
    warnings: Vec<String>,
}

impl Deref for Settings {
    type Target = Options;

    fn deref(&self) -> &Options {
        &self.options
    }
}

impl DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut Options {
        &mut self.options
    }
}

impl Settings {
    /// Settings for `url` with every other field at its built-in default.
    pub fn new(url: DatabaseUrl) -> Self {
        let (options, _) = Source::new()
            .config_dir("/nonexistent")
            .read::<Options>("", &documented())
            // The defaults are constants of the declarations, read by every test that loads settings.
            .expect("the built-in defaults are valid");
        Settings {
            url,
            replicas: Vec::new(),
            migration_url: None,
            options,
            warnings: Vec::new(),
        }
    }

    /// Loads settings from `source`: built-in defaults, then the binary's
    /// own ([`Source::default_value`]), then `config/default.toml`, then
    /// `config/{APP_ENV}.toml` (both optional), then the variables. Every
    /// problem is an [`crate::Error::Config`] naming the setting.
    pub fn load(source: &Source) -> Result<Self> {
        let all = documented();
        let (connection, given) = source.read::<Connection>("", &all)?;
        let (options, _) = source.read::<Options>("", &all)?;
        if let Some(key) = connection.invalid().or_else(|| options.invalid()) {
            return Err(given.invalid(&all, key));
        }
        let mut warnings: Vec<String> = (source.names())
            .filter(|name| name.starts_with("DB_") && !all.iter().any(|s| s.var == **name))
            .map(|name| format!("{name} is not a setting of ours and is ignored (see the configuration table in README.md)"))
            .collect();
        let url = database_url(&connection, &given, &mut warnings)?;
        let backend = url.backend();
        let replicas = replicas(&connection, &given, &url)?;
        let origin = given.origin("migration_url");
        let migration_url = (connection.migration_url.as_deref())
            .map(|u| DatabaseUrl::parse(u.trim(), origin))
            .transpose()?;
        let name = backend_name(backend);
        for s in all.iter().filter(|s| !s.applies_to(backend)) {
            let Some(origin) = given.given(&s.key) else {
                continue;
            };
            warnings.push(match s.applies.as_str() {
                "server" => format!("{origin} does not apply to SQLite and is ignored"),
                "postgres" => {
                    format!("{origin} applies to PostgreSQL only and is ignored for {name}")
                }
                _ => format!("{origin} applies to SQLite only and is ignored for {name}"),
            });
        }
        let s = Settings {
            url,
            replicas,
            migration_url,
            options,
            warnings,
        };
        if s.min_connections > s.max_connections {
            let [min, max] = ["min_connections", "max_connections"].map(|k| given.origin(k));
            let (n, m) = (s.min_connections, s.max_connections);
            bail!("{min}={n}: must not exceed the maximum pool size {m} ({max})");
        }
        if s.transaction_pooler && backend != DbBackend::Postgres {
            let (origin, name) = (given.origin("transaction_pooler"), backend_name(backend));
            bail!("{origin}: transaction pooling is for PostgreSQL (PgBouncer), not {name}");
        }
        if let Some(url) = s.migration_url.as_ref().filter(|u| u.backend() != backend) {
            let (url, backend) = (backend_name(url.backend()), backend_name(backend));
            bail!("{origin}: a {url} URL, but the database is {backend}");
        }
        for warning in &s.warnings {
            tracing::warn!("{warning}");
        }
        Ok(s)
    }

    /// Problems that did not stop loading (ignored or unknown variables). They
    /// are also logged at `warn` when the settings are loaded.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `(setting, value)` rows describing these settings, password redacted, for
    /// `db check` and startup logs: the options that apply to this backend.
    pub fn describe(&self) -> Vec<(String, String)> {
        let backend = self.url.backend();
        // Each field's serializer is infallible: numbers, booleans, text.
        let values = serde_json::to_value(&self.options).expect("options serialize");
        let mut rows = vec![
            ("backend".to_owned(), backend_name(backend).to_owned()),
            ("url".to_owned(), self.url.redacted()),
        ];
        rows.extend(
            (SettingInfo::of::<Options>("DB_").into_iter())
                .filter(|s| s.applies_to(backend))
                .map(|s| match &values[&s.key] {
                    Json::String(text) => (s.key, text.clone()),
                    Json::Null => (s.key, s.unset),
                    value => (s.key, value.to_string()),
                }),
        );
        let migration =
            (self.migration_url.as_ref()).map_or("(none)".to_owned(), DatabaseUrl::redacted);
        rows.push(("migration_url".to_owned(), migration));
        rows.extend((self.replicas.iter()).map(|r| ("replica".to_owned(), r.redacted())));
        rows
    }
}

/// `DATABASE_URL`, else the `DB_*` parts, else the binary's default URL;
/// with `DB_TARGET_SESSION_ATTRS` and `DB_LOAD_BALANCE_HOSTS`.
fn database_url(c: &Connection, given: &Given, warnings: &mut Vec<String>) -> Result<DatabaseUrl> {
    let url = url_or_parts(c, given, warnings)?;
    let hosts = url.hosts();
    let session = [
        (
            "target_session_attrs",
            c.target_session_attrs.map(<&str>::from),
            hosts.and_then(|h| h.attrs).map(<&str>::from),
        ),
        (
            "load_balance_hosts",
            c.load_balance_hosts.map(<&str>::from),
            hosts.and_then(|h| h.balance).map(<&str>::from),
        ),
    ];
    for (key, value, in_url) in session {
        let Some(value) = value else { continue };
        let origin = given.origin(key);
        if url.backend() != DbBackend::Postgres {
            let backend = backend_name(url.backend());
            bail!("{origin}: applies to a PostgreSQL host list, not {backend}");
        }
        if let Some(in_url) = in_url.filter(|u| *u != value) {
            let url_origin = given.origin("url");
            bail!("{origin}=\"{value}\" and {key}={in_url} in {url_origin} differ: give one");
        }
    }
    Ok(url.with_session(c.target_session_attrs, c.load_balance_hosts))
}

/// `DATABASE_URL`, else the `DB_*` parts, else the binary's default URL.
fn url_or_parts(c: &Connection, given: &Given, warnings: &mut Vec<String>) -> Result<DatabaseUrl> {
    let set = ["host", "port", "name", "user", "pass"]
        .into_iter()
        .filter_map(|k| given.given(k));
    let set = set.collect::<Vec<_>>().join(", ");
    if let (Some(url), Some(origin)) = (&c.url, given.given("url")) {
        if !set.is_empty() {
            let verb = if set.contains(',') { "are" } else { "is" };
            warnings.push(format!("{origin} is set, so {set} {verb} ignored"));
        }
        return DatabaseUrl::parse(url.trim(), origin);
    }
    if set.is_empty() {
        return match &c.url {
            Some(url) => DatabaseUrl::parse(url, "the default database"),
            None => bail!(
                "no database is configured: set DATABASE_URL, or DB_HOST, DB_NAME, DB_USER and DB_PASS"
            ),
        };
    }
    let required = |value: &Option<String>, key: &str| match value {
        Some(value) => Ok(value.clone()),
        None => bail!(
            "DB_{} is not set: it is required with {set} (or set DATABASE_URL)",
            key.to_uppercase()
        ),
    };
    let host = required(&c.host, "host")?;
    let hosts = url::host_list(
        (&host, given.origin("host")),
        (&c.port, given.origin("port")),
    )?;
    Ok(DatabaseUrl::from_parts(&Parts {
        hosts: &hosts,
        database: &required(&c.name, "name")?,
        user: &required(&c.user, "user")?,
        password: &c.pass.clone().unwrap_or_default(),
    }))
}

/// Replica URLs from `DB_REPLICA_URLS` or `DB_REPLICA_HOSTS` (not both),
/// for the same kind of server as `primary`.
fn replicas(c: &Connection, given: &Given, primary: &DatabaseUrl) -> Result<Vec<DatabaseUrl>> {
    let [urls, hosts] = ["replica_urls", "replica_hosts"].map(|k| given.origin(k));
    let (list, origin) = match (&c.replica_urls, &c.replica_hosts) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some(_)) => bail!("{urls} and {hosts} are both set: use one"),
        (Some(list), None) => (list, urls),
        (None, Some(list)) => (list, hosts),
    };
    if primary.backend() == DbBackend::Sqlite {
        bail!("{origin}: read replicas need a PostgreSQL or MySQL primary, not SQLite");
    }
    let (by_host, want) = (c.replica_hosts.is_some(), backend_name(primary.backend()));
    let replica = |item: &str| {
        if item.is_empty() {
            bail!("{origin}: an empty entry in the list");
        }
        let url = match by_host {
            true => primary.with_host(item),
            false => Some(DatabaseUrl::parse(item, origin)?),
        };
        let Some(url) = url else {
            let given = quoted(origin, item);
            bail!("{given}: expected host or host:port, comma-separated");
        };
        match backend_name(url.backend()) {
            got if got != want => bail!("{origin}: a {got} replica for a {want} primary"),
            _ => Ok(url),
        }
    };
    let items = match by_host {
        true => list.split(',').map(str::to_owned).collect(),
        false => url::split_list(list),
    };
    items.iter().map(|item| replica(item.trim())).collect()
}
