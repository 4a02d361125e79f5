//! Every migrate command on every backend, through the same entry point as
//! the binaries.

use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;
use test_support::{Backend, TestDb};

use crate::support::{
    assert_tables_include, lines, migrate, migrate_with, names, strings, tables, then,
};

test_support::backend_tests! {
    async fn status_reports_without_creating_anything(t: TestDb) {
        let (all, n) = (names(), names().len());
        let report = migrate(&t.settings, &["status"]).await;
        assert_eq!(report, format!("{}0 applied, {n} pending\n", lines("pending ", &all)));
        assert!(tables(&t.db).await.is_empty(), "status created {:?}", tables(&t.db).await);
    }

    async fn up_down_fresh_refresh_reset(t: TestDb) {
        let (all, n) = (names(), names().len());
        let every = format!("{}{n} applied, 0 pending\n", lines("applied ", &all));
        let none = format!("{}0 applied, {n} pending\n", lines("reverted", &all));
        assert_eq!(migrate(&t.settings, &["up"]).await, every);
        assert_eq!(migrate(&t.settings, &["up"]).await, format!("{n} applied, 0 pending\n"));
        assert_eq!(migrate(&t.settings, &["status"]).await, every);

        assert_eq!(migrate(&t.settings, &["down", "-n", &n.to_string()]).await, none);
        assert_eq!(tables(&t.db).await, ["seaql_migrations"]);

        assert_eq!(
            migrate(&t.settings, &["up", "-n", "1"]).await,
            format!("{}1 applied, {} pending\n", lines("applied ", &all[..1]), n - 1)
        );
        crate::support::exec(&t.db, "INSERT INTO employees (full_name, position) VALUES ('Ann', 'dev')").await;
        assert_eq!(migrate(&t.settings, &["fresh"]).await, every);
        assert!(strings(&t.db, "SELECT full_name FROM employees").await.is_empty(), "fresh kept rows");

        assert_eq!(migrate(&t.settings, &["refresh"]).await, every);
        assert_tables_include(&t.db, &["employees", "seaql_migrations", "tasks"]).await;

        assert_eq!(migrate(&t.settings, &["reset"]).await, none);
        assert!(tables(&t.db).await.is_empty());
    }

    /// A newer release applied a migration that this binary does not have
    /// (a rolling deploy, or a rollback): this binary still starts, reports
    /// it, and applies nothing, but neither reverts below it nor applies
    /// its own pending ones on top of it.
    async fn a_database_ahead_of_the_binary_is_served_not_refused(t: TestDb) {
        let (all, n) = (names(), names().len());
        migrate(&t.settings, &["up"]).await;
        let newer = "m20991231_000001_from_a_newer_release";
        crate::support::exec(&t.db, &format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{newer}', 0)"
        )).await;
        let summary = format!("{} applied (1 not in this binary), 0 pending\n", n + 1);
        assert_eq!(
            migrate(&t.settings, &["status"]).await,
            format!(
                "{}applied  {newer} (not in this binary: a newer release's)\n{summary}",
                lines("applied ", &all)
            )
        );
        assert_eq!(migrate(&t.settings, &["up"]).await, summary);
        assert!(migration::pending(&t.db).await.unwrap().is_empty());

        for command in ["down", "fresh", "refresh", "reset"] {
            let reverting = migrate_with::<migration::Migrator>(&t.settings, &[command]).await;
            let refused = reverting.unwrap_err().to_string();
            assert!(refused.contains(&format!("does not have ({newer}), applied after its own")), "{command}: {refused}");
        }
        assert_tables_include(&t.db, &["employees", "tasks"]).await;

        let last = &all[n - 1];
        crate::support::exec(&t.db, &format!("DELETE FROM seaql_migrations WHERE version = '{last}'")).await;
        assert_eq!(migration::pending(&t.db).await.unwrap(), [last.as_str()]);
        let up = migrate_with::<migration::Migrator>(&t.settings, &["up"]).await;
        let refused = up.unwrap_err().to_string();
        assert!(
            refused.contains(&format!("does not have ({newer}), and this binary's {last} are not applied")),
            "{refused}"
        );
    }
}

struct FailsHalfWay;

impl MigrationName for FailsHalfWay {
    fn name(&self) -> &str {
        "m20990101_000001_fails_half_way"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for FailsHalfWay {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("doomed")
                    .col(ColumnDef::new("id").integer().not_null().primary_key())
                    .to_owned(),
            )
            .await?;
        // The reference is an in-memory SQLite database, whose file name is empty.
        let file = manager
            .get_connection()
            .query_one_raw(sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT file FROM pragma_database_list WHERE name = 'main'",
            ))
            .await;
        if let Ok(Some(row)) = file
            && row
                .try_get_by_index::<String>(0)
                .is_ok_and(|f| f.is_empty())
        {
            return Ok(());
        }
        Err(DbErr::Migration(
            "deliberately failing after creating a table".to_owned(),
        ))
    }
}

// The project's migrations, then one that creates a table and fails on
// the database it is applied to (not on the in-memory one that adoption
// learns the schema from).
then!(FailingMigrator, FailsHalfWay);

#[test_support::needs(postgres)]
#[tokio::test]
async fn a_failed_migration_is_rolled_back_alone_on_postgres() {
    let t = TestDb::new(Backend::Postgres).await;
    let err = migrate_with::<FailingMigrator>(&t.settings, &["up"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deliberately failing"), "{err}");
    // Each migration ran in a transaction of its own: the ones before it
    // stay applied, and nothing of the failed one is left.
    assert_tables_include(&t.db, &["employees", "seaql_migrations", "tasks"]).await;
    assert!(!tables(&t.db).await.contains(&"doomed".to_owned()));
    assert_eq!(
        migrate(&t.settings, &["status"]).await,
        format!(
            "{}{n} applied, 0 pending\n",
            lines("applied ", &names()),
            n = names().len()
        )
    );
    let report = migrate_with::<FailingMigrator>(&t.settings, &["status"])
        .await
        .unwrap();
    let expected = format!(
        "pending  m20990101_000001_fails_half_way\n{} applied, 1 pending\n",
        names().len()
    );
    assert!(report.ends_with(&expected), "{report}");
}

#[tokio::test]
async fn a_failed_migration_leaves_nothing_behind_on_sqlite() {
    let t = TestDb::new(Backend::Sqlite).await;
    let err = migrate_with::<FailingMigrator>(&t.settings, &["up"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deliberately failing"), "{err}");
    // One transaction runs the whole command: schema and migration table
    // are as they were before.
    assert!(tables(&t.db).await.is_empty(), "{:?}", tables(&t.db).await);
    // The database is usable afterwards.
    migrate(&t.settings, &["up"]).await;
    assert_tables_include(&t.db, &["employees", "seaql_migrations", "tasks"]).await;
}

/// The `migration` binary reads only the database's settings: a section of
/// the application in `config/default.toml` (`[notes]`) is the application's
/// to check, while an unknown key outside a table stops it with exit code 2.
#[test]
fn the_binary_leaves_the_applications_sections_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let config = dir.path().join("config/default.toml");
    let status = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_migration"))
            .arg("status")
            .current_dir(dir.path())
            .env_clear()
            .output()
            .unwrap()
    };
    std::fs::write(
        &config,
        "max_connections = 4\n[notes]\nmax_title_length = 80\n",
    )
    .unwrap();
    let output = status();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("pending"),
        "{stderr}"
    );
    std::fs::write(
        &config,
        "colour = \"red\"\n[notes]\nmax_title_length = 80\n",
    )
    .unwrap();
    let output = status();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: config/default.toml: unknown key `colour` (see the configuration table in README.md)"
    );
}
