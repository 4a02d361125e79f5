//! Shared helpers: run a migrate command as the CLI would parse it, query a
//! scalar, list tables.

use clap::Parser;
use db_core::{Db, Session, SessionOptions, Settings};
use migration::cli::MigrateArgs;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: MigrateArgs,
}

/// Parses `words` like `migration up -n 1`.
pub fn args(words: &[&str]) -> MigrateArgs {
    Cli::parse_from(std::iter::once("migration").chain(words.iter().copied())).args
}

/// Runs a command for migrator `M`; returns its report.
pub async fn migrate_with<M: MigratorTrait>(
    settings: &Settings,
    words: &[&str],
) -> Result<String, migration::Error> {
    let mut out = Vec::new();
    migration::run_with::<M>(settings, &args(words), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

/// Runs a command for the project's migrator.
pub async fn migrate(settings: &Settings, words: &[&str]) -> String {
    migrate_with::<migration::Migrator>(settings, words)
        .await
        .unwrap_or_else(|e| panic!("migrate {words:?}: {e}"))
}

/// The user tables of the database, sorted.
/// Asserts that the database's tables include `some`: what a test is about,
/// without pinning the whole list (a new migration may add tables).
pub async fn assert_tables_include(db: &Db, some: &[&str]) {
    let all = tables(db).await;
    let missing: Vec<_> = some
        .iter()
        .filter(|t| !all.iter().any(|a| a == *t))
        .collect();
    assert!(missing.is_empty(), "missing tables {missing:?} in {all:?}");
}

pub async fn tables(db: &Db) -> Vec<String> {
    let sql = match db.backend() {
        DbBackend::Postgres => {
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        }
        DbBackend::MySql => {
            "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1"
        }
        _ => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        }
    };
    strings(db, sql).await
}

/// A read-only session that sees the latest committed state (the primary).
async fn latest(db: &Db) -> Session {
    db.session(SessionOptions::read_only().on_primary())
        .await
        .unwrap()
}

/// The first column of every row, as text.
pub async fn strings(db: &Db, sql: &str) -> Vec<String> {
    latest(db)
        .await
        .query_all_raw(Statement::from_string(db.backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// Executes SQL (one statement).
pub async fn exec(db: &Db, sql: &str) {
    db.session(SessionOptions::single_statement())
        .await
        .unwrap()
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A single integer.
pub async fn int(db: &Db, sql: &str) -> i64 {
    let row = latest(db)
        .await
        .query_one_raw(Statement::from_string(db.backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0)
        .or_else(|_| row.try_get_by_index::<i32>(0).map(i64::from))
        .unwrap()
}

/// The project's migrations, oldest first: tests name the ones they are
/// about and take the rest from here, so a new migration breaks none.
pub fn names() -> Vec<String> {
    migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

/// A report's lines for `names`: `verb` as the report pads it (`applied `,
/// `pending `, `reverted`), then the name.
pub fn lines(verb: &str, names: &[String]) -> String {
    names.iter().map(|n| format!("{verb} {n}\n")).collect()
}

/// Declares `$migrator`: the project's migrations, then `$migration`s.
macro_rules! then {
    ($migrator:ident, $($migration:expr),+) => {
        struct $migrator;

        #[async_trait::async_trait]
        impl sea_orm_migration::MigratorTrait for $migrator {
            fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
                let mut all = migration::Migrator::migrations();
                $(all.push(Box::new($migration));)+
                all
            }
        }
    };
}
pub(crate) use then;
