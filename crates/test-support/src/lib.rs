//! Test helpers for this workspace (a dev-dependency only): a database of
//! its own for each test, private PostgreSQL servers and PgBouncer for tests
//! that need password authentication or stop a server, a Patroni cluster
//! (etcd and three PostgreSQL nodes) whose leader tests kill or switch over,
//! a Prometheus server that scrapes a test's `tracker serve`, what a test
//! binary logs ([`capture_logs`]), and tests that are reported as ignored
//! when their server is not configured.
//!
//! [`TestDb::new`] gives each test a database of its own: on PostgreSQL and
//! MySQL a uniquely named database created through the maintenance database
//! and dropped when the [`TestDb`] is dropped, also when the test fails; on
//! SQLite a file in a temporary folder. The server databases are on the
//! servers that `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` name (with any database
//! in the path, e.g. `postgres://postgres@127.0.0.1:5432/postgres`). A test
//! that needs one says so with [`needs`]; without the variable, libtest
//! reports it as ignored. These two variables are the only ones this crate
//! reads.
//!
//! ```no_run
//! test_support::backend_tests! {
//!     async fn it_works(t: test_support::TestDb) {
//!         t.db.ping().await.unwrap();
//!     }
//! }
//! ```
//! expands to the tests `it_works::sqlite`, `it_works::postgres` and
//! `it_works::mysql`.
#![warn(missing_docs)]

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

mod http;
mod logs;
pub mod original_app;
mod patroni;
mod pgbouncer;
mod postgres_server;
mod prometheus;

use db_core::{
    Db, SessionOptions, Settings,
    admin::{create_database, drop_database},
    url::DatabaseUrl,
};
pub use logs::{capture_logs, logged};
pub use patroni::{Killed, Member, Node, PatroniCluster, Promotion, Role};
use percent_encoding::NON_ALPHANUMERIC;
pub use pgbouncer::PgBouncer;
pub use postgres_server::{PrivatePostgres, StopMode, free_port};
pub use prometheus::Prometheus;
pub use test_support_macros::needs;

/// Prefix of every database this module creates.
const PREFIX: &str = "test_db_";

/// Databases older than this are left over from killed test runs and dropped.
const STALE_AFTER_SECS: u64 = 6 * 3600;

/// The backends a test can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh database on the server of `TEST_POSTGRES_URL`.
    Postgres,
    /// A fresh database on the server of `TEST_MYSQL_URL`.
    MySql,
}

impl Backend {
    /// The variable naming the server, if this backend needs one.
    pub fn variable(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("TEST_POSTGRES_URL"),
            Backend::MySql => Some("TEST_MYSQL_URL"),
        }
    }

    /// Settings for this backend's server, with the database from its
    /// variable. Panics for SQLite, and when the variable is not set: a test
    /// that calls this carries [`needs`], so libtest ignores it in that case
    /// unless the tests were built with a variable that is now gone.
    pub fn server_settings(self) -> Settings {
        let (var, url) = self.server_url();
        settings(DatabaseUrl::parse(&url, var).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Settings for `database` on this backend's server with `password` in
    /// the URL. The test servers trust local connections, so any password
    /// gets in: for tests that check that a password is shown nowhere.
    pub fn settings_with_password(self, database: &str, password: &str) -> Settings {
        let (var, url) = self.server_url();
        let mut url = url::Url::parse(&url).unwrap_or_else(|e| panic!("{var}: {e}"));
        let encoded = percent_encoding::utf8_percent_encode(password, NON_ALPHANUMERIC);
        url.set_password(Some(&encoded.to_string()))
            .unwrap_or_else(|()| panic!("{var} cannot carry a password"));
        url.set_path(database);
        settings(DatabaseUrl::parse(url.as_str(), var).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The variable naming this backend's server, and its value.
    fn server_url(self) -> (&'static str, String) {
        let Some(var) = self.variable() else {
            panic!("{self:?} has no server");
        };
        let url = std::env::var(var).unwrap_or_default();
        if url.trim().is_empty() {
            panic!("{var} is not set: this test needs it to name a server (see README.md, Tests)");
        }
        (var, url.trim().to_owned())
    }
}

/// Settings for a test server: they give up waiting for it after 5 seconds.
fn settings(url: DatabaseUrl) -> Settings {
    let mut settings = Settings::new(url);
    settings.connect_deadline = Some(std::time::Duration::from_secs(5));
    settings
}

/// Ends every connection to `database` on the PostgreSQL test server, as a
/// server that shuts down or crashes would.
pub async fn terminate_connections(database: &str) {
    let admin = Db::connect(&Backend::Postgres.server_settings())
        .await
        .unwrap_or_else(|e| panic!("connecting to the PostgreSQL test server: {e}"));
    let session = admin
        .session(SessionOptions::single_statement())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            [database.into()],
        ))
        .await
        .unwrap_or_else(|e| panic!("ending the connections to {database}: {e}"));
    admin.close().await;
}

/// Prints a figure of a fault-injection test where `just chaos` shows it,
/// past the test harness's capture.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "chaos: {line}");
}

/// A database of its own for one test. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDb {
    /// Settings that point at this test's database.
    pub settings: Settings,
    /// A connected handle.
    pub db: Db,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh, empty database: no tables, not even the migrations' own.
    /// Apply the project's migrations with
    /// `migration::up(&t.settings, Duration::from_secs(60))`, as the service
    /// crates' tests do. Panics with a clear message when the
    /// backend's server cannot be used: a configured server that is down is a
    /// failure, not a skip (see [`Backend::server_settings`]).
    pub async fn new(backend: Backend) -> TestDb {
        let (settings, dir) = Self::fresh_settings(backend).await;
        let db = Db::connect(&settings)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
        TestDb {
            settings,
            db,
            backend,
            _dir: dir,
        }
    }

    /// Settings for a fresh database that exists but is not connected yet.
    async fn fresh_settings(backend: Backend) -> (Settings, Option<tempfile::TempDir>) {
        if backend == Backend::Sqlite {
            let dir = tempfile::tempdir().expect("creating a temporary folder");
            let settings = Settings::new(DatabaseUrl::sqlite_file(dir.path().join("test.db")));
            return (settings, Some(dir));
        }
        let server = backend.server_settings();
        sweep_stale(&server).await;
        let mut settings = server.clone();
        settings.url = server.url.with_database(&unique_name());
        create_database(&settings).await.unwrap_or_else(|e| {
            panic!("creating a test database ({}): {e}", settings.url.target())
        });
        (settings, None)
    }

    /// The name of this test's database on its server (on SQLite, of its file).
    pub fn name(&self) -> String {
        let target = self.settings.url.target();
        target.rsplit('/').next().unwrap_or_default().to_owned()
    }

    /// Which backend this database is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Sqlite {
            return;
        }
        // Drop may run while the test's runtime shuts down (or unwinds from a
        // panic); a thread with a runtime of its own can always finish the job.
        let settings = self.settings.clone();
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a runtime to drop the test database");
            runtime.block_on(drop_database(&settings))
        });
        if let Ok(Err(e)) = handle.join() {
            let _ = writeln!(std::io::stderr(), "warning: dropping a test database: {e}");
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `test_db_<unix time>_<pid>_<n>_<random>`: unique across parallel tests
/// and processes, and dated so leftovers can be recognised.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u32 = rand::rng().random_range(0..1_000_000);
    format!("{PREFIX}{}_{}_{n}_{random}", unix_now(), std::process::id())
}

/// Drops test databases left behind by killed runs (once per process).
async fn sweep_stale(server: &Settings) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            // The variable's URL names a database that is always there (the
            // maintenance database), so the list is read there.
            let mut settings = server.clone();
            settings.min_connections = 0;
            settings.max_connections = 1;
            let Ok(db) = Db::connect(&settings).await else {
                return;
            };
            let sql = match db.backend() {
                DbBackend::MySql => "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA",
                _ => "SELECT datname FROM pg_database",
            };
            let rows = match db.read().await {
                Ok(session) => session
                    .query_all_raw(Statement::from_string(db.backend(), sql))
                    .await
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let cutoff = unix_now().saturating_sub(STALE_AFTER_SECS);
            for row in rows {
                let Ok(name) = row.try_get_by_index::<String>(0) else {
                    continue;
                };
                let stale = name
                    .strip_prefix(PREFIX)
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|ts| ts.parse::<u64>().ok())
                    .is_some_and(|ts| ts < cutoff);
                if stale {
                    let mut old = server.clone();
                    old.url = server.url.with_database(&name);
                    let _ = drop_database(&old).await;
                }
            }
            db.close().await;
        })
        .await;
}

/// Writes one test per backend around an async test body taking a
/// [`TestDb`]: `name::sqlite`, `name::postgres`, `name::mysql`. The server
/// variants carry [`needs`], so they are ignored when their server is not
/// configured.
#[macro_export]
macro_rules! backend_tests {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($t:ident : $ty:ty) $body:block
    )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($t: $ty) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body($crate::TestDb::new($crate::Backend::Sqlite).await).await;
            }

            #[$crate::needs(postgres)]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                body($crate::TestDb::new($crate::Backend::Postgres).await).await;
            }

            #[$crate::needs(mysql)]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                body($crate::TestDb::new($crate::Backend::MySql).await).await;
            }
        }
    )*};
}
