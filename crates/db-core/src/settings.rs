//! Typed settings, loaded in layers: built-in defaults < `config/default.toml`
//! < `config/{APP_ENV}.toml` < environment variables. Each setting is declared
//! once, in the table below; README.md and `.env.example` are generated from it.

mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, File, FileFormat, Source as _, ValueKind};
use sea_orm::DbBackend;
use secrecy::SecretString;

use crate::error::{Error, Result};
use crate::url::{DatabaseUrl, Parts, backend_name};
use table::{
    Applies, Input, Show, choice, default, file, flag, nonzero, number, or_off, origin, port,
    settings, some, text, unset, url, zero_ok,
};
pub use table::{LogLevel, SettingInfo, SslMode};

/// The embedded default: a SQLite file, so a fresh clone runs with no server.
pub const DEFAULT_SQLITE_PATH: &str = "data/tracker.db";

/// Where settings come from: a set of environment variables and a folder of
/// configuration files. Tests build one by hand; binaries call
/// [`Source::from_process`]. The library never reads the process environment
/// on its own.
#[derive(Clone, Default)]
pub struct Source {
    vars: BTreeMap<String, String>,
    not_unicode: BTreeSet<String>,
    config_dir: Option<PathBuf>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets; names are enough to debug with.
        f.debug_struct("Source")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("config_dir", &self.config_dir)
            .finish()
    }
}

impl Source {
    /// An empty source: no variables, configuration files from `config/`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one variable.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.not_unicode.remove(&name);
        self.vars.insert(name, value.into());
        self
    }

    /// Reads configuration files from `dir` instead of `config/`.
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_dir = Some(dir.into());
        self
    }

    /// Builds a source from `(name, value)` pairs such as `std::env::vars_os()`.
    /// A value that is not valid UTF-8 is remembered, and reported if it is a
    /// setting of ours.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut source = Source::new();
        for (name, value) in vars {
            let Ok(name) = name.into().into_string() else {
                continue;
            };
            match value.into().into_string() {
                Ok(value) => {
                    source.vars.insert(name, value);
                }
                Err(_) => {
                    source.not_unicode.insert(name);
                }
            }
        }
        source
    }

    /// The process environment, with `./.env` (if present) filling in variables
    /// that are not set. For binaries: this is the only place the process
    /// environment and `.env` are read.
    pub fn from_process() -> Result<Self> {
        let mut source = Source::from_vars(std::env::vars_os());
        let dotenv = Path::new(".env");
        if dotenv.exists() {
            let entries =
                dotenvy::from_path_iter(dotenv).map_err(|e| Error::Config(dotenv_message(&e)))?;
            for entry in entries {
                let (name, value) = entry.map_err(|e| Error::Config(dotenv_message(&e)))?;
                if !source.vars.contains_key(&name) && !source.not_unicode.contains(&name) {
                    source.vars.insert(name, value);
                }
            }
        }
        Ok(source)
    }

    /// The value of a variable, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    fn dir(&self) -> &Path {
        self.config_dir.as_deref().unwrap_or(Path::new("config"))
    }
}

/// A `.env` error without the offending line, which may hold a password.
fn dotenv_message(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, _) => {
            // Name the line by its number; its text may hold a password.
            let number = std::fs::read_to_string(".env").ok().and_then(|text| {
                let first = line.lines().next().unwrap_or_default();
                text.lines().position(|l| l == first).map(|i| i + 1)
            });
            match number {
                Some(n) => format!(".env: cannot parse line {n}: expected NAME=value"),
                None => ".env: cannot parse a line: expected NAME=value".to_owned(),
            }
        }
        dotenvy::Error::Io(io) => format!(".env: cannot read: {io}"),
        dotenvy::Error::EnvVar(_) => ".env: a referenced variable is not set".to_owned(),
        _ => ".env: cannot be read".to_owned(),
    }
}

settings! {
    inputs {
        /// A `postgres://`, `mysql://` or `sqlite:` URL; wins over the `DB_*` parts (with a warning).
        url "DATABASE_URL" = "", eg "postgres://u:p@db:5432/tracker";
        /// PostgreSQL host name, IP address (`::1`) or socket directory (`/var/run/postgresql`).
        host "DB_HOST" = "", eg "db.internal";
        /// PostgreSQL port.
        port "DB_PORT" = "5432", eg "6432";
        /// Database name.
        name "DB_NAME" = "", eg "tracker";
        /// User name.
        user "DB_USER" = "", eg "tracker";
        /// Password; any characters (percent-encoded for you).
        pass "DB_PASS" = "", eg "p@ss:w/rd?#%&=";
        /// Read replicas, comma-separated URLs; read-only sessions (the GET routes) go there
        /// round-robin, skipping one that is down.
        replica_urls "DB_REPLICA_URLS" = "", eg "postgres://u:p@replica1/tracker,postgres://u:p@replica2/tracker";
        /// Read replicas as `host[:port]`, comma-separated, with the primary's user, password
        /// and database (instead of `DB_REPLICA_URLS`).
        replica_hosts "DB_REPLICA_HOSTS" = "", eg "replica1,replica2:5433";
    }
    fields {
        /// Upper bound of pooled connections.
        max_connections "DB_MAX_CONNECTIONS": u32 = "10", All, number(1, 10_000), eg "16";
        /// Connections kept open when idle.
        min_connections "DB_MIN_CONNECTIONS": u32 = "1", All, number(0, 10_000), eg "0";
        /// Time allowed for one connection attempt.
        connect_timeout "DB_CONNECT_TIMEOUT": Duration = "5s", All, nonzero, eg "2s";
        /// How long connecting retries a server that is not up yet, with exponential
        /// backoff; `0s`: one attempt.
        connect_deadline "DB_CONNECT_DEADLINE": Duration = "30s", All, zero_ok, eg "2m";
        /// How long a caller waits for a free pooled connection; then HTTP 503.
        acquire_timeout "DB_ACQUIRE_TIMEOUT": Duration = "5s", All, nonzero, eg "1s";
        /// Idle connections above `min_connections` are closed after this.
        idle_timeout "DB_IDLE_TIMEOUT": Option<Duration> = "10m", All, or_off, eg "off";
        /// Connections are replaced after this age.
        max_lifetime "DB_MAX_LIFETIME": Option<Duration> = "30m", All, or_off, eg "off";
        /// A pooled connection idle for this long is pinged before use (not on every checkout).
        ping_after_idle "DB_PING_AFTER_IDLE": Option<Duration> = "30s", All, or_off, eg "off";
        /// PostgreSQL `statement_timeout` (migrations run without it).
        statement_timeout "DB_STATEMENT_TIMEOUT": Option<Duration> = "30s", Postgres, or_off, eg "off";
        /// PostgreSQL `lock_timeout`: a statement that waits longer for a lock fails instead of
        /// queueing (and holding up everyone queued behind it).
        lock_timeout "DB_LOCK_TIMEOUT": Option<Duration> = "off", Postgres, or_off, eg "10s";
        /// PostgreSQL `search_path`, comma-separated schemas; the server's default when unset.
        schema "DB_SCHEMA": Option<String> = "" or "(server default)", Postgres,
            some(text(|s| !s.split(',').any(|p| p.trim().is_empty()), "expected schema names separated by commas")),
            eg "tracker,public";
        /// PostgreSQL `application_name` (a URL parameter wins).
        application_name "DB_APPLICATION_NAME": Option<String> = "tracker" or "(none)", Postgres,
            some(text(|s| s.len() <= 63 && s.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "expected at most 63 printable ASCII characters")),
            eg "tracker-worker";
        /// TLS mode: `disable`, `prefer`, `require` or `verify-full`; when unset, the URL's
        /// `sslmode`, else `prefer`.
        ssl_mode "DB_SSL_MODE": Option<SslMode> = "" or "(from URL, default prefer)", Server,
            some(choice), eg "verify-full";
        /// CA certificate file for `verify-full`.
        ssl_root_cert "DB_SSL_ROOT_CERT": Option<PathBuf> = "" or "(none)", Server, some(file), eg "/etc/ssl/db-ca.pem";
        /// Prepared statements cached per connection (`0`: off). Off is not enough for a
        /// transaction pooler, where sqlx's statement names collide: use `DB_TRANSACTION_POOLER`.
        statement_cache_capacity "DB_STATEMENT_CACHE_CAPACITY": usize = "100", Server, number(0, 100_000), eg "0";
        /// How long SQLite waits for a lock held by another connection.
        sqlite_busy_timeout "DB_SQLITE_BUSY_TIMEOUT": Duration = "5s", Sqlite, nonzero, eg "30s";
        /// Level at which every statement is logged (`off`, `error`, `warn`, `info`, `debug`, `trace`).
        log_statements "DB_LOG_STATEMENTS": LogLevel = "debug", All, choice, eg "info";
        /// Statements slower than this are logged at `warn`.
        slow_statement_threshold "DB_SLOW_STATEMENT_THRESHOLD": Option<Duration> = "1s", All, or_off, eg "200ms";
        /// Where migrations connect instead of `DATABASE_URL`, e.g. straight to the primary
        /// when the application goes through a pooler.
        migration_url "DB_MIGRATION_URL": Option<DatabaseUrl> = "" or "(none)", All, some(url),
            eg "postgres://u:p@primary:5432/tracker";
        /// The server is reached through a transaction-pooling PgBouncer: every session is a
        /// transaction that starts by dropping prepared statements left on the shared server
        /// connection, the statement cache is off, and `statement_timeout` and `search_path`
        /// are set per transaction.
        transaction_pooler "DB_TRANSACTION_POOLER": bool = "false", All, flag, eg "true";
    }
}

impl Settings {
    /// Loads settings from `source`: built-in defaults, then
    /// `config/default.toml`, then `config/{APP_ENV}.toml` (both optional), then
    /// the environment. Every problem is an [`Error::Config`] naming the setting.
    pub fn load(source: &Source) -> Result<Self> {
        let (inputs, mut warnings) = read(source)?;
        let mut s = Settings::new(database_url(&inputs, &mut warnings)?);
        s.warnings = warnings;
        let backend = s.url.backend();
        s.replicas = replicas(&inputs, &s.url)?;
        s.apply(&inputs)?;
        if s.min_connections > s.max_connections {
            return Err(Error::Config(format!(
                "{}={}: must not exceed the maximum pool size {} ({})",
                origin(&inputs.min_connections, &info::min_connections),
                s.min_connections,
                s.max_connections,
                info::max_connections.var
            )));
        }
        if s.transaction_pooler && backend != DbBackend::Postgres {
            return Err(Error::Config(format!(
                "{}: transaction pooling is for PostgreSQL (PgBouncer), not {}",
                origin(&inputs.transaction_pooler, &info::transaction_pooler),
                backend_name(backend)
            )));
        }
        if let Some(url) = s.migration_url.as_ref().filter(|u| u.backend() != backend) {
            return Err(Error::Config(format!(
                "{}: a {} URL, but the database is {}",
                origin(&inputs.migration_url, &info::migration_url),
                backend_name(url.backend()),
                backend_name(backend)
            )));
        }
        for warning in &s.warnings {
            tracing::warn!("{warning}");
        }
        Ok(s)
    }

    /// The PostgreSQL session timeouts that are on, by their server name.
    pub(crate) fn postgres_timeouts(&self) -> impl Iterator<Item = (&'static str, Duration)> {
        [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
        ]
        .into_iter()
        .filter_map(|(name, timeout)| Some((name, timeout?)))
    }

    /// Problems that did not stop loading (ignored or unknown variables). They
    /// are also logged at `warn` when the settings are loaded.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `(setting, value)` rows describing these settings, password redacted, for
    /// `db check` and startup logs.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("backend", backend_name(self.url.backend()).to_owned()),
            ("url", self.url.redacted()),
        ];
        rows.extend(self.rows());
        rows.extend(self.replicas.iter().map(|r| ("replica", r.redacted())));
        rows
    }
}

/// Reads the configuration files and our variables into one value per setting,
/// each with where it came from; later layers win.
fn read(source: &Source) -> Result<(Inputs, Vec<String>)> {
    let mut inputs = Inputs::default();
    let mut names = vec!["default"];
    if let Some(app_env) = source.get("APP_ENV") {
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if app_env.is_empty() || !app_env.chars().all(valid) {
            return Err(Error::Config(format!(
                "APP_ENV=\"{app_env}\": expected a name like production (letters, digits, - and _)"
            )));
        }
        names.push(app_env);
    }
    for name in names {
        let path = source.dir().join(format!("{name}.toml"));
        if !path.exists() {
            continue;
        }
        let shown = path.display().to_string();
        // Read the file ourselves so that an unreadable file is reported as such,
        // not as a missing one.
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("{shown}: cannot read: {e}")))?;
        let values = Config::builder()
            .add_source(File::from_str(&text, FileFormat::Toml))
            .build()
            .and_then(|layer| layer.collect())
            .map_err(|e| file_error(&shown, &text, &e))?;
        for (key, value) in values {
            let Some(slot) = inputs.slot(&key) else {
                return Err(Error::Config(format!(
                    "{shown}: unknown key `{key}` (see the configuration table in README.md)"
                )));
            };
            if matches!(value.kind, ValueKind::Table(_) | ValueKind::Array(_)) {
                return Err(Error::Config(format!(
                    "{shown}: `{key}` must be a single value, not a table or list"
                )));
            }
            let raw = value.into_string().unwrap_or_default();
            let origin = format!("{shown}: {key}");
            *slot = Some(Input { raw, origin });
        }
    }
    for info in SETTINGS {
        if source.not_unicode.contains(info.var) {
            return Err(Error::Config(format!("{}: not valid UTF-8", info.var)));
        }
        if let (Some(value), Some(slot)) = (source.get(info.var), inputs.slot(info.key)) {
            let (raw, origin) = (value.to_owned(), info.var.to_owned());
            *slot = Some(Input { raw, origin });
        }
    }
    let warnings = (source.vars.keys().chain(&source.not_unicode))
        .filter(|name| name.starts_with("DB_") && !SETTINGS.iter().any(|s| s.var == *name))
        .map(|name| format!("{name} is not a setting of ours and is ignored (see the configuration table in README.md)"))
        .collect();
    Ok((inputs, warnings))
}

/// A file error without the file's text, which may contain a password.
fn file_error(shown: &str, text: &str, e: &config::ConfigError) -> Error {
    if let config::ConfigError::FileParse { cause, .. } = e
        && let Some(toml) = cause.downcast_ref::<toml::de::Error>()
    {
        let at = toml.span().map_or(String::new(), |span| {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!(" at line {line}")
        });
        return Error::Config(format!(
            "{shown}: not valid TOML{at}: {}",
            toml.message().trim()
        ));
    }
    Error::Config(format!("{shown}: {e}"))
}

/// `DATABASE_URL`, else the `DB_*` parts, else the embedded SQLite default.
fn database_url<'a>(inputs: &'a Inputs, warnings: &mut Vec<String>) -> Result<DatabaseUrl> {
    let parts = [
        &inputs.host,
        &inputs.port,
        &inputs.name,
        &inputs.user,
        &inputs.pass,
    ];
    let set: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.as_ref())
        .map(|p| p.origin.as_str())
        .collect();
    if let Some(url) = &inputs.url {
        let raw = url.raw.trim();
        if raw.is_empty() {
            return Err(Error::Config(format!(
                "{} is empty: unset it or give a postgres://, mysql:// or sqlite: URL",
                url.origin
            )));
        }
        if !set.is_empty() {
            let verb = if set.len() == 1 { "is" } else { "are" };
            warnings.push(format!(
                "{} is set, so {} {verb} ignored",
                url.origin,
                set.join(", ")
            ));
        }
        return DatabaseUrl::parse(raw, &url.origin);
    }
    if set.is_empty() {
        return Ok(DatabaseUrl::sqlite_file(DEFAULT_SQLITE_PATH));
    }
    let required = |input: &'a Option<Input>, info: &SettingInfo| {
        input.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "{} is not set: it is required with {} (or set DATABASE_URL)",
                info.var,
                set.join(", ")
            ))
        })
    };
    let host = text(
        |h| {
            !h.chars().any(|c| c.is_whitespace() || "@?#".contains(c))
                && (h.starts_with('/') || !h.contains('/'))
        },
        "expected a host name, an IP address or a socket directory",
    )(required(&inputs.host, &info::host)?)?;
    let port = inputs
        .port
        .as_ref()
        .map_or(Ok(default(&info::port, port)), port)?;
    let database = required(&inputs.name, &info::name)?.text()?;
    let user = required(&inputs.user, &info::user)?.text()?;
    let password = SecretString::from(
        inputs
            .pass
            .as_ref()
            .map(|p| p.raw.clone())
            .unwrap_or_default(),
    );
    Ok(DatabaseUrl::from_parts(&Parts {
        host: &host,
        port,
        database,
        user,
        password: &password,
    }))
}

/// Replica URLs from `DB_REPLICA_URLS` or `DB_REPLICA_HOSTS` (not both),
/// for the same kind of server as `primary`.
fn replicas(inputs: &Inputs, primary: &DatabaseUrl) -> Result<Vec<DatabaseUrl>> {
    let (input, by_host) = match (&inputs.replica_urls, &inputs.replica_hosts) {
        (None, None) => return Ok(Vec::new()),
        (Some(urls), Some(hosts)) => {
            return Err(Error::Config(format!(
                "{} and {} are both set: use one",
                urls.origin, hosts.origin
            )));
        }
        (Some(urls), None) => (urls, false),
        (None, Some(hosts)) => (hosts, true),
    };
    let (list, origin) = (input.text()?, &input.origin);
    if primary.backend() == DbBackend::Sqlite {
        return Err(Error::Config(format!(
            "{origin}: read replicas need a PostgreSQL or MySQL primary, not SQLite"
        )));
    }
    let mut replicas = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(Error::Config(format!(
                "{origin}: an empty entry in the list"
            )));
        }
        let url = if by_host {
            primary.with_host(item).ok_or_else(|| {
                Error::Config(format!(
                    "{origin}=\"{item}\": expected host or host:port, comma-separated"
                ))
            })?
        } else {
            DatabaseUrl::parse(item, origin)?
        };
        if url.backend() != primary.backend() {
            return Err(Error::Config(format!(
                "{origin}: a {} replica for a {} primary",
                backend_name(url.backend()),
                backend_name(primary.backend())
            )));
        }
        replicas.push(url);
    }
    Ok(replicas)
}
