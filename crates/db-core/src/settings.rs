//! Typed settings, loaded in layers: built-in defaults < `config/default.toml`
//! < `config/{APP_ENV}.toml` < environment variables.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Map, Source as _, Value, ValueKind};
use sea_orm::DbBackend;
use secrecy::SecretString;

use crate::error::{Error, Result};
use crate::url::{DatabaseUrl, Parts, backend_name};

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

/// TLS for server connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it (the drivers' default).
    Prefer,
    /// Require TLS, without checking the certificate.
    Require,
    /// Require TLS with a certificate that is valid for the host name.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The name used in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Level at which a statement is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Not logged.
    Off,
    /// `error`.
    Error,
    /// `warn`.
    Warn,
    /// `info`.
    Info,
    /// `debug`.
    Debug,
    /// `trace`.
    Trace,
}

impl LogLevel {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    /// The name used in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Everything db-core needs to connect. Build it with [`Settings::load`], or
/// with [`Settings::new`] and field updates.
///
/// `Debug` never shows the password: the URL is a [`DatabaseUrl`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// The database to connect to.
    pub url: DatabaseUrl,
    /// Upper bound of pooled connections (`DB_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Connections kept open when idle (`DB_MIN_CONNECTIONS`).
    pub min_connections: u32,
    /// Time allowed for one connection attempt (`DB_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// How long [`Db::connect`](crate::Db::connect) keeps retrying a server
    /// that is not up yet (`DB_CONNECT_DEADLINE`).
    pub connect_deadline: Duration,
    /// How long a caller waits for a free pooled connection (`DB_ACQUIRE_TIMEOUT`).
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this (`DB_IDLE_TIMEOUT`).
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this age (`DB_MAX_LIFETIME`).
    pub max_lifetime: Option<Duration>,
    /// A pooled connection idle for this long is pinged before use (`DB_PING_AFTER_IDLE`).
    pub ping_after_idle: Option<Duration>,
    /// PostgreSQL `statement_timeout` (`DB_STATEMENT_TIMEOUT`).
    pub statement_timeout: Option<Duration>,
    /// PostgreSQL `search_path` (`DB_SCHEMA`), comma-separated schemas.
    pub schema: Option<String>,
    /// PostgreSQL `application_name` (`DB_APPLICATION_NAME`).
    pub application_name: Option<String>,
    /// TLS mode (`DB_SSL_MODE`); `None` keeps what the URL or driver says (prefer).
    pub ssl_mode: Option<SslMode>,
    /// CA certificate file for `verify-full` (`DB_SSL_ROOT_CERT`).
    pub ssl_root_cert: Option<PathBuf>,
    /// Level at which every statement is logged (`DB_LOG_STATEMENTS`).
    pub log_statements: LogLevel,
    /// Statements slower than this are logged at `warn` (`DB_SLOW_STATEMENT_THRESHOLD`).
    pub slow_statement_threshold: Option<Duration>,
    /// How long SQLite waits for a lock held by another connection (`DB_SQLITE_BUSY_TIMEOUT`).
    pub sqlite_busy_timeout: Duration,
    /// Prepared statements cached per connection; 0 turns the cache off
    /// (`DB_STATEMENT_CACHE_CAPACITY`). Off is not enough for a transaction
    /// pooler, where sqlx's statement names collide: see `transaction_pooler`.
    pub statement_cache_capacity: usize,
    /// Read replicas (`DB_REPLICA_URLS`, or `DB_REPLICA_HOSTS` with the
    /// primary's credentials); read-only sessions go to them.
    pub replicas: Vec<DatabaseUrl>,
    /// Where migrations connect instead of [`url`](Self::url), e.g. straight to
    /// the primary when the application goes through a pooler (`DB_MIGRATION_URL`).
    pub migration_url: Option<DatabaseUrl>,
    /// The server is reached through a transaction-pooling PgBouncer
    /// (`DB_TRANSACTION_POOLER`): every session is a transaction that starts
    /// by dropping prepared statements left on the shared server connection,
    /// the statement cache is off, and `statement_timeout` and `search_path`
    /// are set per transaction.
    pub transaction_pooler: bool,
    warnings: Vec<String>,
}

/// One setting: its key in configuration files, its variable, its default and
/// what it means. The README's configuration table lists the same.
#[derive(Debug)]
pub struct SettingInfo {
    /// Key in `config/*.toml`.
    pub key: &'static str,
    /// Environment variable.
    pub var: &'static str,
    /// Default, as text.
    pub default: &'static str,
    /// One-line description.
    pub help: &'static str,
}

macro_rules! settings_table {
    ($(($key:literal, $var:literal, $default:literal, $help:literal)),* $(,)?) => {
        /// Every setting db-core reads.
        pub const SETTINGS: &[SettingInfo] = &[
            $(SettingInfo { key: $key, var: $var, default: $default, help: $help }),*
        ];
    };
}

settings_table![
    (
        "url",
        "DATABASE_URL",
        "",
        "postgres://, mysql:// or sqlite: URL; wins over the DB_* parts"
    ),
    (
        "host",
        "DB_HOST",
        "",
        "PostgreSQL host, IP address or socket directory"
    ),
    ("port", "DB_PORT", "5432", "PostgreSQL port"),
    ("name", "DB_NAME", "", "database name"),
    ("user", "DB_USER", "", "user name"),
    ("pass", "DB_PASS", "", "password"),
    (
        "max_connections",
        "DB_MAX_CONNECTIONS",
        "10",
        "pool size upper bound"
    ),
    (
        "min_connections",
        "DB_MIN_CONNECTIONS",
        "1",
        "connections kept open when idle"
    ),
    (
        "connect_timeout",
        "DB_CONNECT_TIMEOUT",
        "5s",
        "time for one connection attempt"
    ),
    (
        "connect_deadline",
        "DB_CONNECT_DEADLINE",
        "30s",
        "how long startup waits for the server (0s: no retry)"
    ),
    (
        "acquire_timeout",
        "DB_ACQUIRE_TIMEOUT",
        "5s",
        "wait for a free pooled connection, then fail (HTTP 503)"
    ),
    (
        "idle_timeout",
        "DB_IDLE_TIMEOUT",
        "10m",
        "close idle connections above the minimum after this (off: never)"
    ),
    (
        "max_lifetime",
        "DB_MAX_LIFETIME",
        "30m",
        "replace connections after this age (off: never)"
    ),
    (
        "ping_after_idle",
        "DB_PING_AFTER_IDLE",
        "30s",
        "ping a pooled connection before use if idle this long (off: never)"
    ),
    (
        "statement_timeout",
        "DB_STATEMENT_TIMEOUT",
        "30s",
        "PostgreSQL statement_timeout (off: none)"
    ),
    (
        "schema",
        "DB_SCHEMA",
        "",
        "PostgreSQL search_path, comma-separated"
    ),
    (
        "application_name",
        "DB_APPLICATION_NAME",
        "tracker",
        "PostgreSQL application_name"
    ),
    (
        "ssl_mode",
        "DB_SSL_MODE",
        "prefer",
        "disable, prefer, require or verify-full"
    ),
    (
        "ssl_root_cert",
        "DB_SSL_ROOT_CERT",
        "",
        "CA certificate file for verify-full"
    ),
    (
        "log_statements",
        "DB_LOG_STATEMENTS",
        "debug",
        "level of the per-statement log line (off, error, warn, info, debug, trace)"
    ),
    (
        "slow_statement_threshold",
        "DB_SLOW_STATEMENT_THRESHOLD",
        "1s",
        "log statements slower than this at warn (off: never)"
    ),
    (
        "sqlite_busy_timeout",
        "DB_SQLITE_BUSY_TIMEOUT",
        "5s",
        "SQLite wait for a lock held by another process"
    ),
    (
        "statement_cache_capacity",
        "DB_STATEMENT_CACHE_CAPACITY",
        "100",
        "prepared statements cached per connection (0: off)"
    ),
    (
        "replica_urls",
        "DB_REPLICA_URLS",
        "",
        "read replicas, comma-separated URLs; read-only sessions go there"
    ),
    (
        "replica_hosts",
        "DB_REPLICA_HOSTS",
        "",
        "read replicas as host[:port], comma-separated, with the primary's credentials and database"
    ),
    (
        "migration_url",
        "DB_MIGRATION_URL",
        "",
        "where migrations connect instead (e.g. the primary itself, bypassing a pooler)"
    ),
    (
        "transaction_pooler",
        "DB_TRANSACTION_POOLER",
        "false",
        "true when DATABASE_URL goes through a transaction-pooling PgBouncer"
    ),
];

/// The `DB_*` parts of the seed's contract, which `DATABASE_URL` overrides.
const PART_KEYS: [&str; 5] = ["host", "port", "name", "user", "pass"];

/// Settings that only PostgreSQL honours.
const POSTGRES_ONLY: [&str; 3] = ["statement_timeout", "schema", "application_name"];

fn info(key: &str) -> &'static SettingInfo {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| unreachable!("unknown setting key {key}"))
}

impl Settings {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: DatabaseUrl) -> Self {
        Settings {
            url,
            max_connections: 10,
            min_connections: 1,
            connect_timeout: Duration::from_secs(5),
            connect_deadline: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            ping_after_idle: Some(Duration::from_secs(30)),
            statement_timeout: Some(Duration::from_secs(30)),
            schema: None,
            application_name: Some("tracker".to_owned()),
            ssl_mode: None,
            ssl_root_cert: None,
            log_statements: LogLevel::Debug,
            slow_statement_threshold: Some(Duration::from_secs(1)),
            sqlite_busy_timeout: Duration::from_secs(5),
            statement_cache_capacity: 100,
            replicas: Vec::new(),
            transaction_pooler: false,
            migration_url: None,
            warnings: Vec::new(),
        }
    }

    /// Loads settings from `source`: built-in defaults, then
    /// `config/default.toml`, then `config/{APP_ENV}.toml` (both optional), then
    /// the environment. Every problem is an [`Error::Config`] naming the setting.
    pub fn load(source: &Source) -> Result<Self> {
        let layers = Layers::read(source)?;
        layers.resolve()
    }

    /// Problems that did not stop loading (ignored or unknown variables). They
    /// are also logged at `warn` when the settings are loaded.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `(setting, value)` rows describing these settings, password redacted, for
    /// `db check` and startup logs.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        let opt = |d: Option<Duration>| d.map_or_else(|| "off".to_owned(), dur);
        let server = self.url.backend() != DbBackend::Sqlite;
        let mut rows = vec![
            ("backend", backend_name(self.url.backend()).to_owned()),
            ("url", self.url.redacted()),
            ("max_connections", self.max_connections.to_string()),
            ("min_connections", self.min_connections.to_string()),
            ("connect_timeout", dur(self.connect_timeout)),
            ("connect_deadline", dur(self.connect_deadline)),
            ("acquire_timeout", dur(self.acquire_timeout)),
            ("idle_timeout", opt(self.idle_timeout)),
            ("max_lifetime", opt(self.max_lifetime)),
            ("ping_after_idle", opt(self.ping_after_idle)),
            ("log_statements", self.log_statements.as_str().to_owned()),
            (
                "slow_statement_threshold",
                opt(self.slow_statement_threshold),
            ),
        ];
        if self.url.backend() == DbBackend::Postgres {
            rows.push(("statement_timeout", opt(self.statement_timeout)));
            rows.push((
                "schema",
                self.schema
                    .clone()
                    .unwrap_or_else(|| "(server default)".to_owned()),
            ));
            rows.push((
                "application_name",
                self.application_name
                    .clone()
                    .unwrap_or_else(|| "(none)".to_owned()),
            ));
        }
        if server {
            rows.push((
                "ssl_mode",
                self.ssl_mode
                    .map_or("(from URL, default prefer)", SslMode::as_str)
                    .to_owned(),
            ));
            rows.push((
                "statement_cache_capacity",
                self.statement_cache_capacity.to_string(),
            ));
        } else {
            rows.push(("sqlite_busy_timeout", dur(self.sqlite_busy_timeout)));
        }
        for replica in &self.replicas {
            rows.push(("replica", replica.redacted()));
        }
        if let Some(url) = &self.migration_url {
            rows.push(("migration_url", url.redacted()));
        }
        if self.transaction_pooler {
            rows.push(("transaction_pooler", "true".to_owned()));
        }
        rows
    }
}

/// The configuration files and variables, before they are merged and checked.
struct Layers {
    /// `(path as shown, contents)`, lowest precedence first.
    files: Vec<(String, Config)>,
    /// Our variables, keyed by setting key.
    env: Map<String, String>,
    warnings: Vec<String>,
}

impl Layers {
    fn read(source: &Source) -> Result<Self> {
        let mut warnings = Vec::new();
        let mut files = Vec::new();
        let dir = source.dir();
        let mut names = vec!["default".to_owned()];
        if let Some(app_env) = source.get("APP_ENV") {
            if app_env.is_empty()
                || !app_env
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::Config(format!(
                    "APP_ENV=\"{app_env}\": expected a name like production (letters, digits, - and _)"
                )));
            }
            names.push(app_env.to_owned());
        }
        for name in names {
            let path = dir.join(format!("{name}.toml"));
            if !path.exists() {
                continue;
            }
            let shown = path.display().to_string();
            let layer = read_file(&path, &shown)?;
            for (key, value) in layer.collect().map_err(|e| file_error(&shown, &e))? {
                if !SETTINGS.iter().any(|s| s.key == key) {
                    return Err(Error::Config(format!(
                        "{shown}: unknown key `{key}` (see the configuration table in README.md)"
                    )));
                }
                if matches!(value.kind, ValueKind::Table(_) | ValueKind::Array(_)) {
                    return Err(Error::Config(format!(
                        "{shown}: `{key}` must be a single value, not a table or list"
                    )));
                }
            }
            files.push((shown, layer));
        }

        let mut env = Map::new();
        for info in SETTINGS {
            if source.not_unicode.contains(info.var) {
                return Err(Error::Config(format!("{}: not valid UTF-8", info.var)));
            }
            if let Some(value) = source.get(info.var) {
                env.insert(info.key.to_owned(), value.to_owned());
            }
        }
        for name in source.vars.keys().chain(&source.not_unicode) {
            if name.starts_with("DB_") && !SETTINGS.iter().any(|s| s.var == name) {
                warnings.push(format!(
                    "{name} is not a setting of ours and is ignored (see the configuration table in README.md)"
                ));
            }
        }
        Ok(Layers {
            files,
            env,
            warnings,
        })
    }

    /// Merges the layers with the `config` crate and checks every value.
    fn resolve(mut self) -> Result<Settings> {
        let mut warnings = std::mem::take(&mut self.warnings);
        let mut builder = Config::builder();
        for (_, layer) in &self.files {
            builder = builder.add_source(layer.clone());
        }
        // `DB_MAX_CONNECTIONS` must stay one key, so the nesting separator is one
        // that cannot occur in our names; `try_parsing` stays off so values such
        // as a password `007` are kept as written.
        let mut db_vars = self.env.clone();
        let url = db_vars.remove("url");
        builder = builder.add_source(
            Environment::with_prefix("DB")
                .prefix_separator("_")
                .separator("__")
                .source(Some(
                    db_vars
                        .into_iter()
                        .map(|(key, value)| (format!("DB_{}", key.to_uppercase()), value))
                        .collect(),
                )),
        );
        builder = builder
            .set_override_option("url", url)
            .map_err(|e| Error::Config(format!("configuration: {e}")))?;
        let merged = builder
            .build()
            .map_err(|e| Error::Config(format!("configuration: {e}")))?;
        let mut values = BTreeMap::new();
        for (key, value) in merged
            .collect()
            .map_err(|e| Error::Config(format!("configuration: {e}")))?
        {
            let text = value.into_string().map_err(|_| {
                Error::Config(format!("{}: expected a single value", self.origin(&key)))
            })?;
            values.insert(key, text);
        }

        let v = Values {
            layers: &self,
            values: &values,
        };
        let url = v.database_url(&mut warnings)?;
        let backend = url.backend();
        let mut s = Settings::new(url);
        if let Some(n) = v.number("max_connections", 1, 10_000)? {
            s.max_connections = n as u32;
        }
        if let Some(n) = v.number("min_connections", 0, 10_000)? {
            s.min_connections = n as u32;
        }
        if s.min_connections > s.max_connections {
            return Err(Error::Config(format!(
                "{}={}: must not exceed the maximum pool size {} ({})",
                v.origin("min_connections"),
                s.min_connections,
                s.max_connections,
                info("max_connections").var
            )));
        }
        if let Some(d) = v.duration("connect_timeout", false)? {
            s.connect_timeout = d.unwrap_or_default();
        }
        if let Some(d) = v.duration("connect_deadline", true)? {
            s.connect_deadline = d.unwrap_or_default();
        }
        if let Some(d) = v.duration("acquire_timeout", false)? {
            s.acquire_timeout = d.unwrap_or_default();
        }
        if let Some(d) = v.duration("idle_timeout", true)? {
            s.idle_timeout = d;
        }
        if let Some(d) = v.duration("max_lifetime", true)? {
            s.max_lifetime = d;
        }
        if let Some(d) = v.duration("ping_after_idle", true)? {
            s.ping_after_idle = d;
        }
        if let Some(d) = v.duration("statement_timeout", true)? {
            s.statement_timeout = d;
        }
        if let Some(schema) = v.text("schema")? {
            if schema.split(',').any(|part| part.trim().is_empty()) {
                return Err(Error::Config(format!(
                    "{}=\"{schema}\": expected schema names separated by commas",
                    v.origin("schema")
                )));
            }
            s.schema = Some(schema.to_owned());
        }
        if let Some(name) = v.text("application_name")? {
            if name.len() > 63 || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                return Err(Error::Config(format!(
                    "{}=\"{name}\": expected at most 63 printable ASCII characters",
                    v.origin("application_name")
                )));
            }
            s.application_name = Some(name.to_owned());
        }
        if let Some(mode) = v.text("ssl_mode")? {
            s.ssl_mode = Some(SslMode::parse(mode).ok_or_else(|| {
                Error::Config(format!(
                    "{}=\"{mode}\": expected disable, prefer, require or verify-full",
                    v.origin("ssl_mode")
                ))
            })?);
        }
        if let Some(path) = v.text("ssl_root_cert")? {
            if !Path::new(path).is_file() {
                return Err(Error::Config(format!(
                    "{}=\"{path}\": no such file",
                    v.origin("ssl_root_cert")
                )));
            }
            s.ssl_root_cert = Some(PathBuf::from(path));
        }
        if let Some(level) = v.text("log_statements")? {
            s.log_statements = LogLevel::parse(level).ok_or_else(|| {
                Error::Config(format!(
                    "{}=\"{level}\": expected off, error, warn, info, debug or trace",
                    v.origin("log_statements")
                ))
            })?;
        }
        if let Some(d) = v.duration("slow_statement_threshold", true)? {
            s.slow_statement_threshold = d;
        }
        if let Some(d) = v.duration("sqlite_busy_timeout", false)? {
            s.sqlite_busy_timeout = d.unwrap_or_default();
        }
        if let Some(n) = v.number("statement_cache_capacity", 0, 100_000)? {
            s.statement_cache_capacity = n as usize;
        }
        s.replicas = v.replicas(&s.url)?;
        if let Some(raw) = v.text("transaction_pooler")? {
            s.transaction_pooler = match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(Error::Config(format!(
                        "{}=\"{raw}\": expected true or false",
                        v.origin("transaction_pooler")
                    )));
                }
            };
            if s.transaction_pooler && backend != DbBackend::Postgres {
                return Err(Error::Config(format!(
                    "{}: transaction pooling is for PostgreSQL (PgBouncer), not {}",
                    v.origin("transaction_pooler"),
                    backend_name(backend)
                )));
            }
        }
        if let Some(raw) = v.text("migration_url")? {
            let url = DatabaseUrl::parse(raw.trim(), &v.origin("migration_url"))?;
            if url.backend() != backend {
                return Err(Error::Config(format!(
                    "{}: a {} URL, but the database is {}",
                    v.origin("migration_url"),
                    backend_name(url.backend()),
                    backend_name(backend)
                )));
            }
            s.migration_url = Some(url);
        }

        if backend != DbBackend::Postgres {
            for key in POSTGRES_ONLY {
                if values.contains_key(key) {
                    warnings.push(format!(
                        "{} applies to PostgreSQL only and is ignored for {}",
                        v.origin(key),
                        backend_name(backend)
                    ));
                }
            }
        }
        if backend == DbBackend::Sqlite {
            for key in ["ssl_mode", "ssl_root_cert", "statement_cache_capacity"] {
                if values.contains_key(key) {
                    warnings.push(format!(
                        "{} does not apply to SQLite and is ignored",
                        v.origin(key)
                    ));
                }
            }
        }
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        s.warnings = warnings;
        Ok(s)
    }

    /// Names where a setting's value came from: its variable, or its key and file.
    fn origin(&self, key: &str) -> String {
        let info = info(key);
        if self.env.contains_key(key) {
            return info.var.to_owned();
        }
        for (shown, layer) in self.files.iter().rev() {
            if layer.get::<Value>(key).is_ok() {
                return format!("{shown}: {key}");
            }
        }
        info.var.to_owned()
    }
}

fn read_file(path: &Path, shown: &str) -> Result<Config> {
    // Read the file ourselves so that an unreadable file is reported as such,
    // not as a missing one.
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{shown}: cannot read: {e}")))?;
    Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .map_err(|e| file_error(shown, &e))
}

/// A file error without the file's text, which may contain a password.
fn file_error(shown: &str, e: &config::ConfigError) -> Error {
    if let config::ConfigError::FileParse { cause, .. } = e
        && let Some(toml) = cause.downcast_ref::<toml::de::Error>()
    {
        let line = toml.span().map(|span| {
            std::fs::read_to_string(shown)
                .map(|text| text[..span.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0)
        });
        let at = match line {
            Some(n) if n > 0 => format!(" at line {n}"),
            _ => String::new(),
        };
        return Error::Config(format!(
            "{shown}: not valid TOML{at}: {}",
            toml.message().trim()
        ));
    }
    Error::Config(format!("{shown}: {e}"))
}

/// Merged values, with checks that name the setting in their message.
struct Values<'l> {
    layers: &'l Layers,
    values: &'l BTreeMap<String, String>,
}

impl Values<'_> {
    fn origin(&self, key: &str) -> String {
        self.layers.origin(key)
    }

    /// A non-empty text value, if set.
    fn text(&self, key: &str) -> Result<Option<&str>> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(Error::Config(format!(
                "{} is empty: unset it or give a value",
                self.origin(key)
            ))),
            Some(v) => Ok(Some(v.as_str())),
        }
    }

    fn number(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
        let Some(raw) = self.text(key)? else {
            return Ok(None);
        };
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(Error::Config(format!(
                "{}=\"{raw}\": expected a whole number {min}-{max}",
                self.origin(key)
            ))),
        }
    }

    /// `Some(None)` for `off` (where allowed), `Some(Some(d))` for a duration.
    fn duration(&self, key: &str, may_be_off: bool) -> Result<Option<Option<Duration>>> {
        let Some(raw) = self.text(key)? else {
            return Ok(None);
        };
        let value = raw.trim();
        if may_be_off && value == "off" {
            return Ok(Some(None));
        }
        let parsed = if value.chars().all(|c| c.is_ascii_digit()) {
            None // A bare number is ambiguous (seconds? milliseconds?): ask for a unit.
        } else {
            humantime::parse_duration(value).ok()
        };
        match parsed {
            Some(d) if d.is_zero() && may_be_off => Ok(Some(None)),
            Some(d) if !d.is_zero() || may_be_off => Ok(Some(Some(d))),
            _ => {
                let off = if may_be_off { " or off" } else { "" };
                let nonzero = if may_be_off { "" } else { " greater than zero" };
                Err(Error::Config(format!(
                    "{}=\"{raw}\": expected a duration{nonzero} with a unit, like 5s, 500ms or 2m{off}",
                    self.origin(key)
                )))
            }
        }
    }

    /// Replica URLs from `DB_REPLICA_URLS` or `DB_REPLICA_HOSTS` (not both),
    /// for the same kind of server as `primary`.
    fn replicas(&self, primary: &DatabaseUrl) -> Result<Vec<DatabaseUrl>> {
        let urls = self.text("replica_urls")?;
        let hosts = self.text("replica_hosts")?;
        let (list, key) = match (urls, hosts) {
            (None, None) => return Ok(Vec::new()),
            (Some(_), Some(_)) => {
                return Err(Error::Config(format!(
                    "{} and {} are both set: use one",
                    self.origin("replica_urls"),
                    self.origin("replica_hosts")
                )));
            }
            (Some(list), None) => (list, "replica_urls"),
            (None, Some(list)) => (list, "replica_hosts"),
        };
        let origin = self.origin(key);
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
            let url = if key == "replica_urls" {
                DatabaseUrl::parse(item, &origin)?
            } else {
                primary.with_host(item).ok_or_else(|| {
                    Error::Config(format!(
                        "{origin}=\"{item}\": expected host or host:port, comma-separated"
                    ))
                })?
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

    /// `DATABASE_URL`, else the `DB_*` parts, else the embedded SQLite default.
    fn database_url(&self, warnings: &mut Vec<String>) -> Result<DatabaseUrl> {
        let parts_set: Vec<&str> = PART_KEYS
            .iter()
            .copied()
            .filter(|k| self.values.contains_key(*k))
            .collect();
        if self.values.contains_key("url") {
            let origin = self.origin("url");
            let raw = self.values["url"].trim();
            if raw.is_empty() {
                return Err(Error::Config(format!(
                    "{origin} is empty: unset it or give a postgres://, mysql:// or sqlite: URL"
                )));
            }
            if !parts_set.is_empty() {
                let names: Vec<String> = parts_set.iter().map(|k| self.origin(k)).collect();
                warnings.push(format!(
                    "{origin} is set, so {} {} ignored",
                    names.join(", "),
                    if names.len() == 1 { "is" } else { "are" }
                ));
            }
            return DatabaseUrl::parse(raw, &origin);
        }
        if parts_set.is_empty() {
            return Ok(DatabaseUrl::sqlite_file(DEFAULT_SQLITE_PATH));
        }
        let required = |key: &str| -> Result<&str> {
            match self.text(key)? {
                Some(v) => Ok(v),
                None => {
                    let set: Vec<String> = parts_set.iter().map(|k| self.origin(k)).collect();
                    Err(Error::Config(format!(
                        "{} is not set: it is required with {} (or set DATABASE_URL)",
                        self.origin(key),
                        set.join(", ")
                    )))
                }
            }
        };
        let host = required("host")?;
        if host.chars().any(|c| c.is_whitespace() || "@?#".contains(c))
            || (!host.starts_with('/') && host.contains('/'))
        {
            return Err(Error::Config(format!(
                "{}=\"{host}\": expected a host name, an IP address or a socket directory",
                self.origin("host")
            )));
        }
        let port = match self.values.get("port") {
            None => 5432,
            Some(raw) => match raw.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(Error::Config(format!(
                        "{}=\"{raw}\": expected a port number 1-65535",
                        self.origin("port")
                    )));
                }
            },
        };
        let database = required("name")?;
        let user = required("user")?;
        let password = SecretString::from(self.values.get("pass").cloned().unwrap_or_default());
        Ok(DatabaseUrl::from_parts(&Parts {
            host,
            port,
            database,
            user,
            password: &password,
        }))
    }
}
