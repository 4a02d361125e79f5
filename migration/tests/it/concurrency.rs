//! The migration lock: real concurrent processes, and bounded waiting.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use db_core::Settings;
use sea_orm_migration::prelude::*;
use test_support::TestDb;

use crate::support::{migrate_with, names, strings, then};

/// Starts `n` `migration up` processes at once against the database of
/// `settings`; every process must succeed and each migration must be
/// reported applied by exactly one of them.
fn concurrent_up(settings: &Settings, n: usize) {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_migration"))
                .arg("up")
                .env_clear()
                .envs([settings.url.child_env()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting migration")
        })
        .collect();
    let mut applied = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "a migrator failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        applied += stdout.matches("applied  ").count();
    }
    assert_eq!(applied, migration::Migrator::migrations().len());
}

struct Slow;

static SLOW_STARTED: AtomicBool = AtomicBool::new(false);

impl MigrationName for Slow {
    fn name(&self) -> &str {
        "m20990101_000002_slow"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Slow {
    async fn up(&self, _: &SchemaManager) -> Result<(), DbErr> {
        SLOW_STARTED.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    }
}

// The project's migrations, then one that takes its time.
then!(SlowMigrator, Slow);

test_support::backend_tests! {
    async fn eight_concurrent_migrators_apply_each_migration_once(t: TestDb) {
        let settings = t.settings.clone();
        tokio::task::spawn_blocking(move || concurrent_up(&settings, 8)).await.unwrap();
        let recorded = strings(&t.db, "SELECT version FROM seaql_migrations ORDER BY version").await;
        assert_eq!(recorded, names());
    }
}

/// Serialises the tests that use `SlowMigrator`: its flag is process-wide.
static SLOW_MIGRATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

test_support::backend_tests! {
    /// While one migrator holds the lock, another gives up after its lock
    /// timeout with a message that says what it waited for.
    async fn waiting_for_the_lock_is_bounded_and_explained(t: TestDb) {
        let _slow_migrator = SLOW_MIGRATOR.lock().await;
        let backend = t.backend();
        SLOW_STARTED.store(false, Ordering::SeqCst);
        let holder = {
            let settings = t.settings.clone();
            tokio::spawn(async move { migrate_with::<SlowMigrator>(&settings, &["up"]).await })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !SLOW_STARTED.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the slow migration never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = migrate_with::<migration::Migrator>(&t.settings, &["--lock-timeout", "1s", "up"])
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("timed out after 1s"),
            "{backend:?}: {message}"
        );
        assert!(
            message.contains("waiting for the migration lock ("),
            "{backend:?}: {message}"
        );
        // On PostgreSQL it names the session that holds it.
        if backend == test_support::Backend::Postgres {
            assert!(message.contains("), held by pid "), "{message}");
        }
        holder.await.unwrap().expect("the lock holder finishes");
    }
}

/// `just chaos`: twice as many migrators.
#[test_support::needs(postgres, mysql, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_sixteen_concurrent_migrators_on_every_server() {
    for backend in [
        test_support::Backend::Postgres,
        test_support::Backend::MySql,
    ] {
        let t = TestDb::new(backend).await;
        let settings = t.settings.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || concurrent_up(&settings, 16))
            .await
            .unwrap();
        let recorded = strings(
            &t.db,
            "SELECT version FROM seaql_migrations ORDER BY version",
        )
        .await;
        assert_eq!(recorded, names());
        test_support::report(&format!(
            "16 concurrent `migration up` on {backend:?}: all exited 0, each migration recorded once, {:.2}s",
            started.elapsed().as_secs_f64()
        ));
    }
}

/// A migrator killed with SIGKILL in the middle of a migration (held up by
/// another session's uncommitted table of the same name) leaves a state the
/// next `migration up` completes: its transaction and its lock die with it.
#[test_support::needs(postgres, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_killed_migrator_leaves_a_state_the_next_one_completes() {
    let t = TestDb::new(test_support::Backend::Postgres).await;
    let blocker = t.db.begin().await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(&blocker, "CREATE TABLE employees (id INTEGER)")
        .await
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_migration"))
        .arg("up")
        .env_clear()
        .envs([t.settings.url.child_env()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the migrator is inside its migration, blocked on our table.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = strings(
            &t.db,
            "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%CREATE TABLE%employees%'",
        )
        .await;
        if !waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the migrator never reached its migration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    blocker.rollback().await.unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_migration"))
        .arg("up")
        .env_clear()
        .envs([t.settings.url.child_env()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recorded = strings(
        &t.db,
        "SELECT version FROM seaql_migrations ORDER BY version",
    )
    .await;
    assert_eq!(recorded, names());
    test_support::report("SIGKILL mid-migration: the next `migration up` applied it and exited 0");
}

/// A migration whose one statement takes long: on PostgreSQL half a
/// minute's sleep; on MySQL an update of a row that the test holds locked,
/// which (unlike `SLEEP`) the server goes on with when its client leaves.
struct Sleepy;

impl MigrationName for Sleepy {
    fn name(&self) -> &str {
        "m20990101_000010_sleepy"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Sleepy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sleep = match manager.get_database_backend() {
            sea_orm::DbBackend::MySql => MYSQL_WAIT,
            sea_orm::DbBackend::Postgres => "SELECT pg_sleep(30)",
            // The reference schema of adoption, on SQLite, learns nothing from it.
            _ => return Ok(()),
        };
        manager.get_connection().execute_unprepared(sleep).await?;
        Ok(())
    }
}

then!(SleepyMigrator, Sleepy);

/// The sleepy migration's statement on MySQL.
const MYSQL_WAIT: &str = "UPDATE held SET n = n + 1 WHERE id = 1";

/// Waits until the server of `db` runs the sleepy migration's statement.
async fn sleeping(db: &db_core::Db) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(db).await == 0 {
        assert!(Instant::now() < deadline, "the migration never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many sessions of the server of `db` run the sleepy migration's statement.
async fn running(db: &db_core::Db) -> i64 {
    let sql = match db.backend() {
        sea_orm::DbBackend::MySql => &format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = '{MYSQL_WAIT}'"
        ),
        _ => {
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'"
        }
    };
    crate::support::int(db, sql).await
}

/// The lock's session ended (an operator's kill, a proxy's idle cut) while
/// one long statement runs: the migration stops within seconds instead of
/// going on beside the next migrator, and is not recorded.
#[test_support::needs(postgres, mysql)]
#[tokio::test]
async fn a_migration_whose_lock_is_lost_mid_statement_stops() {
    for backend in [
        test_support::Backend::Postgres,
        test_support::Backend::MySql,
    ] {
        let t = TestDb::new(backend).await;
        let holder = match backend {
            test_support::Backend::MySql => {
                crate::support::exec(&t.db, "CREATE TABLE held (id INT PRIMARY KEY, n INT)").await;
                crate::support::exec(&t.db, "INSERT INTO held VALUES (1, 0)").await;
                let holder = t.db.begin().await.unwrap();
                let lock = "SELECT n FROM held WHERE id = 1 FOR UPDATE";
                sea_orm::ConnectionTrait::execute_unprepared(&holder, lock)
                    .await
                    .unwrap();
                Some(holder)
            }
            _ => None,
        };
        let migrator = {
            let settings = t.settings.clone();
            tokio::spawn(async move { migrate_with::<SleepyMigrator>(&settings, &["up"]).await })
        };
        sleeping(&t.db).await;
        match backend {
            test_support::Backend::MySql => {
                let lock = "SELECT IS_USED_LOCK(CONCAT('migration', ':', SHA1(DATABASE())))";
                let id = crate::support::int(&t.db, lock).await;
                crate::support::exec(&t.db, &format!("KILL {id}")).await;
            }
            _ => {
                let ended = strings(
                    &t.db,
                    "SELECT pg_terminate_backend(pid)::text FROM pg_locks \
                     WHERE locktype = 'advisory' AND granted AND database = \
                     (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .await;
                assert_eq!(ended, ["true"]);
            }
        }
        let ended = tokio::time::timeout(Duration::from_secs(20), migrator).await;
        // Nor does its statement run on: the server cancelled it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut runs_on = running(&t.db).await > 0;
        while runs_on && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            runs_on = running(&t.db).await > 0;
        }
        // Let go of the row before any assertion: a test database is
        // dropped only once nothing holds a lock in it.
        if let Some(holder) = holder {
            holder.rollback().await.unwrap();
        }
        let err = ended.expect("the migration went on").unwrap().unwrap_err();
        assert!(
            err.to_string()
                .contains("the migration lock was lost, so the migration stops"),
            "{backend:?}: {err}"
        );
        assert!(!runs_on, "{backend:?}: the statement runs on");
        let recorded = strings(&t.db, "SELECT version FROM seaql_migrations").await;
        assert!(
            !recorded.iter().any(|v| v == "m20990101_000010_sleepy"),
            "{recorded:?}"
        );
    }
}

/// The server paused (`SIGSTOP`: its sockets stay open) while one long
/// statement runs: the migrator stops once the lock's connection gives no
/// answer within the lock's timeout (5 s here), instead of waiting for the
/// server; and not after a second one (as when one check of the lock waits
/// behind another, or the lock's release waits for an answer too).
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_migration_on_a_paused_server_stops_after_the_lock_timeout() {
    let server = tokio::task::spawn_blocking(|| {
        test_support::PrivatePostgres::start("pw").expect("starting a private PostgreSQL")
    })
    .await
    .unwrap();
    let url = db_core::url::DatabaseUrl::parse(&server.url("postgres"), "test").unwrap();
    let settings = Settings::new(url);
    let db = db_core::Db::connect(&settings).await.unwrap();
    let migrator = {
        let settings = settings.clone();
        tokio::spawn(async move {
            migrate_with::<SleepyMigrator>(&settings, &["--lock-timeout", "5s", "up"]).await
        })
    };
    sleeping(&db).await;
    server.pause().unwrap();
    // The lock's 5 s, a heartbeat's 1 s, the cancel's 2 s, the pool's
    // close (1 s), and room to spare; waiting twice took 17 s.
    let ended = tokio::time::timeout(Duration::from_secs(12), migrator).await;
    server.resume().unwrap();
    let err = ended
        .expect("the migration waited for the paused server")
        .unwrap()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("the migration lock was lost, so the migration stops"),
        "{message}"
    );
    assert!(message.contains("gives no answer"), "{message}");
    assert!(!message.contains("pw@"), "{message}");
}
