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
