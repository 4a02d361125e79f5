//! Typed settings, loaded in layers with the `config` crate: built-in defaults
//! < `config/default.toml` < `config/{APP_ENV}.toml` < environment variables,
//! deserialized with serde and then checked. Each setting is declared once, in
//! the table below; README.md and `.env.example` are generated from it.

mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::builder::{ConfigBuilder, DefaultState};
use config::{Config, ConfigError};
use log::LevelFilter;
use sea_orm::DbBackend;
use secrecy::SecretString;

use crate::error::{Error, Result, bail};
use crate::source::Source;
use crate::url::{self, DatabaseUrl, LoadBalanceHosts, Parts, TargetSessionAttrs, backend_name};
pub use table::SettingInfo;
use table::{Number, Show, off_is_zero, or_off, settings};

/// The embedded default: a SQLite file, so a fresh clone runs with no server.
pub const DEFAULT_SQLITE_PATH: &str = "data/tracker.db";

const DURATION: &str = "a duration with a unit, like 5s, 500ms or 2m";
const NONZERO: &str = "a duration greater than zero with a unit, like 5s, 500ms or 2m";
const OR_OFF: &str = "a duration with a unit, like 5s, 500ms or 2m or off";
const URL: &str = "a postgres://, mysql:// or sqlite: URL";
/// Any text, even none (the password).
const ANY: &str = "";

settings! {
    inputs {
        /// A `postgres://`, `mysql://` or `sqlite:` URL; wins over the `DB_*` parts (with a warning).
        url "DATABASE_URL": Option<String> = "", eg "postgres://u:p@db:5432/tracker", expects URL;
        /// PostgreSQL host name, IP address (`::1`) or socket directory (`/var/run/postgresql`);
        /// or several hosts, comma-separated, tried as libpq does (see `DB_TARGET_SESSION_ATTRS`).
        host "DB_HOST": Option<String> = "", eg "db.internal",
            expects "a host name, an IP address or a socket directory", if |h| h.as_deref().is_none_or(|h| {
                !h.contains(|c: char| c.is_whitespace() || "@?#".contains(c)) && (h.starts_with('/') || !h.contains('/'))
            });
        /// PostgreSQL port; with several hosts in `DB_HOST`, one port for all or one per host,
        /// comma-separated.
        port "DB_PORT": String = "5432", eg "6432", expects "a port number 1-65535",
            if |p| url::ports(p).is_some();
        /// Which server of a host list a connection may use: `any`, `read-write`, `read-only`,
        /// `primary`, `standby` or `prefer-standby` (libpq's `target_session_attrs`; the URL
        /// parameter of that name is the same setting). Checked on each new connection.
        target_session_attrs "DB_TARGET_SESSION_ATTRS": Option<TargetSessionAttrs> = "", eg "read-write",
            expects "any, read-write, read-only, primary, standby or prefer-standby";
        /// The order a host list is tried in: `disable` (as given) or `random` (libpq's
        /// `load_balance_hosts`, also a URL parameter).
        load_balance_hosts "DB_LOAD_BALANCE_HOSTS": Option<LoadBalanceHosts> = "", eg "random",
            expects "disable or random";
        /// Database name.
        name "DB_NAME": Option<String> = "", eg "tracker", expects "a database name";
        /// User name.
        user "DB_USER": Option<String> = "", eg "tracker", expects "a user name";
        /// Password; any characters (percent-encoded for you).
        pass "DB_PASS": Option<SecretString> = "", eg "p@ss:w/rd?#%&=", expects ANY;
        /// Read replicas, comma-separated URLs (each may be a host list, e.g. with
        /// `target_session_attrs=standby`); read-only sessions (the GET routes) go there
        /// round-robin, skipping one that is down.
        replica_urls "DB_REPLICA_URLS": Option<String> = "",
            eg "postgres://u:p@replica1/tracker,postgres://u:p@replica2/tracker", expects "URLs, comma-separated";
        /// Read replicas as `host[:port]`, comma-separated, with the primary's user, password
        /// and database (instead of `DB_REPLICA_URLS`).
        replica_hosts "DB_REPLICA_HOSTS": Option<String> = "", eg "replica1,replica2:5433",
            expects "host or host:port, comma-separated";
        /// Where migrations connect instead of `DATABASE_URL`, e.g. straight to the primary
        /// when the application goes through a pooler.
        migration_url "DB_MIGRATION_URL": Option<String> = "", eg "postgres://u:p@primary:5432/tracker",
            expects URL;
    }
    fields {
        /// Upper bound of pooled connections.
        #[serde(with = "Number")]
        max_connections "DB_MAX_CONNECTIONS": u32 = "10", All, eg "16",
            expects "a whole number 1-10000", if |n| (1..=10_000).contains(n);
        /// Connections kept open when idle.
        #[serde(with = "Number")]
        min_connections "DB_MIN_CONNECTIONS": u32 = "1", All, eg "0",
            expects "a whole number 0-10000", if |n| *n <= 10_000;
        /// Time allowed for one connection attempt.
        #[serde(with = "humantime_serde")]
        connect_timeout "DB_CONNECT_TIMEOUT": Duration = "5s", All, eg "2s", expects NONZERO, if |d| !d.is_zero();
        /// How long connecting retries a server that is not up yet, with exponential
        /// backoff; `0s`: one attempt.
        #[serde(deserialize_with = "off_is_zero")]
        connect_deadline "DB_CONNECT_DEADLINE": Duration = "30s", All, eg "2m", expects DURATION;
        /// How long a caller waits for a free pooled connection; then HTTP 503.
        #[serde(with = "humantime_serde")]
        acquire_timeout "DB_ACQUIRE_TIMEOUT": Duration = "5s", All, eg "1s", expects NONZERO, if |d| !d.is_zero();
        /// How long a caller waits for the server's answer to one statement (or `BEGIN`, `COMMIT`,
        /// `ROLLBACK`) once it has a connection, also when the server stopped answering with the
        /// connection still open (a paused machine, a dropped network path); then HTTP 503, and the
        /// connection is closed, never reused. So no request waits on the database for longer than
        /// `DB_ACQUIRE_TIMEOUT` plus this (on a host list: `DB_FAILOVER_TIMEOUT` plus this). Keep it
        /// above the slowest statement of a request; `DB_STATEMENT_TIMEOUT` stays the server's own bound.
        #[serde(deserialize_with = "or_off")]
        operation_timeout "DB_OPERATION_TIMEOUT": Option<Duration> = "2s", Server, eg "10s", expects OR_OFF;
        /// Idle connections above `min_connections` are closed after this.
        #[serde(deserialize_with = "or_off")]
        idle_timeout "DB_IDLE_TIMEOUT": Option<Duration> = "10m", All, eg "off", expects OR_OFF;
        /// Connections are replaced after this age.
        #[serde(deserialize_with = "or_off")]
        max_lifetime "DB_MAX_LIFETIME": Option<Duration> = "30m", All, eg "off", expects OR_OFF;
        /// A pooled connection idle for this long is pinged before use (not on every checkout).
        #[serde(deserialize_with = "or_off")]
        ping_after_idle "DB_PING_AFTER_IDLE": Option<Duration> = "30s", All, eg "off", expects OR_OFF;
        /// With a host list or `target_session_attrs`: how long work is tried again, on a fresh
        /// connection, after the server went away, turned read-only or stopped answering (a
        /// failover), counted from the start of the work: a unit of work of the retrying
        /// transaction helper, and a read routed to a host list; then HTTP 503. It bounds how long
        /// such a request waits: a failover that takes longer reaches clients as 503s.
        #[serde(with = "humantime_serde")]
        failover_timeout "DB_FAILOVER_TIMEOUT": Duration = "5s", Postgres, eg "30s", expects NONZERO,
            if |d| !d.is_zero();
        /// PostgreSQL `statement_timeout` (migrations run without it).
        #[serde(deserialize_with = "or_off")]
        statement_timeout "DB_STATEMENT_TIMEOUT": Option<Duration> = "30s", Postgres, eg "off", expects OR_OFF,
            sets "statement_timeout";
        /// PostgreSQL `lock_timeout`: a statement that waits longer for a lock fails instead of
        /// queueing (and holding up everyone queued behind it).
        #[serde(deserialize_with = "or_off")]
        lock_timeout "DB_LOCK_TIMEOUT": Option<Duration> = "off", Postgres, eg "10s", expects OR_OFF,
            sets "lock_timeout";
        /// PostgreSQL `idle_in_transaction_session_timeout`: a session left idle inside a
        /// transaction for longer is ended, releasing its locks and its snapshot.
        #[serde(deserialize_with = "or_off")]
        idle_in_transaction_timeout "DB_IDLE_IN_TRANSACTION_TIMEOUT": Option<Duration> = "off", Postgres, eg "1m",
            expects OR_OFF, sets "idle_in_transaction_session_timeout";
        /// PostgreSQL `tcp_keepalives_idle`: after this long without traffic the server probes
        /// the connection, so a client that vanished (its host crashed, the network dropped)
        /// is noticed within minutes and its session ends, releasing its locks; `off`: the
        /// operating system's default, often two hours.
        #[serde(deserialize_with = "or_off")]
        tcp_keepalive "DB_TCP_KEEPALIVE": Option<Duration> = "off", Postgres, eg "1m", expects OR_OFF,
            sets "tcp_keepalives_idle";
        /// PostgreSQL `lock_timeout` of every migration statement: a schema change that waits
        /// longer for its lock (behind a long transaction) stops, so that the queries queued
        /// behind it go on, and is tried again until `DB_MIGRATION_DEADLINE`.
        #[serde(with = "humantime_serde")]
        migration_lock_timeout "DB_MIGRATION_LOCK_TIMEOUT": Duration = "1s", Postgres, eg "3s",
            expects NONZERO, if |d| !d.is_zero();
        /// How long a migration stopped by `DB_MIGRATION_LOCK_TIMEOUT` is tried again, with
        /// jittered backoff, before it gives up naming the sessions in its way.
        #[serde(with = "humantime_serde")]
        migration_deadline "DB_MIGRATION_DEADLINE": Duration = "1m", Postgres, eg "10m",
            expects NONZERO, if |d| !d.is_zero();
        /// PostgreSQL `lock_timeout` of `CREATE INDEX CONCURRENTLY` in migrations, which waits
        /// for every transaction older than itself (writes go on meanwhile).
        #[serde(with = "humantime_serde")]
        migration_index_timeout "DB_MIGRATION_INDEX_TIMEOUT": Duration = "10m", Postgres, eg "1h",
            expects NONZERO, if |d| !d.is_zero();
        /// PostgreSQL `search_path`, comma-separated schemas; the server's default when unset.
        schema "DB_SCHEMA": Option<String> = "" or "(server default)", Postgres, eg "tracker,public",
            expects "schema names separated by commas",
            if |s| s.as_deref().is_none_or(|s| !s.split(',').any(|p| p.trim().is_empty()));
        /// PostgreSQL `application_name` (a URL parameter wins).
        application_name "DB_APPLICATION_NAME": Option<String> = "tracker" or "(none)", Postgres,
            eg "tracker-worker", expects "at most 63 printable ASCII characters",
            if |s| s.as_deref().is_none_or(|s| s.len() <= 63 && s.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        /// TLS mode: `disable`, `prefer`, `require` or `verify-full`; when unset, the URL's
        /// `sslmode`, else `prefer`, except to a server on this machine (`localhost`, a loopback
        /// address, a socket), which is reached without TLS.
        ssl_mode "DB_SSL_MODE": Option<url::SslMode> = "" or "(from URL, default prefer; none locally)", Server,
            eg "verify-full", expects "disable, prefer, require or verify-full";
        /// CA certificate file for `verify-full`.
        ssl_root_cert "DB_SSL_ROOT_CERT": Option<PathBuf> = "" or "(none)", Server, eg "/etc/ssl/db-ca.pem",
            expects "an existing file", if |p| p.as_deref().is_none_or(Path::is_file);
        /// Prepared statements cached per connection (`0`: off). Off is not enough for a
        /// transaction pooler, where sqlx's statement names collide: use `DB_TRANSACTION_POOLER`.
        #[serde(with = "Number")]
        statement_cache_capacity "DB_STATEMENT_CACHE_CAPACITY": usize = "100", Server, eg "0",
            expects "a whole number 0-100000", if |n| *n <= 100_000;
        /// How long SQLite waits for a lock held by another connection.
        #[serde(with = "humantime_serde")]
        sqlite_busy_timeout "DB_SQLITE_BUSY_TIMEOUT": Duration = "5s", Sqlite, eg "30s",
            expects NONZERO, if |d| !d.is_zero();
        /// Level at which every statement is logged (`off`, `error`, `warn`, `info`, `debug`, `trace`).
        #[serde(with = "Number")]
        log_statements "DB_LOG_STATEMENTS": LevelFilter = "debug", All, eg "info",
            expects "off, error, warn, info, debug or trace";
        /// Statements slower than this are logged at `warn`.
        #[serde(deserialize_with = "or_off")]
        slow_statement_threshold "DB_SLOW_STATEMENT_THRESHOLD": Option<Duration> = "1s", All, eg "200ms",
            expects OR_OFF;
        /// The server is reached through a transaction-pooling PgBouncer: every session is a
        /// transaction that starts by dropping prepared statements left on the shared server
        /// connection, the statement cache is off, and `statement_timeout` and `search_path`
        /// are set per transaction.
        transaction_pooler "DB_TRANSACTION_POOLER": bool = "false", All, eg "true", expects "true or false";
    }
}

impl Settings {
    /// Settings for `url` with every other field at its built-in default.
    pub fn new(url: DatabaseUrl) -> Self {
        let values = defaults().and_then(|layers| layers.build()?.try_deserialize());
        // The defaults are constants of the table, read by every test that loads settings.
        Self::from_values(url, values.expect("the built-in defaults are valid"))
    }

    /// Loads settings from `source`: built-in defaults, then
    /// `config/default.toml`, then `config/{APP_ENV}.toml` (both optional), then
    /// the environment. Every problem is an [`Error::Config`] naming the setting.
    pub fn load(source: &Source) -> Result<Self> {
        let mut layers = defaults().map_err(config_error)?;
        let mut given = Given::default();
        for file in source.files()? {
            let shown = file.shown;
            for (key, value) in file.values {
                if !SETTINGS.iter().any(|s| s.key == key) {
                    bail!(
                        "{shown}: unknown key `{key}` (see the configuration table in README.md)"
                    );
                }
                let origin = format!("{shown}: {key}");
                given
                    .0
                    .insert(key, (origin, value.into_string().unwrap_or_default()));
            }
            layers = layers.add_source(file.file);
        }
        // The variables are the top layer: `DB_PORT` overrides the key `port`.
        for s in SETTINGS {
            if source.not_unicode.contains(s.var) {
                bail!("{}: not valid UTF-8", s.var);
            }
            if let Some(value) = source.vars.get(s.var) {
                layers = layers
                    .set_override(s.key, value.as_str())
                    .map_err(config_error)?;
                given
                    .0
                    .insert(s.key.to_owned(), (s.var.to_owned(), value.clone()));
            }
        }
        let values = given.values(layers)?;
        let mut warnings: Vec<String> = (source.vars.keys().chain(&source.not_unicode))
            .filter(|name| name.starts_with("DB_") && !SETTINGS.iter().any(|s| s.var == *name))
            .map(|name| format!("{name} is not a setting of ours and is ignored (see the configuration table in README.md)"))
            .collect();
        let url = database_url(&values, &given, &mut warnings)?;
        let backend = url.backend();
        let replicas = replicas(&values, &given, &url)?;
        let origin = given.origin(&info::migration_url);
        let migration_url = (values.migration_url.as_deref())
            .map(|u| DatabaseUrl::parse(u.trim(), origin))
            .transpose()?;
        warnings.extend(
            SETTINGS
                .iter()
                .filter(|s| !s.applies.to(backend))
                .filter_map(|s| Some(s.applies.ignored(given.0.get(s.key)?.0.as_str(), backend))),
        );
        let s = Settings {
            replicas,
            migration_url,
            warnings,
            ..Self::from_values(url, values)
        };
        if s.min_connections > s.max_connections {
            let [min, max] =
                [&info::min_connections, &info::max_connections].map(|i| given.origin(i));
            let (n, m) = (s.min_connections, s.max_connections);
            bail!("{min}={n}: must not exceed the maximum pool size {m} ({max})");
        }
        if s.transaction_pooler && backend != DbBackend::Postgres {
            let (origin, name) = (
                given.origin(&info::transaction_pooler),
                backend_name(backend),
            );
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
    /// `db check` and startup logs: the fields that apply to this backend.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let backend = self.url.backend();
        let mut rows = vec![
            ("backend", backend_name(backend).to_owned()),
            ("url", self.url.redacted()),
        ];
        let fields = self
            .shown()
            .into_iter()
            .filter(|(s, _)| s.applies.to(backend));
        rows.extend(fields.map(|(s, value)| (s.key, value)));
        rows.push(("migration_url", self.migration_url.show("(none)")));
        rows.extend(self.replicas.iter().map(|r| ("replica", r.redacted())));
        rows
    }
}

/// The built-in defaults: the first layer.
fn defaults() -> std::result::Result<ConfigBuilder<DefaultState>, ConfigError> {
    (SETTINGS.iter().filter(|s| !s.default.is_empty())).try_fold(Config::builder(), |layers, s| {
        layers.set_default(s.key, s.default)
    })
}

/// A layer that `config` refused, as our error.
fn config_error(e: ConfigError) -> Error {
    Error::Config(e.to_string())
}

/// The values given in files and variables, by key: where each came from and
/// its text. Never shown whole: it holds the password.
#[derive(Default)]
struct Given(BTreeMap<String, (String, String)>);

impl Given {
    /// Where a setting came from; its variable if it was not given.
    fn origin<'a>(&'a self, setting: &'a SettingInfo) -> &'a str {
        self.0
            .get(setting.key)
            .map_or(setting.var, |(origin, _)| origin)
    }

    /// The layers read into typed values, each checked; the first problem in
    /// table order is the error.
    fn values(&self, layers: ConfigBuilder<DefaultState>) -> Result<Values> {
        let empty = |s: &&SettingInfo| self.0.get(s.key).is_some_and(|(_, v)| v.trim().is_empty());
        if let Some(s) = SETTINGS.iter().filter(|s| s.expects != ANY).find(empty) {
            let origin = self.origin(s);
            bail!("{origin} is empty: unset it or give {}", s.expects);
        }
        let key = match layers.build().and_then(Config::try_deserialize::<Values>) {
            Ok(values) => match values.failing() {
                None => return Ok(values),
                Some(s) => s.key.to_owned(),
            },
            Err(
                ConfigError::Type { key: Some(key), .. } | ConfigError::At { key: Some(key), .. },
            ) => key,
            Err(e) => bail!("settings: {e}"),
        };
        match (SETTINGS.iter().find(|s| s.key == key), self.0.get(&key)) {
            (Some(s), Some((origin, raw))) if s.expects != ANY => {
                bail!("{origin}=\"{raw}\": expected {}", s.expects)
            }
            (Some(s), _) => bail!("{}: the built-in default {:?} is invalid", s.var, s.default),
            (None, _) => bail!("settings: cannot read `{key}`"),
        }
    }
}

/// `DATABASE_URL`, else the `DB_*` parts, else the embedded SQLite default;
/// with `DB_TARGET_SESSION_ATTRS` and `DB_LOAD_BALANCE_HOSTS`.
fn database_url(v: &Values, given: &Given, warnings: &mut Vec<String>) -> Result<DatabaseUrl> {
    let url = url_or_parts(v, given, warnings)?;
    let hosts = url.hosts();
    let session = [
        (
            &info::target_session_attrs,
            v.target_session_attrs.map(|a| a.as_str()),
            hosts.and_then(|h| h.attrs).map(|a| a.as_str()),
        ),
        (
            &info::load_balance_hosts,
            v.load_balance_hosts.map(|b| b.as_str()),
            hosts.and_then(|h| h.balance).map(|b| b.as_str()),
        ),
    ];
    for (setting, value, in_url) in session {
        let Some(value) = value else { continue };
        let origin = given.origin(setting);
        if url.backend() != DbBackend::Postgres {
            let backend = backend_name(url.backend());
            bail!("{origin}: applies to a PostgreSQL host list, not {backend}");
        }
        if let Some(in_url) = in_url.filter(|u| *u != value) {
            let (key, url_origin) = (setting.key, given.origin(&info::url));
            bail!("{origin}=\"{value}\" and {key}={in_url} in {url_origin} differ: give one");
        }
    }
    Ok(url.with_session(v.target_session_attrs, v.load_balance_hosts))
}

/// `DATABASE_URL`, else the `DB_*` parts, else the embedded SQLite default.
fn url_or_parts(v: &Values, given: &Given, warnings: &mut Vec<String>) -> Result<DatabaseUrl> {
    let parts = [
        &info::host,
        &info::port,
        &info::name,
        &info::user,
        &info::pass,
    ];
    let set = parts
        .iter()
        .filter(|s| given.0.contains_key(s.key))
        .map(|s| given.origin(s));
    let set = set.collect::<Vec<_>>().join(", ");
    if let Some(url) = &v.url {
        let origin = given.origin(&info::url);
        if !set.is_empty() {
            let verb = if set.contains(',') { "are" } else { "is" };
            warnings.push(format!("{origin} is set, so {set} {verb} ignored"));
        }
        return DatabaseUrl::parse(url.trim(), origin);
    }
    if set.is_empty() {
        return Ok(DatabaseUrl::sqlite_file(DEFAULT_SQLITE_PATH));
    }
    let required = |value: &Option<String>, var: &str| match value {
        Some(value) => Ok(value.clone()),
        None => bail!("{var} is not set: it is required with {set} (or set DATABASE_URL)"),
    };
    let host = required(&v.host, info::host.var)?;
    let hosts = url::host_list(
        (&host, given.origin(&info::host)),
        (&v.port, given.origin(&info::port)),
    )?;
    Ok(DatabaseUrl::from_parts(&Parts {
        hosts: &hosts,
        database: &required(&v.name, info::name.var)?,
        user: &required(&v.user, info::user.var)?,
        password: &v.pass.clone().unwrap_or_default(),
    }))
}

/// Replica URLs from `DB_REPLICA_URLS` or `DB_REPLICA_HOSTS` (not both),
/// for the same kind of server as `primary`.
fn replicas(v: &Values, given: &Given, primary: &DatabaseUrl) -> Result<Vec<DatabaseUrl>> {
    let [urls, hosts] = [&info::replica_urls, &info::replica_hosts].map(|s| given.origin(s));
    let (list, origin) = match (&v.replica_urls, &v.replica_hosts) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some(_)) => bail!("{urls} and {hosts} are both set: use one"),
        (Some(list), None) => (list, urls),
        (None, Some(list)) => (list, hosts),
    };
    if primary.backend() == DbBackend::Sqlite {
        bail!("{origin}: read replicas need a PostgreSQL or MySQL primary, not SQLite");
    }
    let (by_host, want) = (v.replica_hosts.is_some(), backend_name(primary.backend()));
    let replica = |item: &str| {
        if item.is_empty() {
            bail!("{origin}: an empty entry in the list");
        }
        let url = match by_host {
            true => primary.with_host(item),
            false => Some(DatabaseUrl::parse(item, origin)?),
        };
        let Some(url) = url else {
            bail!(
                "{origin}=\"{item}\": expected {}",
                info::replica_hosts.expects
            );
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
