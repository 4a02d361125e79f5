//! Connection URLs: built from parts with percent-encoding, parsed and checked
//! with the drivers' own parsers, displayed only with the password redacted.
//!
//! A PostgreSQL URL may name several servers as libpq does
//! (`postgres://u@h1:5432,[::1]:5433/db?target_session_attrs=read-write`).
//! sqlx's parser reads one host, so the host list and libpq's
//! `target_session_attrs` and `load_balance_hosts` are taken out here, and the
//! driver sees the URL of the first host. tokio-postgres's `Config` parses
//! libpq host lists too, but it refuses what these URLs carry: the
//! `target_session_attrs` `primary`, `standby` and `prefer-standby` (the
//! read replicas of a cluster), `sslmode=verify-full`, and sqlx's own
//! parameters (`sslrootcert`, `statement-cache-capacity`); so the list is
//! split here.

use std::ffi::OsString;
use std::fmt;
use std::ops::Range;
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
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

use crate::error::{Error, Result, bail, scrub};

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

/// Which server of a host list a connection may use (libpq's
/// `target_session_attrs`). Checked after connecting: `read-write` and
/// `read-only` with `SHOW transaction_read_only`, the others with
/// `pg_is_in_recovery()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(EnumString, Display, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "kebab-case")]
pub enum TargetSessionAttrs {
    /// Any server that answers.
    #[default]
    Any,
    /// A server that accepts writes.
    ReadWrite,
    /// A server in read-only mode (a standby, or `default_transaction_read_only`).
    ReadOnly,
    /// A server that is not in recovery.
    Primary,
    /// A server in recovery (a streaming standby).
    Standby,
    /// A standby if one answers, else any server.
    PreferStandby,
}

/// The order in which a host list is tried (libpq's `load_balance_hosts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(EnumString, Display, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "kebab-case")]
pub enum LoadBalanceHosts {
    /// In the order given.
    #[default]
    Disable,
    /// In a random order, drawn again for every search.
    Random,
}

/// TLS for server connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[derive(EnumString, Display, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "kebab-case")]
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

/// The libpq URL parameters that sqlx does not read and this module takes out.
const TARGET_SESSION_ATTRS: &str = "target_session_attrs";
const LOAD_BALANCE_HOSTS: &str = "load_balance_hosts";

/// The servers of a PostgreSQL URL with a host list or libpq's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hosts {
    /// Host (IPv6 without brackets) and port, in the order given.
    pub(crate) list: Vec<(String, u16)>,
    /// `target_session_attrs`, when given.
    pub(crate) attrs: Option<TargetSessionAttrs>,
    /// `load_balance_hosts`, when given.
    pub(crate) balance: Option<LoadBalanceHosts>,
}

impl Hosts {
    /// The hosts as a URL writes them: `h1:5432,[::1]:5433`.
    fn text(&self) -> String {
        let list = self.list.iter().map(|(host, port)| host_text(host, *port));
        list.collect::<Vec<_>>().join(",")
    }

    /// The URL parameters for `attrs` and `balance`, those given.
    fn parameters(&self) -> Vec<String> {
        let attrs = (self.attrs).map(|a| format!("{TARGET_SESSION_ATTRS}={a}"));
        let balance = (self.balance).map(|b| format!("{LOAD_BALANCE_HOSTS}={b}"));
        attrs.into_iter().chain(balance).collect()
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn host_text(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One port, or a comma-separated list of them, each 1-65535 (`DB_PORT`).
pub(crate) fn ports(text: &str) -> Option<Vec<u16>> {
    let port = |p: &str| p.trim().parse().ok().filter(|p| *p > 0);
    text.split(',').map(port).collect()
}

/// The servers of `DB_HOST` and `DB_PORT`: one host or a comma-separated
/// list, with one port for all or one per host. `host_origin` and
/// `port_origin` name the two settings in errors.
pub(crate) fn host_list<'a>(
    (host, host_origin): (&'a str, &str),
    (port, port_origin): (&str, &str),
) -> Result<Vec<(&'a str, u16)>> {
    let hosts: Vec<&str> = host.split(',').map(str::trim).collect();
    if hosts.len() > 1 {
        if let Some(n) = hosts.iter().position(|h| h.is_empty()) {
            bail!("{host_origin}: host {} of the host list is empty", n + 1);
        }
        if hosts.iter().any(|h| h.starts_with('/')) {
            bail!("{host_origin}: a socket directory cannot be part of a host list");
        }
    }
    let ports = match (ports(port).unwrap_or_default().as_slice(), hosts.len()) {
        ([port], n) => vec![*port; n],
        (ports, n) if ports.len() == n => ports.to_vec(),
        (ports, n) => bail!(
            "{port_origin}: {} ports for {n} hosts in {host_origin}: give one port, or one per host",
            ports.len()
        ),
    };
    Ok(hosts.into_iter().zip(ports).collect())
}

/// A comma-separated list of URLs, where a URL may hold commas itself (a
/// PostgreSQL host list): a new URL starts at a comma followed by a scheme.
/// An empty entry (two commas between URLs, or one at the end) stays empty.
pub(crate) fn split_list(list: &str) -> Vec<String> {
    let starts_url = |part: &str| {
        let part = part.trim_start();
        let scheme = part.split_once("://").map_or("", |(scheme, _)| scheme);
        part.to_ascii_lowercase().starts_with("sqlite:")
            || (scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && (scheme.chars()).all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)))
    };
    let parts: Vec<&str> = list.split(',').collect();
    let mut urls: Vec<String> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let ends_entry = parts.get(i + 1).is_none_or(|next| starts_url(next));
        let empty_entry = part.trim().is_empty() && ends_entry;
        match urls.last_mut() {
            Some(url) if !(starts_url(part) || empty_entry) => {
                url.push(',');
                url.push_str(part);
            }
            _ => urls.push((*part).to_owned()),
        }
    }
    urls
}

/// Reads `host`, `host:port`, `ipv6`, `[ipv6]` or `[ipv6]:port` into the
/// host (without brackets) and the port if given. `None` if that does not parse.
fn host_port(item: &str) -> Option<(String, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (host, port) = if let Some(rest) = item.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(port(p)?)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else if item.matches(':').count() == 1 {
        let (host, p) = item.split_once(':')?;
        (host, Some(port(p)?))
    } else {
        (item, None)
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ', '[', ']', ',']) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// The byte range of the host list in a server URL: after the `://` and the
/// user information, up to the path, query or fragment.
fn host_span(url: &str) -> Option<Range<usize>> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let hosts = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    Some(hosts..end)
}

/// A PostgreSQL URL split into the URL of its first host without libpq's
/// parameters (what sqlx parses) and its [`Hosts`], if it has a host list or
/// one of those parameters.
fn split_hosts(url: &str, setting: &str) -> Result<(String, Option<Hosts>)> {
    let (mut attrs, mut balance) = (None, None);
    let (before, query) = url.split_once('?').unwrap_or((url, ""));
    let (query, fragment) = query
        .split_once('#')
        .map_or((query, None), |(q, f)| (q, Some(f)));
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value).decode_utf8_lossy();
        match key {
            TARGET_SESSION_ATTRS => {
                attrs = Some(keyword(setting, key, &value)?);
            }
            LOAD_BALANCE_HOSTS => {
                balance = Some(keyword(setting, key, &value)?);
            }
            _ => kept.push(pair),
        }
    }
    let span = host_span(before).unwrap_or(before.len()..before.len());
    let items: Vec<&str> = before[span.clone()].split(',').collect();
    if items.len() == 1 && attrs.is_none() && balance.is_none() {
        return Ok((url.to_owned(), None));
    }
    let mut list = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        if item.is_empty() {
            bail!("{setting}: host {n} of the host list is empty");
        }
        let Some((host, port)) = host_port(item) else {
            bail!(
                "{setting}: host {n} of the host list: expected host, host:port or [ipv6]:port with a port 1-65535"
            );
        };
        list.push((host, port.unwrap_or(5432)));
    }
    let (host, port) = &list[0];
    let mut single = format!(
        "{}{}{}",
        &before[..span.start],
        host_text(host, *port),
        &before[span.end..]
    );
    if !kept.is_empty() {
        single = format!("{single}?{}", kept.join("&"));
    }
    if let Some(fragment) = fragment {
        single = format!("{single}#{fragment}");
    }
    Ok((
        single,
        Some(Hosts {
            list,
            attrs,
            balance,
        }),
    ))
}

/// A libpq keyword parameter's value, or an error naming the parameter
/// and the words it takes.
fn keyword<T: FromStr + VariantNames>(setting: &str, key: &str, value: &str) -> Result<T> {
    value.parse().map_err(|_| {
        Error::Config(format!(
            "{setting}: {key}=\"{value}\": expected {}",
            T::VARIANTS.join(", ")
        ))
    })
}

/// `single` (the URL of one host) with the host list and parameters of `hosts`.
fn join_hosts(single: &str, hosts: &Hosts) -> String {
    let Some(span) = host_span(single) else {
        return single.to_owned();
    };
    let mut url = format!(
        "{}{}{}",
        &single[..span.start],
        hosts.text(),
        &single[span.end..]
    );
    let parameters = hosts.parameters();
    if !parameters.is_empty() {
        let (url_part, fragment) = url
            .split_once('#')
            .map_or((url.as_str(), None), |(u, f)| (u, Some(f)));
        let separator = if url_part.contains('?') { '&' } else { '?' };
        let mut joined = format!("{url_part}{separator}{}", parameters.join("&"));
        if let Some(fragment) = fragment {
            joined = format!("{joined}#{fragment}");
        }
        url = joined;
    }
    url
}

/// A database URL. The whole string is a secret because it may carry a password:
/// `Debug` and `Display` show it with the password replaced by `***`.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The URL as given or built.
    url: SecretString,
    /// The URL of the first host without libpq's parameters, when that
    /// differs from `url`: what the driver parses.
    single: Option<SecretString>,
    hosts: Option<Hosts>,
    backend: DbBackend,
}

/// The parts of a PostgreSQL connection, as the `DB_*` variables give them.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    /// Each server: host name, IPv4 or IPv6 address (brackets optional), or
    /// a Unix socket directory (starting with `/`, alone), and its TCP port.
    pub(crate) hosts: &'a [(&'a str, u16)],
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
                bail!(
                    "{setting}: unknown scheme{shown}: expected postgres://, mysql:// or sqlite:"
                );
            }
        };
        // A password with a raw `/`, `?` or `#` ends the host part early, and
        // its rest would be read as the path, parameters or fragment, where
        // errors and logs show it. An `@` there gives it away.
        if backend != DbBackend::Sqlite
            && host_span(url).is_some_and(|h| url[h.end..].contains('@'))
        {
            bail!(
                "{setting}: an @ after the host, as a password with a raw /, ? or # gives: percent-encode them (%2F, %3F, %23; @ is %40)"
            );
        }
        let server_url = backend != DbBackend::Sqlite || url.starts_with("sqlite://");
        let listed = server_url && host_span(url).is_some_and(|span| url[span].contains(','));
        let libpq = [TARGET_SESSION_ATTRS, LOAD_BALANCE_HOSTS]
            .iter()
            .any(|key| {
                url.split_once('?')
                    .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(*key)))
            });
        if backend != DbBackend::Postgres && (listed || libpq) {
            bail!(
                "{setting}: a host list, target_session_attrs and load_balance_hosts are for PostgreSQL, not {}",
                backend_name(backend)
            );
        }
        let (single, hosts) = match backend {
            DbBackend::Postgres => split_hosts(url, setting)?,
            _ => (url.to_owned(), None),
        };
        let this = DatabaseUrl {
            url: SecretString::from(url),
            single: hosts.as_ref().map(|_| SecretString::from(single.clone())),
            hosts,
            backend,
        };
        let url = single.as_str();
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
                    bail!(
                        "{setting}: unknown {} URL parameter `{key}` (known: {})",
                        backend_name(backend),
                        known.join(", ")
                    );
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
            let reason = scrub(&e.to_string(), &this.secrets());
            let reason = reason
                .strip_prefix("error with configuration: ")
                .unwrap_or(&reason);
            bail!(
                "{setting}: not a valid {} URL: {reason}",
                backend_name(backend)
            );
        }
        Ok(this)
    }

    /// Builds a PostgreSQL URL from parts, percent-encoding user, password and
    /// database name, bracketing IPv6 addresses and passing a socket directory
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
        let (first, port) = parts.hosts.first().copied().unwrap_or(("localhost", 5432));
        let socket = first.starts_with('/');
        if socket {
            query.push(format!("host={}", encode(first)));
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        let bare = |host: &str| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        };
        let single = if socket {
            format!("postgres://{auth}@localhost:{port}/{path}{query}")
        } else {
            format!(
                "postgres://{auth}@{}/{path}{query}",
                host_text(&bare(first), port)
            )
        };
        let hosts = (parts.hosts.len() > 1).then(|| Hosts {
            list: parts.hosts.iter().map(|(h, p)| (bare(h), *p)).collect(),
            attrs: None,
            balance: None,
        });
        Self::postgres(single, hosts)
    }

    /// A PostgreSQL URL from the URL of its first host and its [`Hosts`].
    fn postgres(single: String, hosts: Option<Hosts>) -> Self {
        let url = match &hosts {
            Some(hosts) => join_hosts(&single, hosts),
            None => single.clone(),
        };
        DatabaseUrl {
            url: SecretString::from(url),
            single: hosts.as_ref().map(|_| SecretString::from(single)),
            hosts,
            backend: DbBackend::Postgres,
        }
    }

    /// The same URL with libpq's `target_session_attrs` and
    /// `load_balance_hosts` set where given (the `DB_TARGET_SESSION_ATTRS`
    /// and `DB_LOAD_BALANCE_HOSTS` settings). Only PostgreSQL has them.
    pub(crate) fn with_session(
        &self,
        attrs: Option<TargetSessionAttrs>,
        balance: Option<LoadBalanceHosts>,
    ) -> Self {
        if self.backend != DbBackend::Postgres || (attrs.is_none() && balance.is_none()) {
            return self.clone();
        }
        let mut hosts = self.hosts.clone().unwrap_or_else(|| {
            let o = PgConnectOptions::from_str(self.expose()).ok();
            let host = o.as_ref().map_or("localhost".to_owned(), |o| {
                o.get_host()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            });
            Hosts {
                list: vec![(host, o.map_or(5432, |o| o.get_port()))],
                attrs: None,
                balance: None,
            }
        });
        hosts.attrs = attrs.or(hosts.attrs);
        hosts.balance = balance.or(hosts.balance);
        Self::postgres(self.driver_url().to_owned(), Some(hosts))
    }

    /// The host list and libpq parameters, if the URL has them.
    pub(crate) fn hosts(&self) -> Option<&Hosts> {
        self.hosts.as_ref()
    }

    /// The URL the driver parses: the first host, without libpq's parameters.
    pub(crate) fn driver_url(&self) -> &str {
        self.single.as_ref().unwrap_or(&self.url).expose_secret()
    }

    /// A SQLite database file, created if missing.
    pub fn sqlite_file(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        DatabaseUrl {
            url: SecretString::from(format!("sqlite://{}?mode=rwc", path.display())),
            single: None,
            hosts: None,
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
                single: None,
                hosts: None,
                backend: self.backend,
            };
        }
        let mut url = match url::Url::parse(self.driver_url()) {
            Ok(url) => url,
            Err(_) => return self.clone(),
        };
        let (path, query) = database_part(database);
        url.set_path(&format!("/{path}"));
        for pair in query {
            let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
            url.query_pairs_mut().append_pair(key, value);
        }
        if self.backend == DbBackend::Postgres {
            return Self::postgres(url.to_string(), self.hosts.clone());
        }
        DatabaseUrl {
            url: SecretString::from(url.to_string()),
            single: None,
            hosts: None,
            backend: self.backend,
        }
    }

    /// The same credentials and database on another server, given as
    /// `host`, `host:port`, `ipv6`, or `[ipv6]:port`. `None` if that does not
    /// parse.
    pub fn with_host(&self, host_port: &str) -> Option<Self> {
        let mut url = url::Url::parse(self.driver_url()).ok()?;
        let (host, port) = self::host_port(host_port)?;
        let host = match host.contains(':') {
            true => format!("[{host}]"),
            false => host,
        };
        url.set_host(Some(&host)).ok()?;
        if let Some(port) = port {
            url.set_port(Some(port)).ok()?;
        }
        // A server given as a parameter (the primary's socket directory,
        // MySQL's socket) would win over the new host.
        let kept: Vec<(String, String)> = (url.query_pairs())
            .filter(|(k, _)| !matches!(k.as_ref(), "host" | "hostaddr" | "socket"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        Some(DatabaseUrl {
            url: SecretString::from(url.to_string()),
            single: None,
            hosts: None,
            backend: self.backend,
        })
    }

    /// Which database server this URL is for.
    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// The URL with its password: the escape hatch for reference code that
    /// connects without this crate (the bench's `seaorm-defaults` stack and
    /// its reference servers).
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

    /// `text` with this URL's password (as given and percent-encoded)
    /// replaced by `***`: for what another program that was handed the URL
    /// ([`child_env`](Self::child_env)) printed.
    pub fn scrub(&self, text: &str) -> String {
        crate::error::scrub(text, &self.secrets())
    }

    /// The password in each form that text may show it in: after the user
    /// name, and as the `password` parameter (which sqlx takes over the
    /// first when both are given), each as written and decoded.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let Ok(url) = url::Url::parse(self.driver_url()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        if let Some(password) = url.password() {
            found.push(password.to_owned());
            found.push(
                percent_decode_str(password)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        let query = url.query().unwrap_or_default();
        found.extend(
            (query.split('&')).filter_map(|p| p.strip_prefix("password=").map(str::to_owned)),
        );
        found.extend(
            (url.query_pairs())
                .filter_map(|(key, value)| (key == "password").then(|| value.into_owned())),
        );
        found
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let raw = self.driver_url();
        let shown = match url::Url::parse(raw) {
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
            Err(_) => return format!("{}:<not shown>", backend_name(self.backend)),
        };
        match &self.hosts {
            Some(hosts) => join_hosts(&shown, hosts),
            None => shown,
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
            DbBackend::Postgres => match PgConnectOptions::from_str(self.driver_url()) {
                Ok(o) => match &self.hosts {
                    Some(hosts) => match o.get_database() {
                        Some(db) => format!("postgres {}/{db}", hosts.text()),
                        None => format!("postgres {}", hosts.text()),
                    },
                    None => describe_server(
                        "postgres",
                        o.get_host(),
                        o.get_port(),
                        o.get_socket(),
                        o.get_database(),
                    ),
                },
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
