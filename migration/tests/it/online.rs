//! Online schema changes: the building blocks on every backend, bounded lock
//! waits with retries, and the block counts' removal.

use std::time::{Duration, Instant};

use migration::online::{self, Backfill};
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;
use test_support::{Backend, TestDb};

use crate::support::{exec, int, lines, migrate, migrate_with, names, strings, then};

/// A task priority, filled for existing rows and then required, with an
/// index, a check and a foreign key to a reviewer: every block, in a
/// migration that runs outside a transaction. SQLite can do the column, the
/// backfill and the index only.
struct AddPriority;

impl MigrationName for AddPriority {
    fn name(&self) -> &str {
        "m20990101_000001_add_priority"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPriority {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite takes no more.
        for column in ["priority", "reviewer_id"] {
            manager
                .alter_table(
                    Table::alter()
                        .table("tasks")
                        .add_column(ColumnDef::new(column).integer().null())
                        .to_owned(),
                )
                .await?;
        }
        Self::blocks(
            manager,
            "priority = CASE WHEN status = 'done' THEN 0 ELSE 1 END",
        )
        .await
        .map(drop)
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}

then!(PriorityMigrator, AddPriority);

/// The blocks again, on a database that has what they make: nothing to do.
async fn run_again(t: &TestDb) {
    let session = t.db.autocommit();
    let manager = SchemaManager::new(session.executor());
    let rows = AddPriority::blocks(&manager, "priority = 5").await.unwrap();
    assert_eq!(rows, 0, "every row was filled");
}

impl AddPriority {
    /// Every block but the columns' creation: the backfill with `fill`,
    /// the index and, on a server, `NOT NULL`, the check and the foreign
    /// key. Returns how many rows the backfill filled.
    async fn blocks(manager: &SchemaManager<'_>, fill: &str) -> Result<u64, DbErr> {
        let rows = Backfill::new("tasks", fill)
            .only("priority IS NULL")
            .batch_size(3)
            .pause(Duration::ZERO)
            .run(manager)
            .await?;
        let index = Index::create()
            .name("idx_tasks_priority")
            .table("tasks")
            .col("priority")
            .to_owned();
        online::create_index(manager, index).await?;
        if manager.get_database_backend() == DbBackend::Sqlite {
            return Ok(rows);
        }
        online::set_not_null(manager, "tasks", "priority").await?;
        online::add_check(
            manager,
            "tasks",
            "tasks_priority_range",
            "priority BETWEEN 0 AND 9",
        )
        .await?;
        let reviewer = ForeignKey::create()
            .name("fk_tasks_reviewer_id")
            .from("tasks", "reviewer_id")
            .to("employees", "id")
            .on_delete(ForeignKeyAction::SetNull)
            .to_owned();
        online::add_foreign_key(manager, reviewer).await?;
        Ok(rows)
    }
}

async fn seed_tasks(t: &TestDb, n: usize) {
    for i in 0..n {
        let status = if i % 3 == 0 { "done" } else { "todo" };
        exec(
            &t.db,
            &format!("INSERT INTO tasks (title, status) VALUES ('t{i}', '{status}')"),
        )
        .await;
    }
}

test_support::backend_tests! {
    async fn the_building_blocks_change_the_schema_and_run_again_as_no_ops(t: TestDb) {
        migrate(&t.settings, &["up"]).await;
        seed_tasks(&t, 10).await;
        let report = migrate_with::<PriorityMigrator>(&t.settings, &["up"]).await.unwrap();
        assert_eq!(report, format!("applied  {}\n{} applied, 0 pending\n", AddPriority.name(), names().len() + 1));
        // Filled in batches: the done tasks 0, the others 1.
        assert_eq!(int(&t.db, "SELECT count(*) FROM tasks WHERE priority = 0").await, 4);
        assert_eq!(int(&t.db, "SELECT count(*) FROM tasks WHERE priority = 1").await, 6);
        let index = match t.backend() {
            Backend::Postgres => "SELECT indexrelid::regclass::text FROM pg_index WHERE indisvalid AND indrelid = 'tasks'::regclass",
            Backend::MySql => "SELECT DISTINCT CAST(INDEX_NAME AS CHAR) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'tasks'",
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'",
        };
        assert!(strings(&t.db, index).await.contains(&"idx_tasks_priority".to_owned()));
        if t.backend() != Backend::Sqlite {
            // Required and checked: NULL and 10 are refused, a reviewer must exist.
            let session = t.db.autocommit();
            for bad in [
                "UPDATE tasks SET priority = NULL WHERE id = 1",
                "UPDATE tasks SET priority = 10 WHERE id = 1",
                "UPDATE tasks SET reviewer_id = 999 WHERE id = 1",
            ] {
                assert!(session.execute_unprepared(bad).await.is_err(), "{bad} was accepted");
            }
        }
        if t.backend() == Backend::Postgres {
            // Every constraint validated, no check left behind by SET NOT NULL.
            let constraints = strings(&t.db, "SELECT conname::text || ' ' || convalidated::text FROM pg_constraint WHERE conrelid = 'tasks'::regclass AND contype IN ('c', 'f') ORDER BY 1").await;
            assert_eq!(constraints, ["fk_tasks_assignee_id true", "fk_tasks_parent_id true", "fk_tasks_reviewer_id true", "tasks_priority_range true"]);
        }
        run_again(&t).await;
    }
}

/// Existing rows that break a new check or `NOT NULL`: the call fails
/// naming the problem and leaves no constraint behind, so that new writes
/// are not held to a rule the migration did not apply.
mod a_constraint_that_existing_rows_break_is_not_left_behind {
    use super::*;

    async fn body(t: TestDb) {
        migrate(&t.settings, &["up"]).await;
        // Titles t0 to t2, no deadline.
        seed_tasks(&t, 3).await;
        let session = t.db.autocommit();
        let manager = SchemaManager::new(session.executor());
        let check = online::add_check(&manager, "tasks", "tasks_not_t1", "title <> 't1'").await;
        let check = check.unwrap_err().to_string();
        assert!(check.contains("tasks_not_t1"), "{check}");
        assert!(
            online::set_not_null(&manager, "tasks", "deadline")
                .await
                .is_err()
        );
        session
            .execute_unprepared("INSERT INTO tasks (title, status) VALUES ('t1', 'todo')")
            .await
            .unwrap();
    }

    #[test_support::needs(postgres)]
    #[tokio::test]
    async fn postgres() {
        body(TestDb::new(Backend::Postgres).await).await;
    }

    #[test_support::needs(mysql)]
    #[tokio::test]
    async fn mysql() {
        body(TestDb::new(Backend::MySql).await).await;
    }
}

/// What SQLite cannot do in place is refused with a message that says so.
#[tokio::test]
async fn sqlite_refuses_constraints_on_existing_tables_with_the_reason() {
    let t = TestDb::new(Backend::Sqlite).await;
    migrate(&t.settings, &["up"]).await;
    let session = t.db.autocommit();
    let manager = SchemaManager::new(session.executor());
    let reviewer = ForeignKey::create()
        .name("fk_tasks_parent")
        .from("tasks", "parent_id")
        .to("tasks", "id")
        .to_owned();
    assert_eq!(
        online::add_foreign_key(&manager, reviewer)
            .await
            .unwrap_err()
            .to_string(),
        "Migration Error: SQLite cannot add foreign key fk_tasks_parent to the existing table tasks: create the table with it, or rebuild the table (docs/migrations.md)"
    );
    assert_eq!(
        online::set_not_null(&manager, "tasks", "deadline")
            .await
            .unwrap_err()
            .to_string(),
        "Migration Error: SQLite cannot make the existing column tasks.deadline NOT NULL: rebuild the table (docs/migrations.md)"
    );
}

/// An index built concurrently inside the runner's transaction.
struct IndexInTransaction;

impl MigrationName for IndexInTransaction {
    fn name(&self) -> &str {
        "m20990101_000002_index_in_transaction"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for IndexInTransaction {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let index = Index::create()
            .name("idx_tasks_deadline")
            .table("tasks")
            .col("deadline")
            .to_owned();
        online::create_index(manager, index).await
    }
}

then!(InTransactionMigrator, IndexInTransaction);

#[test_support::needs(postgres)]
#[tokio::test]
async fn a_concurrent_build_in_a_transaction_is_refused_with_the_fix() {
    let t = TestDb::new(Backend::Postgres).await;
    let err = migrate_with::<InTransactionMigrator>(&t.settings, &["up"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "migration m20990101_000002_index_in_transaction failed: Migration Error: a concurrent index build runs outside a transaction on PostgreSQL: make the migration's use_transaction() return Some(false)"
    );
}

/// An index over the same column whose earlier, unique attempt failed and
/// left an INVALID index of the same name behind.
struct IndexAfterFailedBuild;

impl MigrationName for IndexAfterFailedBuild {
    fn name(&self) -> &str {
        "m20990101_000003_index_after_failed_build"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for IndexAfterFailedBuild {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let index = Index::create()
            .name("idx_tasks_status")
            .table("tasks")
            .col("status")
            .to_owned();
        online::create_index(manager, index).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}

then!(AfterFailedBuildMigrator, IndexAfterFailedBuild);

/// Whether `idx_tasks_status` is valid, as text.
const STATUS_INDEX_VALID: &str =
    "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'idx_tasks_status'::regclass";

/// Runs [`AfterFailedBuildMigrator`]: `idx_tasks_status` is then valid, and
/// no index is INVALID.
async fn build_status_index(t: &TestDb) {
    migrate_with::<AfterFailedBuildMigrator>(&t.settings, &["up"])
        .await
        .unwrap();
    assert_eq!(strings(&t.db, STATUS_INDEX_VALID).await, ["true"]);
    assert_eq!(
        int(&t.db, "SELECT count(*) FROM pg_index WHERE NOT indisvalid").await,
        0
    );
}

#[test_support::needs(postgres)]
#[tokio::test]
async fn an_invalid_index_left_by_an_interrupted_build_is_replaced() {
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    seed_tasks(&t, 4).await;
    // A unique build over duplicate values fails and leaves its index INVALID.
    let session = t.db.autocommit();
    assert!(
        session
            .execute_unprepared(
                "CREATE UNIQUE INDEX CONCURRENTLY idx_tasks_status ON tasks (status)"
            )
            .await
            .is_err()
    );
    assert_eq!(strings(&t.db, STATUS_INDEX_VALID).await, ["false"]);
    build_status_index(&t).await;
}

/// Names longer than the 63 bytes of a name that PostgreSQL keeps.
const LONG_INDEX: &str = "idx_tasks_status_with_a_name_longer_than_postgresql_keeps_of_names";
const LONG_CHECK: &str = "chk_tasks_title_with_a_name_longer_than_postgresql_keeps_of_names";

/// An index and a check with [`LONG_INDEX`] and [`LONG_CHECK`].
struct LongNames;

impl MigrationName for LongNames {
    fn name(&self) -> &str {
        "m20990101_000004_long_names"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LongNames {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let index = Index::create()
            .name(LONG_INDEX)
            .table("tasks")
            .col("status")
            .to_owned();
        online::create_index(manager, index).await?;
        online::add_check(manager, "tasks", LONG_CHECK, "title <> ''").await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}

then!(LongNamesMigrator, LongNames);

/// What an interrupted run left under names that PostgreSQL cut to 63
/// bytes (an INVALID index, a check not yet validated) is found again: the
/// index is rebuilt and the check validated.
#[test_support::needs(postgres)]
#[tokio::test]
async fn what_an_interrupted_run_left_under_long_names_is_completed() {
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    seed_tasks(&t, 4).await;
    let session = t.db.autocommit();
    let build = format!("CREATE UNIQUE INDEX CONCURRENTLY {LONG_INDEX} ON tasks (status)");
    assert!(session.execute_unprepared(&build).await.is_err());
    let check =
        format!("ALTER TABLE tasks ADD CONSTRAINT {LONG_CHECK} CHECK (title <> '') NOT VALID");
    session.execute_unprepared(&check).await.unwrap();
    migrate_with::<LongNamesMigrator>(&t.settings, &["up"])
        .await
        .unwrap();
    let [index, check] = [LONG_INDEX, LONG_CHECK].map(|name| name[..63].to_owned());
    let valid =
        format!("SELECT indisvalid::text FROM pg_index WHERE indexrelid = '{index}'::regclass");
    assert_eq!(strings(&t.db, &valid).await, ["true"]);
    let validated =
        format!("SELECT convalidated::text FROM pg_constraint WHERE conname = '{check}'");
    assert_eq!(strings(&t.db, &validated).await, ["true"]);
}

/// An index build behind a transaction that wrote to `tasks` and stays
/// open gives up at the deadline. Its INVALID index would wait for the same
/// transaction to go: the error comes at once and says that the index is
/// left; once the transaction ends, the next run drops it and builds the
/// index.
#[test_support::needs(postgres)]
#[tokio::test]
async fn an_index_build_that_gives_up_says_its_invalid_index_is_left() {
    let mut t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    seed_tasks(&t, 4).await;
    t.settings.migration_lock_timeout = Duration::from_millis(200);
    t.settings.migration_index_timeout = Duration::from_millis(300);
    t.settings.migration_deadline = Duration::from_millis(300);
    let writer = t.db.begin().await.unwrap();
    writer
        .execute_unprepared("INSERT INTO tasks (title, status) VALUES ('open', 'todo')")
        .await
        .unwrap();
    let err = migrate_with::<AfterFailedBuildMigrator>(&t.settings, &["up"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(": gave up after "), "{err}");
    assert!(
        err.ends_with(
            "; its INVALID index idx_tasks_status is left, and the next run drops it first"
        ),
        "{err}"
    );
    assert_eq!(strings(&t.db, STATUS_INDEX_VALID).await, ["false"]);
    writer.rollback().await.unwrap();
    build_status_index(&t).await;
}

/// A column added to `tasks`: it needs the table's strongest lock.
struct AddColumn;

impl MigrationName for AddColumn {
    fn name(&self) -> &str {
        "m20990101_000004_add_column"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddColumn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("tasks")
                    .add_column(ColumnDef::new("estimate").integer().not_null().default(0))
                    .to_owned(),
            )
            .await
    }
}

then!(AddColumnMigrator, AddColumn);

/// A session that reads `tasks` and keeps its transaction open, as a report
/// or `pg_dump` does, under an `application_name` of its own.
async fn long_reader(t: &TestDb) -> db_core::Session {
    let mut settings = t.settings.clone();
    settings.application_name = Some("long-report".to_owned());
    let db = db_core::Db::connect(&settings).await.unwrap();
    let reader = db.begin().await.unwrap();
    reader
        .execute_unprepared("SELECT count(*) FROM tasks")
        .await
        .unwrap();
    reader
}

/// A column added to `tasks`, in a transaction or with
/// [`online::execute`], then a check that the runner's session still runs
/// without parallel workers: a retry after a lock timeout must not lose the
/// runner's connection and what it set on it.
struct ColumnThenCheck(bool);

impl MigrationName for ColumnThenCheck {
    fn name(&self) -> &str {
        "m20990101_000005_column_then_check"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ColumnThenCheck {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = "ALTER TABLE tasks ADD COLUMN checked integer";
        let conn = manager.get_connection();
        match self.0 {
            true => conn.execute_unprepared(sql).await.map(|_| ())?,
            false => online::execute(manager, sql).await?,
        }
        // On PostgreSQL only: every migration also builds the reference
        // schema that adoption compares with, on an in-memory SQLite.
        if manager.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        conn.execute_unprepared(
            "DO $$ BEGIN IF current_setting('max_parallel_maintenance_workers') <> '0' \
             THEN RAISE EXCEPTION 'the runner''s session settings are gone'; END IF; END $$",
        )
        .await
        .map(drop)
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(self.0)
    }
}

then!(CheckInTransactionMigrator, ColumnThenCheck(true));
then!(CheckOnlineMigrator, ColumnThenCheck(false));

/// A migration that a long reader holds up retries on the runner's own
/// connection, in a transaction and with the online blocks alike: the
/// session settings the runner made are still there after the retries.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_migration_keeps_the_runners_session() {
    for in_transaction in [true, false] {
        let mut t = TestDb::new(Backend::Postgres).await;
        migrate(&t.settings, &["up"]).await;
        t.settings.migration_lock_timeout = Duration::from_millis(200);
        let reader = long_reader(&t).await;
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            reader.rollback().await.unwrap();
        });
        let applied = match in_transaction {
            true => migrate_with::<CheckInTransactionMigrator>(&t.settings, &["up"]).await,
            false => migrate_with::<CheckOnlineMigrator>(&t.settings, &["up"]).await,
        };
        ends.await.unwrap();
        applied.unwrap_or_else(|e| panic!("in a transaction: {in_transaction}: {e}"));
    }
}

/// With a transaction holding `tasks`, a migration that needs the table waits
/// at most DB_MIGRATION_LOCK_TIMEOUT each time, tries again until
/// DB_MIGRATION_DEADLINE, then gives up naming the session in its way and
/// leaving nothing applied; once the session ends, the migration applies.
/// Meanwhile writes to `tasks` go on.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_migration_retries_then_names_the_blocker() {
    let mut t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    t.settings.migration_lock_timeout = Duration::from_millis(200);
    t.settings.migration_deadline = Duration::from_secs(2);
    let reader = long_reader(&t).await;
    // Writers keep going while the migration waits and retries.
    let writes = {
        let db = t.db.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let start = Instant::now();
                db.autocommit()
                    .execute_unprepared("INSERT INTO tasks (title, status) VALUES ('w', 'todo')")
                    .await
                    .unwrap();
                slowest = slowest.max(start.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            slowest
        })
    };
    let start = Instant::now();
    let err = migrate_with::<AddColumnMigrator>(&t.settings, &["up"])
        .await
        .unwrap_err()
        .to_string();
    let waited = start.elapsed();
    let slowest = writes.await.unwrap();
    assert!(
        err.starts_with(&format!(
            "migration {} failed: Migration Error: its transaction: gave up after ",
            AddColumn.name()
        )),
        "{err}"
    );
    for part in [
        "each waiting DB_MIGRATION_LOCK_TIMEOUT=200ms for a lock",
        "in the way: pid ",
        "(application_name \"long-report\", idle in transaction, transaction open ",
        "end those sessions, or allow more time with DB_MIGRATION_DEADLINE=2s",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    // It gives up when the next pause would end past the deadline. After
    // 200 ms lock waits the pauses are 200–400, 200–400, then 400–800 ms,
    // so it cannot give up before 1.2 s, and gives up after one attempt
    // only if that attempt took 1.6 s.
    let attempts: u32 = err
        .split(" attempts, ")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in: {err}"));
    assert!(attempts >= 2, "gave up after {attempts} attempt: {err}");
    assert!(
        waited >= Duration::from_millis(1200),
        "gave up after {waited:?}"
    );
    // Nothing half-applied: not recorded, no column.
    let recorded = strings(
        &t.db,
        "SELECT version FROM seaql_migrations ORDER BY version",
    )
    .await;
    assert_eq!(recorded, names());
    assert_eq!(
        int(&t.db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'tasks' AND column_name = 'estimate'").await,
        0
    );
    test_support::report(&format!(
        "a migration blocked by a long reader gave up after {waited:.1?}; the slowest write meanwhile took {slowest:.1?}"
    ));
    assert!(
        slowest < Duration::from_secs(1),
        "a write waited {slowest:?}"
    );
    reader.rollback().await.unwrap();

    // The reader ends while the migration retries: it applies.
    t.settings.migration_deadline = Duration::from_secs(30);
    let reader = long_reader(&t).await;
    let finish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        reader.rollback().await.unwrap();
    });
    let report = migrate_with::<AddColumnMigrator>(&t.settings, &["up"])
        .await
        .unwrap();
    assert_eq!(
        report,
        format!(
            "applied  {}\n{} applied, 0 pending\n",
            AddColumn.name(),
            names().len() + 1
        )
    );
    finish.await.unwrap();
}

/// What today's main made for deep pages: the retired migration's triggers,
/// functions and table, and its record.
const BLOCK_COUNTS: &str = r#"
CREATE TABLE task_blocks (block integer NOT NULL, n bigint NOT NULL);
CREATE FUNCTION task_blocks_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO task_blocks (block, n) SELECT id >> 10, count(*) FROM added GROUP BY 1; RETURN NULL; END $$;
CREATE FUNCTION task_blocks_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO task_blocks (block, n) SELECT id >> 10, -count(*) FROM removed GROUP BY 1; RETURN NULL; END $$;
CREATE FUNCTION task_blocks_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO task_blocks (block, n) VALUES (OLD.id >> 10, -1), (NEW.id >> 10, 1); RETURN NULL; END $$;
CREATE FUNCTION task_blocks_emptied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN DELETE FROM task_blocks; RETURN NULL; END $$;
CREATE TRIGGER task_blocks_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION task_blocks_added();
CREATE TRIGGER task_blocks_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION task_blocks_removed();
CREATE TRIGGER task_blocks_move AFTER UPDATE OF id ON tasks
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION task_blocks_moved();
CREATE TRIGGER task_blocks_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_blocks_emptied();
INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20261203_000001_task_block_counts', 0);
"#;

/// No trigger on `tasks`, no `task_blocks`, no function of theirs.
async fn no_block_counts(t: &TestDb) {
    assert_eq!(
        int(
            &t.db,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tasks'::regclass AND NOT tgisinternal"
        )
        .await,
        0
    );
    assert_eq!(
        int(
            &t.db,
            "SELECT count(*) FROM pg_class WHERE relname = 'task_blocks'"
        )
        .await,
        0
    );
    assert_eq!(
        int(
            &t.db,
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'task_blocks%'"
        )
        .await,
        0
    );
}

/// A database that the block counts' migration ran on loses them on `up`;
/// a fresh one never has them.
#[test_support::needs(postgres)]
#[tokio::test]
async fn block_counts_are_gone_after_up_on_old_and_fresh_databases() {
    let old = TestDb::new(Backend::Postgres).await;
    migrate(&old.settings, &["up", "-n", "2"]).await;
    old.db
        .autocommit()
        .execute_unprepared(BLOCK_COUNTS)
        .await
        .unwrap();
    seed_tasks(&old, 3).await;
    assert_eq!(int(&old.db, "SELECT count(*) FROM task_blocks").await, 3);
    let pending: Vec<String> = names()[3..].to_vec();
    assert_eq!(
        migrate(&old.settings, &["up"]).await,
        format!(
            "{}{} applied, 0 pending\n",
            lines("applied ", &pending),
            names().len()
        )
    );
    no_block_counts(&old).await;

    let fresh = TestDb::new(Backend::Postgres).await;
    migrate(&fresh.settings, &["up"]).await;
    no_block_counts(&fresh).await;
}

/// Inside a transaction (SQLite's migrations run in the runner's, which is
/// its lock) a backfill's batches are part of it: they run without the
/// pauses, which would only hold the lock longer.
#[tokio::test]
async fn a_backfill_in_a_transaction_does_not_pause() {
    let t = TestDb::new(Backend::Sqlite).await;
    migrate(&t.settings, &["up"]).await;
    seed_tasks(&t, 3).await;
    let session = t.db.begin().await.unwrap();
    let manager = SchemaManager::new(session.executor());
    let started = std::time::Instant::now();
    let rows = Backfill::new("tasks", "title = 'filled'")
        .batch_size(1)
        .pause(Duration::from_secs(10))
        .run(&manager)
        .await
        .unwrap();
    assert_eq!(rows, 3);
    // Three pauses would take 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    session.commit().await.unwrap();
}

/// A backfill fills the rows there when it starts and ends, though rows
/// keep coming: those are the application's to fill. (One that followed
/// them ran for as long as the inserts did.)
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_ends_while_rows_keep_coming() {
    let t = TestDb::new(Backend::Postgres).await;
    let session = t.db.autocommit();
    let create = "CREATE TABLE fill (id BIGSERIAL PRIMARY KEY, filled BOOLEAN)";
    session.execute_unprepared(create).await.unwrap();
    let seed = "INSERT INTO fill (filled) SELECT NULL FROM generate_series(1, 1000)";
    session.execute_unprepared(seed).await.unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let inserts = {
        let db = t.db.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(30);
            while stopped.try_recv().is_err() && Instant::now() < until {
                (db.autocommit()
                    .execute_unprepared("INSERT INTO fill (filled) VALUES (NULL)"))
                .await
                .unwrap();
            }
            Instant::now() < until
        })
    };
    let manager = SchemaManager::new(session.executor());
    let rows = Backfill::new("fill", "filled = true")
        .run(&manager)
        .await
        .unwrap();
    // Gone when the inserts ran their 30 s.
    let _ = stop.send(());
    assert!(
        inserts.await.unwrap(),
        "the backfill ran as long as the inserts did"
    );
    assert!(rows >= 1000, "{rows} rows filled");
    assert_eq!(
        int(
            &t.db,
            "SELECT count(*) FROM fill WHERE id <= 1000 AND filled IS NULL"
        )
        .await,
        0
    );
}

test_support::backend_tests! {
    /// A batch that takes longer than the backfill's batch time makes the
    /// next one smaller, down to one row; a batch never has more rows than
    /// the batch size. Each row records how many rows were filled before
    /// its batch, so the distinct values are the batches.
    async fn a_backfill_sizes_its_batches_to_its_batch_time(t: TestDb) {
        let session = t.db.autocommit();
        session.execute_unprepared("CREATE TABLE fill (id INTEGER PRIMARY KEY, filled_before INTEGER)").await.unwrap();
        let ids: Vec<String> = (1..=12).map(|id| format!("({id})")).collect();
        session.execute_unprepared(&format!("INSERT INTO fill (id) VALUES {}", ids.join(", "))).await.unwrap();
        let manager = SchemaManager::new(session.executor());
        // A derived table, which MySQL reads before it updates the table.
        let set = "filled_before = (SELECT n FROM (SELECT count(*) AS n FROM fill WHERE filled_before IS NOT NULL) AS filled)";
        // Within an hour: batches of 5, 5 and 2 rows; within a nanosecond: 5, then one at a time.
        for (time, batches) in [(Duration::from_secs(3_600), 3), (Duration::from_nanos(1), 8)] {
            exec(&t.db, "UPDATE fill SET filled_before = NULL").await;
            let backfill = Backfill::new("fill", set).batch_size(5).batch_time(time).pause(Duration::ZERO);
            assert_eq!(backfill.run(&manager).await.unwrap(), 12);
            assert_eq!(int(&t.db, "SELECT count(DISTINCT filled_before) FROM fill").await, batches, "batch time {time:?}");
            assert_eq!(int(&t.db, "SELECT count(*) FROM fill WHERE filled_before = 0").await, 5);
        }
    }
}

/// Takes `employees`, then `tasks`: the order that deadlocks with a
/// session that takes them the other way round.
struct LocksBoth;

impl MigrationName for LocksBoth {
    fn name(&self) -> &str {
        "m20990101_000007_locks_both"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LocksBoth {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("LOCK TABLE employees IN ACCESS EXCLUSIVE MODE")
            .await?;
        conn.execute_unprepared("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            .await?;
        Ok(())
    }
}

then!(LocksBothMigrator, LocksBoth);

/// A migration in a transaction that PostgreSQL aborts to end a deadlock
/// (it waited first, so its check finds the cycle) is rolled back and
/// tried again, as after a lock timeout, and then applies.
#[test_support::needs(postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_aborted_by_a_deadlock_is_tried_again() {
    let mut t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    // Longer than the server's deadlock_timeout (1 s): the deadlock, not
    // the lock timeout, ends the first attempt.
    t.settings.migration_lock_timeout = Duration::from_secs(3);
    // The other session takes `tasks`; the migration takes `employees`
    // and waits for `tasks`; then the other session asks for `employees`.
    let other = t.db.begin().await.unwrap();
    // Only the migration's deadlock check may fire, however late this
    // session comes to wait (a superuser's setting: the test server's user
    // is one).
    for sql in [
        "SET LOCAL deadlock_timeout = '1min'",
        "LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE",
    ] {
        other.execute_unprepared(sql).await.unwrap();
    }
    let migrating = {
        let settings = t.settings.clone();
        tokio::spawn(async move { migrate_with::<LocksBothMigrator>(&settings, &["up"]).await })
    };
    let waiting = "SELECT count(*) FROM pg_locks \
        WHERE relation = 'tasks'::regclass AND NOT granted";
    let deadline = Instant::now() + Duration::from_secs(20);
    while int(&t.db, waiting).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the migration never waited for tasks"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both wait now; the migration's deadlock check (after the server's
    // deadlock_timeout, 1 s) finds the cycle and aborts it.
    let taken = other
        .execute_unprepared("LOCK TABLE employees IN ACCESS EXCLUSIVE MODE")
        .await;
    assert!(
        taken.is_ok(),
        "the other session was aborted instead: {taken:?}"
    );
    other.commit().await.unwrap();
    let report = migrating.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.contains(&format!("applied  {}", LocksBoth.name())),
        "{report}"
    );
    // A deadlock it was, not the lock timeout: the server counted one.
    let deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()";
    let deadline = Instant::now() + Duration::from_secs(20);
    while int(&t.db, deadlocks).await == 0 {
        assert!(Instant::now() < deadline, "the server counted no deadlock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A backfill over a table whose key is an integer of another type than a
/// signed 32- or 64-bit one (PostgreSQL's `smallint`, MySQL's `UNSIGNED`)
/// fills every row.
#[test_support::needs(postgres, mysql)]
#[tokio::test]
async fn a_backfill_reads_keys_of_any_integer_type() {
    for (backend, key) in [
        (Backend::Postgres, "smallint"),
        (Backend::MySql, "INT UNSIGNED"),
    ] {
        let t = TestDb::new(backend).await;
        let session = t.db.autocommit();
        let create = format!("CREATE TABLE counters (id {key} PRIMARY KEY, n INTEGER)");
        session.execute_unprepared(&create).await.unwrap();
        session
            .execute_unprepared("INSERT INTO counters (id) VALUES (1), (2), (3), (4), (5)")
            .await
            .unwrap();
        let manager = SchemaManager::new(session.executor());
        let rows = Backfill::new("counters", "n = 7")
            .batch_size(2)
            .pause(Duration::ZERO)
            .run(&manager)
            .await
            .unwrap();
        assert_eq!(rows, 5, "{backend:?}");
        let filled = int(&t.db, "SELECT count(*) FROM counters WHERE n = 7").await;
        assert_eq!(filled, 5, "{backend:?}");
    }
}

/// A column filled one row at a time, slowly: a backfill long enough to
/// lose the migration lock in the middle of.
struct SlowFill;

impl MigrationName for SlowFill {
    fn name(&self) -> &str {
        "m20990101_000006_slow_fill"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SlowFill {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        online::execute(
            manager,
            "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS rank integer",
        )
        .await?;
        Backfill::new("tasks", "rank = 1")
            .batch_size(1)
            .pause(Duration::from_millis(100))
            .run(manager)
            .await
            .map(drop)
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}

then!(SlowFillMigrator, SlowFill);

/// When the migration lock's session ends in the middle of a backfill (an
/// operator's `pg_terminate_backend`, a proxy's idle cut), the backfill
/// stops at its next batch instead of going on beside whichever migrator
/// takes the lock next.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_backfill_stops_when_the_migration_lock_is_lost() {
    let t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    seed_tasks(&t, 40).await;
    let migrator = {
        let settings = t.settings.clone();
        tokio::spawn(async move { migrate_with::<SlowFillMigrator>(&settings, &["up"]).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let has_rank = "SELECT count(*) FROM information_schema.columns \
                    WHERE table_name = 'tasks' AND column_name = 'rank'";
    let filled = "SELECT count(*) FROM tasks WHERE rank IS NOT NULL";
    while int(&t.db, has_rank).await == 0 || int(&t.db, filled).await < 3 {
        assert!(Instant::now() < deadline, "the backfill never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = strings(
        &t.db,
        "SELECT pg_terminate_backend(pid)::text FROM pg_locks \
         WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await;
    assert_eq!(ended, ["true"]);
    let err = migrator.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("the migration lock was lost, so the migration stops"),
        "{err}"
    );
    assert!(
        int(&t.db, filled).await < 40,
        "the backfill went on to the end"
    );
}

/// A backfill of `tasks.rank`, a column that is there already.
struct FillRank;

impl MigrationName for FillRank {
    fn name(&self) -> &str {
        "m20990101_000007_fill_rank"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for FillRank {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        Backfill::new("tasks", "rank = 2")
            .pause(Duration::ZERO)
            .run(manager)
            .await
            .map(drop)
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }
}

then!(FillRankMigrator, FillRank);

/// A backfill whose reads wait for their lock longer than the lock timeout
/// (behind a `VACUUM FULL`, a manual `LOCK TABLE`) tries them again, as it
/// does its updates, and fills every row once the lock is free.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_backfill_whose_reads_wait_for_a_lock_tries_them_again() {
    let mut t = TestDb::new(Backend::Postgres).await;
    migrate(&t.settings, &["up"]).await;
    seed_tasks(&t, 5).await;
    exec(&t.db, "ALTER TABLE tasks ADD COLUMN rank integer").await;
    t.settings.migration_lock_timeout = Duration::from_millis(200);
    let holder = t.db.begin().await.unwrap();
    holder
        .execute_unprepared("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let migrator = {
        let settings = t.settings.clone();
        tokio::spawn(async move { migrate_with::<FillRankMigrator>(&settings, &["up"]).await })
    };
    // Several of the reads' lock timeouts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    holder.commit().await.unwrap();
    migrator.await.unwrap().unwrap();
    let filled = int(&t.db, "SELECT count(*) FROM tasks WHERE rank = 2").await;
    assert_eq!(filled, 5);
}

/// A column added with [`online::execute`].
struct OnlineAddColumn;

impl MigrationName for OnlineAddColumn {
    fn name(&self) -> &str {
        "m20990101_000008_online_add_column"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OnlineAddColumn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        online::execute(
            manager,
            "ALTER TABLE tasks ADD COLUMN estimate INTEGER NOT NULL DEFAULT 0",
        )
        .await
    }
}

then!(OnlineAddColumnMigrator, OnlineAddColumn);

/// On MySQL too a schema change behind a long transaction waits at most
/// `DB_MIGRATION_LOCK_TIMEOUT` for its metadata lock (every query on the
/// table queues behind it while it waits), is tried again, gives up at
/// `DB_MIGRATION_DEADLINE` saying so, and goes through once the
/// transaction ends.
#[test_support::needs(mysql)]
#[tokio::test]
async fn on_mysql_a_blocked_schema_change_waits_briefly_and_is_tried_again() {
    let mut t = TestDb::new(Backend::MySql).await;
    migrate(&t.settings, &["up"]).await;
    t.settings.migration_lock_timeout = Duration::from_secs(1);
    t.settings.migration_deadline = Duration::from_secs(3);
    let reader = long_reader(&t).await;
    let up = migrate_with::<OnlineAddColumnMigrator>(&t.settings, &["up"]);
    let err = tokio::time::timeout(Duration::from_secs(60), up)
        .await
        .expect("the schema change waited for its lock for good")
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up after"), "{err}");
    assert!(
        err.contains("each waiting DB_MIGRATION_LOCK_TIMEOUT=1s"),
        "{err}"
    );

    t.settings.migration_deadline = Duration::from_secs(60);
    let migrator = {
        let settings = t.settings.clone();
        tokio::spawn(
            async move { migrate_with::<OnlineAddColumnMigrator>(&settings, &["up"]).await },
        )
    };
    // Longer than a lock wait: the change has been tried and refused once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reader.commit().await.unwrap();
    migrator.await.unwrap().unwrap();
    let estimate = "SELECT count(*) FROM information_schema.columns \
                    WHERE table_schema = DATABASE() AND table_name = 'tasks' AND column_name = 'estimate'";
    assert_eq!(int(&t.db, estimate).await, 1);
}
