//! Per-test databases on real servers (feature `testing`).
//!
//! [`TestDb::new`] gives each test a database of its own: on PostgreSQL and
//! MySQL a uniquely named database created through the maintenance database
//! and dropped when the [`TestDb`] is dropped, also when the test fails; on
//! SQLite a file in a temporary folder. Server backends run only when
//! `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` name a server (with any database in
//! the path, e.g. `postgres://postgres@127.0.0.1:5432/postgres`); otherwise the
//! test returns early and a note on standard error says which suites did not
//! run. These two variables are the only ones this module reads.
//!
//! ```no_run
//! db_core::backend_tests! {
//!     async fn it_works(t: db_core::testing::TestDb) {
//!         t.db.ping().await.unwrap();
//!     }
//! }
//! ```
//! expands to the tests `it_works::sqlite`, `it_works::postgres` and
//! `it_works::mysql`.

use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

pub mod original_app;
mod pgbouncer;
mod postgres_server;

pub use pgbouncer::PgBouncer;
pub use postgres_server::{PrivatePostgres, StopMode, free_port};

use crate::admin::{create_database, drop_database};
use crate::connect::maintenance;
use crate::db::Db;
use crate::settings::Settings;
use crate::url::DatabaseUrl;

/// Prefix of every database this module creates.
const PREFIX: &str = "tracker_test_";

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

    /// Settings for this backend's server, with the database from the variable,
    /// or `None` (after a one-time note on standard error) when it is not set.
    pub fn server_settings(self) -> Option<Settings> {
        let var = self.variable()?;
        match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => {
                let url = DatabaseUrl::parse(url.trim(), var).unwrap_or_else(|e| panic!("{e}"));
                let mut settings = Settings::new(url);
                settings.connect_deadline = std::time::Duration::from_secs(5);
                Some(settings)
            }
            _ => {
                note_skipped(self, var);
                None
            }
        }
    }
}

fn note_skipped(backend: Backend, var: &str) {
    static POSTGRES: Once = Once::new();
    static MYSQL: Once = Once::new();
    let once = if backend == Backend::Postgres {
        &POSTGRES
    } else {
        &MYSQL
    };
    once.call_once(|| {
        // Written straight to the stream: the test harness captures `eprintln!`
        // of passing tests, and this note must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "note: {var} is not set: the {backend:?} suites of this binary did not run \
             (set it to a server URL, e.g. as .ci/run does, to run them)"
        );
    });
}

/// Whether the long fault-injection tests (`just chaos`) should run: when
/// `CHAOS` is set. Otherwise a one-time note says they did not.
pub fn chaos_enabled() -> bool {
    static NOTE: Once = Once::new();
    let enabled = std::env::var_os("CHAOS").is_some_and(|v| !v.is_empty());
    if !enabled {
        NOTE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "note: CHAOS is not set: the fault-injection tests of this binary did not run (just chaos runs them)"
            );
        });
    }
    enabled
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
    /// A fresh, empty database, or `None` when the backend's server is not
    /// configured. Panics with a clear message when it is configured but
    /// cannot be used: a configured server that is down is a failure, not a skip.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        let (settings, dir) = Self::fresh_settings(backend).await?;
        let db = Db::connect(&settings)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
        Some(TestDb {
            settings,
            db,
            backend,
            _dir: dir,
        })
    }

    /// Settings for a fresh database that exists but is not connected yet.
    async fn fresh_settings(backend: Backend) -> Option<(Settings, Option<tempfile::TempDir>)> {
        if backend == Backend::Sqlite {
            let dir = tempfile::tempdir().expect("creating a temporary folder");
            let settings = Settings::new(DatabaseUrl::sqlite_file(dir.path().join("test.db")));
            return Some((settings, Some(dir)));
        }
        let server = backend.server_settings()?;
        sweep_stale(&server).await;
        let mut settings = server.clone();
        settings.url = server.url.with_database(&unique_name());
        create_database(&settings).await.unwrap_or_else(|e| {
            panic!("creating a test database ({}): {e}", settings.url.target())
        });
        Some((settings, None))
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

/// `tracker_test_<unix time>_<pid>_<n>_<random>`: unique across parallel tests
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
            let Ok((conn, _)) = maintenance(server).await else {
                return;
            };
            let backend = conn.get_database_backend();
            let sql = match backend {
                DbBackend::MySql => "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA",
                _ => "SELECT datname FROM pg_database",
            };
            let rows = conn
                .query_all_raw(Statement::from_string(backend, sql))
                .await
                .unwrap_or_default();
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
            let _ = conn.close().await;
        })
        .await;
}

/// Writes one test per backend around an async test body taking a
/// [`TestDb`]: `name::sqlite`, `name::postgres`, `name::mysql`. Server
/// variants return early when their server is not configured.
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
                if let Some(t) = $crate::testing::TestDb::new($crate::testing::Backend::Sqlite).await {
                    body(t).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(t) = $crate::testing::TestDb::new($crate::testing::Backend::Postgres).await {
                    body(t).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                if let Some(t) = $crate::testing::TestDb::new($crate::testing::Backend::MySql).await {
                    body(t).await;
                }
            }
        }
    )*};
}
