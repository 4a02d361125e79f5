//! PostgreSQL: drops the block counts of deep task pages, where the retired
//! `m20261203_000001_task_block_counts` made them (its triggers on `tasks`,
//! their functions and the `task_blocks` table); elsewhere, and where they
//! are missing, nothing. Task pages read `OFFSET` as they are, and keyset
//! pages (`after_id`) cost the same at any depth.
//!
//! Dropping a trigger locks `tasks` for a moment; the runner bounds the wait
//! for that lock and tries again, so writers never queue behind it for long.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROP: &str = "\
DROP TRIGGER IF EXISTS task_blocks_insert ON tasks;
DROP TRIGGER IF EXISTS task_blocks_delete ON tasks;
DROP TRIGGER IF EXISTS task_blocks_move ON tasks;
DROP TRIGGER IF EXISTS task_blocks_truncate ON tasks;
-- Only the triggers dropped above called these functions.
-- squawk-ignore ban-drop-function
DROP FUNCTION IF EXISTS task_blocks_added(), task_blocks_removed(), task_blocks_moved(),
    task_blocks_emptied();
-- Only those functions wrote it, and only the retired deep-page code read it.
-- squawk-ignore ban-drop-table
DROP TABLE IF EXISTS task_blocks";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared(DROP).await?;
        }
        Ok(())
    }

    /// Nothing to restore: the block counts are gone for good.
    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
