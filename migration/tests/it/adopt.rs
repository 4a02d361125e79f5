//! Adopting the original app's database on every backend: recorded without
//! running, converged to the fresh schema with every row kept; refused with
//! a list of differences when the tables differ; baseline; reverting needs
//! `--force`; concurrent adopters record the migration once.

use std::collections::{BTreeMap, BTreeSet};

use db_core::Db;
use migration::inspect;
use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;
use test_support::{TestDb, original_app};

use crate::support::{int, lines, migrate, migrate_with, names, strings, tables, then};

const FIRST: &str = "m20261124_000001_create_employees_and_tasks";
const SECOND: &str = "m20261125_000001_converge_adopted_schema";

/// What must be equal between an adopted and a fresh schema: columns with
/// type, nullability and generated ids; primary keys; foreign keys with
/// target and delete rule; the sets of indexed columns. Not names.
type Shape = BTreeMap<String, (String, String, BTreeSet<String>, BTreeSet<String>)>;

async fn shape(db: &Db) -> Shape {
    let session = db.read().await.unwrap();
    inspect::tables(&session)
        .await
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name == "employees" || name == "tasks")
        .map(|(name, t)| {
            let columns = format!("{:?}", t.columns);
            let key = t.primary_key.join(",");
            let fks = t
                .foreign_keys
                .values()
                .map(|fk| {
                    format!(
                        "{} -> {} {}",
                        fk.columns.join(","),
                        fk.target(),
                        fk.on_delete
                    )
                })
                .collect();
            let indexes = t
                .indexes
                .values()
                .map(|i| {
                    format!(
                        "{}{}",
                        i.columns.join(","),
                        if i.unique { " unique" } else { "" }
                    )
                })
                .collect();
            (name, (columns, key, fks, indexes))
        })
        .collect()
}

/// The whole catalog, names included: equal before and after means nothing changed.
async fn catalog(db: &Db) -> String {
    let session = db.read().await.unwrap();
    format!("{:?}", inspect::tables(&session).await.unwrap())
}

async fn fresh_shape(backend: test_support::Backend) -> Shape {
    let fresh = TestDb::new(backend).await;
    migrate(&fresh.settings, &["up"]).await;
    shape(&fresh.db).await
}

test_support::backend_tests! {
    async fn the_original_database_is_adopted_and_converged(t: TestDb) {
        original_app::create(&t.db).await;
        let rows = original_app::rows(&t.db).await;
        assert_eq!(rows.len(), 1 + 3 + 4, "{rows:?}");

        let (all, n) = (names(), names().len());
        let report = migrate(&t.settings, &["up"]).await;
        assert_eq!(
            report,
            format!("adopted  {FIRST} (recorded as applied without running it)\n{}{n} applied, 0 pending\n", lines("applied ", &all[1..]))
        );
        assert_eq!(migrate(&t.settings, &["status"]).await, format!("{}{n} applied, 0 pending\n", lines("applied ", &all)));

        // Every row kept, byte for byte; the original's own table untouched.
        assert_eq!(original_app::rows(&t.db).await, rows);
        crate::support::assert_tables_include(
            &t.db,
            &["alembic_version", "employees", "seaql_migrations", "seaql_migrations_adopted", "tasks"],
        )
        .await;

        // The schema is the one a fresh `up` makes (names aside).
        assert_eq!(shape(&t.db).await, fresh_shape(t.backend()).await);

        // A second `up` changes nothing.
        let before = catalog(&t.db).await;
        assert_eq!(migrate(&t.settings, &["up"]).await, format!("{n} applied, 0 pending\n"));
        assert_eq!(catalog(&t.db).await, before);
        assert_eq!(original_app::rows(&t.db).await, rows);

        // The next rows get the next ids.
        original_app::execute(&t.db, &[
            "INSERT INTO employees (full_name, position) VALUES ('New', 'dev')",
            "INSERT INTO tasks (title, status) VALUES ('New', 'todo')",
        ]).await;
        assert_eq!(int(&t.db, "SELECT max(id) FROM employees").await, 6);
        assert_eq!(int(&t.db, "SELECT max(id) FROM tasks").await, 10);
    }

    async fn reverting_an_adopted_migration_needs_force(t: TestDb) {
        original_app::create(&t.db).await;
        migrate(&t.settings, &["up"]).await;
        // The later migrations were run, not adopted: they revert freely.
        let (all, n) = (names(), names().len());
        assert_eq!(
            migrate(&t.settings, &["down", "-n", &(n - 1).to_string()]).await,
            format!("{}1 applied, {} pending\n", lines("reverted", &all[1..]), n - 1)
        );
        for words in [&["down"][..], &["reset"], &["refresh"], &["fresh"]] {
            let error = migrate_with::<migration::Migrator>(&t.settings, words).await.unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("refusing to revert {FIRST}: adopted from tables this project did not create, which reverting would drop with their data; add --force to do it anyway"),
                "{words:?}"
            );
        }
        assert_eq!(int(&t.db, "SELECT count(*) FROM tasks").await, 4);
        assert_eq!(migrate(&t.settings, &["down", "--force"]).await, format!("reverted {FIRST}\n0 applied, {n} pending\n"));
        assert_eq!(tables(&t.db).await, ["alembic_version", "seaql_migrations", "seaql_migrations_adopted"]);
        // Made anew, the tables are this project's own: no --force needed.
        migrate(&t.settings, &["up"]).await;
        assert_eq!(
            migrate(&t.settings, &["down", "-n", &n.to_string()]).await,
            format!("{}0 applied, {n} pending\n", lines("reverted", &all))
        );
    }

    async fn tables_that_differ_are_refused_and_left_alone(t: TestDb) {
        original_app::create(&t.db).await;
        let (drop_status, retype_deadline) = match t.db.backend() {
            sea_orm::DbBackend::Postgres => (
                "ALTER TABLE tasks DROP COLUMN status",
                "ALTER TABLE tasks ALTER COLUMN deadline TYPE text",
            ),
            sea_orm::DbBackend::MySql => (
                "ALTER TABLE tasks DROP COLUMN status",
                "ALTER TABLE tasks MODIFY deadline TEXT",
            ),
            _ => (
                "ALTER TABLE tasks DROP COLUMN status",
                "ALTER TABLE employees ADD COLUMN nickname TEXT",
            ),
        };
        original_app::execute(&t.db, &[drop_status, retype_deadline]).await;
        let rows = strings(&t.db, "SELECT title FROM tasks ORDER BY id").await;
        let before = catalog(&t.db).await;

        let error = migrate_with::<migration::Migrator>(&t.settings, &["up"]).await.unwrap_err();
        let expected_difference = if t.db.backend() == sea_orm::DbBackend::Sqlite {
            "employees.nickname: a column the migration does not create"
        } else {
            "tasks.deadline: expected date, found text"
        };
        let text = error.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(&format!("the existing tables differ from what migration {FIRST} creates, so nothing was changed:")), "{text}");
        assert!(lines.contains(&expected_difference), "{text}");
        assert!(lines.contains(&"tasks.status: missing column (text)"), "{text}");
        assert_eq!(
            lines.last(),
            Some(&format!("fix the tables, or record the migration as applied without checking: `tracker migrate baseline --to {FIRST}`").as_str())
        );
        assert_eq!(catalog(&t.db).await, before, "the schema changed");
        assert_eq!(strings(&t.db, "SELECT title FROM tasks ORDER BY id").await, rows);

        // Baseline records it without checking; the rest applies normally.
        assert_eq!(
            migrate(&t.settings, &["baseline", "--to", FIRST]).await,
            format!("adopted  {FIRST} (recorded as applied without running it)\n1 applied, {} pending\n", names().len() - 1)
        );
    }

    async fn baseline_refuses_a_database_without_the_tables(t: TestDb) {
        let error = migrate_with::<migration::Migrator>(&t.settings, &["baseline"]).await.unwrap_err();
        assert_eq!(error.to_string(), "the database has none of the tables the migrations create: nothing to baseline; run `migrate up`");
        let error = migrate_with::<migration::Migrator>(&t.settings, &["baseline", "--to", FIRST]).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("the database has none of the tables of the migrations up to {FIRST} (employees, tasks): nothing to baseline; run `migrate up`")
        );
        let error = migrate_with::<migration::Migrator>(&t.settings, &["baseline", "--to", "m1_nope"]).await.unwrap_err();
        assert_eq!(error.to_string(), "there is no migration m1_nope; `migrate status` lists them");
        assert!(tables(&t.db).await.is_empty(), "{:?}", tables(&t.db).await);

        // Without --to: up to the newest migration whose tables all exist.
        original_app::create(&t.db).await;
        assert_eq!(
            migrate(&t.settings, &["baseline"]).await,
            format!("adopted  {FIRST} (recorded as applied without running it)\n1 applied, {} pending\n", names().len() - 1)
        );
    }

    async fn concurrent_adopters_record_the_migration_once(t: TestDb) {
        original_app::create(&t.db).await;
        let reports = futures::future::join_all((0..8).map(|_| migrate(&t.settings, &["up"]))).await;
        let adopted = reports.iter().filter(|r| r.contains(&format!("adopted  {FIRST}"))).count();
        let converged = reports.iter().filter(|r| r.contains(&format!("applied  {SECOND}"))).count();
        assert_eq!((adopted, converged), (1, 1), "{reports:#?}");
        assert_eq!(int(&t.db, "SELECT count(*) FROM seaql_migrations").await, names().len() as i64);
        assert_eq!(int(&t.db, "SELECT count(*) FROM seaql_migrations_adopted").await, 1);
    }

    async fn convergence_changes_nothing_on_a_fresh_schema(t: TestDb) {
        migrate(&t.settings, &["up", "-n", "1"]).await;
        let before = catalog(&t.db).await;
        assert_eq!(
            migrate(&t.settings, &["up", "-n", "1"]).await,
            format!("applied  {SECOND}\n2 applied, {} pending\n", names().len() - 2)
        );
        assert_eq!(catalog(&t.db).await, before);
    }
}

/// A migration outside a transaction, written to be run again: it creates a
/// table, then builds a unique index on `tasks.title`, which fails while
/// titles repeat.
struct Projects;

impl MigrationName for Projects {
    fn name(&self) -> &str {
        "m20990101_000001_projects"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Projects {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let table = Table::create()
            .table("projects")
            .if_not_exists()
            .col(
                ColumnDef::new("id")
                    .integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .to_owned();
        manager.create_table(table).await?;
        let index = Index::create()
            .name("uq_tasks_title")
            .table("tasks")
            .col("title")
            .unique()
            .to_owned();
        migration::online::create_index(manager, index).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("projects").to_owned())
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}

then!(WithProjects, Projects);

test_support::backend_tests! {
    /// Tables left by a migration of ours that stopped midway are not another
    /// tool's to adopt: the next `up` runs it again, and it finishes.
    async fn a_migration_that_stopped_midway_is_run_again_not_adopted(t: TestDb) {
        migrate(&t.settings, &["up"]).await;
        let twice = "INSERT INTO tasks (title, status) VALUES ('twice', 'todo')";
        original_app::execute(&t.db, &[twice, twice]).await;
        migrate_with::<WithProjects>(&t.settings, &["up"]).await.unwrap_err();
        let last = "DELETE FROM tasks WHERE id = (SELECT m FROM (SELECT max(id) AS m FROM tasks) AS x)";
        original_app::execute(&t.db, &[last]).await;

        let report = migrate_with::<WithProjects>(&t.settings, &["up"]).await.unwrap();
        let n = names().len() + 1;
        assert_eq!(report, format!("applied  {}\n{n} applied, 0 pending\n", Projects.name()));
        let again = t.db.autocommit().execute_unprepared(twice).await;
        assert!(again.is_err(), "the unique index was not built");
    }
}

/// MySQL replaces a foreign key in two statements: when the new key cannot
/// be added (a row that a dump restored with `FOREIGN_KEY_CHECKS=0` breaks
/// it), the column is left without one, and every later `up` adds ours
/// again, failing while the row is there, instead of recording the
/// convergence as done.
#[test_support::needs(mysql)]
#[tokio::test]
async fn a_foreign_key_that_could_not_be_replaced_is_added_by_the_next_run() {
    let t = TestDb::new(test_support::Backend::MySql).await;
    original_app::create(&t.db).await;
    let session = t.db.begin().await.unwrap();
    for sql in [
        "SET FOREIGN_KEY_CHECKS = 0",
        "INSERT INTO tasks (title, status, assignee_id) VALUES ('orphan', 'todo', 999)",
        "SET FOREIGN_KEY_CHECKS = 1",
    ] {
        session.execute_unprepared(sql).await.unwrap();
    }
    session.commit().await.unwrap();
    let keys = "SELECT CONCAT(CAST(CONSTRAINT_NAME AS CHAR), ' ', CAST(COLUMN_NAME AS CHAR)) \
        FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() \
        AND TABLE_NAME = 'tasks' AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY 1";
    for _ in 0..2 {
        let error = migrate_with::<migration::Migrator>(&t.settings, &["up"])
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("a foreign key constraint fails"),
            "{error}"
        );
        let status = migrate(&t.settings, &["status"]).await;
        assert!(status.contains(&format!("pending  {SECOND}")), "{status}");
    }
    original_app::execute(&t.db, &["DELETE FROM tasks WHERE title = 'orphan'"]).await;
    migrate(&t.settings, &["up"]).await;
    assert_eq!(
        strings(&t.db, keys).await,
        [
            "fk_tasks_assignee_id assignee_id",
            "fk_tasks_parent_id parent_id"
        ]
    );
}

/// A migration that always fails on PostgreSQL (and passes where adoption
/// learns what the migrations create, an in-memory SQLite database).
struct Failing;

impl MigrationName for Failing {
    fn name(&self) -> &str {
        "m20990102_000001_failing"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Failing {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => Err(DbErr::Migration("it always fails".to_owned())),
            _ => Ok(()),
        }
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

then!(WithFailing, Failing);

/// An adopted migration that is reverted stops being "adopted" at once, not
/// when the whole command succeeds: after a `refresh --force` whose `up`
/// fails later, its tables are this project's own, and reverting them needs
/// no `--force`.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_reverted_adopted_migration_is_forgotten_when_the_command_fails_later() {
    let t = TestDb::new(test_support::Backend::Postgres).await;
    original_app::create(&t.db).await;
    migrate_with::<WithFailing>(&t.settings, &["up"])
        .await
        .unwrap_err();
    assert_eq!(
        int(&t.db, "SELECT count(*) FROM seaql_migrations_adopted").await,
        1
    );
    migrate_with::<WithFailing>(&t.settings, &["refresh", "--force"])
        .await
        .unwrap_err();
    assert_eq!(
        int(&t.db, "SELECT count(*) FROM seaql_migrations_adopted").await,
        0
    );
    let n = names().len().to_string();
    migrate(&t.settings, &["down", "-n", &n]).await;
}
