//! Connection URLs: built from parts with percent-encoding, parsed and checked
//! with the drivers' own parsers, displayed only with the password redacted.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::{
    AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode,
};
use sea_orm::DbBackend;
use sea_orm::sqlx::mysql::MySqlConnectOptions;
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::SqliteConnectOptions;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result, scrub};

/// Percent-encodes every byte that is not an ASCII letter or digit, so any
/// user name, password or database name survives inside a URL.
pub(crate) fn encode(part: &str) -> String {
    utf8_percent_encode(part, NON_ALPHANUMERIC).to_string()
}

/// What a SQLite file name must not carry unencoded in a URL: it would end
/// the path, start a parameter or name another folder.
const SQLITE_FILE_NAME: &AsciiSet = &CONTROLS.add(b' ').add(b'#').add(b'%').add(b'/').add(b'?');

/// The URL parameters sqlx's PostgreSQL parser understands.
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The URL parameters sqlx's MySQL parser understands.
const MYSQL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslca",
    "ssl-ca",
    "charset",
    "collation",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "socket",
    "timezone",
    "time-zone",
];

/// The URL path for a database name, or, for `.` and `..` (which URL
/// parsers treat as path segments to normalise away, even percent-encoded),
/// an empty path and a `dbname` parameter.
fn database_part(database: &str) -> (String, Vec<String>) {
    if database == "." || database == ".." {
        (String::new(), vec![format!("dbname={}", encode(database))])
    } else {
        (encode(database), Vec::new())
    }
}

/// A database URL. The whole string is a secret because it may carry a password:
/// `Debug` and `Display` show it with the password replaced by `***`.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: SecretString,
    backend: DbBackend,
}

/// The parts of a PostgreSQL connection, as the `DB_*` variables give them.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    /// Host name, IPv4 or IPv6 address (brackets optional), or a Unix socket
    /// directory (starting with `/`).
    pub(crate) host: &'a str,
    /// TCP port.
    pub(crate) port: u16,
    /// Database name.
    pub(crate) database: &'a str,
    /// User name.
    pub(crate) user: &'a str,
    /// Password, possibly empty.
    pub(crate) password: &'a SecretString,
}

impl DatabaseUrl {
    /// Parses and checks a URL: `postgres://` (or `postgresql://`), `mysql://`
    /// (or `mariadb://`) or `sqlite:`. `setting` names where the URL came from,
    /// for the error message; the URL itself never appears in an error.
    pub fn parse(url: &str, setting: &str) -> Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        let backend = match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => DbBackend::Postgres,
            "mysql" | "mariadb" => DbBackend::MySql,
            "sqlite" => DbBackend::Sqlite,
            _ => {
                // Echo the scheme only when it clearly is one; the text before the
                // first `:` of a malformed value could be part of a password.
                let is_scheme = !scheme.is_empty()
                    && scheme.len() <= 20
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+')
                    && url[scheme.len()..].starts_with("://");
                let shown = if is_scheme {
                    format!(" \"{scheme}\"")
                } else {
                    String::new()
                };
                return Err(Error::Config(format!(
                    "{setting}: unknown scheme{shown}: expected postgres://, mysql:// or sqlite:"
                )));
            }
        };
        let this = DatabaseUrl {
            url: SecretString::from(url),
            backend,
        };
        // sqlx ignores unknown parameters, and for PostgreSQL logs their values:
        // a misspelt `password` would end up in the log. Refuse them instead.
        let known = match backend {
            DbBackend::Postgres => POSTGRES_PARAMETERS,
            DbBackend::MySql => MYSQL_PARAMETERS,
            _ => &[],
        };
        if backend != DbBackend::Sqlite
            && let Ok(parsed) = url::Url::parse(url)
        {
            for (key, _) in parsed.query_pairs() {
                let options_key = backend == DbBackend::Postgres
                    && key.starts_with("options[")
                    && key.ends_with(']');
                if !known.contains(&&*key) && !options_key {
                    return Err(Error::Config(format!(
                        "{setting}: unknown {} URL parameter `{key}` (known: {})",
                        backend_name(backend),
                        known.join(", ")
                    )));
                }
            }
        }
        // Check with the driver's own parser now, so a bad URL is a configuration
        // error at load time and never reaches SeaORM, whose error would quote it.
        let checked = match backend {
            DbBackend::Postgres => PgConnectOptions::from_str(url).map(drop),
            DbBackend::MySql => MySqlConnectOptions::from_str(url).map(drop),
            _ => SqliteConnectOptions::from_str(url).map(drop),
        };
        if let Err(e) = checked {
            let reason = scrub(&e.to_string(), this.password().as_deref());
            let reason = reason
                .strip_prefix("error with configuration: ")
                .unwrap_or(&reason);
            return Err(Error::Config(format!(
                "{setting}: not a valid {} URL: {reason}",
                backend_name(backend)
            )));
        }
        Ok(this)
    }

    /// Builds a PostgreSQL URL from parts, percent-encoding user, password and
    /// database name, bracketing IPv6 addresses and passing socket directories
    /// as the `host` parameter.
    pub(crate) fn from_parts(parts: &Parts<'_>) -> Self {
        let user = encode(parts.user);
        let password = parts.password.expose_secret();
        let auth = if password.is_empty() {
            user
        } else {
            format!("{user}:{}", encode(password))
        };
        let (path, mut query) = database_part(parts.database);
        let port = parts.port;
        let host = parts.host;
        if host.starts_with('/') {
            query.push(format!("host={}", encode(host)));
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        let url = if host.starts_with('/') {
            format!("postgres://{auth}@localhost:{port}/{path}{query}")
        } else if host.contains(':') && !host.starts_with('[') {
            format!("postgres://{auth}@[{host}]:{port}/{path}{query}")
        } else {
            format!("postgres://{auth}@{host}:{port}/{path}{query}")
        };
        DatabaseUrl {
            url: SecretString::from(url),
            backend: DbBackend::Postgres,
        }
    }

    /// A SQLite database file, created if missing.
    pub fn sqlite_file(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        DatabaseUrl {
            url: SecretString::from(format!("sqlite://{}?mode=rwc", path.display())),
            backend: DbBackend::Sqlite,
        }
    }

    /// The same server and credentials with another database (for creating
    /// and dropping databases, and for per-test databases). On SQLite, the
    /// file `{database}.db` in the same folder (an in-memory database stays
    /// as it is).
    pub fn with_database(&self, database: &str) -> Self {
        if self.backend == DbBackend::Sqlite {
            let url = self.expose();
            let (path, query) = url
                .split_once('?')
                .map_or((url, None), |(p, q)| (p, Some(q)));
            if path.contains(":memory:") {
                return self.clone();
            }
            let folder = path.rfind('/').map_or("sqlite:".len(), |i| i + 1);
            let name = utf8_percent_encode(database, SQLITE_FILE_NAME);
            let mut sibling = format!("{}{name}.db", &path[..folder]);
            if let Some(query) = query {
                sibling = format!("{sibling}?{query}");
            }
            return DatabaseUrl {
                url: SecretString::from(sibling),
                backend: self.backend,
            };
        }
        let mut url = match url::Url::parse(self.expose()) {
            Ok(url) => url,
            Err(_) => return self.clone(),
        };
        let (path, query) = database_part(database);
        url.set_path(&format!("/{path}"));
        for pair in query {
            let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
            url.query_pairs_mut().append_pair(key, value);
        }
        DatabaseUrl {
            url: SecretString::from(url.to_string()),
            backend: self.backend,
        }
    }

    /// The same credentials and database on another server, given as
    /// `host`, `host:port`, `ipv6`, or `[ipv6]:port`. `None` if that does not
    /// parse.
    pub fn with_host(&self, host_port: &str) -> Option<Self> {
        let mut url = url::Url::parse(self.expose()).ok()?;
        let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
                None if after.is_empty() => None,
                None => return None,
            };
            (format!("[{host}]"), port)
        } else if host_port.matches(':').count() == 1 {
            let (host, port) = host_port.split_once(':')?;
            (
                host.to_owned(),
                Some(port.parse::<u16>().ok().filter(|p| *p > 0)?),
            )
        } else if host_port.contains(':') {
            (format!("[{host_port}]"), None)
        } else {
            (host_port.to_owned(), None)
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        url.set_host(Some(&host)).ok()?;
        if let Some(port) = port {
            url.set_port(Some(port)).ok()?;
        }
        Some(DatabaseUrl {
            url: SecretString::from(url.to_string()),
            backend: self.backend,
        })
    }

    /// Which database server this URL is for.
    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// The URL with its password: the escape hatch for reference code that
    /// connects without this crate (the bench's `seaorm-defaults` stack).
    /// Inside this crate it feeds the drivers' option parsers; nothing else
    /// in the workspace calls it. To start a child process on this database,
    /// use [`child_env`](Self::child_env).
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }

    /// The environment variable that hands this URL to a child process
    /// (`sea-orm-cli`, or one of the workspace's binaries), as a name and a
    /// value for `Command::env`. The value is an `OsString`, which has no
    /// `Display`: the password goes into the child's environment, not into text.
    pub fn child_env(&self) -> (&'static str, OsString) {
        ("DATABASE_URL", OsString::from(self.expose()))
    }

    /// The decoded password, if the URL has one.
    pub(crate) fn password(&self) -> Option<String> {
        let url = url::Url::parse(self.expose()).ok()?;
        let password = url.password()?;
        Some(
            percent_decode_str(password)
                .decode_utf8_lossy()
                .into_owned(),
        )
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let raw = self.expose();
        match url::Url::parse(raw) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                for (key, _) in url.query_pairs() {
                    if key == "password" {
                        return "<URL with a password parameter, not shown>".to_owned();
                    }
                }
                url.to_string()
            }
            Err(_) => format!("{}:<not shown>", backend_name(self.backend)),
        }
    }

    /// Where this URL points, without credentials: `host:port/database`, a
    /// socket path, or a SQLite file.
    pub fn target(&self) -> String {
        match self.backend {
            DbBackend::Sqlite => match SqliteConnectOptions::from_str(self.expose()) {
                Ok(o) => format!("sqlite {}", o.get_filename().display()),
                Err(_) => "sqlite".to_owned(),
            },
            DbBackend::Postgres => match PgConnectOptions::from_str(self.expose()) {
                Ok(o) => describe_server(
                    "postgres",
                    o.get_host(),
                    o.get_port(),
                    o.get_socket(),
                    o.get_database(),
                ),
                Err(_) => "postgres".to_owned(),
            },
            _ => match MySqlConnectOptions::from_str(self.expose()) {
                Ok(o) => describe_server(
                    "mysql",
                    o.get_host(),
                    o.get_port(),
                    o.get_socket(),
                    o.get_database(),
                ),
                Err(_) => "mysql".to_owned(),
            },
        }
    }
}

fn describe_server(
    kind: &str,
    host: &str,
    port: u16,
    socket: Option<&PathBuf>,
    database: Option<&str>,
) -> String {
    let place = match socket {
        Some(path) => path.display().to_string(),
        None => format!("{host}:{port}"),
    };
    match database {
        Some(db) => format!("{kind} {place}/{db}"),
        None => format!("{kind} {place}"),
    }
}

/// The lower-case name of a backend, as used in messages and `db check`.
pub fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgres",
        DbBackend::MySql => "mysql",
        _ => "sqlite",
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests;
