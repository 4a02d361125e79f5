//! PostgreSQL: how many tasks each block of 1,024 ids holds, so that a page
//! at any `skip` starts without walking the rows it skips (see
//! docs/performance.md, "Pages at any depth"). Other backends: nothing.
//!
//! - `task_blocks` holds `(block, n)` rows, `block = id >> 10`. Triggers on
//!   `tasks` append one row per statement and block, `+n` for inserted rows
//!   and `-n` for deleted ones, so concurrent writers never update a shared
//!   row. A block's count is the sum of its rows; the tracker folds them
//!   into one row per block now and then (`Tracker::compact_task_blocks`).
//! - A changed id moves its row between blocks; `TRUNCATE tasks` empties
//!   the counts.
//! - The counts of the rows already there are taken under a lock that keeps
//!   writers out until the triggers exist, so no write is missed or counted
//!   twice.
//! - The functions keep the migration's `search_path`, so they find
//!   `task_blocks` whatever a session's own path is.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE task_blocks (block integer NOT NULL, n bigint NOT NULL);
CREATE OR REPLACE FUNCTION task_blocks_added() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_blocks (block, n) SELECT id >> 10, count(*) FROM added GROUP BY 1;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION task_blocks_removed() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_blocks (block, n) SELECT id >> 10, -count(*) FROM removed GROUP BY 1;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION task_blocks_moved() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_blocks (block, n) VALUES (OLD.id >> 10, -1), (NEW.id >> 10, 1);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION task_blocks_emptied() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM task_blocks;
    RETURN NULL;
END $$;
CREATE TRIGGER task_blocks_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION task_blocks_added();
CREATE TRIGGER task_blocks_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION task_blocks_removed();
CREATE TRIGGER task_blocks_move AFTER UPDATE OF id ON tasks
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION task_blocks_moved();
CREATE TRIGGER task_blocks_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_blocks_emptied();
INSERT INTO task_blocks (block, n) SELECT id >> 10, count(*) FROM tasks GROUP BY 1;
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS task_blocks_insert ON tasks;
DROP TRIGGER IF EXISTS task_blocks_delete ON tasks;
DROP TRIGGER IF EXISTS task_blocks_move ON tasks;
DROP TRIGGER IF EXISTS task_blocks_truncate ON tasks;
DROP FUNCTION IF EXISTS task_blocks_added(), task_blocks_removed(), task_blocks_moved(),
    task_blocks_emptied();
DROP TABLE IF EXISTS task_blocks;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, DOWN).await
    }
}

async fn run_on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    match manager.get_database_backend() {
        DbBackend::Postgres => manager
            .get_connection()
            .execute_unprepared(sql)
            .await
            .map(drop),
        _ => Ok(()),
    }
}
