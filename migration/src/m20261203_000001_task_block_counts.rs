//! Retired: this migration used to add the block counts of deep task pages
//! on PostgreSQL (the `task_blocks` table and triggers on `tasks`). It stays
//! in the list, doing nothing, so that databases that recorded it still
//! match the migrations; `m20261204_000001_drop_task_block_counts` removes
//! what it made where it ran.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
