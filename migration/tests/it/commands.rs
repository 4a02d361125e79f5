//! Every migrate command on every backend, through the same entry point as
//! the binaries.

use sea_orm_migration::prelude::*;
use test_support::{Backend, TestDb};

use crate::support::{migrate, migrate_with, strings, tables, with_block_counts};

const FIRST: &str = "m20261124_000001_create_employees_and_tasks";
const SECOND: &str = "m20261125_000001_converge_adopted_schema";
const THIRD: &str = "m20261203_000001_task_block_counts";

test_support::backend_tests! {
    async fn status_reports_without_creating_anything(t: TestDb) {
        let report = migrate(&t.settings, &["status"]).await;
        assert_eq!(report, format!("pending  {FIRST}\npending  {SECOND}\npending  {THIRD}\n0 applied, 3 pending\n"));
        assert!(tables(&t.db).await.is_empty(), "status created {:?}", tables(&t.db).await);
    }

    async fn up_down_fresh_refresh_reset(t: TestDb) {
        assert_eq!(migrate(&t.settings, &["up"]).await, format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));
        assert_eq!(migrate(&t.settings, &["up"]).await, "3 applied, 0 pending\n");
        assert_eq!(migrate(&t.settings, &["status"]).await, format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));

        assert_eq!(migrate(&t.settings, &["down", "-n", "3"]).await, format!("reverted {FIRST}\nreverted {SECOND}\nreverted {THIRD}\n0 applied, 3 pending\n"));
        assert_eq!(tables(&t.db).await, ["seaql_migrations"]);

        assert_eq!(migrate(&t.settings, &["up", "-n", "1"]).await, format!("applied  {FIRST}\n1 applied, 2 pending\n"));
        crate::support::exec(&t.db, "INSERT INTO employees (full_name, position) VALUES ('Ann', 'dev')").await;
        assert_eq!(migrate(&t.settings, &["fresh"]).await, format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));
        assert!(strings(&t.db, "SELECT full_name FROM employees").await.is_empty(), "fresh kept rows");

        assert_eq!(migrate(&t.settings, &["refresh"]).await, format!("applied  {FIRST}\napplied  {SECOND}\napplied  {THIRD}\n3 applied, 0 pending\n"));
        assert_eq!(tables(&t.db).await, with_block_counts(&t.db, &["employees", "seaql_migrations", "tasks"]));

        assert_eq!(migrate(&t.settings, &["reset"]).await, format!("reverted {FIRST}\nreverted {SECOND}\nreverted {THIRD}\n0 applied, 3 pending\n"));
        assert!(tables(&t.db).await.is_empty());
    }
}

/// The project's migration, then one that creates a table and fails.
struct FailingMigrator;

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
        Err(DbErr::Migration(
            "deliberately failing after creating a table".to_owned(),
        ))
    }
}

#[async_trait::async_trait]
impl MigratorTrait for FailingMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = migration::Migrator::migrations();
        all.push(Box::new(FailsHalfWay));
        all
    }
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn a_failed_migration_leaves_nothing_behind_on_postgres() {
    a_failed_migration_leaves_nothing_behind(TestDb::new(Backend::Postgres).await).await;
}

#[tokio::test]
async fn a_failed_migration_leaves_nothing_behind_on_sqlite() {
    a_failed_migration_leaves_nothing_behind(TestDb::new(Backend::Sqlite).await).await;
}

/// On PostgreSQL and SQLite one transaction runs the whole `up`: when a
/// migration fails, schema and migration table are as they were before.
async fn a_failed_migration_leaves_nothing_behind(t: TestDb) {
    let err = migrate_with::<FailingMigrator>(&t.settings, &["up"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deliberately failing"), "{err}");
    assert!(tables(&t.db).await.is_empty(), "{:?}", tables(&t.db).await);
    // The database is usable afterwards.
    migrate(&t.settings, &["up"]).await;
    assert_eq!(
        tables(&t.db).await,
        with_block_counts(&t.db, &["employees", "seaql_migrations", "tasks"])
    );
}
