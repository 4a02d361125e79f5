//! The SQL that migrations run: recorded as they run, printed by
//! `migrate sql`, and linted with squawk.

use test_support::{Backend, TestDb, original_app};

use crate::support::{migrate, migrate_with, names, tables};

/// squawk's findings on `sql`, one per line; empty when there are none.
fn squawk(sql: &str) -> String {
    let file = tempfile::Builder::new().suffix(".sql").tempfile().unwrap();
    std::fs::write(file.path(), sql).unwrap();
    let output = std::process::Command::new("squawk")
        .args(["--reporter", "gcc"])
        .arg(file.path())
        .output()
        .expect("running squawk");
    if output.status.success() {
        return String::new();
    }
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every migration's SQL passes squawk (its exceptions say why, in the
/// migration): on an empty database, as `migrate sql --all` prints it, and
/// on the original app's database, where adoption converges the schema
/// online while the original may still be writing.
#[test_support::needs(postgres, squawk)]
#[tokio::test]
async fn every_migration_passes_squawk_on_a_fresh_and_an_adopted_database() {
    let fresh = TestDb::new(Backend::Postgres).await;
    let printed = migrate(&fresh.settings, &["sql", "--all"]).await;
    for name in names() {
        assert!(
            printed.contains(&format!("-- {name}\n")),
            "{name} missing:\n{printed}"
        );
    }
    assert_eq!(squawk(&printed), "", "on an empty database:\n{printed}");

    let adopted = TestDb::new(Backend::Postgres).await;
    original_app::create(&adopted.db).await;
    let (report, recorded) = migration::sql::record(migrate_with::<migration::Migrator>(
        &adopted.settings,
        &["up"],
    ))
    .await;
    report.unwrap();
    let printed = format!(
        "{}\n{recorded}",
        migration::sql::session_settings(&adopted.settings)
    );
    for online in [
        "NOT VALID",
        "VALIDATE CONSTRAINT",
        "CREATE INDEX CONCURRENTLY",
        "DROP INDEX CONCURRENTLY",
    ] {
        assert!(printed.contains(online), "{online} missing:\n{printed}");
    }
    assert_eq!(
        squawk(&printed),
        "",
        "on the original app's database:\n{printed}"
    );
}

/// `migrate sql` prints the pending migrations only, from a scratch
/// database, and changes nothing on the one it reads.
#[test_support::needs(postgres)]
#[tokio::test]
async fn migrate_sql_prints_what_is_pending_and_changes_nothing() {
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up", "-n", "1"]).await;
    let before = tables(&t.db).await;
    let printed = migrate(&t.settings, &["sql"]).await;
    let all = names();
    assert!(!printed.contains(&format!("-- {}\n", all[0])), "{printed}");
    for name in &all[1..] {
        assert!(
            printed.contains(&format!("-- {name}\n")),
            "{name} missing:\n{printed}"
        );
    }
    assert!(printed.starts_with("-- Every migration statement runs on a session opened with these settings:\nSET statement_timeout = 0;\nSET lock_timeout = '1000ms';\n"), "{printed}");
    assert_eq!(tables(&t.db).await, before);
    assert_eq!(
        migrate(&t.settings, &["status"]).await.lines().last(),
        Some(format!("1 applied, {} pending", all.len() - 1).as_str())
    );
}

/// A database where an older migration is pending behind newer applied ones
/// (branches merged): the scratch database cannot be brought to its state
/// by the oldest migrations, so `migrate sql` refuses instead of printing
/// another migration's SQL.
#[test_support::needs(postgres)]
#[tokio::test]
async fn migrate_sql_refuses_a_pending_migration_older_than_an_applied_one() {
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    let all = names();
    let forget = format!("DELETE FROM seaql_migrations WHERE version = '{}'", all[1]);
    crate::support::exec(&t.db, &forget).await;
    let err = migrate_with::<migration::Migrator>(&t.settings, &["sql"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is pending, but a newer migration is applied: `migrate sql` prints the SQL of the migrations after the applied ones, so it cannot show this database's; `migrate sql --all` prints every migration's",
            all[1]
        )
    );
}

/// With `DB_SCHEMA` naming a schema of its own, the scratch database gets
/// it too.
#[test_support::needs(postgres)]
#[tokio::test]
async fn migrate_sql_works_in_a_schema_of_its_own() {
    let t = TestDb::new(Backend::Postgres).await;
    crate::support::exec(&t.db, "CREATE SCHEMA app").await;
    let mut settings = t.settings.clone();
    settings.schema = Some("app".to_owned());
    migrate(&settings, &["up", "-n", "1"]).await;
    let printed = migrate(&settings, &["sql"]).await;
    assert!(
        printed.contains(&format!("-- {}\n", names()[1])),
        "{printed}"
    );
    let printed = migrate(&settings, &["sql", "--all"]).await;
    assert!(
        printed.contains(&format!("-- {}\n", names()[0])),
        "{printed}"
    );
}

#[tokio::test]
async fn migrate_sql_needs_postgresql() {
    let t = TestDb::new(Backend::Sqlite).await;
    let err = migrate_with::<migration::Migrator>(&t.settings, &["sql"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "migrate sql prints PostgreSQL's statements: point DATABASE_URL or DB_* at a PostgreSQL server"
    );
}
