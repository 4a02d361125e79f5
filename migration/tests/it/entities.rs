//! The entity drift check (`just check-entities`): it passes for the
//! committed entities and fails with a readable diff when a migration adds a
//! column that the entities do not have.

use std::path::{Path, PathBuf};

use sea_orm_migration::prelude::*;
use test_support::{Backend, TestDb, original_app};

use crate::support::then;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The flags the justfile records for `sea-orm-cli generate entity`.
fn justfile_flags() -> Vec<String> {
    let justfile = std::fs::read_to_string(workspace().join("justfile")).unwrap();
    let line = justfile
        .lines()
        .find_map(|l| l.strip_prefix("entity_flags := "))
        .expect("the justfile records entity_flags");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

struct AddPriority;

impl MigrationName for AddPriority {
    fn name(&self) -> &str {
        "m20990101_000003_add_task_priority"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPriority {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("tasks")
                    .add_column(ColumnDef::new("priority").integer().not_null().default(0))
                    .to_owned(),
            )
            .await
    }
}

// The project's migrations plus one that adds `tasks.priority`.
then!(DriftMigrator, AddPriority);

/// Runs the check of the committed entities for migrator `M` against
/// `source`; returns the outcome and the report (the diff, if any).
async fn check<M: MigratorTrait>(
    settings: &db_core::Settings,
    source: migration::Source,
) -> (Result<(), migration::Error>, String) {
    let dir = workspace().join("entity/src/generated");
    let mut out = Vec::new();
    let result =
        migration::entities::<M>(settings, source, &dir, &justfile_flags(), true, &mut out).await;
    (result, String::from_utf8_lossy(&out).into_owned())
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn the_committed_entities_are_what_the_migrations_generate() {
    let server = Backend::Postgres.server_settings();
    let (result, report) = check::<migration::Migrator>(&server, migration::Source::Scratch).await;
    assert!(result.is_ok(), "{report}{result:?}");
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn a_new_column_without_regenerated_entities_fails_with_a_diff() {
    let server = Backend::Postgres.server_settings();
    let (result, diff) = check::<DriftMigrator>(&server, migration::Source::Scratch).await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("run `just entities`"), "{err}");
    assert!(diff.contains("+    pub priority: i32,"), "{diff}");
    assert!(diff.contains("tasks.rs"), "{diff}");
}

/// The entities check passes against the original app's database once it is
/// adopted and converged.
#[test_support::needs(postgres)]
#[tokio::test]
async fn the_entities_match_an_adopted_database() {
    let t = TestDb::new(Backend::Postgres).await;
    original_app::create(&t.db).await;
    crate::support::migrate(&t.settings, &["up"]).await;
    let (result, report) = check::<migration::Migrator>(&t.settings, migration::Source::Live).await;
    assert!(result.is_ok(), "{report}{result:?}");
}

/// What sea-orm-cli prints when it fails is shown without the password: it
/// prints the URL when the URL names no database. (No server is reached;
/// sea-orm-cli is installed where the PostgreSQL suites run.)
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_failing_generator_does_not_show_the_password() {
    // The password after the user name, as the URL's parameter (encoded
    // as a form is: `+` for a space), and both (sqlx takes the parameter).
    for (url, shown) in [
        (
            "postgres://app:Sup3r-s3cret@127.0.0.1:5432",
            "app:***@127.0.0.1",
        ),
        (
            "postgres://app@127.0.0.1:5432?password=Sup3r-s3cret",
            "password=***",
        ),
        (
            "postgres://app:Sup3r-decoy@127.0.0.1:5432?password=Sup3r+s3cret",
            "app:***@127.0.0.1:5432?password=***",
        ),
    ] {
        let url = db_core::url::DatabaseUrl::parse(url, "test").unwrap();
        let settings = db_core::Settings::new(url);
        let (result, _) = check::<migration::Migrator>(&settings, migration::Source::Live).await;
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("entities: sea-orm-cli failed: "), "{err}");
        assert!(!err.contains("stack backtrace"), "{err}");
        assert!(err.contains(shown), "{err}");
        assert!(!err.contains("Sup3r"), "{err}");
    }
}
